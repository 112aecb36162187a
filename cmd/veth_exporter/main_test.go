package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// End-to-end tests: the real binary, built once, run inside the private
// namespaces of netnstest against fixtures made with ip(8).

var update = flag.Bool("update", false, "rewrite testdata/*.golden from this run")

func TestMain(m *testing.M) {
	netnstest.Main(m, func() {
		if binary != "" {
			os.RemoveAll(filepath.Dir(binary))
		}
	})
}

// normalize keeps the veth_ series that do not depend on the moment or on
// the kernel's numbering, so a golden file can hold them.
func normalize(metrics string) string {
	var (
		out       []string
		timestamp = regexp.MustCompile(`^(veth_\w+_timestamp_seconds\{[^}]*\}) .*$`)
		numbers   = regexp.MustCompile(`((?:ifindex|peer_ifindex|peer_netnsid)=)"\d+"`)
		pid       = regexp.MustCompile(`(id)="\d+"(,kind="process")`)
	)
	for line := range strings.Lines(metrics) {
		line = strings.TrimRight(line, "\n")
		switch {
		case !strings.HasPrefix(line, "veth_") && !strings.HasPrefix(line, "# HELP veth_") && !strings.HasPrefix(line, "# TYPE veth_"):
			continue
		case strings.Contains(line, "veth_scrape_collector_duration_seconds"), strings.Contains(line, "veth_exporter_build_info"):
			continue
		}
		line = timestamp.ReplaceAllString(line, "$1 TIMESTAMP")
		line = numbers.ReplaceAllString(line, `$1"N"`)
		line = pid.ReplaceAllString(line, `$1="PID"$2`)
		out = append(out, line)
	}
	return strings.Join(out, "\n") + "\n"
}

func TestGoldenMetrics(t *testing.T) {
	netnstest.Require(t)
	goldenFixture(t)
	e := startExporter(t, "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	metrics := e.scrape(t)

	got := normalize(metrics)
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("metrics differ from %s (run with -update after checking the change):\n%s", golden, lineDiff(string(want), got))
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("VETH_EXPORTER_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("promtool not installed (Debian package prometheus)")
		}
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(metrics)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	count := map[string]int{}
	for l := range strings.Lines(want) {
		count[l]++
	}
	for l := range strings.Lines(got) {
		count[l]--
	}
	var d []string
	for l, n := range count {
		switch {
		case n > 0:
			d = append(d, "- "+strings.TrimRight(l, "\n"))
		case n < 0:
			d = append(d, "+ "+strings.TrimRight(l, "\n"))
		}
	}
	if len(d) == 0 {
		return "the same lines in another order:\n" + got
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}

// TestRestartKeepsHistory restarts the binary and expects the first-seen
// and orphaned-since times of a leftover to survive.
func TestRestartKeepsHistory(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "restart")
	netnstest.Veth(t, "vrestart", "restart", "")
	state := filepath.Join(t.TempDir(), "state.json")

	first := startExporter(t, "--state.path="+state)
	before := first.scrape(t)
	first.stop(t)
	time.Sleep(1100 * time.Millisecond) // a restart that reset the times would show it
	second := startExporter(t, "--state.path="+state)
	after := second.scrape(t)

	for _, series := range []string{
		`veth_first_seen_timestamp_seconds{device="vrestart"}`,
		`veth_orphaned_since_timestamp_seconds{device="vrestart"}`,
	} {
		b, ok1 := sample(before, series)
		a, ok2 := sample(after, series)
		if !ok1 || !ok2 || a != b {
			t.Errorf("%s: %v (present %v) before the restart, %v (present %v) after, want equal", series, b, ok1, a, ok2)
		}
	}
}

// TestRestartAfterGap: an exporter that was stopped for longer than
// --state.max-gap did not watch the leftover meanwhile (a process may have
// lived in its namespace and left): the orphan clock restarts at the first
// observation after the gap. Within the gap it goes on.
func TestRestartAfterGap(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "gap")
	netnstest.Veth(t, "vgap", "gap", "")
	state := filepath.Join(t.TempDir(), "state.json")
	const since = `veth_orphaned_since_timestamp_seconds{device="vgap"}`
	const firstSeen = `veth_first_seen_timestamp_seconds{device="vgap"}`

	first := startExporter(t, "--state.path="+state)
	m := first.scrape(t)
	first.stop(t)
	before, ok := sample(m, since)
	seen, ok2 := sample(m, firstSeen)
	if !ok || !ok2 {
		t.Fatalf("vgap has no orphaned-since or first-seen time:\n%s", m)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v, %v; want mode 0600", fi.Mode(), err)
	}

	// As if the exporter had been stopped for ten minutes.
	ageState := func() {
		t.Helper()
		b, err := os.ReadFile(state)
		if err != nil {
			t.Fatal(err)
		}
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		if _, ok := f["last_observed"]; !ok {
			t.Fatalf("state file has no last_observed:\n%s", b)
		}
		f["last_observed"] = time.Now().Add(-10 * time.Minute).Format(time.RFC3339Nano)
		if b, err = json.Marshal(f); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(state, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ageState()
	time.Sleep(1100 * time.Millisecond) // a restarted clock would show it
	tolerant := startExporter(t, "--state.path="+state, "--state.max-gap=1h")
	m = tolerant.scrape(t)
	tolerant.stop(t)
	if got, ok := sample(m, since); !ok || got != before {
		t.Errorf("with --state.max-gap=1h: orphaned since %v (present %v), want %v as before the restart", got, ok, before)
	}

	ageState()
	second := startExporter(t, "--state.path="+state)
	m = second.scrape(t)
	if got, ok := sample(m, since); !ok || got <= before {
		t.Errorf("after a 10 minute gap: orphaned since %v (present %v), want it restarted, later than %v", got, ok, before)
	}
	if got, ok := sample(m, firstSeen); !ok || got != seen {
		t.Errorf("after a 10 minute gap: first seen %v (present %v), want %v as before", got, ok, seen)
	}
}

// TestChurn scrapes while veths and namespaces come and go, as on a node
// starting and stopping pods: no scrape may fail, no stage may report an
// error, and no veth whose namespace holds a process may ever be called
// orphaned, even while leaked namespaces are deleted and their nsids
// handed to new namespaces.
func TestChurn(t *testing.T) {
	netnstest.Require(t)
	e := startExporter(t, "--state.path="+filepath.Join(t.TempDir(), "state.json"))

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	var churned atomic.Int64
	run := func(args ...string) bool {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil && ctx.Err() == nil {
			t.Errorf("ip %s: %v %s", strings.Join(args, " "), err, out)
			return false
		}
		return true
	}
	var wg sync.WaitGroup
	// Live namespaces: a process holds each; their veths are vlive*.
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			holder := exec.Command("sleep", "30")
			holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
			if err := holder.Start(); err != nil {
				t.Error(err)
				return
			}
			// Namespaces die asynchronously, and their veths with them:
			// a name is not free again at once.
			name := fmt.Sprintf("vlive%d", i)
			ok := run("link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(holder.Process.Pid))
			time.Sleep(10 * time.Millisecond)
			holder.Process.Kill()
			holder.Wait()
			if !ok {
				return
			}
			churned.Add(1)
		}
	})
	// Leaked namespaces, deleted again: their nsids are freed and reused.
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("leak%d", i)
			if !run("netns", "add", name) || !run("link", "add", "v"+name, "type", "veth", "peer", "name", "eth0", "netns", name) || !run("netns", "del", name) {
				return
			}
			churned.Add(1)
		}
	})
	// Pairs on the host, created and deleted.
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("vhost%d", i%4)
			if !run("link", "add", name, "type", "veth", "peer", "name", "p"+name) || !run("link", "del", name) {
				return
			}
			churned.Add(1)
		}
	})
	scrapes := 0
	for ctx.Err() == nil {
		m := e.scrape(t)
		for _, stage := range []string{"links", "netns", "cgroup", "state"} {
			if v, ok := sample(m, `veth_scrape_collector_success{collector="`+stage+`"}`); !ok || v != 1 {
				t.Errorf("scrape %d: stage %s success = %v (present %v), want 1", scrapes, stage, v, ok)
			}
		}
		for line := range strings.Lines(m) {
			if strings.HasPrefix(line, `veth_verdict_info{device="vlive`) && strings.Contains(line, `verdict="orphaned"`) {
				t.Errorf("scrape %d: a veth whose namespace holds a process was called orphaned: %s", scrapes, line)
			}
		}
		scrapes++
	}
	wg.Wait()
	if scrapes < 10 || churned.Load() < 30 {
		t.Errorf("only %d scrapes and %d create/delete cycles: the test proved little", scrapes, churned.Load())
	}
	t.Logf("%d scrapes during %d create/delete cycles", scrapes, churned.Load())
	if e.cmd.ProcessState != nil || strings.Contains(e.log.String(), "panic") {
		t.Errorf("exporter died or panicked:\n%s", e.log)
	}
}

func TestInspect(t *testing.T) {
	netnstest.Require(t)
	goldenFixture(t)
	state := filepath.Join(t.TempDir(), "state.json")

	out, err := exec.Command(exporterBinary(t), "inspect", "--inventory.trust-pid-namespace", "--state.path="+state).CombinedOutput()
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	rows := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			rows[f[0]] = f
		}
	}
	header := strings.Join(rows["DEVICE"], " ")
	if header != "DEVICE MASTER STATE PEER-NETNS PROCS HELD-BY OWNER VERDICT REASON AGE" {
		t.Errorf("header = %q", header)
	}
	for device, want := range map[string]string{
		"vethowned": "owned container",
		"vethpod":   "owned pod",
		"vethleak":  "orphaned netns_empty",
		"vethstray": "unknown no_known_owner",
		"hostA":     "orphaned peer_on_host",
	} {
		if !strings.Contains(strings.Join(rows[device], " "), " "+want+" ") {
			t.Errorf("inspect row for %s = %q, want it to contain %q", device, rows[device], want)
		}
	}
	if !strings.Contains(strings.Join(rows["vethleak"], " "), "/run/netns/cni-leak") {
		t.Errorf("inspect row for vethleak = %q, want it held by /run/netns/cni-leak", rows["vethleak"])
	}
	if !strings.Contains(string(out), "LEAKED NETNS") || !strings.Contains(string(out), "/run/netns/cni-nothing-left") ||
		strings.Count(string(out), "/run/netns/cni-leak") != 1 {
		t.Errorf("inspect output does not list /run/netns/cni-nothing-left (and only it) as a leaked namespace:\n%s", out)
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("inspect wrote the state file; it must only read it")
	}

	out, err = exec.Command(exporterBinary(t), "inspect", "--inventory.trust-pid-namespace", "--output=json", "--state.path="+state).Output()
	if err != nil {
		t.Fatalf("inspect --output=json: %v", err)
	}
	var snap struct {
		Veths []struct {
			Device  string `json:"device"`
			Verdict string `json:"verdict"`
			Reason  string `json:"reason"`
			Owner   *struct {
				Kind, ID string
			} `json:"owner"`
		} `json:"veths"`
	}
	if err := json.Unmarshal(out, &snap); err != nil {
		t.Fatalf("inspect --output=json is not JSON: %v\n%s", err, out)
	}
	found := false
	for _, v := range snap.Veths {
		if v.Device == "vethowned" {
			found = true
			if v.Verdict != "owned" || v.Owner == nil || v.Owner.ID != goldenContainer {
				t.Errorf("json vethowned = %+v, want owned by %s", v, goldenContainer)
			}
		}
	}
	if !found {
		t.Errorf("json has no vethowned: %s", out)
	}
}

// TestBadFlags expects a clear message and exit code 2 for bad input.
func TestBadFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--collector.veth.device-include=("}, "collector.veth.device-include"},
		{[]string{"--inventory.infrastructure-device=["}, "infrastructure device pattern"},
		{[]string{"inspect", "--output=yaml"}, "yaml"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--remediation.mode=enforce"}, "needs authentication"},
		{[]string{"--remediation.mode=dry-run", "--remediation.bearer-token-file=/nonexistent"}, "bearer-token-file"},
		{[]string{"--remediation.mode=delete-everything"}, "remediation.mode"},
		{[]string{"--remediation.reasons=owned"}, "not an orphan reason"},
		{[]string{"--remediation.max-orphan-ratio=2"}, "max-orphan-ratio"},
		{[]string{"--remediation.method=nuke"}, "remediation.method"},
		{[]string{"--remediation.release-netns"}, "release-netns"},
		{[]string{"clean", "--all-orphans", "--remediation.release-timeout=0s"}, "release-timeout"},
		{[]string{"--remediation.mode=dry-run", "--remediation.release-timeout=7s"}, "release-timeout"},
		{[]string{"clean", "--all-orphans", "veth0"}, "not both"},
		{[]string{"--state.max-gap=0s"}, "state.max-gap"},
		{[]string{"inspect", "--state.max-gap=-1m"}, "state.max-gap"},
		{[]string{"--remediation.min-age=-5m"}, "--remediation.min-age: -5m0s is negative"},
		{[]string{"clean", "--all-orphans", "--remediation.min-age=-5m"}, "--remediation.min-age: -5m0s is negative"},
		{[]string{"clean", "--all-orphans", "--min-age=-5m"}, "--min-age: -5m0s is negative"},
		// One min-age: --min-age only spells it shorter.
		{[]string{"clean", "--all-orphans", "--min-age=0s", "--remediation.min-age=15m"}, "give one of them"},
		{[]string{"--inventory.settle-time=-1s"}, "--inventory.settle-time must not be negative"},
		{[]string{"clean", "--all-orphans", "--inventory.settle-time=-1s"}, "--inventory.settle-time must not be negative"},
		{[]string{"--docker.timeout=0s"}, "--docker.timeout must be positive"},
		{[]string{"clean", "--all-orphans", "--remediation.max-per-request=-1"}, "remediation.max-per-request"},
		{[]string{"--remediation.max-per-hour=-1"}, "remediation.max-per-hour"},
		// The pattern as the operator wrote it, not as it is compiled.
		{[]string{"--collector.veth.device-include=a("}, "missing closing ): `a(`"},
		{[]string{"clean", "--all-orphans", "--remediation.master-include=docker0|("}, "missing closing ): `docker0|(`"},
	} {
		// Bad input changes nothing: not even the state file (the
		// default one is the machine's).
		dir := t.TempDir()
		out, err := exec.Command(exporterBinary(t), append(tt.args, "--state.path="+filepath.Join(dir, "state.json"))...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), tt.want) {
			t.Errorf("veth_exporter %s: %v, output %q; want exit 2 and a message naming %q", strings.Join(tt.args, " "), err, out, tt.want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Errorf("veth_exporter %s wrote %s in the state directory: bad input must change nothing", strings.Join(tt.args, " "), entries[0].Name())
		}
	}
}

// TestInspectWithoutRoot runs inspect as nobody: it must finish, say what
// it cannot see, and never call a veth orphaned on a partial view.
func TestInspectWithoutRoot(t *testing.T) {
	netnstest.Require(t)
	goldenFixture(t)
	cmd := exec.Command(nobodyBinary(t), "inspect", "--inventory.trust-pid-namespace", "--output=json", "--state.path=/nonexistent/state.json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("inspect as nobody: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "permission denied") || !strings.Contains(stderr.String(), "run as root") {
		t.Errorf("stderr = %q, want a warning about what it cannot see", stderr.String())
	}
	var snap struct {
		Veths []struct{ Device, Verdict, Reason string } `json:"veths"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &snap); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	if len(snap.Veths) != 8 {
		t.Errorf("got %d veths, want the 8 of the fixture: %+v", len(snap.Veths), snap.Veths)
	}
	for _, v := range snap.Veths {
		orphanable := v.Device == "hostA" || v.Device == "hostB" // needs no namespace to decide
		if v.Verdict == "orphaned" && !orphanable {
			t.Errorf("%s is %s/%s on a partial view, want unknown", v.Device, v.Verdict, v.Reason)
		}
	}
	// The namespaces of the containers' veths are held by processes
	// nobody may not read: not found because it could not look.
	verdicts := inspectVerdicts(t, stdout.Bytes())
	for _, dev := range []string{"vethowned", "vethpod", "vethstray", "vethleak"} {
		if got := verdicts[dev]; got != "unknown/partial_view" {
			t.Errorf("%s = %s as nobody, want unknown/partial_view", dev, got)
		}
	}
}

// TestServeWithoutRoot serves as nobody: the exporter is blind to the
// processes of other users, and says so where alerting looks,
// veth_inventory_partial_view 1 (VethExporterPartialView), while every
// stage succeeds; the container veths are unknown / partial_view. As root
// the same node is a full view, veth_inventory_partial_view 0.
func TestServeWithoutRoot(t *testing.T) {
	netnstest.Require(t)
	goldenFixture(t)
	addr := "127.0.0.1:" + freePort(t)
	cmd := exec.Command(nobodyBinary(t), "--web.listen-address="+addr, "--inventory.trust-pid-namespace", "--inventory.settle-time=0s",
		"--cni.conf-dir=", "--state.path=/nonexistent/state.json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	m := runExporter(t, cmd, addr).scrape(t)
	wantSample(t, m, "veth_inventory_partial_view", 1)
	wantSample(t, m, `veth_scrape_collector_success{collector="netns"}`, 1)
	for _, dev := range []string{"vethowned", "vethpod", "vethstray"} {
		wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="partial_view",verdict="unknown"}`, dev), 1)
	}
	root := startExporter(t, "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	wantSample(t, root.scrape(t), "veth_inventory_partial_view", 0)
}

// TestMissingProcfs points the exporter at a procfs that is not there: the
// scrape reports the failed stage, never crashes, and no veth is orphaned
// for want of evidence.
func TestMissingProcfs(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "noproc")
	netnstest.Veth(t, "vnoproc", "noproc", "")
	e := startExporter(t, "--path.procfs=/nonexistent", "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	m := e.scrape(t)
	if v, ok := sample(m, `veth_scrape_collector_success{collector="netns"}`); !ok || v != 0 {
		t.Errorf("netns stage success = %v (present %v), want 0", v, ok)
	}
	if v, ok := sample(m, `veth_verdict_info{device="vnoproc",reason="netns_not_found",verdict="unknown"}`); !ok || v != 1 {
		t.Errorf("vnoproc verdict not unknown/netns_not_found:\n%s", m)
	}
}

// TestPartialViewOutsideHostPIDNamespace: without the host's PID namespace
// the exporter cannot see every process, says so, and calls nothing
// orphaned that a process it cannot see might hold.
func TestPartialViewOutsideHostPIDNamespace(t *testing.T) {
	netnstest.Require(t)
	goldenFixture(t)
	cmd := exec.Command(exporterBinary(t), "inspect", "--output=json", "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("inspect: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "is not the host's PID namespace") {
		t.Errorf("stderr = %q, want a warning that this is not the host's PID namespace", stderr.String())
	}
	verdicts := inspectVerdicts(t, stdout.Bytes())
	if got := verdicts["vethleak"]; got != "unknown/partial_view" {
		t.Errorf("vethleak = %s, want unknown/partial_view", got)
	}
	if got := verdicts["vethowned"]; got != "owned/container" {
		t.Errorf("vethowned = %s, want owned/container: a process seen is still proof", got)
	}
}

// inspectVerdicts maps device to verdict/reason from inspect --output=json.
func inspectVerdicts(t *testing.T, out []byte) map[string]string {
	t.Helper()
	var snap struct {
		Veths []struct{ Device, Verdict, Reason string } `json:"veths"`
	}
	if err := json.Unmarshal(out, &snap); err != nil {
		t.Fatalf("inspect output is not JSON: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, v := range snap.Veths {
		m[v.Device] = v.Verdict + "/" + v.Reason
	}
	return m
}

// TestRelocatedProcfs runs the exporter as in a container that mounts the
// host's /proc elsewhere: the verdicts are the same.
func TestRelocatedProcfs(t *testing.T) {
	netnstest.Require(t)
	goldenFixture(t)
	hostProc := filepath.Join(t.TempDir(), "host", "proc")
	if err := os.MkdirAll(hostProc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("/proc", hostProc, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(hostProc, syscall.MNT_DETACH) })

	out, err := exec.Command(exporterBinary(t), "inspect", "--output=json", "--inventory.trust-pid-namespace",
		"--path.procfs="+hostProc, "--state.path="+filepath.Join(t.TempDir(), "state.json")).Output()
	if err != nil {
		t.Fatalf("inspect --path.procfs=%s: %v", hostProc, err)
	}
	verdicts := inspectVerdicts(t, out)
	for device, want := range map[string]string{
		"vethowned": "owned/container",
		"vethpod":   "owned/pod",
		"vethleak":  "orphaned/netns_empty",
		"vethstray": "unknown/no_known_owner",
	} {
		if got := verdicts[device]; got != want {
			t.Errorf("%s = %s with --path.procfs=%s, want %s", device, got, hostProc, want)
		}
	}
}

// TestReadOnlyStateFilesystem points the state file at a read-only mount:
// the exporter keeps serving with its history in memory, says so once in
// its log and in veth_scrape_collector_success{collector="state"}.
func TestReadOnlyStateFilesystem(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "rostate")
	netnstest.Veth(t, "vrostate", "rostate", "")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })

	e := startExporter(t, "--state.path="+filepath.Join(dir, "state.json"))
	var first float64
	for i := range 3 {
		m := e.scrape(t)
		if v, ok := sample(m, `veth_scrape_collector_success{collector="state"}`); !ok || v != 0 {
			t.Errorf("scrape %d: state success = %v (present %v), want 0", i, v, ok)
		}
		if v, ok := sample(m, `veth_verdict_info{device="vrostate",reason="netns_empty",verdict="orphaned"}`); !ok || v != 1 {
			t.Errorf("scrape %d: vrostate not orphaned/netns_empty", i)
		}
		// The history lives on in memory.
		since, ok := sample(m, `veth_orphaned_since_timestamp_seconds{device="vrostate"}`)
		if i == 0 {
			first = since
		} else if !ok || since != first {
			t.Errorf("scrape %d: orphaned since %v, want %v as in the first scrape", i, since, first)
		}
	}
	e.stop(t)
	if n := strings.Count(e.log.String(), "cannot write state file"); n != 1 {
		t.Errorf("log says %d times that the state file cannot be written, want once:\n%s", n, e.log)
	}
}

// TestSettleTime: a leftover is unknown (settling) until it has looked
// orphaned for the settle time, then orphaned, with orphaned-since from
// the first sight.
func TestSettleTime(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "settle")
	netnstest.Veth(t, "vsettle", "settle", "")
	e := startExporter(t, "--state.path="+filepath.Join(t.TempDir(), "state.json"), "--inventory.settle-time=2s")
	m := e.scrape(t)
	wantSample(t, m, `veth_verdict_info{device="vsettle",reason="settling",verdict="unknown"}`, 1)
	wantSample(t, m, `veth_orphaned{device="vsettle"}`, 0)
	first, _ := sample(m, `veth_first_seen_timestamp_seconds{device="vsettle"}`)
	m = e.scrapeUntil(t, "vsettle orphaned", func(m string) bool {
		v, ok := sample(m, `veth_verdict_info{device="vsettle",reason="netns_empty",verdict="orphaned"}`)
		return ok && v == 1
	})
	if since, ok := sample(m, `veth_orphaned_since_timestamp_seconds{device="vsettle"}`); !ok || since > first+1 {
		t.Errorf("orphaned since %v (present %v), want the first sight, about %v", since, ok, first)
	}
}

// TestNodeFlagsFromEnvironment: the flags that say how the exporter sees
// its node also come from VETH_EXPORTER_<FLAG>, which a container sets once
// for every command run in it (the DaemonSet does); --help names each
// variable, a bad value is refused as a bad flag is, naming where it came
// from, and the command line wins.
func TestNodeFlagsFromEnvironment(t *testing.T) {
	run := func(env []string, args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(exporterBinary(t), args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	_, help := run(nil, "--help")
	for _, v := range []string{"VETH_EXPORTER_PATH_PROCFS", "VETH_EXPORTER_INVENTORY_TRUST_PID_NAMESPACE", "VETH_EXPORTER_STATE_PATH",
		"VETH_EXPORTER_DOCKER_HOST", "VETH_EXPORTER_CRI_ENDPOINT", "VETH_EXPORTER_COLLECTOR_CRI"} {
		if !strings.Contains(help, "($"+v+")") {
			t.Errorf("--help does not name $%s", v)
		}
	}
	// Flags of one command (serve's listen address, clean's gates) stay
	// on the command line.
	if strings.Contains(help, "($VETH_EXPORTER_WEB_LISTEN_ADDRESS)") || strings.Contains(help, "($VETH_EXPORTER_REMEDIATION_MODE)") {
		t.Error("--help names a variable for a flag of one command")
	}
	for _, args := range [][]string{{"inspect"}, {"clean", "--all-orphans", "--dry-run"}, {"--web.listen-address=127.0.0.1:" + freePort(t)}} {
		code, out := run([]string{"VETH_EXPORTER_STATE_MAX_GAP=0s"}, args...)
		if code != 2 || !strings.Contains(out, "--state.max-gap") || !strings.Contains(out, "VETH_EXPORTER_STATE_MAX_GAP=0s") {
			t.Errorf("%q with VETH_EXPORTER_STATE_MAX_GAP=0s: exit %d, %q; want 2, naming the flag and the variable", args, code, out)
		}
	}
	if code, out := run([]string{"VETH_EXPORTER_STATE_MAX_GAP=soon"}, "inspect"); code != 2 || !strings.Contains(out, "VETH_EXPORTER_STATE_MAX_GAP=soon") {
		t.Errorf("inspect with VETH_EXPORTER_STATE_MAX_GAP=soon: exit %d, %q; want 2, naming the variable", code, out)
	}
	// The command line wins: a good flag over a bad variable.
	state := filepath.Join(t.TempDir(), "state.json")
	if code, out := run([]string{"VETH_EXPORTER_STATE_MAX_GAP=0s", "VETH_EXPORTER_STATE_PATH=/nonexistent/state.json"},
		"inspect", "--state.max-gap=5m", "--state.path="+state, "--output=json"); code == 2 {
		t.Errorf("inspect --state.max-gap=5m with VETH_EXPORTER_STATE_MAX_GAP=0s: exit 2, %q; want the flag to win", out)
	}
	// A variable is used: inspect reads the procfs it names.
	if _, out := run([]string{"VETH_EXPORTER_PATH_PROCFS=/nonexistent/proc"}, "inspect"); !strings.Contains(out, "/nonexistent/proc") {
		t.Errorf("inspect with VETH_EXPORTER_PATH_PROCFS=/nonexistent/proc: %q; want a warning naming it", out)
	}
}
