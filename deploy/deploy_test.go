// Package deploy_test checks the example deployment files under deploy/
// with the tools that read them: systemd-analyze for the systemd unit and
// its drop-ins, promtool for the Prometheus configuration. (The Kubernetes
// manifests have a module of their own, deploy/kubernetes/validate.)
package deploy_test

import (
	"encoding/json"
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
// only a warning to systemd), checks that the real binary accepts the
// flags each variant starts it with, and asks systemd-analyze security
// what the unit and its drop-ins add up to: exactly the capabilities and
// namespace kinds the variant needs, the hardening kept.
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
		name    string
		dropIns []string
		// caps are exactly the capabilities the unit keeps, namespaces
		// the kinds of namespace RestrictNamespaces= lets it enter.
		caps       []string
		namespaces []string
		// flags must be among ExecStart's.
		flags []string
	}{
		{"monitoring", nil, []string{"CAP_SYS_PTRACE"}, nil, nil},
		// The release enters the host's mount namespace (setns needs
		// CAP_SYS_ADMIN and CAP_SYS_CHROOT) and unmounts there; the CNI
		// DEL's plugins run there too (CAP_NET_RAW for iptables-legacy).
		{"remediation", []string{"remediation.conf"},
			[]string{"CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_NET_RAW"}, []string{"mnt"},
			[]string{"--remediation.mode=enforce", "--remediation.method=auto"}},
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
			if out, err := exec.Command(bin, append(slices.Clone(args), "--version")...).CombinedOutput(); err != nil {
				t.Errorf("veth_exporter %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			for _, f := range tc.flags {
				if !slices.Contains(args, f) {
					t.Errorf("%s with %v: ExecStart lacks %s: %v", unitName, tc.dropIns, f, args)
				}
			}
			t.Logf("systemd-analyze verify: %s with %v, ExecStart flags %v", unitName, tc.dropIns, args)
			checkEffective(t, analyze, dir, tc.caps, tc.namespaces)
		})
	}
}

// checkEffective asks systemd-analyze security what the unit in dir and
// its drop-ins add up to, as systemd merges them (a drop-in's
// CapabilityBoundingSet= adds to the unit's; RestrictNamespaces= lines
// merge too), and wants exactly caps in the bounding set, exactly the
// namespace kinds namespaces allowed, and ProtectSystem= and
// NoNewPrivileges= kept.
// capabilityGroups are the items systemd-analyze security reports for
// several capabilities at once (their json_field after
// "CapabilityBoundingSet_", as systemd 252 spells it), with the
// capabilities each holds: an item is taken away only when all of them
// are.
var capabilityGroups = map[string][]string{
	"CAP_NET_BIND_SERVICE_BROADCAST_RAW)": {"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_RAW"},
}

func checkEffective(t *testing.T, analyze, dir string, caps, namespaces []string) {
	t.Helper()
	cmd := exec.Command(analyze, "security", "--offline=yes", "--json=short", filepath.Join(dir, unitName))
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":", "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=yes %s: %v", unitName, err)
	}
	var items []struct {
		Name  string `json:"name"`
		Field string `json:"json_field"`
		Set   *bool  `json:"set"`
	}
	if err := json.Unmarshal(out, &items); err != nil {
		t.Fatalf("systemd-analyze security --json=short: %v\n%s", err, out)
	}
	// set is true where the unit takes the item away: a capability it
	// drops, a namespace kind it forbids.
	seen := map[string]bool{}
	for _, it := range items {
		seen[it.Field] = true
		var want bool
		switch {
		case strings.HasPrefix(it.Field, "CapabilityBoundingSet_"):
			item := strings.TrimPrefix(it.Field, "CapabilityBoundingSet_")
			members, ok := capabilityGroups[item]
			if !ok {
				members = []string{item}
			}
			want = !slices.ContainsFunc(members, func(c string) bool { return slices.Contains(caps, c) })
		case strings.HasPrefix(it.Field, "RestrictNamespaces_"):
			want = !slices.Contains(namespaces, strings.TrimPrefix(it.Field, "RestrictNamespaces_"))
		case it.Field == "ProtectSystem" || it.Field == "NoNewPrivileges":
			want = true
		default:
			continue
		}
		if it.Set == nil || *it.Set != want {
			t.Errorf("systemd-analyze security: %s is set %v, want %v (capabilities %v, namespaces %v)", it.Name, deref(it.Set), want, caps, namespaces)
		}
	}
	// Each capability and kind named must be one systemd-analyze reports,
	// or the loop above checked nothing for it.
	for _, c := range caps {
		item := c
		for group, members := range capabilityGroups {
			if slices.Contains(members, c) {
				item = group
			}
		}
		if !seen["CapabilityBoundingSet_"+item] {
			t.Errorf("systemd-analyze security reports nothing on %s", c)
		}
	}
	for _, n := range append([]string{"mnt", "net", "user"}, namespaces...) {
		if !seen["RestrictNamespaces_"+n] {
			t.Errorf("systemd-analyze security reports nothing on namespace kind %s", n)
		}
	}
}

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
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
