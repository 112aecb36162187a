package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// TestRemediationDropInFinishesDEL: the unit with remediation.conf, in its
// read-only mount namespace (ProtectSystem=strict: /var/lib/cni is
// read-only there, and no ReadWritePaths= opens it), finishes the CNI DEL
// of a pod containerd lost at a node restart (its namespace gone, its
// lease, libcni cache entry and portmap rules left): the DEL runs in the
// host's mount namespace, where the plugins write /var/lib/cni and run
// the host's iptables. The node's iptables is iptables-legacy: without
// CAP_NET_RAW the DEL fails at portmap, its first plugin, and releases
// nothing; with the drop-in's capabilities the lease, the cache entry and
// the rules go, and the live pod keeps its own.
func TestRemediationDropInFinishesDEL(t *testing.T) {
	netnstest.Require(t)
	unit := unitCaps(t, "CapabilityBoundingSet", "veth_exporter.service", "remediation.conf")
	if !slices.Contains(unit, "net_raw") {
		t.Fatalf("remediation.conf: the unit's capabilities %v lack net_raw", unit)
	}
	r := critest.StartWith(t, critest.Options{PortMap: true, LegacyIptables: true})
	lost := r.RunPodWithHostPort(t, "shop", "cart", 18081)
	live := r.RunPodWithHostPort(t, "shop", "web", 18082)
	r.LoseSandbox(t, lost)
	critest.Unpin(t, lost)
	lease := func(p *critest.Pod) string {
		dir := filepath.Join("/var/lib/cni/networks", critest.NetworkName)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(string(b), p.ID) {
				return e.Name()
			}
		}
		return ""
	}
	entry := func(p *critest.Pod) bool {
		_, err := os.Stat(filepath.Join(critest.CNICacheDir, critest.NetworkName+"-"+p.ID+"-eth0"))
		return err == nil
	}
	rules := func() string {
		out, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save: %v\n%s", err, out)
		}
		return string(out)
	}
	held := func(p *critest.Pod) bool { return lease(p) != "" && entry(p) && strings.Contains(rules(), p.ID) }
	if !held(lost) || !held(live) {
		t.Fatalf("before: the lost pod holds a lease, cache entry and rules %v, the live one %v; want both\n%s", held(lost), held(live), rules())
	}

	bin := build(t)
	stateDir := t.TempDir()
	flags := []string{"--inventory.trust-pid-namespace", "--no-collector.docker", "--no-collector.podman",
		"--cri.endpoint=" + r.Endpoint, "--cni.conf-dir=" + r.CNIConfDir, "--cni.bin-dir=/usr/lib/cni"}
	recordOrphans(t, unit, stateDir, bin, flags)
	clean := func(caps []string) (string, int) {
		return runAsUnit(t, caps, stateDir, bin, append([]string{"clean", "--state.path=" + filepath.Join(stateDir, "state.json"),
			"--min-age=0s", "--inventory.settle-time=0s", "--leases"}, flags...)...)
	}

	noRaw := slices.DeleteFunc(slices.Clone(unit), func(c string) bool { return c == "net_raw" })
	out, code := clean(noRaw)
	if code != 1 || !strings.Contains(out, "failed") || !strings.Contains(out, `plugin type="portmap" failed (delete)`) || !held(lost) {
		t.Errorf("clean --leases as the unit without CAP_NET_RAW %v: exit %d\n%s\nwant the DEL failed at portmap and nothing released (held: %v)", noRaw, code, out, held(lost))
	}
	out, code = clean(unit)
	if code != 0 || !strings.Contains(out, "deleted") || !strings.Contains(out, "CNI DEL of "+lost.ID) {
		t.Fatalf("clean --leases as the unit with remediation.conf %v: exit %d\n%s\nwant the lost pod's lease released by its CNI DEL", unit, code, out)
	}
	if lease(lost) != "" || entry(lost) || strings.Contains(rules(), lost.ID) {
		t.Errorf("after the DEL: the lost pod's lease %q, cache entry %v, rules:\n%s\nwant all gone", lease(lost), entry(lost), rules())
	}
	if !held(live) {
		t.Errorf("the live pod lost its lease, cache entry or rules:\n%s", rules())
	}
	t.Logf("as the unit %v:\n%s", unit, out)
}
