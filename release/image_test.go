package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/monitortest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/internal/podmantest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

const ref = "docker.io/library/veth-exporter:0.1.0"

var (
	buildOnce sync.Once
	binaries  map[string]string // GOARCH: the static binary
	buildErr  error
)

// staticBinaries builds the exporter for linux/amd64 and linux/arm64 as
// `make image` does (static, stripped), once per test binary.
func staticBinaries(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "veth-exporter-image-")
		if err != nil {
			buildErr = err
			return
		}
		binaries = map[string]string{}
		for _, arch := range []string{"amd64", "arm64"} {
			out := filepath.Join(dir, arch)
			// In the main module, with its go.sum.
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/veth_exporter")
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = errors.New(string(b))
				return
			}
			binaries[arch] = out
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binaries
}

func platforms(t *testing.T) []Platform {
	b := staticBinaries(t)
	return []Platform{{"linux", "amd64", b["amd64"]}, {"linux", "arm64", b["arm64"]}}
}

var info = ImageInfo{Version: "0.1.0", Revision: "0123abcd", Created: time.Unix(1764892800, 0).UTC()}

// archive builds the index of ps with inf and writes it as an OCI archive.
func archive(t *testing.T, ps []Platform, inf ImageInfo) (v1.ImageIndex, []byte) {
	t.Helper()
	idx, err := BuildIndex(ps, inf)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteOCIArchive(&buf, idx, ref, inf.Created); err != nil {
		t.Fatal(err)
	}
	return idx, buf.Bytes()
}

// TestIndex: one image per platform, each the Dockerfile's (FROM scratch,
// the binary of its platform at /bin/veth_exporter, mode 0755, owned by
// root, port 9750, user 0, the binary as entrypoint), with the version
// and revision as labels.
func TestIndex(t *testing.T) {
	ps := platforms(t)
	idx, _ := archive(t, ps, info)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(ps) {
		t.Fatalf("%d manifests, want %d", len(im.Manifests), len(ps))
	}
	for i, p := range ps {
		d := im.Manifests[i]
		if d.Platform == nil || d.Platform.OS != p.OS || d.Platform.Architecture != p.Arch {
			t.Errorf("manifest %d: platform %v, want %s/%s", i, d.Platform, p.OS, p.Arch)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if cf.OS != p.OS || cf.Architecture != p.Arch || strings.Join(c.Entrypoint, " ") != "/bin/veth_exporter" || c.User != "0" ||
			len(c.ExposedPorts) != 1 || c.Labels["org.opencontainers.image.version"] != "0.1.0" || c.Labels["org.opencontainers.image.revision"] != "0123abcd" ||
			!cf.Created.Equal(info.Created) {
			t.Errorf("%s/%s: config %+v", p.OS, p.Arch, cf)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s/%s: %d layers (%v), want 1", p.OS, p.Arch, len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(p.Binary)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
			if h.Uid != 0 || h.Gid != 0 || h.Mode != 0o755 || !h.ModTime.Equal(info.Created) {
				t.Errorf("%s/%s: %s: uid %d gid %d mode %o mtime %v", p.OS, p.Arch, h.Name, h.Uid, h.Gid, h.Mode, h.ModTime)
			}
			if h.Name == "bin/veth_exporter" {
				if got, _ := io.ReadAll(tr); !bytes.Equal(got, want) {
					t.Errorf("%s/%s: /bin/veth_exporter is not %s", p.OS, p.Arch, p.Binary)
				}
			}
		}
		rc.Close()
		if strings.Join(names, " ") != "bin/ bin/veth_exporter" {
			t.Errorf("%s/%s: layer holds %v, want bin/ and bin/veth_exporter", p.OS, p.Arch, names)
		}
	}
}

// TestReproducible: the same binaries, version and time give the same
// index digest and the same archive, byte for byte; another time or
// another binary gives another digest.
func TestReproducible(t *testing.T) {
	ps := platforms(t)
	idxA, a := archive(t, ps, info)
	idxB, b := archive(t, ps, info)
	da, _ := idxA.Digest()
	db, _ := idxB.Digest()
	if da != db || !bytes.Equal(a, b) {
		t.Errorf("two builds of the same inputs: index %s and %s, archives equal %v", da, db, bytes.Equal(a, b))
	}
	later := info
	later.Created = info.Created.Add(time.Second)
	idxC, _ := archive(t, ps, later)
	swapped := []Platform{{"linux", "amd64", ps[1].Binary}, {"linux", "arm64", ps[0].Binary}}
	idxD, _ := archive(t, swapped, info)
	for what, idx := range map[string]v1.ImageIndex{"another time": idxC, "other binaries": idxD} {
		if d, _ := idx.Digest(); d == da {
			t.Errorf("%s: the same digest %s", what, d)
		}
	}
	if _, err := BuildIndex(append(ps, ps[0]), info); err == nil {
		t.Error("a platform twice: no error")
	}
}

// writeArchive writes the archive of the test's binaries to a file.
func writeArchive(t *testing.T) string {
	t.Helper()
	_, b := archive(t, platforms(t), info)
	path := filepath.Join(t.TempDir(), "veth-exporter.oci.tar")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestContainerdImport: the archive imports into a real containerd
// (`ctr images import`, Debian's containerd 1.6) under its name, CRI
// lists it, and a container of it prints the version and serves
// /metrics, run in the test's private namespaces.
func TestContainerdImport(t *testing.T) {
	r := critest.Start(t)
	b, err := os.ReadFile(writeArchive(t))
	if err != nil {
		t.Fatal(err)
	}
	r.ImportImage(t, b, ref)
	if out := r.Ctr(t, "run", "--rm", ref, "veth-version", "/bin/veth_exporter", "--version"); !strings.Contains(out, "version 0.1.0") {
		t.Errorf("ctr run %s --version:\n%s", ref, out)
	}
	addr := "127.0.0.1:" + monitortest.FreePort(t)
	r.Ctr(t, "run", "-d", "--net-host", ref, "veth-serve", "/bin/veth_exporter", "--web.listen-address="+addr,
		"--state.path=/state.json", "--inventory.trust-pid-namespace")
	t.Cleanup(func() {
		r.Ctr(t, "task", "rm", "--force", "veth-serve")
		r.Ctr(t, "container", "rm", "veth-serve")
	})
	body := scrape(t, "http://"+addr+"/metrics")
	if !strings.Contains(body, `veth_exporter_build_info{`) || !strings.Contains(body, `version="0.1.0"`) {
		t.Errorf("the image's /metrics has no build_info of 0.1.0:\n%.2000s", body)
	}
}

// TestPodmanLoad: `podman load` (Podman 4.3) takes the archive under its
// name, and `podman run` runs it.
func TestPodmanLoad(t *testing.T) {
	p := podmantest.Start(t, podmantest.Options{})
	if out := p.Run(t, "load", "-i", writeArchive(t)); !strings.Contains(out, ref) {
		t.Errorf("podman load: %s, want %s loaded", out, ref)
	}
	if out := p.Run(t, "run", "--rm", "--network=none", ref, "--version"); !strings.Contains(out, "version 0.1.0") {
		t.Errorf("podman run %s --version:\n%s", ref, out)
	}
}

// scrape polls url for up to 20 s until it answers 200, and returns the body.
func scrape(t *testing.T, url string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no answer after 20 s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMakeRelease: `make release` builds, for linux/amd64 and
// linux/arm64, a tarball (the binary, LICENSE, README, CHANGELOG, the
// unit and drop-in, the rules, the dashboard), a .deb and an .rpm, and the
// image archive of both, with their sha256sums.txt; run twice into two
// directories it gives the same sums: every artifact, binaries included,
// is reproducible.
func TestMakeRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the exporter, packages and image twice")
	}
	version := strings.TrimSpace(readFile(t, "../VERSION"))
	var sums []string
	for _, dist := range []string{t.TempDir(), t.TempDir()} {
		if out, err := exec.Command("make", "-C", "..", "release", "DIST="+dist).CombinedOutput(); err != nil {
			t.Fatalf("make release: %v\n%s", err, out)
		}
		sums = append(sums, readFile(t, filepath.Join(dist, "sha256sums.txt")))
		tarball := filepath.Join(dist, "veth_exporter-"+version+".linux-amd64.tar.gz")
		out, err := exec.Command("tar", "tzf", tarball).Output()
		if err != nil {
			t.Fatalf("tar tzf %s: %v", tarball, err)
		}
		dir := "veth_exporter-" + version + ".linux-amd64/"
		want := []string{dir, dir + "CHANGELOG.md", dir + "LICENSE", dir + "README.md", dir + "remediation.conf",
			dir + "veth-exporter.json", dir + "veth_exporter", dir + "veth_exporter.rules.yml", dir + "veth_exporter.service"}
		if got := strings.Fields(string(out)); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s holds %v, want %v", tarball, got, want)
		}
	}
	for _, name := range []string{"linux-amd64.tar.gz", "linux-arm64.tar.gz", "_amd64.deb", "_arm64.deb", ".x86_64.rpm", ".aarch64.rpm", ".oci.tar"} {
		if !strings.Contains(sums[0], name+"\n") {
			t.Errorf("sha256sums.txt lists no *%s:\n%s", name, sums[0])
		}
	}
	if sums[0] != sums[1] {
		t.Errorf("make release twice: the sums differ:\n%s\n%s", sums[0], sums[1])
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSkopeoCopy: skopeo (Debian 12's 1.9, the tool that pushes an
// archive to a registry) reads the archive: it copies both platforms'
// images, every blob checked against its digest, and inspects each.
func TestSkopeoCopy(t *testing.T) {
	skopeo := fixturesys.Binaries(t, "TestSkopeoCopy", "skopeo", "skopeo")[0]
	src := "oci-archive:" + writeArchive(t)
	dst := "oci:" + filepath.Join(t.TempDir(), "copy") + ":0.1.0"
	if out, err := exec.Command(skopeo, "copy", "--all", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy --all: %v\n%s", err, out)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		out, err := exec.Command(skopeo, "inspect", "--override-os", "linux", "--override-arch", arch, dst).Output()
		if err != nil {
			t.Fatalf("skopeo inspect %s: %v", arch, err)
		}
		var img struct {
			Architecture, Os string
			Labels           map[string]string
		}
		if err := json.Unmarshal(out, &img); err != nil || img.Architecture != arch || img.Os != "linux" || img.Labels["org.opencontainers.image.version"] != "0.1.0" {
			t.Errorf("skopeo inspect %s: %+v (%v)", arch, img, err)
		}
	}
}
