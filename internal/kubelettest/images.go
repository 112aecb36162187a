package kubelettest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// BusyboxImage is the tag of the workload image [Node.ImportBusybox]
// imports; the kubelet asks for it as written in a pod's image.
const BusyboxImage = "localhost/veth-exporter-busybox:local"

// ImportBusybox imports an image of the machine's static busybox with its
// applet links (sh, sleep, ip, …) as [BusyboxImage].
func (n *Node) ImportBusybox(t testing.TB) {
	t.Helper()
	layer, err := fixturesys.BusyboxRootfs()
	if err != nil {
		netnstest.Unavailable(t, fmt.Sprintf("busybox: %v (install busybox-static)", err))
	}
	archive, err := fixturesys.DockerArchive([]string{BusyboxImage},
		fixturesys.ImageConfig{Cmd: []string{"sh"}, Env: []string{fixturesys.DefaultPath}}, layer)
	if err != nil {
		t.Fatal(err)
	}
	n.Runtime.ImportImage(t, archive, BusyboxImage)
}

// ImportDockerfile builds the image a Dockerfile describes, FROM scratch,
// from the files of contextDir, and imports it under each of tags (a
// name without a registry is docker.io/library/NAME, as the kubelet asks
// for it). It reads the instructions a FROM-scratch image of static
// binaries uses (FROM scratch, COPY, ENV, EXPOSE, USER, ENTRYPOINT and
// CMD in JSON form) and refuses any other: the image run is the one the
// Dockerfile says.
func (n *Node) ImportDockerfile(t testing.TB, dockerfile, contextDir string, tags ...string) {
	t.Helper()
	archive, err := DockerfileImage(dockerfile, contextDir, tags)
	if err != nil {
		t.Fatalf("kubelettest: %v", err)
	}
	n.Runtime.ImportImage(t, archive, tags[0])
}

// DockerfileImage is the docker-archive tar of [Node.ImportDockerfile].
func DockerfileImage(dockerfile, contextDir string, tags []string) ([]byte, error) {
	f, err := os.Open(dockerfile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := &imageBuilder{contextDir: contextDir, dirs: map[string]bool{},
		config: fixturesys.ImageConfig{Env: []string{fixturesys.DefaultPath}}}
	sc := bufio.NewScanner(f)
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		if err := b.step(strings.ToUpper(instr), strings.TrimSpace(rest)); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", dockerfile, lineNo, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !b.from {
		return nil, fmt.Errorf("%s: no FROM scratch", dockerfile)
	}
	layer, err := fixturesys.Layer(b.entries)
	if err != nil {
		return nil, err
	}
	return fixturesys.DockerArchive(tags, b.config, layer)
}

// imageBuilder is a FROM-scratch image being built from a Dockerfile.
type imageBuilder struct {
	contextDir string
	from       bool
	config     fixturesys.ImageConfig
	entries    []fixturesys.LayerEntry
	dirs       map[string]bool
}

// step applies one instruction.
func (b *imageBuilder) step(instr, rest string) error {
	switch instr {
	case "FROM":
		if rest != "scratch" {
			return errors.New("only FROM scratch is built here")
		}
		b.from = true
	case "COPY":
		return b.copy(rest)
	case "ENV":
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return errors.New("want ENV KEY=VALUE")
		}
		b.config.Env = append(b.config.Env, k+"="+v)
	case "EXPOSE":
		if b.config.ExposedPorts == nil {
			b.config.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range strings.Fields(rest) {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			b.config.ExposedPorts[p] = struct{}{}
		}
	case "USER":
		b.config.User = rest
	case "ENTRYPOINT", "CMD":
		var argv []string
		if err := json.Unmarshal([]byte(rest), &argv); err != nil {
			return errors.New("want the JSON form")
		}
		if instr == "CMD" {
			b.config.Cmd = argv
		} else {
			b.config.Entrypoint = argv
		}
	default:
		return errors.New("not an instruction this harness builds")
	}
	return nil
}

// copy adds COPY SRC DEST: one file of the context, with its mode, and
// the directories above it.
func (b *imageBuilder) copy(rest string) error {
	f := strings.Fields(rest)
	if len(f) != 2 || strings.HasPrefix(f[0], "--") {
		return errors.New("want COPY SRC DEST")
	}
	src := filepath.Join(b.contextDir, f[0])
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	dest := strings.TrimPrefix(path.Clean(f[1]), "/")
	if strings.HasSuffix(f[1], "/") {
		dest = path.Join(dest, path.Base(f[0]))
	}
	var dirs []fixturesys.LayerEntry
	for d := path.Dir(dest); d != "." && !b.dirs[d]; d = path.Dir(d) {
		b.dirs[d] = true
		dirs = append([]fixturesys.LayerEntry{{Name: d + "/", Mode: 0o755}}, dirs...)
	}
	b.entries = append(append(b.entries, dirs...), fixturesys.LayerEntry{Name: dest, Mode: int64(st.Mode().Perm()), Data: data})
	return nil
}
