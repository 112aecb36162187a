package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// TestCRILostStateLateExporter is TestCRILostState with an exporter
// started after the loss: the runtime lost a pod's state before the exporter ever ran, so
// neither its history nor CRI knows the pod. The libcni cache entry that
// containerd left (its eth0's sandbox is the namespace the veth's peer is
// in) names the pod, and counts as a stale attachment; the live pod's
// entry does not. The CNI is the bridge plugin: no node agent.
func TestCRILostStateLateExporter(t *testing.T) {
	netnstest.Require(t)
	r := critest.Start(t)
	lost := r.RunPod(t, "shop", "cart", "")
	live := r.RunPod(t, "shop", "checkout", "")
	r.LoseSandbox(t, lost)

	e := criExporter(t, r, "--inventory.settle-time=1s", "--cni.conf-dir="+r.CNIConfDir)
	m := e.scrapeUntil(t, "the lost pod's veth orphaned", func(m string) bool {
		_, ok := sample(m, verdictSeries(lost.Veth, "orphaned", "netns_empty"))
		return ok
	})
	wantSample(t, m, podOwnerSeries("veth_last_owner_info", lost.Veth, lost), 1)
	wantSample(t, m, podOwnerSeries("veth_owner_info", live.Veth, live), 1)
	wantSample(t, m, "veth_cni_stale_attachments", 1)
	wantSample(t, m, `veth_scrape_collector_success{collector="cni"}`, 1)
	wantSample(t, m, fmt.Sprintf(`veth_cni_info{daemon_running="n/a",name=%q,type="bridge"}`, critest.NetworkName), 1)
}

// TestCRILeakedLease follows a lost pod's address through a real
// containerd and the host-local plugin: while the lost sandbox's namespace
// is still pinned its lease is live (namespace_left: the veth is the
// leftover to remove first); once the namespace is freed (its pin
// unmounted, as a release does) it is leaked after the settle time,
// naming the pod, while the live pod's lease stays live; with containerd
// down the lost lease is unknown (the live one live by its namespace), and
// its clock starts again when containerd is back.
func TestCRILeakedLease(t *testing.T) {
	netnstest.Require(t)
	r := critest.Start(t)
	lost := r.RunPod(t, "shop", "cart", "")
	live := r.RunPod(t, "shop", "checkout", "")
	r.LoseSandbox(t, lost)

	e := criExporter(t, r, "--inventory.settle-time=2s", "--cni.conf-dir="+r.CNIConfDir)
	addresses := func(state string) string {
		return fmt.Sprintf(`veth_cni_ipam_addresses{network=%q,range=%q,state=%q}`, critest.NetworkName, critest.Subnet, state)
	}
	counts := func(live, leaked, unknown float64) func(string) bool {
		return func(m string) bool {
			l, _ := sample(m, addresses("live"))
			k, _ := sample(m, addresses("leaked"))
			u, _ := sample(m, addresses("unknown"))
			return l == live && k == leaked && u == unknown
		}
	}
	m := e.scrapeUntil(t, "both leases live", counts(2, 0, 0))
	wantSample(t, m, fmt.Sprintf(`veth_cni_ipam_range_size{network=%q,range=%q}`, critest.NetworkName, critest.Subnet), 65533)
	leases := leaseStates(t, e)
	if l := leases[lost.ID]; l.State != "live" || l.Reason != "namespace_left" {
		t.Errorf("the lost pod's lease while its namespace is pinned: %+v, want live/namespace_left", l)
	}
	if l := leases[live.ID]; l.State != "live" || l.Reason != "listed" {
		t.Errorf("the live pod's lease: %+v, want live/listed", l)
	}

	// Free the namespace as a release does: the kernel takes the veth.
	critest.Unpin(t, lost)
	m = e.scrapeUntil(t, "the lost pod's lease leaked", counts(1, 1, 0))
	if _, ok := sample(m, verdictSeries(lost.Veth, "orphaned", "netns_empty")); ok {
		t.Errorf("%s still there after its namespace was freed", lost.Veth)
	}
	leases = leaseStates(t, e)
	if l := leases[lost.ID]; l.State != "leaked" || l.Reason != "no_sandbox" || l.PodName != lost.Name || l.PodNamespace != lost.Namespace || l.LeakedSince.IsZero() {
		t.Errorf("the lost pod's lease: %+v, want leaked/no_sandbox naming %s/%s", l, lost.Namespace, lost.Name)
	}
	out, err := exec.Command(exporterBinary(t), "inspect", "--inventory.trust-pid-namespace", "--cri.endpoint="+r.Endpoint,
		"--cni.conf-dir="+r.CNIConfDir, "--state.path="+e.flag(t, "state.path")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "LEAKED LEASES") || !strings.Contains(string(out), lost.ID[:12]+"  pod shop/cart") {
		t.Errorf("inspect: %v\n%s\nwant the leaked lease of %s, pod shop/cart", err, out, lost.ID[:12])
	}

	lostIP := leaseStates(t, e)[lost.ID].IP
	liveIP := leaseStates(t, e)[live.ID].IP
	lease := func(ip string) string { return filepath.Join("/var/lib/cni/networks", critest.NetworkName, ip) }
	entry := func(p *critest.Pod) string {
		return filepath.Join(critest.CNICacheDir, critest.NetworkName+"-"+p.ID+"-eth0")
	}
	clean := func(args ...string) (string, string, int) {
		return cleanBy(t, exporterBinary(t), append([]string{"--cri.endpoint=" + r.Endpoint, "--cni.conf-dir=" + r.CNIConfDir,
			"--cni.bin-dir=/usr/lib/cni", "--state.path=" + e.flag(t, "state.path"), "--inventory.settle-time=2s", "--min-age=0s"}, args...)...)
	}

	// Nothing is leaked while containerd cannot be asked, and nothing is
	// released; the live pod's lease stays live by its namespace.
	r.KillRuntime(t)
	e.scrapeUntil(t, "the lost lease unknown while containerd is down", counts(1, 0, 1))
	if stdout, stderr, code := clean("--leases"); code == 0 && strings.Contains(stdout, "deleted") || !fileExists(lease(lostIP)) || !fileExists(entry(lost)) {
		t.Errorf("clean --leases with containerd down: exit %d\n%s%s\nwant nothing released", code, stdout, stderr)
	}
	leases = leaseStates(t, e)
	if l := leases[lost.ID]; l.State != "unknown" || l.Reason != "resolver_down" {
		t.Errorf("the lost pod's lease with containerd down: %+v, want unknown/resolver_down", l)
	}
	if l := leases[live.ID]; l.State != "live" || l.Reason != "namespace_left" {
		t.Errorf("the live pod's lease with containerd down: %+v, want live/namespace_left", l)
	}
	back := time.Now()
	r.Restart(t)
	e.scrapeUntil(t, "the lost pod's lease leaked again", counts(1, 1, 0))
	if l := leaseStates(t, e)[lost.ID]; l.LeakedSince.Before(back.Add(-time.Second)) {
		t.Errorf("after containerd came back the lost lease is leaked since %v, before it came back (%v): its clock did not start again", l.LeakedSince, back)
	}

	// clean --leases finishes the DEL: the lease and the cache entry go,
	// the live pod keeps its own.
	stdout, stderr, code := clean("--leases", "--dry-run")
	if code != 0 || !strings.Contains(stdout, critest.NetworkName+"/"+lostIP) || !strings.Contains(stdout, "would_delete") || !fileExists(lease(lostIP)) {
		t.Fatalf("clean --leases --dry-run: exit %d\n%s%s\nwant would_delete for %s/%s, nothing released", code, stdout, stderr, critest.NetworkName, lostIP)
	}
	stdout, stderr, code = clean("--lease=" + liveIP)
	if code != 1 || !strings.Contains(stdout, "not_orphaned") || !fileExists(lease(liveIP)) {
		t.Errorf("clean --lease=%s (the live pod's): exit %d\n%s%s\nwant not_orphaned, exit 1", liveIP, code, stdout, stderr)
	}
	stdout, stderr, code = clean("--leases")
	if code != 0 || !strings.Contains(stdout, "deleted") || !strings.Contains(stdout, "CNI DEL of "+lost.ID) {
		t.Fatalf("clean --leases: exit %d\n%s%s\nwant the lost pod's lease deleted by its CNI DEL", code, stdout, stderr)
	}
	if fileExists(lease(lostIP)) || fileExists(entry(lost)) {
		t.Errorf("after clean --leases: lease %v, cache entry %v; want both gone", fileExists(lease(lostIP)), fileExists(entry(lost)))
	}
	if !fileExists(lease(liveIP)) || !fileExists(entry(live)) {
		t.Errorf("the live pod's lease or cache entry went too")
	}
	e.scrapeUntil(t, "the lost lease gone", counts(1, 0, 0))
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// leaseState is a lease as /api/v1/veths gives it.
type leaseState struct {
	IP, State, Reason string
	ContainerID       string    `json:"container_id"`
	PodNamespace      string    `json:"pod_namespace"`
	PodName           string    `json:"pod_name"`
	LeakedSince       time.Time `json:"leaked_since"`
}

// leaseStates returns the host-local leases of /api/v1/veths by container ID.
func leaseStates(t *testing.T, e *exporter) map[string]leaseState {
	t.Helper()
	var doc struct {
		CNI struct {
			IPAM []struct {
				Leases []leaseState `json:"leases"`
			} `json:"ipam_networks"`
		} `json:"cni"`
	}
	body := e.get(t, "/api/v1/veths")
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("/api/v1/veths: %v\n%s", err, body)
	}
	leases := map[string]leaseState{}
	for _, n := range doc.CNI.IPAM {
		for _, l := range n.Leases {
			leases[l.ContainerID] = l
		}
	}
	return leases
}

// TestCRIReleaseFinishesDEL: removing a lost pod's leftover veth by
// release frees its namespace, and then runs the CNI DEL the runtime never
// ran, from libcni's cache entry proved to be about that veth: its lease
// and cache entry go with it; the live pod keeps its own. With method
// delete the namespace stays pinned, and no plugin runs.
func TestCRIReleaseFinishesDEL(t *testing.T) {
	netnstest.Require(t)
	r := critest.Start(t)
	lost := r.RunPod(t, "shop", "cart", "")
	kept := r.RunPod(t, "shop", "kept", "")
	live := r.RunPod(t, "shop", "checkout", "")
	r.LoseSandbox(t, lost, kept)
	e := criExporter(t, r, "--inventory.settle-time=1s", "--cni.conf-dir="+r.CNIConfDir)
	e.scrapeUntil(t, "both lost pods' veths orphaned", func(m string) bool {
		_, a := sample(m, verdictSeries(lost.Veth, "orphaned", "netns_empty"))
		_, b := sample(m, verdictSeries(kept.Veth, "orphaned", "netns_empty"))
		return a && b
	})
	leases := leaseStates(t, e)
	lease := func(p *critest.Pod) string {
		return filepath.Join("/var/lib/cni/networks", critest.NetworkName, leases[p.ID].IP)
	}
	entry := func(p *critest.Pod) string {
		return filepath.Join(critest.CNICacheDir, critest.NetworkName+"-"+p.ID+"-eth0")
	}
	clean := func(args ...string) (string, string, int) {
		return cleanBy(t, exporterBinary(t), append([]string{"--cri.endpoint=" + r.Endpoint, "--cni.conf-dir=" + r.CNIConfDir,
			"--cni.bin-dir=/usr/lib/cni", "--state.path=" + e.flag(t, "state.path"), "--inventory.settle-time=1s", "--min-age=0s",
			"--remediation.max-orphan-ratio=1"}, args...)...)
	}
	stdout, stderr, code := clean("--remediation.method=delete", kept.Veth)
	if code != 0 || strings.Contains(stdout, "CNI DEL") || !fileExists(lease(kept)) || !fileExists(entry(kept)) {
		t.Errorf("clean --remediation.method=delete %s: exit %d\n%s%s\nwant it deleted, its lease and cache entry kept (the namespace stays)",
			kept.Veth, code, stdout, stderr)
	}
	stdout, stderr, code = clean(lost.Veth)
	if code != 0 || !strings.Contains(stdout, "CNI DEL of "+lost.ID+" ran, released ") {
		t.Fatalf("clean %s: exit %d\n%s%s\nwant it released and its CNI DEL run", lost.Veth, code, stdout, stderr)
	}
	if fileExists(lease(lost)) || fileExists(entry(lost)) {
		t.Errorf("after the release: lease %v, cache entry %v; want both gone", fileExists(lease(lost)), fileExists(entry(lost)))
	}
	if !fileExists(lease(live)) || !fileExists(entry(live)) || !netnstest.LinkExists(live.Veth) {
		t.Error("the live pod lost its veth, lease or cache entry")
	}
}
