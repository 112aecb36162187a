// Package deploy_test checks the example deployment files under deploy/
// with the tools that read them: systemd-analyze for the systemd unit and
// its drop-ins, promtool for the Prometheus configuration. (The Kubernetes
// manifests have a module of their own, deploy/kubernetes/validate.)
package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tool finds a checker in PATH; outside CI a missing one skips the test,
// in CI (VETH_EXPORTER_REQUIRE_PRIVILEGED=1, set by .ci/run) it fails it.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + " not found (Debian package " + pkg + "; .ci/run installs it)"
		if os.Getenv("VETH_EXPORTER_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

const unitName = "veth_exporter.service"

// execStart returns the arguments of the last non-empty ExecStart= of a
// unit file or drop-in (continuation lines joined), without the binary.
func execStart(t *testing.T, text string) (args []string, ok bool) {
	t.Helper()
	joined := strings.ReplaceAll(text, "\\\n", " ")
	for line := range strings.SplitSeq(joined, "\n") {
		v, found := strings.CutPrefix(strings.TrimSpace(line), "ExecStart=")
		if !found || strings.TrimSpace(v) == "" {
			continue
		}
		f := strings.Fields(v)
		args, ok = f[1:], true
	}
	return args, ok
}

// TestSystemdUnit runs systemd-analyze verify on the unit alone and with
// each drop-in (ExecStart pointed at a freshly built binary: verify wants
// it to exist), fails on any warning (an unknown key or a bad value is
// only a warning to systemd), and checks that the real binary accepts the
// flags each variant starts it with.
func TestSystemdUnit(t *testing.T) {
	analyze := tool(t, "systemd-analyze", "systemd")
	bin := filepath.Join(t.TempDir(), "veth_exporter")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/veth_exporter").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.ReplaceAll(string(b), "/usr/local/bin/veth_exporter", bin)
	}
	unit := read(unitName)

	// What the monitoring-only unit must and must not say.
	for _, want := range []string{
		"CapabilityBoundingSet=CAP_SYS_PTRACE\n", "AmbientCapabilities=CAP_SYS_PTRACE\n",
		"ProtectSystem=strict\n", "StateDirectory=veth_exporter\n", "NoNewPrivileges=yes\n",
		"--state.path=/var/lib/veth_exporter/state.json",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q", unitName, want)
		}
	}
	// Options that would hide the host's processes, namespaces or veths.
	for _, blinding := range []string{"ProtectProc=", "ProcSubset=", "PrivateNetwork=", "PrivatePIDs=", "PrivateUsers=", "NetworkNamespacePath="} {
		for line := range strings.SplitSeq(unit, "\n") {
			if strings.HasPrefix(line, blinding) {
				t.Errorf("%s sets %s, which blinds the exporter: %q", unitName, blinding, line)
			}
		}
	}

	for _, tc := range []struct {
		name     string
		dropIns  []string
		addFlags []string
	}{
		{"monitoring", nil, nil},
		{"remediation", []string{"remediation.conf"}, nil},
		{"release-netns", []string{"remediation.conf", "release-netns.conf"}, []string{"--remediation.release-netns"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, unitName), []byte(unit), 0o644); err != nil {
				t.Fatal(err)
			}
			args, _ := execStart(t, unit)
			if len(tc.dropIns) > 0 {
				d := filepath.Join(dir, unitName+".d")
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				for _, name := range tc.dropIns {
					text := read(name)
					if err := os.WriteFile(filepath.Join(d, name), []byte(text), 0o644); err != nil {
						t.Fatal(err)
					}
					if a, ok := execStart(t, text); ok {
						args = a
					}
				}
			}
			cmd := exec.Command(analyze, "verify", filepath.Join(dir, unitName))
			// The unit path ends with ":" so that systemd's own units
			// (multi-user.target, network-online.target) resolve too.
			cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":", "SYSTEMD_LOG_LEVEL=notice")
			out, err := cmd.CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify %s with %v: %v\n%s", unitName, tc.dropIns, err, out)
			}
			// The binary parses every flag before acting on --version and
			// refuses an unknown one.
			flags := append(slices.Clone(args), tc.addFlags...)
			if out, err := exec.Command(bin, append(flags, "--version")...).CombinedOutput(); err != nil {
				t.Errorf("veth_exporter %s: %v\n%s", strings.Join(flags, " "), err, out)
			}
			t.Logf("systemd-analyze verify: %s with %v, ExecStart flags %v", unitName, tc.dropIns, flags)
		})
	}
}

// TestPrometheusConfig checks the example Prometheus configuration and the
// rule file it loads.
func TestPrometheusConfig(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	out, err := exec.Command(promtool, "check", "config", "prometheus/prometheus.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config deploy/prometheus/prometheus.yml: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS: 1 rule files found") {
		t.Errorf("promtool found no rule file in deploy/prometheus/prometheus.yml:\n%s", out)
	}
}
