package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The hostile-input table of the remediation webhook, against the real
// binary in enforce mode on a real fixture: each case checks the status
// code, each alert's result and reason, and that no interface but the
// intended one disappeared.

func TestRemediateWebhook(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vlive", "vleak", "vleak2", "vleak3")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(webhookToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	audit := filepath.Join(dir, "audit.jsonl")
	e := startExporter(t, "--state.path="+filepath.Join(dir, "state.json"),
		"--remediation.mode=enforce", "--remediation.bearer-token-file="+tokenFile,
		"--remediation.instance=node1", "--remediation.min-age=2s", "--remediation.max-per-request=1",
		// Four of the five veths are leftovers here; a real node has more
		// live ones. The ratio guard has its own unit test.
		"--remediation.max-orphan-ratio=0.9",
		"--remediation.audit-file="+audit)
	e.scrape(t)
	time.Sleep(2500 * time.Millisecond) // the fixture's orphans get older than min-age
	// A young orphan: created now, seen orphaned for less than min-age.
	netnstest.NamedNetns(t, "ns-vyoung")
	netnstest.Veth(t, "vyoung", "ns-vyoung", "docker0")
	e.scrape(t)

	old := time.Now().Add(-time.Hour)
	post := func(body []byte, contentType, scheme, token, method string) (int, webhookAnswer, string) {
		req, _ := http.NewRequest(method, e.url+"/remediate", bytes.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if token != "" {
			req.Header.Set("Authorization", scheme+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var a webhookAnswer
		json.Unmarshal(raw, &a)
		return resp.StatusCode, a, string(raw)
	}

	type want struct{ result, reason string }
	cases := []struct {
		name        string
		body        []byte
		contentType string
		token       string
		method      string
		status      int
		results     []want
		gone        []string // interfaces this case may remove
	}{
		{name: "no auth", body: payloadOf("4", alertSpec{device: "vleak", instance: "node1", startsAt: old}), token: "-", status: 401},
		{name: "wrong token", body: payloadOf("4", alertSpec{device: "vleak", instance: "node1", startsAt: old}), token: "nope", status: 403},
		{name: "GET", method: "GET", status: 405},
		{name: "wrong content type", body: payloadOf("4", alertSpec{device: "vleak", instance: "node1", startsAt: old}), contentType: "text/plain", status: 415},
		{name: "10 MiB body", body: bytes.Repeat([]byte(" "), 10<<20), status: 413},
		{name: "invalid JSON", body: []byte(`{"version":"4","alerts":[`), status: 400},
		{name: "version 3", body: payloadOf("3", alertSpec{device: "vleak", instance: "node1", startsAt: old}), status: 400},
		{name: "device ../x", body: payloadOf("4", alertSpec{device: "../x", instance: "node1", startsAt: old}), status: 200, results: []want{{"refused", "invalid_device"}}},
		{name: "16-byte device", body: payloadOf("4", alertSpec{device: "vleakvleakvleakv", instance: "node1", startsAt: old}), status: 200, results: []want{{"refused", "invalid_device"}}},
		{name: "missing device", body: payloadOf("4", alertSpec{device: "-", instance: "node1", startsAt: old}), status: 200, results: []want{{"refused", "invalid_device"}}},
		{name: "live veth", body: payloadOf("4", alertSpec{device: "vlive", ifindex: ifindexOf(t, "vlive"), instance: "node1", startsAt: old}), status: 200, results: []want{{"refused", "not_orphaned"}}},
		{name: "orphan, wrong ifindex", body: payloadOf("4", alertSpec{device: "vleak", ifindex: ifindexOf(t, "vlive"), instance: "node1", startsAt: old}), status: 200, results: []want{{"refused", "ifindex_mismatch"}}},
		{name: "alert younger than min-age", body: payloadOf("4", alertSpec{device: "vleak", instance: "node1", startsAt: time.Now()}), status: 200, results: []want{{"refused", "alert_too_young"}}},
		{name: "orphan young here", body: payloadOf("4", alertSpec{device: "vyoung", instance: "node1", startsAt: old}), status: 200, results: []want{{"refused", "orphan_too_young"}}},
		{name: "resolved alert", body: payloadOf("4", alertSpec{device: "vleak", instance: "node1", startsAt: old, status: "resolved"}), status: 200, results: []want{{"skipped", "resolved"}}},
		{name: "future startsAt", body: payloadOf("4", alertSpec{device: "vleak", instance: "node1", startsAt: time.Now().Add(time.Hour)}), status: 200, results: []want{{"refused", "starts_in_future"}}},
		{name: "another node", body: payloadOf("4", alertSpec{device: "vleak", instance: "node2", startsAt: old}), status: 200, results: []want{{"skipped", "other_node"}}},
		{name: "no instance label", body: payloadOf("4", alertSpec{device: "vleak", instance: "-", startsAt: old}), status: 200, results: []want{{"skipped", "other_node"}}},
		{name: "instance as a prefix", body: payloadOf("4", alertSpec{device: "vleak", instance: "node1.other", startsAt: old}), status: 200, results: []want{{"skipped", "other_node"}}},
		{name: "lower-case bearer scheme", body: payloadOf("4", alertSpec{device: "vleak", instance: "node2", startsAt: old}), token: "lower", status: 200, results: []want{{"skipped", "other_node"}}},
		{name: "blast radius: one per request", body: payloadOf("4",
			alertSpec{device: "vleak2", instance: "node1", startsAt: old, fingerprint: "b1"},
			alertSpec{device: "vleak3", instance: "node1", startsAt: old, fingerprint: "b2"}),
			status: 200, results: []want{{"deleted", "netns_empty"}, {"refused", "request_limit"}}, gone: []string{"vleak2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := links(t)
			method, ct, token := c.method, c.contentType, c.token
			if method == "" {
				method = "POST"
			}
			if ct == "" {
				ct = "application/json"
			}
			scheme := "Bearer "
			switch token {
			case "":
				token = webhookToken
			case "-":
				token = ""
			case "lower":
				token, scheme = webhookToken, "bearer "
			}
			status, answer, raw := post(c.body, ct, scheme, token, method)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, raw)
			}
			if c.results != nil {
				if len(answer.Results) != len(c.results) {
					t.Fatalf("%d results, want %d: %s", len(answer.Results), len(c.results), raw)
				}
				for i, w := range c.results {
					if got := answer.Results[i]; got.Result != w.result || got.Reason != w.reason {
						t.Errorf("alert %d: %s/%s, want %s/%s", i, got.Result, got.Reason, w.result, w.reason)
					}
				}
			}
			after := links(t)
			for _, l := range before {
				if !slices.Contains(after, l) && !slices.Contains(c.gone, l) {
					t.Errorf("%s disappeared", l)
				}
			}
			for _, l := range c.gone {
				if slices.Contains(after, l) {
					t.Errorf("%s is still there", l)
				}
			}
		})
	}

	t.Run("1,000 alerts in one payload", func(t *testing.T) {
		var alerts []alertSpec
		for i := range 1000 {
			alerts = append(alerts, alertSpec{device: fmt.Sprintf("vnone%d", i), instance: "node1", startsAt: old, fingerprint: fmt.Sprintf("k%d", i)})
		}
		before := links(t)
		status, answer, raw := post(payloadOf("4", alerts...), "application/json", "Bearer ", webhookToken, "POST")
		if status != 200 || len(answer.Results) != 1000 {
			t.Fatalf("status %d, %d results: %.300s", status, len(answer.Results), raw)
		}
		for _, r := range answer.Results {
			if r.Result != "not_found" {
				t.Fatalf("result %+v, want not_found for a device that never existed", r)
			}
		}
		if after := links(t); len(after) != len(before) {
			t.Errorf("%d interfaces before, %d after", len(before), len(after))
		}
	})

	t.Run("the same payload 50 times at once", func(t *testing.T) {
		before := links(t)
		body := payloadOf("4", alertSpec{device: "vleak", ifindex: ifindexOf(t, "vleak"), instance: "node1", startsAt: old, fingerprint: "same"})
		var wg sync.WaitGroup
		var mu sync.Mutex
		results := map[string]int{}
		for range 50 {
			wg.Go(func() {
				status, answer, raw := post(body, "application/json", "Bearer ", webhookToken, "POST")
				mu.Lock()
				defer mu.Unlock()
				if status != 200 || len(answer.Results) != 1 {
					t.Errorf("status %d: %s", status, raw)
					return
				}
				results[answer.Results[0].Result]++
			})
		}
		wg.Wait()
		if _, err := os.Stat("/sys/class/net/vleak"); err == nil {
			t.Error("vleak is still there")
		}
		for _, l := range before {
			if _, err := os.Stat("/sys/class/net/" + l); err != nil && l != "vleak" {
				t.Errorf("%s disappeared", l)
			}
		}
		// One deletion: the re-sends get the same answer from the cache.
		b, _ := os.ReadFile(audit)
		if n := strings.Count(string(b), `"device":"vleak","ifindex"`) - strings.Count(string(b), `"device":"vleak","ifindex":0`); n < 1 {
			t.Errorf("audit file has no record of vleak:\n%s", b)
		}
		m := e.scrape(t)
		if v, _ := sample(m, `veth_remediation_actions_total{method="release",result="deleted"}`); v != 2 {
			t.Errorf("veth_remediation_actions_total{method=\"release\",result=\"deleted\"} = %v, want 2 (vleak2 and vleak, once)", v)
		}
		t.Logf("answers to 50 identical requests: %v", results)
	})
}

// TestRemediateWithoutNetAdmin runs the exporter as on a managed node that
// withholds CAP_NET_ADMIN: it says so in veth_remediation_capable and
// refuses every deletion with no_permission, deleting nothing.
func TestRemediateWithoutNetAdmin(t *testing.T) {
	netnstest.Require(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	netnstest.NamedNetns(t, "ns-vcap")
	netnstest.Veth(t, "vcap", "ns-vcap", "")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(webhookToken), 0o600)
	addr := "127.0.0.1:" + freePort(t)
	cmd := exec.Command(setpriv, "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--",
		exporterBinary(t), "--web.listen-address="+addr, "--inventory.trust-pid-namespace", "--inventory.settle-time=0s",
		"--state.path="+filepath.Join(dir, "state.json"), "--remediation.mode=enforce", "--remediation.bearer-token-file="+tokenFile,
		"--remediation.instance=node1", "--remediation.min-age=0s", "--remediation.master-include=", "--remediation.max-orphan-ratio=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	e := runExporter(t, cmd, addr)

	m := e.scrape(t)
	wantSample(t, m, "veth_remediation_capable", 0)
	body := payloadOf("4", alertSpec{device: "vcap", instance: "node1", startsAt: time.Now().Add(-time.Hour)})
	req, _ := http.NewRequest("POST", e.url+"/remediate", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+webhookToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer webhookAnswer
	json.NewDecoder(resp.Body).Decode(&answer)
	if resp.StatusCode != 200 || len(answer.Results) != 1 || answer.Results[0].Reason != "no_permission" {
		t.Errorf("status %d, results %+v; want 200 and refused/no_permission\n%s", resp.StatusCode, answer.Results, e.log)
	}
	if _, err := os.Stat("/sys/class/net/vcap"); err != nil {
		t.Error("vcap was deleted without CAP_NET_ADMIN")
	}
}

// startWebhook starts the exporter in enforce mode with a bearer token and
// the given extra flags.
func startWebhook(t *testing.T, statePath string, args ...string) *exporter {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(webhookToken), 0o600); err != nil {
		t.Fatal(err)
	}
	return startExporter(t, append([]string{"--state.path=" + statePath, "--remediation.mode=enforce",
		"--remediation.bearer-token-file=" + tokenFile, "--remediation.instance=node1", "--remediation.max-orphan-ratio=1"}, args...)...)
}

// TestRemediateNeedsEarlierObservation: with min-age and settle time 0, an
// orphan that appeared after start-up is not deleted by the first request
// that sees it: its orphaned-since must come from an observation before
// the request.
func TestRemediateNeedsEarlierObservation(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "docker0")
	e := startWebhook(t, filepath.Join(t.TempDir(), "state.json"), "--remediation.min-age=0s")
	netnstest.NamedNetns(t, "ns-vlate")
	netnstest.Veth(t, "vlate", "ns-vlate", "docker0")
	if result, reason := postAlert(t, e, "vlate", "late1"); result != "refused" || reason != "not_recorded" {
		t.Errorf("first request for an orphan nobody recorded: %s/%s, want refused/not_recorded", result, reason)
	}
	if _, err := os.Stat("/sys/class/net/vlate"); err != nil {
		t.Fatal("vlate was deleted on the request's own observation")
	}
	e.scrape(t) // an observation before the next request
	if result, reason := postAlert(t, e, "vlate", "late1"); result != "deleted" {
		t.Errorf("after a scrape recorded it: %s/%s, want deleted", result, reason)
	}
}

// TestRemediateClockRestartsAfterDowntime: while the exporter was stopped
// anything may have lived in a leftover's namespace and left; after a gap
// longer than --state.max-gap the orphan clock starts again.
func TestRemediateClockRestartsAfterDowntime(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "docker0")
	netnstest.NamedNetns(t, "ns-vdown")
	netnstest.Veth(t, "vdown", "ns-vdown", "docker0")
	statePath := filepath.Join(t.TempDir(), "state.json")
	flags := []string{"--remediation.min-age=2s", "--state.max-gap=1s"}
	first := startWebhook(t, statePath, flags...)
	first.scrape(t)
	first.stop(t)
	// Down for longer than the gap and than min-age; meanwhile a process
	// lived in the namespace and left.
	visitor := exec.Command("nsenter", "--net=/run/netns/ns-vdown", "sleep", "1")
	if err := visitor.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	visitor.Wait()
	second := startWebhook(t, statePath, flags...)
	if result, reason := postAlert(t, second, "vdown", "down1"); result == "deleted" || reason != "orphan_too_young" {
		t.Errorf("right after the restart: %s/%s, want refused/orphan_too_young (the clock restarted)", result, reason)
	}
	if _, err := os.Stat("/sys/class/net/vdown"); err != nil {
		t.Fatal("vdown was deleted on a clock that ran while nobody looked")
	}
	// Observed without a gap (Prometheus scrapes) for min-age.
	for end := time.Now().Add(2100 * time.Millisecond); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		second.scrape(t)
	}
	if result, reason := postAlert(t, second, "vdown", "down1"); result != "deleted" {
		t.Errorf("2 s of observed orphanhood later: %s/%s, want deleted", result, reason)
	}
}

// TestRemediateReusedIfindex: a new veth created under the name and the
// ifindex of a recorded orphan (`ip link add … index N`) is a new veth: it
// inherits no orphan time.
func TestRemediateReusedIfindex(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "docker0")
	netnstest.NamedNetns(t, "ns-vreuse")
	netnstest.Veth(t, "vreuse", "ns-vreuse", "docker0")
	index := ifindexOf(t, "vreuse")
	e := startWebhook(t, filepath.Join(t.TempDir(), "state.json"), "--remediation.min-age=1s")
	e.scrape(t)
	time.Sleep(1200 * time.Millisecond)
	e.scrape(t)
	// Between two scrapes the old veth goes and a new one takes its name
	// and ifindex, its peer in another namespace.
	netnstest.IP(t, "link", "del", "vreuse")
	netnstest.NamedNetns(t, "ns-vreuse2")
	netnstest.IP(t, "link", "add", "vreuse", "index", index, "type", "veth", "peer", "name", "eth0", "netns", "ns-vreuse2")
	netnstest.IP(t, "link", "set", "vreuse", "master", "docker0", "up")
	e.scrape(t)
	if result, reason := postAlert(t, e, "vreuse", "reuse1"); result == "deleted" || reason != "orphan_too_young" {
		t.Errorf("new veth under a recorded orphan's name and ifindex: %s/%s, want refused/orphan_too_young", result, reason)
	}
	if _, err := os.Stat("/sys/class/net/vreuse"); err != nil {
		t.Error("the new vreuse was deleted on the old one's history")
	}
}
