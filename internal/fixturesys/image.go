package fixturesys

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"path"
	"runtime"
	"strings"
	"testing"
	"time"
)

// epoch is the time of every file of the images made here: the same
// inputs give the same image, digest included.
var epoch = time.Unix(0, 0).UTC()

// LayerEntry is one entry of an image layer: a directory (name ending in
// "/"), a symbolic link (Link set) or a regular file (Data).
type LayerEntry struct {
	Name string
	Mode int64
	Data []byte
	Link string
}

// Layer returns an image layer, a tar of entries in their order, with
// fixed times and owner root.
func Layer(entries []LayerEntry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, ModTime: epoch}
		switch {
		case strings.HasSuffix(e.Name, "/"):
			h.Typeflag = tar.TypeDir
		case e.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.Link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ImageConfig is what an image says of how to run it: the fields of the
// OCI image configuration that a Dockerfile sets.
type ImageConfig struct {
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	StopSignal   string              `json:"StopSignal,omitempty"`
}

// DefaultPath is the PATH an image gets unless it sets one.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DockerArchive returns a docker-archive tar (`docker save` format, which
// `ctr images import` and `docker load` read) of a one-layer image for
// this machine's architecture, tagged with each of tags.
func DockerArchive(tags []string, config ImageConfig, layer []byte) ([]byte, error) {
	diffID := sha256.Sum256(layer)
	layerDir := hex.EncodeToString(diffID[:])
	configJSON, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config":       config,
		"rootfs": map[string]any{
			"type":     "layers",
			"diff_ids": []string{"sha256:" + layerDir},
		},
	})
	if err != nil {
		return nil, err
	}
	configSum := sha256.Sum256(configJSON)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   configName,
		"RepoTags": tags,
		"Layers":   []string{layerDir + "/layer.tar"},
	}})
	if err != nil {
		return nil, err
	}
	var entries []LayerEntry
	for _, f := range []struct {
		name string
		data []byte
	}{
		{layerDir + "/layer.tar", layer},
		{configName, configJSON},
		{"manifest.json", manifest},
	} {
		if dir := path.Dir(f.name); dir != "." {
			entries = append(entries, LayerEntry{Name: dir + "/", Mode: 0o755})
		}
		entries = append(entries, LayerEntry{Name: f.name, Mode: 0o644, Data: f.data})
	}
	return Layer(entries)
}

// TarFiles returns the regular files of a tar (an image archive, a layer)
// by name.
func TarFiles(b []byte) (map[string][]byte, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			files[h.Name] = data
		}
	}
}

// MustTarFiles is [TarFiles] for tests: an error fails t.
func MustTarFiles(t testing.TB, b []byte) map[string][]byte {
	t.Helper()
	files, err := TarFiles(b)
	if err != nil {
		t.Fatal(err)
	}
	return files
}
