package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/dockertest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The CRI suite: the real binary against a real containerd 1.6 with its
// CRI plugin (internal/critest), running in the test's private namespaces,
// with pod sandboxes made through CRI as the kubelet makes them: named
// pods, a runtime that loses its state, a namespace kept out of band, and
// a runtime that is down or has NOTREADY sandboxes.

// podInfoSeries is veth_pod_info of a pod in a state.
func podInfoSeries(p *critest.Pod, state string) string {
	return fmt.Sprintf(`veth_pod_info{pod_name=%q,pod_namespace=%q,pod_uid=%q,runtime="containerd",sandbox_id=%q,state=%q}`,
		p.Name, p.Namespace, p.UID, p.ID, state)
}

func criUp(up float64) func(string) bool {
	return func(m string) bool {
		v, ok := sample(m, `veth_scrape_collector_success{collector="cri"}`)
		return ok && v == up
	}
}

// TestCRIPods: three pods in two Kubernetes namespaces; each
// veth is owned by its pod, named with its namespace, name and UID, and a
// scrape of a quiet node costs one ListPodSandbox.
func TestCRIPods(t *testing.T) {
	netnstest.Require(t)
	r := critest.Start(t)
	pods := []*critest.Pod{
		r.RunPod(t, "default", "web", ""),
		r.RunPod(t, "default", "api", ""),
		r.RunPod(t, "kube-system", "coredns", ""),
	}
	e := criExporter(t, r)
	m := e.scrape(t)
	wantSample(t, m, `veth_scrape_collector_success{collector="cri"}`, 1)
	for _, p := range pods {
		wantSample(t, m, podOwnerSeries("veth_owner_info", p.Veth, p), 1)
		wantSample(t, m, verdictSeries(p.Veth, "owned", "pod"), 1)
		wantSample(t, m, podInfoSeries(p, "ready"), 1)
	}
	if n := strings.Count(m, "veth_owner_info{"); n != len(pods) {
		t.Errorf("%d veth_owner_info series, want %d", n, len(pods))
	}

	// A quiet node: one ListPodSandbox per scrape, no status asked again.
	const scrapes = 5
	before, _ := sample(m, "veth_cri_api_requests_total")
	t0 := time.Now()
	for range scrapes {
		m = e.scrape(t)
	}
	took := time.Since(t0) / scrapes
	after, _ := sample(m, "veth_cri_api_requests_total")
	if after-before != scrapes {
		t.Errorf("%d scrapes of a quiet node made %v CRI calls, want %d (one ListPodSandbox each)", scrapes, after-before, scrapes)
	}
	d, _ := sample(m, `veth_scrape_collector_duration_seconds{collector="cri"}`)
	t.Logf("quiet scrape: %v CRI calls per scrape, %v per scrape, cri stage %.2f ms, %v calls since start",
		(after-before)/scrapes, took.Round(time.Microsecond), d*1000, after)

	// A new pod costs one status more, once.
	late := r.RunPod(t, "kube-system", "metrics", "")
	before = after
	m = e.scrape(t)
	wantSample(t, m, podOwnerSeries("veth_owner_info", late.Veth, late), 1)
	m = e.scrape(t)
	if after, _ = sample(m, "veth_cri_api_requests_total"); after-before != 3 {
		t.Errorf("two scrapes after a new pod made %v CRI calls, want 3 (two lists, one status)", after-before)
	}

	// Without the resolver: owners from cgroups alone, pod UIDs without
	// names, and no cri stage.
	plain := startExporter(t, "--cri.endpoint="+r.Endpoint, "--no-collector.cri", "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	pm := plain.scrape(t)
	if _, ok := sample(pm, `veth_scrape_collector_success{collector="cri"}`); ok {
		t.Error("--no-collector.cri: a cri stage is still reported")
	}
	wantSample(t, pm, fmt.Sprintf(`veth_owner_info{device=%q,id=%q,kind="pod",name="",pod_name="",pod_namespace="",pod_uid=%q}`,
		pods[0].Veth, pods[0].ID, pods[0].UID), 1)
}

// TestCRILostState: the runtime loses its state (kill -9 of
// containerd, the sandbox's shim and pause; restart; the sandbox record
// removed; restart). The veth and its /var/run/netns/cni-* mount remain:
// orphaned / netns_empty once settled, its last owner the pod the
// exporter saw before the crash.
func TestCRILostState(t *testing.T) {
	netnstest.Require(t)
	r := critest.Start(t)
	lost := r.RunPod(t, "shop", "cart", "")
	live := r.RunPod(t, "shop", "checkout", "")
	e := criExporter(t, r, "--inventory.settle-time=1s")
	m := e.scrape(t)
	wantSample(t, m, podOwnerSeries("veth_owner_info", lost.Veth, lost), 1)

	t0 := time.Now()
	r.LoseSandbox(t, lost)
	t.Logf("LoseSandbox: %v", time.Since(t0).Round(time.Millisecond))
	for _, p := range r.ListPods(t) {
		if p.GetId() == lost.ID {
			t.Fatalf("CRI still lists %s after LoseSandbox", lost.ID)
		}
	}
	m = e.scrape(t)
	wantSample(t, m, verdictSeries(lost.Veth, "unknown", "settling"), 1)
	t0 = time.Now()
	m = e.scrapeUntil(t, "the lost pod's veth orphaned", func(m string) bool {
		_, ok := sample(m, verdictSeries(lost.Veth, "orphaned", "netns_empty"))
		return ok
	})
	t.Logf("orphaned %v after the first settling scrape", time.Since(t0).Round(time.Millisecond))
	wantSample(t, m, podOwnerSeries("veth_last_owner_info", lost.Veth, lost), 1)
	wantSample(t, m, podInfoSeries(lost, "gone"), 1)
	if len(seriesOf(m, "veth_owner_info", lost.Veth)) != 0 {
		t.Errorf("the lost pod's veth still has an owner: %q", seriesOf(m, "veth_owner_info", lost.Veth))
	}
	// The other pod survived the crash and is still its own.
	wantSample(t, m, podOwnerSeries("veth_owner_info", live.Veth, live), 1)
	wantSample(t, m, verdictSeries(live.Veth, "owned", "pod"), 1)
	if n := orphans(m); n != 1 {
		t.Errorf("%v veths orphaned, want 1", n)
	}
}

// TestCRIOutOfBand: a process joins the pod's namespace, the
// namespace's name is deleted (`ip netns delete`) and the pod stopped and
// removed: the veth stays, its namespace held by that process alone, and
// is orphaned / owner_exited naming the pod.
func TestCRIOutOfBand(t *testing.T) {
	netnstest.Require(t)
	r := critest.Start(t)
	p := r.RunPod(t, "default", "oob", "")
	e := criExporter(t, r)
	m := e.scrape(t)
	wantSample(t, m, podOwnerSeries("veth_owner_info", p.Veth, p), 1)

	stray, _ := netnstest.Join(t, p.PID)
	netnstest.IP(t, "netns", "delete", p.NetnsName)
	r.StopPod(t, p.ID)
	r.RemovePod(t, p.ID)
	m = e.scrapeUntil(t, "the stray-held veth orphaned", func(m string) bool {
		_, ok := sample(m, verdictSeries(p.Veth, "orphaned", "owner_exited"))
		return ok
	})
	wantSample(t, m, podOwnerSeries("veth_last_owner_info", p.Veth, p), 1)
	wantSample(t, m, podInfoSeries(p, "gone"), 1)
	wantSample(t, m, fmt.Sprintf(`veth_peer_netns_processes{device=%q}`, p.Veth), 1)
	if got := seriesOf(m, "veth_owner_info", p.Veth); len(got) != 1 || !strings.Contains(got[0], fmt.Sprintf(`id="%d",kind="process"`, stray)) {
		t.Errorf("owner of %s = %q, want the stray process %d", p.Veth, got, stray)
	}
}

// TestCRIRuntimeDownAndNotReady: a NOTREADY sandbox whose
// veth and namespace remain is owned; with containerd stopped the CRI
// stage fails, the pods' veths are owned or unknown / resolver_down and
// none is orphaned; once containerd is back the exporter recovers without
// a restart.
func TestCRIRuntimeDownAndNotReady(t *testing.T) {
	netnstest.Require(t)
	r := critest.Start(t)
	a := r.RunPod(t, "default", "a", "")
	b := r.RunPod(t, "batch", "b", "")
	e := criExporter(t, r)
	// Both pods ready: the runtime accounts for every peer namespace, so
	// no process is counted and the counts are absent (once the
	// namespaces of earlier tests, which no runtime accounts for, are
	// gone).
	m := e.scrapeUntil(t, "every namespace accounted for", func(m string) bool {
		_, counted := sample(m, fmt.Sprintf(`veth_peer_netns_processes{device=%q}`, a.Veth))
		return !counted
	})
	wantSample(t, m, fmt.Sprintf(`veth_peer_netns_alive{device=%q}`, a.Veth), 1)
	wantSample(t, m, verdictSeries(a.Veth, "owned", "pod"), 1)
	wantSample(t, m, podInfoSeries(b, "ready"), 1)

	// b's pause process dies: CRI lists the sandbox NOTREADY and leaves
	// its network to the kubelet.
	if err := unix.Kill(b.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitNotReady(t, r, b)
	m = e.scrapeUntil(t, "b notready", func(m string) bool { _, ok := sample(m, podInfoSeries(b, "notready")); return ok })
	wantSample(t, m, fmt.Sprintf(`veth_peer_netns_processes{device=%q}`, b.Veth), 0)
	wantSample(t, m, podOwnerSeries("veth_owner_info", b.Veth, b), 1)
	wantSample(t, m, verdictSeries(b.Veth, "owned", "pod"), 1)

	r.Stop(t)
	for range 3 {
		m = e.scrapeUntil(t, "CRI down", criUp(0))
		// a's pause runs on: its cgroup names the pod, by the ID whose
		// names the exporter remembers.
		wantSample(t, m, verdictSeries(a.Veth, "owned", "pod"), 1)
		wantSample(t, m, podOwnerSeries("veth_owner_info", a.Veth, a), 1)
		// b has no process left: only the runtime can tell.
		wantSample(t, m, verdictSeries(b.Veth, "unknown", "resolver_down"), 1)
		if n := orphans(m); n != 0 {
			t.Errorf("with containerd stopped: %v veths orphaned, want none", n)
		}
		if _, ok := sample(m, "veth_pod_info"); ok || strings.Contains(m, "veth_pod_info{") {
			t.Error("with containerd stopped: veth_pod_info is still exposed")
		}
	}
	t0 := time.Now()
	r.Restart(t)
	m = e.scrapeUntil(t, "CRI up", criUp(1))
	t.Logf("CRI seen up %v after containerd was started", time.Since(t0).Round(time.Millisecond))
	wantSample(t, m, podOwnerSeries("veth_owner_info", a.Veth, a), 1)
	wantSample(t, m, verdictSeries(a.Veth, "owned", "pod"), 1)
	if len(seriesOf(m, "veth_info", b.Veth)) == 1 {
		wantSample(t, m, verdictSeries(b.Veth, "owned", "pod"), 1)
	} else {
		t.Logf("containerd tore down b's network on restart")
	}
	if n := orphans(m); n != 0 {
		t.Errorf("after containerd restarted: %v veths orphaned, want none", n)
	}
}

// waitNotReady waits up to 10 s until CRI lists p NOTREADY.
func waitNotReady(t *testing.T, r *critest.Runtime, p *critest.Pod) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		for _, s := range r.ListPods(t) {
			if s.GetId() == p.ID && s.GetState() == runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after its pause died: %s/%s not listed NOTREADY", p.Namespace, p.Name)
		}
	}
}

// TestCRIDockersContainerd: on a Docker node the containerd socket exists
// and serves no CRI runtime service (dockerd's containerd runs without its
// CRI plugin). A resolver on because of the socket says nothing and does
// not fail; one forced with --collector.cri fails its stage. Docker's
// containers stay owned by Docker either way.
func TestCRIDockersContainerd(t *testing.T) {
	netnstest.Require(t)
	d := dockertest.Start(t)
	web := d.Run(t, "web")
	dev := vethOf(t, d, web)
	endpoint := "--cri.endpoint=unix://" + filepath.Join(d.ExecRoot, "containerd", "containerd.sock")
	auto := dockerExporter(t, d, endpoint)
	m := auto.scrape(t)
	wantSample(t, m, `veth_scrape_collector_success{collector="cri"}`, 1)
	wantSample(t, m, ownerSeries("veth_owner_info", dev, web, "web"), 1)
	if strings.Contains(m, "veth_pod_info{") {
		t.Error("pods reported from Docker's containerd")
	}
	if calls, _ := sample(m, "veth_cri_api_requests_total"); calls < 1 {
		t.Errorf("veth_cri_api_requests_total = %v, want the calls that found no CRI service", calls)
	}
	forced := dockerExporter(t, d, endpoint, "--collector.cri")
	m = forced.scrape(t)
	wantSample(t, m, `veth_scrape_collector_success{collector="cri"}`, 0)
	wantSample(t, m, ownerSeries("veth_owner_info", dev, web, "web"), 1)
	wantSample(t, m, verdictSeries(dev, "owned", "container"), 1)
}
