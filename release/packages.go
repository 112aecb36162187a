package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// The packages: the binary, the systemd unit (enabled and started on
// install on Debian, by preset on Red Hat's), the arguments file in the
// distribution's place, and the remediation drop-in as an example, not
// enabled. Their sources are in deploy/ (systemd/, packaging/).

// PackageInput is what a package is built from.
type PackageInput struct {
	// Format is deb or rpm; Arch a Go architecture (amd64, arm64).
	Format, Arch string
	// Version is the release version (0.1.0); Binary the static binary.
	Version, Binary string
	// Root is the repository's root, where deploy/ is read.
	Root string
	// MTime is every file's modification time.
	MTime time.Time
}

// maintainer is the packages' Maintainer field.
const maintainer = "veth_exporter maintainers <veth-exporter@users.noreply.github.com>"

// packageName is Debian's and Red Hat's name of the package: no
// underscore is allowed in a Debian package name.
const packageName = "veth-exporter"

// envFile is where a distribution keeps a service's arguments.
func envFile(format string) string {
	if format == "rpm" {
		return "/etc/sysconfig/veth_exporter"
	}
	return "/etc/default/veth_exporter"
}

// unitDir is where a distribution's packages put systemd units.
func unitDir(format string) string {
	if format == "rpm" {
		return "/usr/lib/systemd/system"
	}
	return "/lib/systemd/system"
}

// BuildPackage writes the package in to w. The files it generates (the
// packaged unit and drop-in, Debian's changelogs) go to the temporary
// directory tmp.
func BuildPackage(in PackageInput, tmp string, w io.Writer) error {
	if in.Format != "deb" && in.Format != "rpm" {
		return fmt.Errorf("package format %q: want deb or rpm", in.Format)
	}
	contents, err := packageContents(in, tmp)
	if err != nil {
		return err
	}
	info := &nfpm.Info{
		Name:        packageName,
		Arch:        in.Arch,
		Platform:    "linux",
		Version:     in.Version,
		Release:     "1",
		Section:     "net",
		Priority:    "optional",
		Maintainer:  maintainer,
		Description: "Prometheus exporter for host-side veth interfaces\nveth_exporter inventories every veth of a Docker, Podman or Kubernetes node,\nattributes each to its container, pod or process, says which are leftovers\nand why, and offers an Alertmanager webhook that removes them safely.",
		Vendor:      "veth_exporter",
		Homepage:    "https://github.com/veth-exporter/veth_exporter",
		License:     "Apache-2.0",
		MTime:       in.MTime,
	}
	info.Contents = contents
	info.Umask = 0o022
	packaging := filepath.Join(in.Root, "deploy/packaging")
	if in.Format == "deb" {
		info.Depends = []string{"init-system-helpers (>= 1.54~)"}
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(packaging, "deb/postinst"),
			PreRemove:   filepath.Join(packaging, "deb/prerm"),
			PostRemove:  filepath.Join(packaging, "deb/postrm"),
		}
	} else {
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(packaging, "rpm/post"),
			PreRemove:   filepath.Join(packaging, "rpm/preun"),
			PostRemove:  filepath.Join(packaging, "rpm/postun"),
		}
	}
	packager, err := nfpm.Get(in.Format)
	if err != nil {
		return err
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, in.Format); err != nil {
		return err
	}
	return packager.Package(info, w)
}

// packageContents are the package's files, the generated ones written to
// tmp.
func packageContents(in PackageInput, tmp string) (files.Contents, error) {
	read := func(rel string) (string, error) {
		b, err := os.ReadFile(filepath.Join(in.Root, rel))
		return string(b), err
	}
	unit, err := read("deploy/systemd/veth_exporter.service")
	if err != nil {
		return nil, err
	}
	if unit, err = PackagedUnit(unit, envFile(in.Format)); err != nil {
		return nil, fmt.Errorf("deploy/systemd/veth_exporter.service: %w", err)
	}
	dropIn, err := read("deploy/systemd/remediation.conf")
	if err != nil {
		return nil, err
	}
	if dropIn, err = PackagedDropIn(dropIn); err != nil {
		return nil, fmt.Errorf("deploy/systemd/remediation.conf: %w", err)
	}
	for name, content := range map[string]string{"veth_exporter.service": unit, "remediation.conf": dropIn} {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	packaging := filepath.Join(in.Root, "deploy/packaging")
	file := func(src, dst string, mode os.FileMode, typ string) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: in.MTime}}
	}
	doc := "/usr/share/doc/" + packageName
	docType := "" // a deb's documentation is any file under /usr/share/doc
	if in.Format == "rpm" {
		docType = files.TypeRPMDoc
	}
	contents := files.Contents{
		file(in.Binary, "/usr/bin/veth_exporter", 0o755, ""),
		file(filepath.Join(tmp, "veth_exporter.service"), unitDir(in.Format)+"/veth_exporter.service", 0o644, ""),
		file(filepath.Join(packaging, "veth_exporter.default"), envFile(in.Format), 0o644, files.TypeConfigNoReplace),
		file(filepath.Join(tmp, "remediation.conf"), doc+"/examples/remediation.conf", 0o644, docType),
		file(filepath.Join(in.Root, "alerts/veth_exporter.rules.yml"), doc+"/examples/veth_exporter.rules.yml", 0o644, docType),
		file(filepath.Join(in.Root, "dashboards/veth-exporter.json"), doc+"/examples/veth-exporter.json", 0o644, docType),
	}
	if in.Format == "rpm" {
		return append(contents, file(filepath.Join(in.Root, "LICENSE"), "/usr/share/licenses/"+packageName+"/LICENSE", 0o644, files.TypeRPMLicense)), nil
	}
	changelogs, err := debianChangelogs(in, tmp)
	if err != nil {
		return nil, err
	}
	return append(contents,
		file(filepath.Join(packaging, "copyright"), doc+"/copyright", 0o644, ""),
		file(filepath.Join(packaging, "lintian-overrides"), "/usr/share/lintian/overrides/"+packageName, 0o644, ""),
		file(changelogs[0], doc+"/changelog.Debian.gz", 0o644, ""),
		file(changelogs[1], doc+"/changelog.gz", 0o644, "")), nil
}

// PackageFileName is the conventional file name of the package in, as
// nfpm names it (veth-exporter_0.1.0-1_amd64.deb,
// veth-exporter-0.1.0-1.x86_64.rpm).
func PackageFileName(in PackageInput) (string, error) {
	packager, err := nfpm.Get(in.Format)
	if err != nil {
		return "", err
	}
	return packager.ConventionalFileName(&nfpm.Info{Name: packageName, Arch: in.Arch, Platform: "linux", Version: in.Version, Release: "1"}), nil
}

// debianChangelogs writes, gzipped as Debian wants them (no name, no
// time), the package's changelog.Debian (one entry: this release, pointing
// at the upstream changelog) and the upstream CHANGELOG.md, and returns
// their paths.
func debianChangelogs(in PackageInput, tmp string) ([2]string, error) {
	upstream, err := os.ReadFile(filepath.Join(in.Root, "CHANGELOG.md"))
	if err != nil {
		return [2]string{}, err
	}
	entry := fmt.Sprintf("%s (%s-1) unstable; urgency=medium\n\n"+
		"  * veth_exporter %s, packaged with nfpm; the changes are in\n"+
		"    /usr/share/doc/%s/changelog.gz.\n\n"+
		" -- %s  %s\n", packageName, in.Version, in.Version, packageName, maintainer, in.MTime.Format(time.RFC1123Z))
	paths := [2]string{filepath.Join(tmp, "changelog.Debian.gz"), filepath.Join(tmp, "changelog.gz")}
	for i, content := range [][]byte{[]byte(entry), upstream} {
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if err != nil {
			return paths, err
		}
		if _, err := zw.Write(content); err != nil {
			return paths, err
		}
		if err := zw.Close(); err != nil {
			return paths, err
		}
		if err := os.WriteFile(paths[i], buf.Bytes(), 0o644); err != nil {
			return paths, err
		}
	}
	return paths, nil
}
