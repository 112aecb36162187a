// Command release builds what a veth_exporter release ships besides the
// binaries, without a daemon: `release image` writes the multi-platform
// OCI image archive that `make image` makes.
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
	if len(os.Args) < 2 || os.Args[1] != "image" {
		fmt.Fprintln(os.Stderr, "usage: release image -out FILE -ref REF -version V -revision R -binary OS/ARCH=PATH... [-created UNIX]")
		os.Exit(2)
	}
	if err := image(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "release image: %v\n", err)
		os.Exit(1)
	}
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
	var when time.Time
	if *created != "" {
		secs, err := strconv.ParseInt(*created, 10, 64)
		if err != nil {
			return fmt.Errorf("-created %q: not Unix seconds", *created)
		}
		when = time.Unix(secs, 0).UTC()
	} else {
		when = time.Unix(0, 0).UTC()
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
