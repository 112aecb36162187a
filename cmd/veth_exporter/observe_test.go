package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// lastObserved reads the state file's last_observed time.
func lastObserved(t *testing.T, statePath string) time.Time {
	t.Helper()
	b, err := os.ReadFile(statePath)
	if err != nil {
		return time.Time{}
	}
	var f struct {
		LastObserved time.Time `json:"last_observed"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("state file: %v", err)
	}
	return f.LastObserved
}

// TestObservesWithoutScrapes: on a node nobody scrapes, serve still
// observes, so its state file stays fresh and clean can prove a removal
// with it; without the interval the same file goes stale.
func TestObservesWithoutScrapes(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "volive", "vo1")
	for _, tc := range []struct {
		interval string
		want     string // clean's result for vo1
	}{
		{"0s", "stale_state"},
		{"500ms", "deleted"},
	} {
		t.Run("interval "+tc.interval, func(t *testing.T) {
			statePath := filepath.Join(t.TempDir(), "state.json")
			// A max-gap of 2s rewrites the state file every half second.
			e := startExporter(t, "--state.path="+statePath, "--state.max-gap=2s", "--inventory.observe-interval="+tc.interval)
			first := lastObserved(t, statePath)
			time.Sleep(3 * time.Second) // no scrape meanwhile
			if later := lastObserved(t, statePath); tc.interval != "0s" && !later.After(first.Add(time.Second)) {
				t.Errorf("last_observed %v, %v three seconds later: no observation without scrapes", first, later)
			}
			out, code := clean(t, "--state.path="+statePath, "--state.max-gap=2s", "--min-age=0s", "--remediation.max-orphan-ratio=1", "vo1")
			if r := row(out, "vo1"); r == nil || !strings.Contains(strings.Join(r, " "), tc.want) {
				t.Errorf("clean vo1 with observe-interval %s: exit %d\n%s\nwant %s", tc.interval, code, out, tc.want)
			}
			e.stop(t)
		})
	}
}

// TestCleanCorruptState: a state file that cannot be read is said to be
// so, not taken for the absence of a running exporter.
func TestCleanCorruptState(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vclive", "vcc1")
	statePath := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(statePath, []byte("{\"version\": 1, \"devices\": [nul"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := clean(t, "--state.path="+statePath, "--min-age=0s", "--remediation.max-orphan-ratio=1", "vcc1")
	if r := row(out, "vcc1"); code != 1 || r == nil || r[3] != "stale_state" || !strings.Contains(out, "corrupt state file") {
		t.Errorf("clean with a corrupt state file: exit %d\n%s\nwant 1, stale_state saying the file is corrupt", code, out)
	}
}

// TestCleanSeesWhatMetricsShow: an orphan the running exporter's /metrics
// shows is in its state file at once (a new orphan is written when it is
// seen, not at the next refresh): clean right after finds it recorded.
func TestCleanSeesWhatMetricsShow(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vmlive")
	statePath := filepath.Join(t.TempDir(), "state.json")
	e := startExporter(t, "--state.path="+statePath, "--inventory.observe-interval=0s")
	e.scrape(t)
	netnstest.NamedNetns(t, "ns-vm1")
	netnstest.Veth(t, "vm1", "ns-vm1", "docker0")
	e.scrapeUntil(t, "vm1 orphaned", func(m string) bool {
		return strings.Contains(m, `veth_verdict_info{device="vm1",reason="netns_empty",verdict="orphaned"}`)
	})
	out, code := clean(t, "--state.path="+statePath, "--min-age=0s", "--remediation.max-orphan-ratio=1", "vm1")
	if r := row(out, "vm1"); code != 0 || r == nil || r[2] != "deleted" {
		t.Errorf("clean vm1 right after /metrics showed it orphaned: exit %d\n%s\nwant deleted", code, out)
	}
}

// TestCleanCountedByServe: what clean removes shows in the running
// exporter's remediation metrics (the dashboard's counts and last
// deletion) when both use one audit file.
func TestCleanCountedByServe(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vcslive", "vcs1")
	dir := t.TempDir()
	statePath, audit := filepath.Join(dir, "state.json"), filepath.Join(dir, "audit.jsonl")
	e := startExporter(t, "--state.path="+statePath, "--remediation.audit-file="+audit)
	e.scrape(t)
	if out, code := clean(t, "--state.path="+statePath, "--remediation.audit-file="+audit, "--min-age=0s",
		"--remediation.max-orphan-ratio=1", "vcs1"); code != 0 {
		t.Fatalf("clean vcs1: exit %d\n%s", code, out)
	}
	m := e.scrapeUntil(t, "clean's deletion counted", func(m string) bool {
		return strings.Contains(m, `veth_remediation_actions_total{method="release",result="deleted"} 1`)
	})
	if strings.Contains(m, "veth_remediation_last_deletion_timestamp_seconds 0\n") {
		t.Errorf("last deletion still 0 after clean deleted vcs1:\n%s", m)
	}
}
