package collector

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/resolver/docker"
	"github.com/veth-exporter/veth_exporter/resolver/podman"
)

type fakeInventory struct {
	snap *inventory.Snapshot
	err  error
}

func (f fakeInventory) SharedSnapshot(context.Context) (*inventory.Snapshot, error) {
	return f.snap, f.err
}

func testSnapshot() *inventory.Snapshot {
	t0 := time.Unix(1_700_000_000, 0)
	leak := &inventory.Namespace{Inode: 11, NSID: 0, PIDs: []int{}, Mounts: []string{"/run/netns/leak"}}
	live := &inventory.Namespace{Inode: 12, NSID: 1, PIDs: []int{100, 101}}
	api := &inventory.Owner{Kind: inventory.OwnerContainer, ID: "abc", Name: "api", Runtime: "docker"}
	return &inventory.Snapshot{
		Taken: t0.Add(time.Hour),
		Steps: []inventory.Step{{Name: "links", Duration: 2 * time.Millisecond}, {Name: "netns", Duration: time.Millisecond}},
		Veths: []inventory.Veth{
			{
				Name: "vleak", Index: 5, Master: "docker0", OperState: "up", PeerIndex: 2, PeerNetNSID: 0,
				PeerNetns: leak, LastOwner: api, Verdict: inventory.Orphaned, Reason: inventory.ReasonNetnsEmpty,
				FirstSeen: t0, OrphanedSince: t0.Add(30 * time.Minute),
			},
			{
				Name: "vlive", Index: 6, Master: "docker0", OperState: "up", PeerIndex: 2, PeerNetNSID: 1,
				PeerNetns: live, Owner: api, LastOwner: api, Verdict: inventory.Owned, Reason: inventory.ReasonContainer,
				FirstSeen: t0,
			},
			{
				Name: "hostA", Index: 7, OperState: "down", PeerIndex: 8, PeerNetNSID: -1, PeerOnHost: true, PeerName: "hostB",
				Verdict: inventory.Orphaned, Reason: inventory.ReasonPeerOnHost, FirstSeen: t0, OrphanedSince: t0,
			},
		},
	}
}

func TestCollect(t *testing.T) {
	c := New(fakeInventory{snap: testSnapshot()}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	want := `
# HELP veth_info Host-side veth interface; peer_ifindex is an index in the peer's namespace, peer_netnsid is empty when the peer is on the host (or its namespace has no id).
# TYPE veth_info gauge
veth_info{device="hostA",ifindex="7",master="",peer_ifindex="8",peer_netnsid=""} 1
veth_info{device="vleak",ifindex="5",master="docker0",peer_ifindex="2",peer_netnsid="0"} 1
veth_info{device="vlive",ifindex="6",master="docker0",peer_ifindex="2",peer_netnsid="1"} 1
# HELP veth_interfaces Number of host-side veths by master bridge and verdict.
# TYPE veth_interfaces gauge
veth_interfaces{master="",verdict="orphaned"} 1
veth_interfaces{master="",verdict="owned"} 0
veth_interfaces{master="",verdict="unknown"} 0
veth_interfaces{master="docker0",verdict="orphaned"} 1
veth_interfaces{master="docker0",verdict="owned"} 1
veth_interfaces{master="docker0",verdict="unknown"} 0
# HELP veth_last_owner_info Owner an orphaned veth had when the exporter last saw it owned.
# TYPE veth_last_owner_info gauge
veth_last_owner_info{device="vleak",id="abc",kind="container",name="api",pod_name="",pod_namespace="",pod_uid=""} 1
# HELP veth_orphaned Whether the veth is orphaned: nothing live owns it.
# TYPE veth_orphaned gauge
veth_orphaned{device="hostA"} 1
veth_orphaned{device="vleak"} 1
veth_orphaned{device="vlive"} 0
# HELP veth_orphaned_since_timestamp_seconds Since when the veth has been orphaned without interruption.
# TYPE veth_orphaned_since_timestamp_seconds gauge
veth_orphaned_since_timestamp_seconds{device="hostA"} 1.7e+09
veth_orphaned_since_timestamp_seconds{device="vleak"} 1.7000018e+09
# HELP veth_owner_info Current owner of the veth's peer namespace.
# TYPE veth_owner_info gauge
veth_owner_info{device="vlive",id="abc",kind="container",name="api",pod_name="",pod_namespace="",pod_uid=""} 1
# HELP veth_peer_netns_alive Whether the peer's network namespace holds at least one process, or a container runtime runs a container in it (absent when the peer is on the host or its namespace was not found).
# TYPE veth_peer_netns_alive gauge
veth_peer_netns_alive{device="vleak"} 0
veth_peer_netns_alive{device="vlive"} 1
# HELP veth_peer_netns_processes Number of processes in the peer's network namespace (absent when the peer is on the host, its namespace was not found, or a container runtime runs a container in it and they were not counted).
# TYPE veth_peer_netns_processes gauge
veth_peer_netns_processes{device="vleak"} 0
veth_peer_netns_processes{device="vlive"} 2
# HELP veth_scrape_collector_success Whether each stage of the inventory succeeded in this scrape.
# TYPE veth_scrape_collector_success gauge
veth_scrape_collector_success{collector="links"} 1
veth_scrape_collector_success{collector="netns"} 1
# HELP veth_up Whether the veth's operstate is up.
# TYPE veth_up gauge
veth_up{device="hostA"} 0
veth_up{device="vleak"} 1
veth_up{device="vlive"} 1
# HELP veth_verdict_info The exporter's verdict on the veth (owned, orphaned, unknown) and its reason.
# TYPE veth_verdict_info gauge
veth_verdict_info{device="hostA",reason="peer_on_host",verdict="orphaned"} 1
veth_verdict_info{device="vleak",reason="netns_empty",verdict="orphaned"} 1
veth_verdict_info{device="vlive",reason="container",verdict="owned"} 1
`
	names := []string{"veth_info", "veth_interfaces", "veth_last_owner_info", "veth_orphaned",
		"veth_orphaned_since_timestamp_seconds", "veth_owner_info", "veth_peer_netns_alive",
		"veth_peer_netns_processes", "veth_scrape_collector_success", "veth_up", "veth_verdict_info"}
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func TestGatherAndLint(t *testing.T) {
	c := New(fakeInventory{snap: testSnapshot()}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	problems, err := testutil.GatherAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func TestDeviceFilters(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // devices with a veth_info series
	}{
		{"all", Config{PerDevice: true}, []string{"hostA", "vleak", "vlive"}},
		{"per-device off", Config{}, nil},
		{"include", Config{PerDevice: true, DeviceInclude: regexp.MustCompile(`^v.*$`)}, []string{"vleak", "vlive"}},
		{"exclude", Config{PerDevice: true, DeviceExclude: regexp.MustCompile(`^vleak$`)}, []string{"hostA", "vlive"}},
		{"include and exclude", Config{PerDevice: true, DeviceInclude: regexp.MustCompile(`^v.*$`), DeviceExclude: regexp.MustCompile(`^vleak$`)}, []string{"vlive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mfs, err := New(fakeInventory{snap: testSnapshot()}, tt.cfg, slog.New(slog.DiscardHandler)).Gather()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			counts := 0
			for _, mf := range mfs {
				switch mf.GetName() {
				case "veth_info":
					for _, m := range mf.GetMetric() {
						for _, l := range m.GetLabel() {
							if l.GetName() == "device" {
								got = append(got, l.GetValue())
							}
						}
					}
				case "veth_interfaces":
					for _, m := range mf.GetMetric() {
						counts += int(m.GetGauge().GetValue())
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("veth_info devices = %v, want %v", got, tt.want)
			}
			// Filters thin the per-device series, never the counts.
			if counts != 3 {
				t.Errorf("sum of veth_interfaces = %d, want 3", counts)
			}
		})
	}
}

func TestCollectLinkDumpFailure(t *testing.T) {
	snap := &inventory.Snapshot{Steps: []inventory.Step{{Name: "links", Err: errors.New("netlink: permission denied")}}}
	c := New(fakeInventory{snap: snap, err: snap.Steps[0].Err}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	want := `
# HELP veth_scrape_collector_success Whether each stage of the inventory succeeded in this scrape.
# TYPE veth_scrape_collector_success gauge
veth_scrape_collector_success{collector="links"} 0
`
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), "veth_scrape_collector_success", "veth_info", "veth_interfaces"); err != nil {
		t.Error(err)
	}
}

// TestConcurrentScrapes runs Collect from many goroutines at once, as
// several Prometheus servers scraping one node do; run with -race.
func TestConcurrentScrapes(t *testing.T) {
	// prometheus.Gatherers re-checks every series the collector builds by
	// hand: label names, sorting, uniqueness.
	c := New(fakeInventory{snap: testSnapshot()}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	g := prometheus.Gatherers{c}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if _, err := g.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestInvalidUTF8DeviceName: the kernel accepts any bytes in an interface
// name; Prometheus rejects a scrape with an invalid UTF-8 label value.
func TestInvalidUTF8DeviceName(t *testing.T) {
	snap := testSnapshot()
	snap.Veths[0].Name = "p\xfe"
	c := New(fakeInventory{snap: snap}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	want := `
# HELP veth_orphaned Whether the veth is orphaned: nothing live owns it.
# TYPE veth_orphaned gauge
veth_orphaned{device="hostA"} 1
veth_orphaned{device="p` + "\uFFFD" + `"} 1
veth_orphaned{device="vlive"} 0
`
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), "veth_orphaned"); err != nil {
		t.Error(err)
	}
	// The served exposition must parse: run it through a registry's
	// consistency checks as a scraper would.
	if _, err := (prometheus.Gatherers{c}).Gather(); err != nil {
		t.Errorf("gather through prometheus.Gatherers: %v", err)
	}
}

func TestGatherersRejectsDuplicateFamilies(t *testing.T) {
	c := New(fakeInventory{snap: testSnapshot()}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	mfs, err := Gatherers{c, c}.Gather()
	if err == nil || !strings.Contains(err.Error(), "veth_info gathered twice") {
		t.Errorf("Gatherers{c, c}.Gather() error = %v, want a duplicate family error", err)
	}
	if len(mfs) == 0 {
		t.Error("Gatherers{c, c}.Gather() returned no families with its error")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "other_gauge", Help: "Another family."}))
	mfs, err = Gatherers{reg, c}.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(mfs); i++ {
		if mfs[i-1].GetName() >= mfs[i].GetName() {
			t.Errorf("families not sorted: %s before %s", mfs[i-1].GetName(), mfs[i].GetName())
		}
	}
}

func TestCollectDocker(t *testing.T) {
	snap := testSnapshot()
	snap.Veths[1].Owner = &inventory.Owner{Kind: inventory.OwnerContainer, ID: "abc", Name: "api", Runtime: "docker"}
	snap.LeakedNetns = []*inventory.Namespace{{Inode: 99, Mounts: []string{"/run/docker/netns/0123456789ab"}}}
	snap.Views = []inventory.NamedView{{Name: "docker", View: &docker.View{
		Up:      true,
		Bridges: map[string]string{"docker0": "bridge", "br-0123456789ab": "appnet"},
		Containers: []*docker.Container{
			{ID: "abc", Name: "api", Image: "bb:local", State: "running", ComposeProject: "shop", ComposeService: "api"},
			{ID: "zzz", Name: "unrelated", Image: "bb:local", State: "exited"},
		},
		Requests: 42,
	}}}
	snap.Steps = append(snap.Steps, inventory.Step{Name: "docker"})
	c := New(fakeInventory{snap: snap}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	want := `
# HELP veth_bridge_info Container network (Docker's or Podman's) of a bridge that is a veth master (docker0, br-<id>, podman0).
# TYPE veth_bridge_info gauge
veth_bridge_info{master="docker0",network="bridge"} 1
# HELP veth_docker_api_requests_total Docker Engine API requests made by the exporter.
# TYPE veth_docker_api_requests_total counter
veth_docker_api_requests_total 42
# HELP veth_docker_container_info Docker container that owns or last owned a veth, for joins on id.
# TYPE veth_docker_container_info gauge
veth_docker_container_info{compose_project="shop",compose_service="api",id="abc",image="bb:local",name="api",state="running"} 1
# HELP veth_leaked_netns Network namespaces held only by a mount: no process in them and no host veth leading into them.
# TYPE veth_leaked_netns gauge
veth_leaked_netns 1
`
	if err := testutil.GatherAndCompare(c, strings.NewReader(want),
		"veth_bridge_info", "veth_docker_api_requests_total", "veth_docker_container_info", "veth_leaked_netns"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// Docker down: no Docker facts at all, rather than stale ones.
	down := &docker.View{Err: errors.New("connection refused"), Requests: 42}
	snap.Views = []inventory.NamedView{{Name: "docker", View: down}}
	snap.Steps[len(snap.Steps)-1].Err = down.Err
	want = `
# HELP veth_scrape_collector_success Whether each stage of the inventory succeeded in this scrape.
# TYPE veth_scrape_collector_success gauge
veth_scrape_collector_success{collector="docker"} 0
veth_scrape_collector_success{collector="links"} 1
veth_scrape_collector_success{collector="netns"} 1
`
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), "veth_scrape_collector_success", "veth_bridge_info", "veth_docker_container_info"); err != nil {
		t.Error(err)
	}
}

// TestGatherWithoutSnapshot: a source that answers with an error and no
// snapshot at all (a waiter whose context ended) still gives a scrape.
func TestGatherWithoutSnapshot(t *testing.T) {
	c := New(fakeInventory{err: context.DeadlineExceeded}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	mfs, err := c.Gather()
	if err != nil || len(mfs) != 0 {
		t.Errorf("Gather() = %v, %v; want no families and no error", mfs, err)
	}
}

// TestCollectNoVeths: a node without veths says 0 of each verdict rather
// than nothing, so dashboards show 0 and sum() alerts evaluate.
func TestCollectNoVeths(t *testing.T) {
	snap := &inventory.Snapshot{Steps: []inventory.Step{{Name: "links"}, {Name: "netns"}}, LeakedNetns: []*inventory.Namespace{}}
	c := New(fakeInventory{snap: snap}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	want := `
# HELP veth_interfaces Number of host-side veths by master bridge and verdict.
# TYPE veth_interfaces gauge
veth_interfaces{master="",verdict="orphaned"} 0
veth_interfaces{master="",verdict="owned"} 0
veth_interfaces{master="",verdict="unknown"} 0
# HELP veth_leaked_netns Network namespaces held only by a mount: no process in them and no host veth leading into them.
# TYPE veth_leaked_netns gauge
veth_leaked_netns 0
`
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), "veth_interfaces", "veth_leaked_netns", "veth_info"); err != nil {
		t.Error(err)
	}
}

// TestUncountedProcesses: a peer namespace whose processes were not
// counted (a runtime runs a container in it) is alive, and has no
// process count rather than a count of zero.
func TestUncountedProcesses(t *testing.T) {
	snap := testSnapshot()
	counted := snap.Veths[1]
	counted.Name, counted.Index = "vcounted", 9
	pod := &inventory.Namespace{Inode: 13, NSID: 2, Uncounted: true}
	snap.Veths = []inventory.Veth{counted, {
		Name: "vpod", Index: 10, Master: "cni0", OperState: "up", PeerIndex: 2, PeerNetNSID: 2,
		PeerNetns: pod, Verdict: inventory.Owned, Reason: inventory.ReasonPod,
		Owner: &inventory.Owner{Kind: inventory.OwnerPod, ID: "sb", PodName: "web", PodNamespace: "default", PodUID: "u"},
	}}
	c := New(fakeInventory{snap: snap}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	want := `
# HELP veth_peer_netns_alive Whether the peer's network namespace holds at least one process, or a container runtime runs a container in it (absent when the peer is on the host or its namespace was not found).
# TYPE veth_peer_netns_alive gauge
veth_peer_netns_alive{device="vcounted"} 1
veth_peer_netns_alive{device="vpod"} 1
# HELP veth_peer_netns_processes Number of processes in the peer's network namespace (absent when the peer is on the host, its namespace was not found, or a container runtime runs a container in it and they were not counted).
# TYPE veth_peer_netns_processes gauge
veth_peer_netns_processes{device="vcounted"} 2
`
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), "veth_peer_netns_alive", "veth_peer_netns_processes"); err != nil {
		t.Error(err)
	}
}

// TestCollectDockerAndPodman: Docker and Podman on one node each name
// their bridges in veth_bridge_info: one family, every bridge once.
func TestCollectDockerAndPodman(t *testing.T) {
	snap := testSnapshot()
	snap.Veths[0].Master = "podman0"
	snap.Views = []inventory.NamedView{
		{Name: "docker", View: &docker.View{Up: true, Bridges: map[string]string{"docker0": "bridge", "podman0": "podman"}}},
		{Name: "podman", View: &podman.View{Up: true, Bridges: map[string]string{"podman0": "podman", "podman1": "usernet"}, Requests: 7}},
	}
	c := New(fakeInventory{snap: snap}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	want := `
# HELP veth_bridge_info Container network (Docker's or Podman's) of a bridge that is a veth master (docker0, br-<id>, podman0).
# TYPE veth_bridge_info gauge
veth_bridge_info{master="docker0",network="bridge"} 1
veth_bridge_info{master="podman0",network="podman"} 1
# HELP veth_podman_api_requests_total Podman REST API requests made by the exporter.
# TYPE veth_podman_api_requests_total counter
veth_podman_api_requests_total 7
`
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), "veth_bridge_info", "veth_podman_api_requests_total"); err != nil {
		t.Error(err)
	}
}
