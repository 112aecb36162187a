package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/internal/rulestest"
)

// The whole remediation chain with the real programs: Prometheus (Debian
// prometheus 2.42) scrapes the exporter and evaluates the shipped alert
// rules, Alertmanager (Debian prometheus-alertmanager 0.25) routes
// VethOrphaned to the exporter's /remediate, and the exporter deletes the
// leftover. All of it runs in the test's private namespaces, on loopback.

const (
	// shippedRules is the rule file the test derives its own from.
	shippedRules = "../../alerts/veth_exporter.rules.yml"

	// e2eFor replaces VethOrphaned's `for: 15m`; e2eMinAge is
	// --remediation.min-age. Why these values: see TestRemediationEndToEnd.
	e2eFor    = 8 * time.Second
	e2eMinAge = 6 * time.Second
	// e2eGroupWait is both group_wait and group_interval of the route, and
	// its repeat_interval: Alertmanager re-sends an unchanged group once
	// the repeat interval has passed at a group_interval tick, so every
	// 2 s here (the tick 1 s after a notification is a hair early).
	e2eGroupWait = time.Second

	// e2eContainer owns vowned. It differs from the other tests' IDs: the
	// cgroup hierarchy of netnstest is shared by every package under test.
	e2eContainer = "e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0"
)

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
			since(), what, httpBody("http://"+promAddr+"/api/v1/alerts"), httpBody("http://"+amAddr+"/api/v2/alerts"),
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
	wantSample(t, m, `veth_remediation_actions_total{result="deleted"}`, 1)
	if v, ok := sample(m, "veth_remediation_last_deletion_timestamp_seconds"); !ok || v <= 0 {
		t.Errorf("veth_remediation_last_deletion_timestamp_seconds = %v (present %v), want > 0", v, ok)
	}
	if v, ok := sample(m, `veth_remediation_refusals_total{reason="alert_too_young"}`); !ok || v < 1 {
		t.Errorf(`veth_remediation_refusals_total{reason="alert_too_young"} = %v (present %v), want at least 1 (vyoung's alert)`, v, ok)
	}
}

// requireCommand returns the path of the first of names installed, or skips
// the test (fails it where VETH_EXPORTER_REQUIRE_PRIVILEGED=1, as in CI).
func requireCommand(t *testing.T, pkg string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if path, err := exec.LookPath(n); err == nil {
			return path
		}
	}
	if os.Getenv("VETH_EXPORTER_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("%s not installed (Debian package %s)", names[0], pkg)
	}
	t.Skipf("%s not installed (Debian package %s)", names[0], pkg)
	return ""
}

// shortenedRules is the shipped rule file with VethOrphaned's `for: 15m`
// set to e2eFor, and nothing else changed.
func shortenedRules(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(shippedRules)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := rulestest.Rewrite(string(b), "VethOrphaned", "for: 15m", "for: "+e2eFor.String())
	if err != nil {
		t.Fatalf("%s: %v", shippedRules, err)
	}
	return rules
}

// monitorProcess is a Prometheus or an Alertmanager started by the test.
type monitorProcess struct {
	name   string
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{} // closed once the process is reaped
}

// startMonitor starts a server as a child process that dies with the test
// (Pdeathsig) and is stopped by its PID when the test ends; its output is
// shown if the test fails.
func startMonitor(t *testing.T, name, path string, args ...string) *monitorProcess {
	t.Helper()
	d := &monitorProcess{name: name, cmd: exec.Command(path, args...), log: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
			t.Errorf("%s (pid %d) ignored SIGTERM for 10s", name, d.cmd.Process.Pid)
		}
	})
	showOnFailure(t, name, d.log)
	return d
}

// waitReady waits up to 20 s for url/-/ready to answer 200.
func (d *monitorProcess) waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("%s exited before it was ready", d.name)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s at %s not ready after 20s: %v", d.name, url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// showOnFailure logs a process's output when the test has failed.
func showOnFailure(t *testing.T, name string, log *syncBuffer) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s output:\n%s", name, log)
		}
	})
}

// prometheusAlertState is an alert as Prometheus's /api/v1/alerts shows it.
type prometheusAlertState struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// prometheusAlert returns Prometheus's VethOrphaned alert for device, pending
// or firing, if there is one.
func prometheusAlert(url, device string) (prometheusAlertState, bool) {
	var body struct {
		Data struct {
			Alerts []prometheusAlertState `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(httpBody(url+"/api/v1/alerts")), &body); err != nil {
		return prometheusAlertState{}, false
	}
	for _, a := range body.Data.Alerts {
		if a.Labels["alertname"] == "VethOrphaned" && a.Labels["device"] == device {
			return a, true
		}
	}
	return prometheusAlertState{}, false
}

// httpBody is what GET url answers, or the error: for polls and failure
// messages.
func httpBody(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

// auditLine is one line of --remediation.audit-file.
type auditLine struct {
	Time     time.Time `json:"time"`
	Mode     string    `json:"mode"`
	Phase    string    `json:"phase"`
	StartsAt time.Time `json:"starts_at"`
	Device   string    `json:"device"`
	Ifindex  int       `json:"ifindex"`
	Result   string    `json:"result"`
	Reason   string    `json:"reason"`
	line     string
}

// auditLines reads the audit file; none yet is no line.
func auditLines(t *testing.T, path string) []auditLine {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var records []auditLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r auditLine
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit file %s: %v in %q", path, err, sc.Text())
		}
		r.line = sc.Text()
		records = append(records, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return records
}

// fileText is the content of path, or the error, for failure messages.
func fileText(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func writeConfig(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startAlertChain starts Prometheus, scraping the exporter at instance
// every second with the shipped rules (VethOrphaned's `for` shortened), and
// Alertmanager, routing VethOrphaned to the exporter's /remediate with the
// bearer token in the file token, as deploy/alertmanager does; it returns
// their addresses once both are ready.
func startAlertChain(t *testing.T, dir, instance, token string) (promAddr, amAddr string) {
	t.Helper()
	prometheus := requireCommand(t, "prometheus", "prometheus")
	promtool := requireCommand(t, "prometheus", "promtool")
	alertmanager := requireCommand(t, "prometheus-alertmanager", "prometheus-alertmanager", "alertmanager")
	// Prometheus, with the shipped rules but a short `for`.
	rules := filepath.Join(dir, "veth_exporter.rules.yml")
	writeConfig(t, rules, shortenedRules(t))
	amAddr = "127.0.0.1:" + freePort(t)
	promConfig := filepath.Join(dir, "prometheus.yml")
	writeConfig(t, promConfig, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
alerting:
  alertmanagers:
    - static_configs:
        - targets: [%q]
scrape_configs:
  - job_name: veth
    static_configs:
      - targets: [%q]
`, rules, amAddr, instance))
	if out, err := exec.Command(promtool, "check", "config", promConfig).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}

	// Alertmanager: the example route of deploy/alertmanager, with a
	// literal URL (0.25 templates none) and timings in seconds.
	amConfig := filepath.Join(dir, "alertmanager.yml")
	writeConfig(t, amConfig, fmt.Sprintf(`route:
  receiver: default
  group_by: [alertname, instance]
  routes:
    - receiver: veth-remediate
      matchers:
        - alertname = VethOrphaned
      group_by: [instance, device]
      group_wait: %[1]s
      group_interval: %[1]s
      repeat_interval: %[1]s
receivers:
  - name: default
  - name: veth-remediate
    webhook_configs:
      - url: %[2]q
        send_resolved: false
        max_alerts: 50
        http_config:
          authorization:
            type: Bearer
            credentials_file: %[3]q
`, e2eGroupWait, "http://"+instance+"/remediate", token))
	if amtool, err := exec.LookPath("amtool"); err == nil {
		if out, err := exec.Command(amtool, "check-config", amConfig).CombinedOutput(); err != nil {
			t.Fatalf("amtool check-config: %v\n%s", err, out)
		}
	}

	am := startMonitor(t, "alertmanager", alertmanager,
		"--config.file="+amConfig, "--storage.path="+filepath.Join(dir, "alertmanager"),
		"--web.listen-address="+amAddr, "--cluster.listen-address=", "--log.level=debug")
	promAddr = "127.0.0.1:" + freePort(t)
	prom := startMonitor(t, "prometheus", prometheus,
		"--config.file="+promConfig, "--storage.tsdb.path="+filepath.Join(dir, "prometheus"),
		"--web.listen-address="+promAddr)
	am.waitReady(t, "http://"+amAddr)
	prom.waitReady(t, "http://"+promAddr)
	return promAddr, amAddr
}
