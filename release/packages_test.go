package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// buildPackage builds the package of format for the test's amd64 binary
// into a directory of the test's, and returns its path.
func buildPackage(t *testing.T, format string) string {
	t.Helper()
	in := PackageInput{Format: format, Arch: "amd64", Version: "0.1.0", Binary: staticBinaries(t)["amd64"], Root: "..", MTime: info.Created}
	name, err := PackageFileName(in)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := BuildPackage(in, t.TempDir(), &buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPackagedUnit: the packaged unit and drop-in are deploy/systemd's
// but for the binary's path and its arguments: every other line is the
// repository's.
func TestPackagedUnit(t *testing.T) {
	for _, tt := range []struct {
		file    string
		convert func(string) (string, error)
		want    []string // the lines only the packaged file has
	}{
		{"veth_exporter.service", func(s string) (string, error) { return PackagedUnit(s, "/etc/default/veth_exporter") },
			[]string{"EnvironmentFile=-/etc/default/veth_exporter", "ExecStart=/usr/bin/veth_exporter $ARGS"}},
		{"remediation.conf", PackagedDropIn, []string{`ExecStart=/usr/bin/veth_exporter $ARGS \`}},
	} {
		b, err := os.ReadFile(filepath.Join("../deploy/systemd", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		packaged, err := tt.convert(string(b))
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		orig, got := strings.Split(string(b), "\n"), strings.Split(packaged, "\n")
		var added []string
		for _, line := range got {
			if !slices.Contains(orig, line) && !strings.HasPrefix(line, "#") {
				added = append(added, line)
			}
		}
		if !slices.Equal(added, tt.want) {
			t.Errorf("%s: the packaged file adds %q, want %q", tt.file, added, tt.want)
		}
		for _, line := range orig {
			if !slices.Contains(got, line) && !strings.HasPrefix(line, "#") && !strings.Contains(line, "/usr/local/bin/veth_exporter") &&
				!strings.Contains(line, "--web.listen-address=") && !strings.Contains(line, "--state.path=") {
				t.Errorf("%s: the packaged file lacks %q", tt.file, line)
			}
		}
	}
}

// TestDeb: the .deb holds the binary, the unit, the arguments file (a
// conffile), the examples and Debian's documentation, runs the
// maintainer scripts of deploy/packaging, and lintian (Debian 12's) finds
// nothing but what the package's overrides justify. Built twice it is
// the same bytes.
func TestDeb(t *testing.T) {
	deb := buildPackage(t, "deb")
	list := run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root", "./usr/bin/veth_exporter", "./lib/systemd/system/veth_exporter.service", "./etc/default/veth_exporter",
		"./usr/share/doc/veth-exporter/copyright", "./usr/share/doc/veth-exporter/changelog.Debian.gz",
		"./usr/share/doc/veth-exporter/examples/remediation.conf", "./usr/share/lintian/overrides/veth-exporter",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("the .deb lacks %s:\n%s", want, list)
		}
	}
	if conffiles := run(t, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends"); !strings.Contains(conffiles, "Package: veth-exporter") ||
		!strings.Contains(conffiles, "Version: 0.1.0-1") || !strings.Contains(conffiles, "Architecture: amd64") {
		t.Errorf("control fields:\n%s", conffiles)
	}
	ctrl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctrl)
	if b, err := os.ReadFile(filepath.Join(ctrl, "conffiles")); err != nil || strings.TrimSpace(string(b)) != "/etc/default/veth_exporter" {
		t.Errorf("conffiles %q (%v), want /etc/default/veth_exporter", b, err)
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		got, err := os.ReadFile(filepath.Join(ctrl, script))
		want, err2 := os.ReadFile(filepath.Join("../deploy/packaging/deb", script))
		if err != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: not deploy/packaging/deb/%s (%v, %v)", script, script, err, err2)
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(ctrl, script)).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", script, err, out)
		}
	}
	lintian := fixturesys.Binaries(t, "TestDeb", "lintian", "lintian")[0]
	cmd := exec.Command(lintian, "--tag-display-limit", "0", "--display-info", "--fail-on", "error,warning,info", deb)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	if again := buildPackage(t, "deb"); !sameFile(t, deb, again) {
		t.Error("two builds of the .deb differ")
	}
}

// TestRPM: the .rpm holds the binary, the unit, /etc/sysconfig's
// arguments file (a config file, noreplace), the license and examples,
// with deploy/packaging's scriptlets; built twice it is the same bytes.
func TestRPM(t *testing.T) {
	rpm := buildPackage(t, "rpm")
	tool := fixturesys.Binaries(t, "TestRPM", "rpm", "rpm")[0]
	if got := run(t, tool, "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}", rpm); got != "veth-exporter 0.1.0 1 x86_64 Apache-2.0" {
		t.Errorf("rpm -qp: %q", got)
	}
	list := run(t, tool, "-qlp", rpm)
	want := []string{"/etc/sysconfig/veth_exporter", "/usr/bin/veth_exporter", "/usr/lib/systemd/system/veth_exporter.service",
		"/usr/share/doc/veth-exporter/examples/remediation.conf", "/usr/share/doc/veth-exporter/examples/veth-exporter.json",
		"/usr/share/doc/veth-exporter/examples/veth_exporter.rules.yml", "/usr/share/licenses/veth-exporter/LICENSE"}
	if got := strings.Fields(list); !slices.Equal(got, want) {
		t.Errorf("rpm -qlp: %v, want %v", got, want)
	}
	if got := strings.TrimSpace(run(t, tool, "-qp", "--configfiles", rpm)); got != "/etc/sysconfig/veth_exporter" {
		t.Errorf("config files: %q", got)
	}
	scripts := run(t, tool, "-qp", "--scripts", rpm)
	for _, s := range []string{"post", "preun", "postun"} {
		b, err := os.ReadFile(filepath.Join("../deploy/packaging/rpm", s))
		if err != nil || !strings.Contains(scripts, strings.TrimSpace(string(b))) {
			t.Errorf("the %s scriptlet is not deploy/packaging/rpm/%s (%v):\n%s", s, s, err, scripts)
		}
	}
	if again := buildPackage(t, "rpm"); !sameFile(t, rpm, again) {
		t.Error("two builds of the .rpm differ")
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}
