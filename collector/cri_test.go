package collector

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/resolver/cri"
	"github.com/veth-exporter/veth_exporter/resolver/docker"
)

// TestCollectCRI: the CRI resolver's families as exposition, both with
// Docker's in one scrape: the call counter, a veth_pod_info for the pod
// that owns a veth and for the one that last owned an orphan, and the
// pod labels of veth_owner_info; with the runtime down, only the counter.
func TestCollectCRI(t *testing.T) {
	snap := testSnapshot()
	web := &inventory.Owner{Kind: inventory.OwnerPod, ID: "s1", Name: "web", PodNamespace: "default", PodName: "web", PodUID: "u1", Runtime: cri.RuntimeContainerd}
	cart := &inventory.Owner{Kind: inventory.OwnerPod, ID: "s9", Name: "cart", PodNamespace: "shop", PodName: "cart", PodUID: "u9", Runtime: cri.RuntimeContainerd}
	snap.Veths[0].LastOwner = cart
	snap.Veths[1].Owner, snap.Veths[1].LastOwner, snap.Veths[1].Reason = web, web, inventory.ReasonPod
	snap.Views = []inventory.NamedView{
		{Name: "docker", View: &docker.View{Up: true, Requests: 1}},
		{Name: "cri", View: &cri.View{Up: true, Runtime: cri.RuntimeContainerd, Requests: 7, Sandboxes: []*cri.Sandbox{
			{ID: "s1", Namespace: "default", Name: "web", UID: "u1", State: cri.Ready},
			{ID: "s2", Namespace: "default", Name: "idle", UID: "u2", State: cri.NotReady},
		}}},
	}
	snap.Steps = append(snap.Steps, inventory.Step{Name: "docker"}, inventory.Step{Name: "cri"})
	c := New(fakeInventory{snap: snap}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	want := `
# HELP veth_cri_api_requests_total Kubernetes CRI API calls made by the exporter.
# TYPE veth_cri_api_requests_total counter
veth_cri_api_requests_total 7
# HELP veth_docker_api_requests_total Docker Engine API requests made by the exporter.
# TYPE veth_docker_api_requests_total counter
veth_docker_api_requests_total 1
# HELP veth_last_owner_info Owner an orphaned veth had when the exporter last saw it owned.
# TYPE veth_last_owner_info gauge
veth_last_owner_info{device="vleak",id="s9",kind="pod",name="cart",pod_name="cart",pod_namespace="shop",pod_uid="u9"} 1
# HELP veth_owner_info Current owner of the veth's peer namespace.
# TYPE veth_owner_info gauge
veth_owner_info{device="vlive",id="s1",kind="pod",name="web",pod_name="web",pod_namespace="default",pod_uid="u1"} 1
# HELP veth_pod_info Kubernetes pod that owns or last owned a veth, as its CRI runtime lists it (state gone: listed no more), for joins on pod_uid or sandbox_id.
# TYPE veth_pod_info gauge
veth_pod_info{pod_name="cart",pod_namespace="shop",pod_uid="u9",runtime="containerd",sandbox_id="s9",state="gone"} 1
veth_pod_info{pod_name="web",pod_namespace="default",pod_uid="u1",runtime="containerd",sandbox_id="s1",state="ready"} 1
`
	names := []string{"veth_cri_api_requests_total", "veth_docker_api_requests_total", "veth_last_owner_info", "veth_owner_info", "veth_pod_info"}
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// CRI down: no pod facts at all, rather than stale ones.
	down := &cri.View{Err: errors.New("connection refused"), Requests: 8}
	snap.Views[1].View = down
	snap.Steps[len(snap.Steps)-1].Err = down.Err
	want = `
# HELP veth_cri_api_requests_total Kubernetes CRI API calls made by the exporter.
# TYPE veth_cri_api_requests_total counter
veth_cri_api_requests_total 8
# HELP veth_scrape_collector_success Whether each stage of the inventory succeeded in this scrape.
# TYPE veth_scrape_collector_success gauge
veth_scrape_collector_success{collector="cri"} 0
veth_scrape_collector_success{collector="docker"} 1
veth_scrape_collector_success{collector="links"} 1
veth_scrape_collector_success{collector="netns"} 1
`
	if err := testutil.GatherAndCompare(c, strings.NewReader(want), "veth_cri_api_requests_total", "veth_scrape_collector_success", "veth_pod_info"); err != nil {
		t.Error(err)
	}
}
