package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	vethexporter "github.com/veth-exporter/veth_exporter"
)

// buildWith builds the exporter with the extra go build flags into a
// directory of the test's, and returns its path.
func buildWith(t *testing.T, flags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "veth_exporter")
	args := append(append([]string{"build", "-o", bin}, flags...), ".")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

// versionLine is the first line of --version: "veth_exporter, version V
// (branch: B, revision: R)".
var versionLine = regexp.MustCompile(`^veth_exporter, version (\S*) \(branch: \S*, revision: (\S*)\)`)

func versionOf(t *testing.T, bin string) (version, revision string) {
	t.Helper()
	out, err := exec.Command(bin, "--version").CombinedOutput()
	m := versionLine.FindStringSubmatch(string(out))
	if err != nil || m == nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	return m[1], m[2]
}

// TestVersion: every way of building the exporter says which release and
// which commit it is. A plain `go build` in the git tree (Go stamps the
// commit by default) gives the VERSION file's version and the commit,
// with -modified for a tree with changes; a build without VCS stamping
// (`go run`, -buildvcs=false, a tree without git) the version and
// revision unknown; `make build`'s linker flags what they stamp. The
// serving exporter shows them in veth_exporter_build_info, on its
// landing page and on /veths.
func TestVersion(t *testing.T) {
	want := vethexporter.Version()
	file, err := os.ReadFile("../../VERSION")
	if err != nil || strings.TrimSpace(string(file)) != want || !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(want) {
		t.Fatalf("VERSION %q (%v), embedded %q: want one release version", file, err, want)
	}

	if v, r := versionOf(t, buildWith(t, "-buildvcs=false")); v != want || r != "unknown" {
		t.Errorf("go build -buildvcs=false: version %q, revision %q; want %s, unknown", v, r, want)
	}
	stamped := buildWith(t, "-ldflags=-X github.com/prometheus/common/version.Version=9.9.9 -X github.com/prometheus/common/version.Revision=abc123")
	if v, r := versionOf(t, stamped); v != "9.9.9" || r != "abc123" {
		t.Errorf("linker-stamped build: version %q, revision %q; want 9.9.9, abc123", v, r)
	}

	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git work tree (%v): Go records no commit", err)
	}
	commit := strings.TrimSpace(string(head))
	bin := buildWith(t, "-buildvcs=true")
	v, r := versionOf(t, bin)
	if v != want || (r != commit && r != commit+"-modified") {
		t.Errorf("go build in the git tree: version %q, revision %q; want %s, %s (-modified)", v, r, want, commit)
	}

	e := startExporterBinary(t, bin)
	m := e.scrape(t)
	if !regexp.MustCompile(`veth_exporter_build_info\{[^}]*revision="` + regexp.QuoteMeta(r) + `"[^}]*version="` + regexp.QuoteMeta(want) + `"[^}]*\} 1`).MatchString(m) {
		t.Errorf("veth_exporter_build_info lacks version %s, revision %s:\n%s", want, r, regexp.MustCompile(`(?m)^veth_exporter_build_info.*$`).FindString(m))
	}
	for _, path := range []string{"/", "/veths"} {
		if body := e.get(t, path); !strings.Contains(body, "version="+want) || !strings.Contains(body, "revision="+r) {
			t.Errorf("%s does not show version=%s and revision=%s", path, want, r)
		}
	}
}
