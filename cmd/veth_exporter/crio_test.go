package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// TestCRIOInstance: CRI-O is a registration of the CRI resolver of its
// own, "crio", beside "cri": both run at once, each with its flags, its
// stage, its API counter and its key in the inventory's JSON. A real
// containerd through CRI stands in for CRI-O (no CRI-O here): the
// resolver speaks CRI to either. The "cri" instance is forced on at a
// socket that does not exist, so it is down; the pod's namespace is
// claimed running by "crio", which outweighs a resolver that is down.
func TestCRIOInstance(t *testing.T) {
	netnstest.Require(t)
	r := critest.Start(t)
	pod := r.RunPod(t, "default", "web", "")
	e := startExporter(t, "--state.path="+filepath.Join(t.TempDir(), "state.json"),
		"--collector.crio", "--crio.endpoint="+r.Endpoint,
		"--collector.cri", "--cri.endpoint=unix://"+filepath.Join(t.TempDir(), "no-cri.sock"))
	m := e.scrapeUntil(t, "the pod owned through the crio instance", func(m string) bool {
		v, ok := sample(m, verdictSeries(pod.Veth, "owned", "pod"))
		return ok && v == 1
	})
	wantSample(t, m, `veth_scrape_collector_success{collector="crio"}`, 1)
	wantSample(t, m, `veth_scrape_collector_success{collector="cri"}`, 0)
	wantSample(t, m, podOwnerSeries("veth_owner_info", pod.Veth, pod), 1)
	wantSample(t, m, podInfoSeries(pod, "ready"), 1)
	if n, ok := sample(m, "veth_crio_api_requests_total"); !ok || n < 1 {
		t.Errorf("veth_crio_api_requests_total = %v (present %v), want the calls the crio instance made", n, ok)
	}
	if _, ok := sample(m, "veth_cri_api_requests_total"); !ok {
		t.Error("veth_cri_api_requests_total missing: the cri instance counts its calls too")
	}

	resp, err := http.Get(e.url + "/api/v1/veths")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	var crio, cri struct {
		Up      bool   `json:"up"`
		Runtime string `json:"runtime"`
	}
	if err := json.Unmarshal(doc["crio"], &crio); err != nil || !crio.Up || crio.Runtime != "containerd" {
		t.Errorf(`JSON key "crio" = %s (%v), want the view of the runtime that answered`, doc["crio"], err)
	}
	if err := json.Unmarshal(doc["cri"], &cri); err != nil || cri.Up {
		t.Errorf(`JSON key "cri" = %s (%v), want a view that is down`, doc["cri"], err)
	}
}
