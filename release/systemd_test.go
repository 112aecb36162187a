package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/internal/podmantest"
)

// debianRoot extracts the Debian 12 root that .ci/debian-root builds (and
// caches) into a directory of the test's, and returns it.
func debianRoot(t *testing.T) string {
	t.Helper()
	fixturesys.Binaries(t, "TestDebUnderSystemd", "mmdebstrap", "mmdebstrap")
	out, err := exec.Command("bash", "../.ci/debian-root").Output()
	if err != nil {
		t.Fatalf(".ci/debian-root: %v", err)
	}
	root := t.TempDir()
	if b, err := exec.Command("tar", "-xf", strings.TrimSpace(string(out)), "-C", root).CombinedOutput(); err != nil {
		t.Fatalf("tar -xf: %v\n%s", err, b)
	}
	return root
}

// booted is a container whose PID 1 is systemd.
type booted struct {
	t  *testing.T
	p  *podmantest.Podman
	id string
}

// sh runs a shell command in the container and returns its output; a
// failure fails the test.
func (b *booted) sh(cmd string) string {
	b.t.Helper()
	out, err := b.try(cmd)
	if err != nil {
		b.t.Fatalf("in the container: %s: %v\n%s\njournal:\n%s", cmd, err, out, b.journal())
	}
	return out
}

func (b *booted) try(cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return b.p.TryRun(ctx, "exec", b.id, "sh", "-c", cmd)
}

func (b *booted) journal() string {
	out, _ := b.try("journalctl --no-pager -n 40 -u veth_exporter")
	return out
}

// until polls cmd in the container until its output holds want.
func (b *booted) until(what, cmd, want string) string {
	b.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := b.try(cmd)
		if err == nil && strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: %s gives %q (%v), want %q\njournal:\n%s", what, cmd, out, err, want, b.journal())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// capabilities returns the effective and bounding capability sets of the
// service's main process.
func (b *booted) capabilities() (eff, bnd uint64) {
	b.t.Helper()
	status := b.sh(`grep -E '^Cap(Eff|Bnd):' /proc/$(systemctl show -p MainPID --value veth_exporter)/status`)
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 16, 64)
		if err != nil {
			b.t.Fatal(err)
		}
		if f[0] == "CapEff:" {
			eff = v
		} else {
			bnd = v
		}
	}
	return eff, bnd
}

// Capability bits (linux/capability.h).
const (
	capNetAdmin  = 12
	capNetRaw    = 13
	capSysChroot = 18
	capSysPtrace = 19
	capSysAdmin  = 21
)

func capSet(bits ...uint) uint64 {
	var s uint64
	for _, b := range bits {
		s |= 1 << b
	}
	return s
}

// TestDebUnderSystemd installs the .deb with dpkg into a Debian 12 root
// (mmdebstrap, .ci/debian-root) booted with systemd as PID 1 in a
// container (Podman 4.3's --systemd=always, no network but its own): the
// package enables and starts the service, which serves /metrics with
// exactly the unit's capability, and sees the veths made in the
// container's namespace. With the packaged remediation drop-in enabled
// (and its token and TLS files), a leftover veth there is released
// through POST /remediate, with exactly the drop-in's capabilities, while
// a live one stays. Everything happens in the container's namespaces.
//
// The test's changes, in ARGS of /etc/default/veth_exporter:
// --inventory.trust-pid-namespace (the container's PID namespace is the
// whole view here), --inventory.settle-time=1s, and for remediation
// --remediation.instance=node1, --remediation.min-age=1s and
// --remediation.max-orphan-ratio=1.
func TestDebUnderSystemd(t *testing.T) {
	netnstest.Require(t)
	root := debianRoot(t)
	deb := buildPackage(t, "deb")
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "root/veth-exporter.deb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	p := podmantest.Start(t, podmantest.Options{})
	id := p.Run(t, "run", "-d", "--systemd=always", "--network=none",
		"--cap-add=SYS_ADMIN,NET_ADMIN,NET_RAW,SYS_PTRACE", "--rootfs", root, "/sbin/init")
	c := &booted{t: t, p: p, id: id}
	t.Cleanup(func() { _, _ = p.TryRun(context.Background(), "rm", "-f", "-t", "0", id) })
	c.until("systemd booted", "systemctl is-system-running --wait || true", "")
	if pid1 := c.sh("cat /proc/1/comm"); strings.TrimSpace(pid1) != "systemd" {
		t.Fatalf("PID 1 of the container is %q, want systemd", pid1)
	}

	// The package: installed, enabled and started by its postinst.
	c.sh("dpkg -i /root/veth-exporter.deb")
	if got := strings.TrimSpace(c.sh("systemctl is-enabled veth_exporter")); got != "enabled" {
		t.Errorf("after dpkg -i the service is %q, want enabled", got)
	}
	c.until("the service active", "systemctl is-active veth_exporter", "active")
	c.until("/metrics served", "curl -sf http://127.0.0.1:9750/metrics", `veth_exporter_build_info{`)
	if eff, bnd := c.capabilities(); eff != capSet(capSysPtrace) || bnd != capSet(capSysPtrace) {
		t.Errorf("the service runs with CapEff %#x, CapBnd %#x; want CAP_SYS_PTRACE alone (%#x)", eff, bnd, capSet(capSysPtrace))
	}

	// Veths in the container's namespace: a leftover whose namespace
	// only a mount holds, and a live one whose peer a process holds.
	c.sh(`ip link add cni0 type bridge && ip link set cni0 up &&
		ip netns add leak && ip link add vleak type veth peer name eth0 netns leak && ip link set vleak master cni0 up &&
		(unshare -n sh -c 'echo $$ > /run/live.pid; exec sleep 100000' >/dev/null 2>&1 &) &&
		while [ ! -s /run/live.pid ]; do sleep 0.1; done &&
		ip link add vlive type veth peer name eth0 netns $(cat /run/live.pid) && ip link set vlive master cni0 up`)
	writeRoot(t, root, "etc/default/veth_exporter", 0o644,
		`ARGS="--inventory.trust-pid-namespace --inventory.settle-time=1s --remediation.instance=node1 --remediation.min-age=1s --remediation.max-orphan-ratio=1"`+"\n")
	c.sh("systemctl restart veth_exporter")
	c.until("vleak orphaned", "curl -sf http://127.0.0.1:9750/metrics",
		`veth_verdict_info{device="vleak",reason="netns_empty",verdict="orphaned"} 1`)

	// Remediation: the packaged drop-in, its token and TLS files.
	cert, key, ca := fixturesys.TestCA(t, "veth-exporter")
	token := "systemd-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	writeRoot(t, root, "etc/veth_exporter/remediate.token", 0o600, token+"\n")
	writeRoot(t, root, "etc/veth_exporter/tls.crt", 0o644, string(cert))
	writeRoot(t, root, "etc/veth_exporter/tls.key", 0o600, string(key))
	writeRoot(t, root, "etc/veth_exporter/ca.crt", 0o644, string(ca))
	writeRoot(t, root, "etc/veth_exporter/web.yml", 0o644, "tls_server_config:\n  cert_file: /etc/veth_exporter/tls.crt\n  key_file: /etc/veth_exporter/tls.key\n")
	c.sh(`mkdir -p /etc/systemd/system/veth_exporter.service.d &&
		cp /usr/share/doc/veth-exporter/examples/remediation.conf /etc/systemd/system/veth_exporter.service.d/ &&
		systemctl daemon-reload && systemctl restart veth_exporter`)
	const curl = "curl -sf --cacert /etc/veth_exporter/ca.crt --resolve veth-exporter:9750:127.0.0.1 https://veth-exporter:9750"
	c.until("HTTPS with the drop-in", curl+"/metrics", `veth_verdict_info{device="vleak",reason="netns_empty",verdict="orphaned"} 1`)
	want := capSet(capSysPtrace, capNetAdmin, capSysAdmin, capSysChroot, capNetRaw)
	if eff, bnd := c.capabilities(); eff != want || bnd != want {
		t.Errorf("with remediation.conf the service runs with CapEff %#x, CapBnd %#x; want %#x", eff, bnd, want)
	}
	time.Sleep(1500 * time.Millisecond) // recorded orphaned for the min-age
	ifindex := strings.TrimSpace(c.sh("cat /sys/class/net/vleak/ifindex"))
	alert, err := json.Marshal(map[string]any{
		"version": "4", "status": "firing", "receiver": "veth-remediate", "groupKey": "{}:{}",
		"groupLabels": map[string]string{}, "commonLabels": map[string]string{}, "commonAnnotations": map[string]string{},
		"externalURL": "http://alertmanager",
		"alerts": []map[string]any{{
			"status": "firing", "labels": map[string]string{"alertname": "VethOrphaned", "device": "vleak", "ifindex": ifindex,
				"instance": "node1", "reason": "netns_empty"},
			"annotations": map[string]string{}, "startsAt": time.Now().Add(-time.Hour).Format(time.RFC3339Nano),
			"endsAt": "0001-01-01T00:00:00Z", "fingerprint": "systemd-test",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	writeRoot(t, root, "root/alert.json", 0o644, string(alert))
	if out, err := c.try(curl + "/remediate -H 'Authorization: Bearer wrong' -H 'Content-Type: application/json' -d @/root/alert.json"); err == nil {
		t.Errorf("/remediate with a wrong token answered: %s", out)
	}
	answer := c.sh(curl + "/remediate -H 'Authorization: Bearer " + token + "' -H 'Content-Type: application/json' -d @/root/alert.json")
	if !strings.Contains(answer, `"deleted"`) {
		t.Fatalf("POST /remediate: %s, want vleak deleted\njournal:\n%s", answer, c.journal())
	}
	if out, err := c.try("ip link show vleak"); err == nil {
		t.Errorf("vleak is still there after /remediate answered deleted:\n%s", out)
	}
	if out, err := c.try("test -e /run/netns/leak"); err == nil {
		t.Errorf("/run/netns/leak is still there after the release %s", out)
	}
	if _, err := c.try("ip link show vlive"); err != nil {
		t.Error("the live vlive went too")
	}
	if audit := c.sh("cat /var/lib/veth_exporter/audit.jsonl"); !strings.Contains(audit, `"method":"release"`) || !strings.Contains(audit, `"result":"deleted"`) {
		t.Errorf("the audit file does not record vleak released:\n%s", audit)
	}
}

// writeRoot writes a file into the container's root, as root.
func writeRoot(t *testing.T, root, rel string, mode os.FileMode, content string) {
	t.Helper()
	path := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
