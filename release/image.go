package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image is the Dockerfile's, built without a daemon: FROM scratch, the
// static binary at /bin/veth_exporter, port 9750, user 0, the binary as
// entrypoint.
const (
	binaryPath = "bin/veth_exporter"
	port       = "9750/tcp"
)

// ImageInfo is what every image of the index says about itself.
type ImageInfo struct {
	// Version and Revision become the OCI labels
	// org.opencontainers.image.version and .revision.
	Version, Revision string
	// Created is the images' creation time and every file's mtime:
	// the same inputs give the same digests.
	Created time.Time
}

// Platform is one image of the index: a platform and its binary.
type Platform struct {
	OS, Arch string
	Binary   string // path of the static binary for it
}

// BuildIndex builds an OCI image index with one image per platform, in the
// order given. Nothing in it depends on when or where it is built: the
// same binaries and info give the same digests.
func BuildIndex(platforms []Platform, info ImageInfo) (v1.ImageIndex, error) {
	if len(platforms) == 0 {
		return nil, fmt.Errorf("no platform")
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	seen := map[string]bool{}
	for _, p := range platforms {
		key := p.OS + "/" + p.Arch
		if seen[key] {
			return nil, fmt.Errorf("platform %s twice", key)
		}
		seen[key] = true
		img, err := buildImage(p, info)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}},
		})
	}
	return idx, nil
}

func buildImage(p Platform, info ImageInfo) (v1.Image, error) {
	bin, err := os.ReadFile(p.Binary)
	if err != nil {
		return nil, err
	}
	layerTar, err := binaryLayer(bin, info.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: info.Created},
			CreatedBy: "COPY veth_exporter /bin/veth_exporter",
		},
	}); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = p.OS, p.Arch
	cf.Created = v1.Time{Time: info.Created}
	cf.Config = v1.Config{
		Entrypoint:   []string{"/" + binaryPath},
		User:         "0",
		ExposedPorts: map[string]struct{}{port: {}},
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":    "veth_exporter",
			"org.opencontainers.image.version":  info.Version,
			"org.opencontainers.image.revision": info.Revision,
			"org.opencontainers.image.source":   "https://github.com/veth-exporter/veth_exporter",
			"org.opencontainers.image.licenses": "Apache-2.0",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// binaryLayer is the layer's tar: the directory bin/ and the binary in it,
// owned by root, with fixed modes and mtimes.
func binaryLayer(bin []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: binaryPath, Mode: 0o755, Size: int64(len(bin))},
	} {
		h.ModTime, h.Format = mtime, tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bin); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteOCIArchive writes idx as an OCI image layout in a tar archive (what
// `podman load`, `ctr images import` and `skopeo copy oci-archive:` read),
// named ref (a full reference, docker.io/library/veth-exporter:0.1.0) by
// the annotations OCI tools and containerd read. The archive is
// reproducible: sorted entries, fixed owners, modes and mtime.
func WriteOCIArchive(w io.Writer, idx v1.ImageIndex, ref string, mtime time.Time) error {
	dir, err := os.MkdirTemp("", "veth-exporter-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
		"io.containerd.image.name":          ref,
	})); err != nil {
		return err
	}
	var files []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		files = append(files, path)
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(files)
	tw := tar.NewWriter(w)
	for _, path := range files {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(strings.TrimPrefix(path, dir+string(filepath.Separator)))
		h := &tar.Header{Name: name, ModTime: mtime, Mode: 0o644, Format: tar.FormatPAX}
		if st.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, name+"/", 0o755
		} else {
			h.Typeflag, h.Size = tar.TypeReg, st.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !st.IsDir() {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
