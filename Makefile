# Build, test and benchmark veth_exporter. CI runs .ci/run, which installs
# the Debian packages and Go tools the tests need, then runs `make lint`,
# `make test`, brief fuzzing and a benchmark smoke. It starts no service:
# the tests start the dockerd, containerd, Prometheus and Alertmanager they
# use, in private namespaces of their own.

GO        ?= go
# .ci/run installs this version with `go install` into $(go env GOPATH)/bin.
GOLANGCI_LINT ?= $(shell $(GO) env GOPATH)/bin/golangci-lint
BINARY    ?= veth_exporter
VERSION   ?= $(shell cat VERSION)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
DOCKER_IMAGE ?= veth-exporter:local

# The build date is the commit's (reproducible builds: the same commit
# gives the same binary, given the same BUILD_USER).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
BUILD_DATE ?= $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y%m%d-%H:%M:%S)
BUILD_USER ?= $(shell id -un)@$(shell hostname)
# Where make image (and make release) write.
DIST      ?= dist
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
IMAGE_REF ?= docker.io/library/veth-exporter:$(VERSION)

VERSION_PKG = github.com/prometheus/common/version
LDFLAGS = -s -w -extldflags=-static \
	-X $(VERSION_PKG).Version=$(VERSION) \
	-X $(VERSION_PKG).Revision=$(REVISION) \
	-X $(VERSION_PKG).Branch=$(BRANCH) \
	-X $(VERSION_PKG).BuildUser=$(BUILD_USER) \
	-X $(VERSION_PKG).BuildDate=$(BUILD_DATE)

.PHONY: all build test test-unit bench bench-compare docker kubernetes lint clean

all: build test

## build: a static binary at ./veth_exporter (what the Dockerfile copies)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BINARY) ./cmd/veth_exporter

## test: every test, privileged ones included (run as root; they make their own private namespaces)
test:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) test -race -count=1 ./...
	cd deploy/kubernetes/validate && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m ./...
	cd dashboards/gen && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd release && $(GO) vet ./... && $(GO) test -count=1 ./...

## kubelet: the kubelet of the Kubernetes node tests, built once per version (internal/kubelettest/kubelet/go.mod) into ~/.cache/veth_exporter
.PHONY: kubelet
kubelet:
	bash .ci/kubelet

## test-unit: the quick tests, which need neither root nor anything installed;
## privileged ones skip under -short even as root (seconds, not minutes)
test-unit:
	$(GO) test -short -count=1 ./...

## bench: inventory benchmarks at 1,000 and 10,000 veths (root)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 20x ./inventory/

## bench-compare: veth_exporter vs node_exporter netclass vs a bare netlink dump, 10,000 veths (root)
bench-compare: build
	bash bench/compare.sh

docker: build
	docker build -t $(DOCKER_IMAGE) .

## binaries: the static binaries of IMAGE_PLATFORMS, as $(DIST)/OS-ARCH/veth_exporter (what image and packages take)
.PHONY: binaries
binaries:
	@mkdir -p $(DIST)
	@for p in $(IMAGE_PLATFORMS); do \
		echo "go build $$p"; \
		CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o $(DIST)/$${p%/*}-$${p#*/}/$(BINARY) ./cmd/veth_exporter || exit 1; \
	done

## packages: .deb and .rpm of each platform (nfpm), in $(DIST): the binary, the systemd unit with
## /etc/default (Debian) or /etc/sysconfig (RPM) arguments, the remediation drop-in as an example
.PHONY: packages
packages: BUILD_USER = release
packages: binaries
	@for p in $(IMAGE_PLATFORMS); do for f in deb rpm; do \
		(cd release && $(GO) run . package -format $$f -arch $${p#*/} -version $(VERSION) -created $(SOURCE_DATE_EPOCH) \
			-binary $(abspath $(DIST))/$${p%/*}-$${p#*/}/$(BINARY) -out $(abspath $(DIST))) || exit 1; \
	done; done

## release: $(DIST) with, per platform, veth_exporter-VERSION.OS-ARCH.tar.gz (binary, LICENSE, README,
## unit, drop-in, rules, dashboard), the packages, the image archive and sha256sums.txt, all reproducible
.PHONY: release
release: BUILD_USER = release
release: packages image
	@for p in $(IMAGE_PLATFORMS); do \
		d=veth_exporter-$(VERSION).$${p%/*}-$${p#*/}; rm -rf $(DIST)/$$d; mkdir -p $(DIST)/$$d || exit 1; \
		cp $(DIST)/$${p%/*}-$${p#*/}/$(BINARY) LICENSE README.md CHANGELOG.md deploy/systemd/veth_exporter.service \
			deploy/systemd/remediation.conf alerts/veth_exporter.rules.yml dashboards/veth-exporter.json $(DIST)/$$d/ || exit 1; \
		tar -C $(DIST) --sort=name --mtime=@$(SOURCE_DATE_EPOCH) --owner=0 --group=0 --numeric-owner \
			-cf - $$d | gzip -9n > $(DIST)/$$d.tar.gz || exit 1; \
		rm -rf $(DIST)/$$d; \
	done
	cd $(DIST) && sha256sum *.tar.gz *.deb *.rpm *.oci.tar > sha256sums.txt && cat sha256sums.txt

## image: the OCI image index (linux/amd64, linux/arm64) from static binaries, without a daemon, reproducibly:
## $(DIST)/veth-exporter_$(VERSION).oci.tar, for podman load -i, ctr images import, skopeo copy oci-archive:
.PHONY: image
image: BUILD_USER = release
image: binaries
	cd release && $(GO) run . image -out $(abspath $(DIST))/veth-exporter_$(VERSION).oci.tar -ref $(IMAGE_REF) \
		-version $(VERSION) -revision $(REVISION) -created $(SOURCE_DATE_EPOCH) \
		$(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=$(abspath $(DIST))/$(subst /,-,$(p))/$(BINARY))

## kubernetes: regenerate deploy/kubernetes/base/prometheusrule.yaml from alerts/ (a test fails while they differ)
kubernetes:
	cd deploy/kubernetes/validate && $(GO) run ./cmd/prometheusrule -rules ../../../alerts/veth_exporter.rules.yml -out ../base/prometheusrule.yaml

## helm: refresh the Helm chart's copies of the alert rules and of the remediation web configuration (a test fails while they differ)
.PHONY: helm
helm:
	cp alerts/veth_exporter.rules.yml deploy/kubernetes/remediation/web.yml charts/veth-exporter/files/

## dashboards: regenerate dashboards/veth-exporter.json from dashboards/gen (a test fails while they differ)
.PHONY: dashboards
dashboards:
	cd dashboards/gen && $(GO) run . -out ../veth-exporter.json

## screenshot: docs/veths.png, /veths on the test fixture, taken by the browser test (root, Debian chromium)
.PHONY: screenshot
screenshot:
	VETH_SCREENSHOT=$(CURDIR)/docs/veths.png VETH_EXPORTER_REQUIRE_PRIVILEGED=1 $(GO) test -count=1 -run '^TestVethsPageInBrowser$$' ./cmd/veth_exporter

clean:
	rm -rf $(BINARY) $(DIST)

## lint: golangci-lint v2 with .golangci.yml (os/exec is forbidden outside tests),
## and every module tidy, with their shared dependencies at one version
lint:
	bash .ci/check-modules
	$(GOLANGCI_LINT) run ./...
	cd deploy/kubernetes/validate && $(GOLANGCI_LINT) run --config ../../../.golangci.yml ./...
	cd dashboards/gen && $(GOLANGCI_LINT) run --config ../../.golangci.yml ./...
	cd release && $(GOLANGCI_LINT) run --config ../.golangci.yml ./...
