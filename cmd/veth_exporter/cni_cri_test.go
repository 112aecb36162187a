package main

import (
	"fmt"
	"testing"

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
