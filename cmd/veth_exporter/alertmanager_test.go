package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/monitortest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The whole remediation chain with the real programs: Prometheus (Debian
// prometheus 2.42) scrapes the exporter and evaluates the shipped alert
// rules, Alertmanager (Debian prometheus-alertmanager 0.25) routes
// VethOrphaned to the exporter's /remediate, and the exporter deletes the
// leftover. All of it runs in the test's private namespaces, on loopback.

// TestRemediationEndToEnd: a veth whose namespace leaked (held only by an
// `ip netns` mount) is deleted through Prometheus, Alertmanager and the
// webhook; a veth owned by a container and a young orphan stay.
//
// Timing, with F = e2eFor, M = e2eMinAge, everything scraped and evaluated
// every second:
//
//   - vleaked is orphaned from the exporter's first look (settle time 0).
//     Its alert fires F after its first evaluation, with startsAt = the
//     moment it fired (Prometheus sends FiredAt, not ActiveAt). Alertmanager
//     holds it for group_wait (1 s) and the webhook refuses it,
//     alert_too_young (a refusal time lifts, so it is not cached);
//     Alertmanager re-sends it every 2 s (repeat_interval), and the first
//     re-send at least M after startsAt deletes it: at most M + 2 s after
//     it fired (plus milliseconds).
//   - vyoung is created as soon as Prometheus reports vleaked's alert
//     firing, at Tc: before that alert reaches the webhook, so it is an
//     orphan younger than M, in the fresh inventory, when vleaked's alert
//     is first decided. Its own alert cannot fire before Tc + F (the
//     series does not exist earlier) and the webhook refuses it until it
//     has fired for M: vyoung cannot be deleted before Tc + F + M, whatever
//     the scheduling. Its alert reaches the webhook about 1 s after it
//     fires (group_wait) and is refused, alert_too_young (its orphan age
//     here is always larger than its alert's age, so orphan_too_young
//     would need a clock step).
//   - The test checks everything as soon as vleaked is gone and vyoung's
//     first refusal is in the audit file. vleaked goes by Tc + M + 2 s,
//     F - 2 s = 6 s before vyoung could; vyoung's first refusal comes about
//     M - 1 s = 5 s before it could pass. Those margins are the only
//     timing assumptions: the test would have to stall for 5 s between two
//     polls to see vyoung legitimately removed, and says so if it does.
//
// The ratio guard (--remediation.max-orphan-ratio, 0.5) would refuse
// everything here, where two of three veths are leftovers; a real node has
// more live ones, and the guard has its own tests.
func TestRemediationEndToEnd(t *testing.T) {
	netnstest.Require(t)
	begin := time.Now()
	since := func() string { return time.Since(begin).Round(100 * time.Millisecond).String() }
	dir := t.TempDir()

	netnstest.Bridge(t, "docker0")
	netnstest.NamedNetns(t, "e2e-leak")
	netnstest.Veth(t, "vleaked", "e2e-leak", "docker0")
	owner := netnstest.Holder(t, "/docker/"+e2eContainer)
	netnstest.Veth(t, "vowned", strconv.Itoa(owner), "docker0")
	leakedIndex := netnstest.LinkIndex(t, "vleaked")

	token := filepath.Join(dir, "remediate.token")
	if err := os.WriteFile(token, []byte("e2e-"+webhookToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	audit := filepath.Join(dir, "audit.jsonl")
	// startExporter picks a listen address of its own; a second one, known
	// before the start, is the address Prometheus scrapes, hence the
	// instance label the webhook must recognise as this node.
	instance := "127.0.0.1:" + freePort(t)
	e := startExporter(t, "--web.listen-address="+instance,
		"--state.path="+filepath.Join(dir, "state.json"),
		"--remediation.mode=enforce", "--remediation.bearer-token-file="+token,
		"--remediation.instance="+regexp.QuoteMeta(instance),
		"--remediation.min-age="+e2eMinAge.String(),
		"--remediation.max-orphan-ratio=0.9",
		"--remediation.audit-file="+audit)
	showOnFailure(t, "exporter", e.log)

	promAddr, amAddr := startAlertChain(t, dir, instance, token)
	t.Logf("%s: exporter, Alertmanager and Prometheus ready", since())

	// About 20 s in practice (Prometheus applies new targets every 5 s).
	deadline := time.Now().Add(50 * time.Second)
	stuck := func(what string) {
		t.Helper()
		t.Fatalf("%s: still %s\nPrometheus alerts: %s\nAlertmanager alerts: %s\naudit file:\n%s\ninterfaces: %v",
			since(), what, monitortest.Body("http://"+promAddr+"/api/v1/alerts"), monitortest.Body("http://"+amAddr+"/api/v2/alerts"),
			fileText(audit), links(t))
	}

	// vleaked's alert fires.
	for {
		a, ok := prometheusAlert("http://"+promAddr, "vleaked")
		if ok && a.State == "firing" {
			if a.Labels["instance"] != instance || a.Labels["ifindex"] != strconv.Itoa(leakedIndex) || a.Labels["reason"] != "netns_empty" {
				t.Fatalf("VethOrphaned for vleaked has labels %v, want instance %s, ifindex %d, reason netns_empty", a.Labels, instance, leakedIndex)
			}
			break
		}
		if time.Now().After(deadline) {
			stuck("no VethOrphaned firing for vleaked")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s: VethOrphaned fires for vleaked", since())

	// The young orphan, before vleaked's alert reaches the webhook.
	created := time.Now()
	netnstest.NamedNetns(t, "e2e-young")
	netnstest.Veth(t, "vyoung", "e2e-young", "docker0")
	before := links(t)
	// gone explains the disappearance of vowned or vyoung: a bug, unless
	// the test itself was so slow that vyoung's own alert could pass.
	gone := func(device string) string {
		if device == "vyoung" && time.Since(created) >= e2eFor+e2eMinAge {
			return fmt.Sprintf("vyoung is gone, but the test looked %s after creating it, when F + M = %s allow its removal: the test stalled and proves nothing",
				time.Since(created).Round(time.Millisecond), e2eFor+e2eMinAge)
		}
		return fmt.Sprintf("%s: %s was deleted\naudit file:\n%s", since(), device, fileText(audit))
	}

	// Until vleaked is gone and vyoung's alert has been refused.
	var leakedGone, youngRefused time.Duration
	for leakedGone == 0 || youngRefused == 0 {
		if leakedGone == 0 && !netnstest.LinkExists("vleaked") {
			leakedGone = time.Since(created)
			t.Logf("%s: vleaked deleted", since())
		}
		if youngRefused == 0 && slices.ContainsFunc(auditLines(t, audit), func(r auditLine) bool { return r.Device == "vyoung" }) {
			youngRefused = time.Since(created)
			t.Logf("%s: vyoung's alert answered", since())
		}
		for _, d := range []string{"vowned", "vyoung"} {
			if !netnstest.LinkExists(d) {
				t.Fatal(gone(d))
			}
		}
		if time.Now().After(deadline) {
			stuck(fmt.Sprintf("waiting: vleaked deleted %v, vyoung's alert answered %v", leakedGone != 0, youngRefused != 0))
		}
		time.Sleep(100 * time.Millisecond)
	}
	checked := time.Since(created)
	t.Logf("after vyoung's creation: vleaked gone at %s, vyoung's alert refused at %s, checked at %s (vyoung removable from %s)",
		leakedGone.Round(time.Millisecond), youngRefused.Round(time.Millisecond), checked.Round(time.Millisecond), e2eFor+e2eMinAge)

	after := links(t)
	for _, l := range before {
		if l != "vleaked" && l != "vowned" && l != "vyoung" && !slices.Contains(after, l) {
			t.Errorf("%s disappeared", l)
		}
	}
	for _, d := range []string{"vowned", "vyoung"} {
		if !slices.Contains(after, d) {
			t.Error(gone(d))
		}
	}

	// The audit file: one deletion of vleaked, by ifindex, not before its
	// alert had fired for min-age; vyoung only ever refused as too young;
	// nothing about vowned, which never alerted.
	tooYoung := func(r auditLine) bool {
		return r.Result == "refused" && (r.Reason == "alert_too_young" || r.Reason == "orphan_too_young")
	}
	deleted := 0
	var summary []string
	intents := 0
	for _, r := range auditLines(t, audit) {
		summary = append(summary, fmt.Sprintf("%s %s/%s (alert age %s)", r.Device, r.Result, r.Reason, r.Time.Sub(r.StartsAt).Round(100*time.Millisecond)))
		switch {
		case r.Phase == "intent":
			// Written before the deletion it announces.
			if r.Device != "vleaked" || deleted != 0 {
				t.Errorf("audit: intent %s, want one for vleaked, before its deletion", r.line)
			}
			intents++
		case r.Device == "vleaked" && r.Result == "deleted":
			if intents != 1 {
				t.Errorf("audit: %s without an intent record before it", r.line)
			}
			deleted++
			if r.Ifindex != leakedIndex || r.Reason != "netns_empty" || r.Mode != "enforce" {
				t.Errorf("audit: %s, want vleaked (ifindex %d) deleted for netns_empty in enforce mode", r.line, leakedIndex)
			}
			if age := r.Time.Sub(r.StartsAt); age < e2eMinAge {
				t.Errorf("audit: %s: deleted %s after its alert started, less than min-age %s", r.line, age, e2eMinAge)
			}
		case r.Device == "vleaked" && tooYoung(r):
		case r.Device == "vyoung" && tooYoung(r):
		default:
			t.Errorf("audit: unexpected record %s", r.line)
		}
	}
	t.Logf("audit: %s", strings.Join(summary, ", "))
	if deleted != 1 {
		t.Errorf("audit file has %d deletions of vleaked, want 1:\n%s", deleted, fileText(audit))
	}

	m := e.scrape(t)
	wantSample(t, m, `veth_remediation_actions_total{method="release",result="deleted"}`, 1)
	if v, ok := sample(m, "veth_remediation_last_deletion_timestamp_seconds"); !ok || v <= 0 {
		t.Errorf("veth_remediation_last_deletion_timestamp_seconds = %v (present %v), want > 0", v, ok)
	}
	if v, ok := sample(m, `veth_remediation_refusals_total{reason="alert_too_young"}`); !ok || v < 1 {
		t.Errorf(`veth_remediation_refusals_total{reason="alert_too_young"} = %v (present %v), want at least 1 (vyoung's alert)`, v, ok)
	}
}
