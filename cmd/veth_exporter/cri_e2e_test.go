package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// TestCRIRemediationEndToEnd is the Kubernetes leftover through the whole
// chain: containerd loses a pod's record while its namespace stays mounted
// (critest.LoseSandbox); the CRI resolver calls its veth on cni0 orphaned,
// naming the pod; Prometheus fires VethOrphaned, Alertmanager sends it to
// /remediate, and the exporter deletes it. The live pod's veth stays.
func TestCRIRemediationEndToEnd(t *testing.T) {
	netnstest.Require(t)
	rt := critest.Start(t)
	lost := rt.RunPod(t, "shop", "cart", "")
	live := rt.RunPod(t, "shop", "web", "")
	dir := t.TempDir()
	token := filepath.Join(dir, "remediate.token")
	if err := os.WriteFile(token, []byte("cri-"+webhookToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	audit := filepath.Join(dir, "audit.jsonl")
	instance := "127.0.0.1:" + freePort(t)
	e := startExporter(t, "--web.listen-address="+instance, "--state.path="+filepath.Join(dir, "state.json"),
		"--collector.cri", "--cri.endpoint="+rt.Endpoint, "--no-collector.docker",
		"--remediation.mode=enforce", "--remediation.bearer-token-file="+token,
		"--remediation.instance="+regexp.QuoteMeta(instance), "--remediation.min-age="+e2eMinAge.String(),
		"--remediation.max-orphan-ratio=0.9", "--remediation.audit-file="+audit)
	showOnFailure(t, "exporter", e.log)
	// The exporter knows both pods before the runtime loses one.
	m := e.scrape(t)
	for _, p := range []*critest.Pod{lost, live} {
		wantSample(t, m, `veth_verdict_info{device="`+p.Veth+`",reason="pod",verdict="owned"}`, 1)
	}
	rt.LoseSandbox(t, lost)
	promAddr, _ := startAlertChain(t, dir, instance, token)

	deadline := time.Now().Add(90 * time.Second)
	for {
		if a, ok := prometheusAlert("http://"+promAddr, lost.Veth); ok && a.State == "firing" {
			if a.Labels["reason"] != "netns_empty" || a.Labels["ifindex"] != strconv.Itoa(lost.VethIndex) {
				t.Fatalf("VethOrphaned for %s has labels %v, want reason netns_empty and ifindex %d", lost.Veth, a.Labels, lost.VethIndex)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no VethOrphaned firing for %s (pod %s/%s)\nlast scrape:\n%s", lost.Veth, lost.Namespace, lost.Name, e.scrape(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
	m = e.scrape(t)
	wantSample(t, m, `veth_last_owner_info{device="`+lost.Veth+`",id="`+lost.ID+`",kind="pod",name="`+lost.Name+
		`",pod_name="`+lost.Name+`",pod_namespace="`+lost.Namespace+`",pod_uid="`+lost.UID+`"}`, 1)
	for netnstest.LinkExists(lost.Veth) {
		if time.Now().After(deadline) {
			t.Fatalf("%s was never deleted\naudit file:\n%s", lost.Veth, fileText(audit))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !netnstest.LinkExists(live.Veth) || !netnstest.LinkExists(critest.Bridge) {
		t.Fatalf("the live pod's veth %s or %s went too", live.Veth, critest.Bridge)
	}
	// The result is audited after the deletion it reports: wait for it.
	for !slices.ContainsFunc(auditLines(t, audit), func(r auditLine) bool { return r.Phase == "result" && r.Result == "deleted" }) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is gone but its deletion was never audited:\n%s", lost.Veth, fileText(audit))
		}
		time.Sleep(100 * time.Millisecond)
	}
	deleted := 0
	for _, r := range auditLines(t, audit) {
		if r.Phase == "result" && r.Result == "deleted" {
			deleted++
			if r.Device != lost.Veth || r.Reason != "netns_empty" {
				t.Errorf("audit: %s, want only %s deleted for netns_empty", r.line, lost.Veth)
			}
		}
	}
	if deleted != 1 {
		t.Errorf("%d deletions in the audit file, want 1:\n%s", deleted, fileText(audit))
	}
}
