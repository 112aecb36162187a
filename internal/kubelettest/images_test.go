package kubelettest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// TestDockerfileImage builds the repository's Dockerfile into an image and
// reads back what a runtime would: the binary at the path COPY names, with
// its mode, and the entrypoint, user and port the Dockerfile sets. The same
// inputs give the same archive.
func TestDockerfileImage(t *testing.T) {
	ctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctx, "veth_exporter"), []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	archive, err := DockerfileImage("../../Dockerfile", ctx, []string{"docker.io/library/veth-exporter:local"})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := DockerfileImage("../../Dockerfile", ctx, []string{"docker.io/library/veth-exporter:local"})
	if !bytes.Equal(archive, again) {
		t.Error("the same Dockerfile and context give two different archives")
	}
	files := fixturesys.MustTarFiles(t, archive)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest.json: %s (%v)", files["manifest.json"], err)
	}
	var config struct {
		Config struct {
			Entrypoint   []string
			User         string
			ExposedPorts map[string]struct{}
		} `json:"config"`
	}
	if err := json.Unmarshal(files[manifest[0].Config], &config); err != nil {
		t.Fatal(err)
	}
	c := config.Config
	if strings.Join(c.Entrypoint, " ") != "/bin/veth_exporter" || c.User != "0" || len(c.ExposedPorts) != 1 {
		t.Errorf("config %+v, want the Dockerfile's entrypoint, user 0 and port 9750/tcp", c)
	}
	if _, ok := c.ExposedPorts["9750/tcp"]; !ok {
		t.Errorf("exposed ports %v, want 9750/tcp", c.ExposedPorts)
	}
	layer := fixturesys.MustTarFiles(t, files[manifest[0].Layers[0]])
	if string(layer["bin/veth_exporter"]) != "#!binary" {
		t.Errorf("layer files %v, want bin/veth_exporter from the context", keys(layer))
	}

	for _, bad := range []string{"FROM debian:12\n", "FROM scratch\nRUN true\n", "FROM scratch\nENTRYPOINT /bin/x\n", "COPY a b\n"} {
		df := filepath.Join(t.TempDir(), "Dockerfile")
		if err := os.WriteFile(df, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := DockerfileImage(df, ctx, []string{"x:1"}); err == nil {
			t.Errorf("Dockerfile %q: built, want an error", bad)
		}
	}
}

func keys(m map[string][]byte) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	return k
}
