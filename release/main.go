// Command release builds what a veth_exporter release ships besides the
// binaries, without a daemon: `release image` writes the multi-platform
// OCI image archive that `make image` makes, `release package` a .deb or
// .rpm (nfpm) that `make packages` makes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	commands := map[string]func([]string) error{"image": image, "package": pkg}
	var run func([]string) error
	if len(os.Args) >= 2 {
		run = commands[os.Args[1]]
	}
	if run == nil {
		fmt.Fprintln(os.Stderr, "usage:\n"+
			"  release image -out FILE -ref REF -version V -revision R -binary OS/ARCH=PATH... [-created UNIX]\n"+
			"  release package -format deb|rpm -arch ARCH -version V -binary PATH -out DIR [-root DIR] [-created UNIX]")
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "release %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// createdTime parses -created: Unix seconds, else the Unix epoch.
func createdTime(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	secs, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("-created %q: not Unix seconds", s)
	}
	return time.Unix(secs, 0).UTC(), nil
}

func pkg(args []string) error {
	fs := flag.NewFlagSet("package", flag.ContinueOnError)
	var in PackageInput
	fs.StringVar(&in.Format, "format", "", "deb or rpm")
	fs.StringVar(&in.Arch, "arch", "", "the Go architecture of the binary: amd64, arm64")
	fs.StringVar(&in.Version, "version", "", "the release version")
	fs.StringVar(&in.Binary, "binary", "", "the static binary")
	fs.StringVar(&in.Root, "root", "..", "the repository's root")
	out := fs.String("out", "", "the directory to write the package to")
	created := fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "every file's mtime, Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if in.Format == "" || in.Arch == "" || in.Version == "" || in.Binary == "" || *out == "" {
		return errors.New("-format, -arch, -version, -binary and -out are needed")
	}
	var err error
	if in.MTime, err = createdTime(*created); err != nil {
		return err
	}
	name, err := PackageFileName(in)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "veth-exporter-package-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	f, err := os.CreateTemp(*out, ".package-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := BuildPackage(in, tmp, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(*out, name)); err != nil {
		return err
	}
	fmt.Println(filepath.Join(*out, name))
	return nil
}

// platformFlags collects -binary OS/ARCH=PATH.
type platformFlags []Platform

func (p *platformFlags) String() string { return fmt.Sprint(*p) }

func (p *platformFlags) Set(s string) error {
	plat, path, ok := strings.Cut(s, "=")
	goos, arch, ok2 := strings.Cut(plat, "/")
	if !ok || !ok2 || goos == "" || arch == "" || path == "" {
		return fmt.Errorf("%q: want OS/ARCH=PATH, e.g. linux/amd64=dist/linux-amd64/veth_exporter", s)
	}
	*p = append(*p, Platform{OS: goos, Arch: arch, Binary: path})
	return nil
}

func image(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	out := fs.String("out", "", "the OCI archive to write")
	ref := fs.String("ref", "", "the image's name, a full reference (docker.io/library/veth-exporter:0.1.0)")
	version := fs.String("version", "", "the version, label org.opencontainers.image.version")
	revision := fs.String("revision", "", "the commit, label org.opencontainers.image.revision")
	created := fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "the creation time and every mtime, Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	var platforms platformFlags
	fs.Var(&platforms, "binary", "a platform's static binary, OS/ARCH=PATH; repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *ref == "" || *version == "" || len(platforms) == 0 {
		return errors.New("-out, -ref, -version and at least one -binary are needed")
	}
	when, err := createdTime(*created)
	if err != nil {
		return err
	}
	idx, err := BuildIndex(platforms, ImageInfo{Version: *version, Revision: *revision, Created: when})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".image-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := WriteOCIArchive(tmp, idx, *ref, when); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s, index %s, %d platforms\n", *out, *ref, digest, len(platforms))
	return nil
}
