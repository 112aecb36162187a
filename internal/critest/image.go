package critest

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// pauseSource is the pause program of the sandbox image.
//
//go:embed testdata/pause/main.go
var pauseSource []byte

// buildTimeout bounds the build of the pause binary: a cold build of a
// standard-library program takes seconds.
const buildTimeout = 5 * time.Minute

// pauseImage returns the tag of the sandbox image and the image as a
// docker-archive tar, which `ctr images import` loads. The image holds
// one static binary, /pause, built from [pauseSource] with CGO_ENABLED=0
// and cached by the hash of its source and architecture in
// $TMPDIR/veth_exporter-critest, so that only the first test binary on a
// machine builds it. The tag carries the hash: a changed source is a new
// image, never a stale one.
func pauseImage() (tag string, archive []byte, err error) {
	sum := sha256.Sum256(append(append([]byte(nil), pauseSource...), "\x00"+runtime.GOARCH...))
	hash := hex.EncodeToString(sum[:])[:16]
	tag = "localhost/veth-exporter-pause:" + hash
	cacheDir := filepath.Join(os.TempDir(), "veth_exporter-critest")
	cached := filepath.Join(cacheDir, "pause-"+hash+".tar")
	if b, err := os.ReadFile(cached); err == nil {
		return tag, b, nil
	}
	bin, err := buildPause()
	if err != nil {
		return "", nil, err
	}
	archive, err = dockerArchive(tag, bin)
	if err != nil {
		return "", nil, err
	}
	// Written aside and renamed, so that test binaries running at the
	// same time never read half a file.
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", nil, err
	}
	f, err := os.CreateTemp(cacheDir, "pause-*.tmp")
	if err != nil {
		return "", nil, err
	}
	_, werr := f.Write(archive)
	cerr := f.Close()
	merr := os.Chmod(f.Name(), 0o644)
	if err := errors.Join(werr, cerr, merr); err != nil {
		os.Remove(f.Name())
		return "", nil, err
	}
	if err := os.Rename(f.Name(), cached); err != nil {
		os.Remove(f.Name())
		return "", nil, err
	}
	return tag, archive, nil
}

// buildPause builds the pause program into a static binary and returns
// it. It needs the Go toolchain (the one that built the tests, if go is
// not in PATH) but no network: the program uses the standard library only.
func buildPause() ([]byte, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go") //nolint:staticcheck // the toolchain that built these tests, on the machine running them
	}
	dir, err := os.MkdirTemp("", "critest-pause-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for name, content := range map[string][]byte{
		"main.go": pauseSource,
		"go.mod":  []byte("module pause\n\ngo 1.22\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out := filepath.Join(dir, "pause")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	env := make([]string, 0, len(os.Environ())+5)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CGO_ENABLED", "GOFLAGS", "GOWORK", "GOPROXY", "GOTOOLCHAIN", "GOOS", "GOARCH":
			continue
		}
		env = append(env, kv)
	}
	// GOPROXY=off, GOTOOLCHAIN=local: the private network namespace has
	// no network, and nothing needs one.
	cmd.Env = append(env, "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off", "GOPROXY=off", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the pause binary: %s: %w\n%s", cmd, err, b)
	}
	return os.ReadFile(out)
}

// dockerArchive returns a docker-archive tar (`docker save` format) of a
// one-layer image tagged tag whose entrypoint is /pause.
func dockerArchive(tag string, pause []byte) ([]byte, error) {
	// The mount points runc needs in the root file system, so that it
	// does not have to create them.
	var entries []fixturesys.LayerEntry
	for _, dir := range []string{"dev/", "etc/", "proc/", "sys/", "tmp/"} {
		mode := int64(0o755)
		if dir == "tmp/" {
			mode = 0o1777
		}
		entries = append(entries, fixturesys.LayerEntry{Name: dir, Mode: mode})
	}
	layer, err := fixturesys.Layer(append(entries, fixturesys.LayerEntry{Name: "pause", Mode: 0o755, Data: pause}))
	if err != nil {
		return nil, err
	}
	return fixturesys.DockerArchive([]string{tag}, fixturesys.ImageConfig{
		Entrypoint: []string{"/pause"},
		Env:        []string{fixturesys.DefaultPath},
		StopSignal: "SIGTERM",
	}, layer)
}
