package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/dockertest"
	"github.com/veth-exporter/veth_exporter/internal/monitortest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/internal/rulestest"
)

// The helpers that more than one test file of the package uses: the
// exporter binary and its processes, reading a scrape, the runtimes'
// exporters and series, authentication, webhook payloads, the
// Prometheus and Alertmanager chain, and the benchmarks' reports.

const (
	goldenContainer = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
	goldenPodUID    = "11111111-2222-3333-4444-555555555555"
	goldenSandbox   = "5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c0"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// exporterBinary builds the exporter once per test run.
func exporterBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "veth_exporter_e2e")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "veth_exporter")
		out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// exporter is a running veth_exporter.
type exporter struct {
	url string
	cmd *exec.Cmd
	log *syncBuffer
}

// stop ends the exporter as a service manager does, with SIGTERM.
func (e *exporter) stop(t testing.TB) {
	if e.cmd == nil || e.cmd.ProcessState != nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- e.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-done
		t.Errorf("exporter ignored SIGTERM for 10s\n%s", e.log)
	}
}

func (e *exporter) scrape(t testing.TB) string {
	t.Helper()
	return e.get(t, "/metrics")
}

// get returns the body of GET path, failing t unless it is 200 OK.
func (e *exporter) get(t testing.TB, path string) string {
	t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
	}
	return string(body)
}

// flag returns the value of the exporter's --name=value argument.
func (e *exporter) flag(t testing.TB, name string) string {
	t.Helper()
	for _, a := range e.cmd.Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	t.Fatalf("the exporter runs without --%s", name)
	return ""
}

// scrapeUntil scrapes until cond holds, for at most 30 s.
func (e *exporter) scrapeUntil(t *testing.T, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := e.scrape(t)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s still not %s:\n%s", what, m)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// syncBuffer collects the exporter's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startExporter runs the binary on a free loopback port and waits until it
// is ready; the test's end stops it.
func startExporter(t testing.TB, args ...string) *exporter {
	t.Helper()
	return startExporterBinary(t, exporterBinary(t), args...)
}

// startExporterBinary is startExporter for the binary bin.
func startExporterBinary(t testing.TB, bin string, args ...string) *exporter {
	t.Helper()
	addr := "127.0.0.1:" + freePort(t)
	// The fixture's processes all live in the test's PID namespace.
	flags := []string{"--web.listen-address=" + addr, "--inventory.trust-pid-namespace"}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--inventory.settle-time=") }) {
		// Orphans are given at once unless a test asks for a settle time.
		flags = append(flags, "--inventory.settle-time=0s")
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--state.path=") }) {
		// Never the default /var/lib/veth_exporter: that is the
		// machine's disk, shared by every test binary.
		flags = append(flags, "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--cni.conf-dir=") }) {
		// The machine's own CNI configuration (Debian's podman package
		// installs one) is no part of the fixture.
		flags = append(flags, "--cni.conf-dir="+filepath.Join(t.TempDir(), "none"))
	}
	cmd := exec.Command(bin, append(flags, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return runExporter(t, cmd, addr)
}

// runExporter starts cmd, an exporter serving on addr, with its output
// in its log, waits until it is ready, and stops it when the test ends.
func runExporter(t testing.TB, cmd *exec.Cmd, addr string) *exporter {
	t.Helper()
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &exporter{url: "http://" + addr, cmd: cmd, log: log}
	t.Cleanup(func() { e.stop(t) })
	waitReady(t, e.url, log.String)
	return e
}

// nobodyBinary returns the exporter binary, made executable by nobody
// (its temporary directory is root's alone).
func nobodyBinary(t testing.TB) string {
	t.Helper()
	bin := exporterBinary(t)
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) string { return monitortest.FreePort(t) }

// waitReady waits up to 10 s for url/-/ready to answer 200; on failure it
// shows what logs returns.
func waitReady(t testing.TB, url string, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter at %s not ready after 10s: %v\n%s", url, err, logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sample returns the value of the series with exactly this name and label
// set (as exposed, labels sorted), and whether it is there.
func sample(metrics, series string) (float64, bool) {
	for line := range strings.Lines(metrics) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// goldenFixture is a node in miniature: one veth of every verdict.
func goldenFixture(t *testing.T) {
	netnstest.Bridge(t, "docker0")
	netnstest.Bridge(t, "cni0")
	owned := netnstest.Holder(t, "/system.slice/docker-"+goldenContainer+".scope")
	netnstest.Veth(t, "vethowned", strconv.Itoa(owned), "docker0")
	// A veth is up once its peer is: bring one up, and wait for the
	// kernel's link watch to say so, so veth_up is 1 for it.
	if out, err := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(owned)+"/ns/net", "ip", "link", "set", "eth0", "up").CombinedOutput(); err != nil {
		t.Fatalf("set the peer of vethowned up: %v %s", err, out)
	}
	waitOperstate(t, "vethowned", "up")
	pod := netnstest.Holder(t, "/kubepods/besteffort/pod"+goldenPodUID+"/"+goldenSandbox)
	netnstest.Veth(t, "vethpod", strconv.Itoa(pod), "cni0")
	netnstest.NamedNetns(t, "cni-leak")
	netnstest.Veth(t, "vethleak", "cni-leak", "cni0")
	stray := netnstest.Holder(t, "")
	netnstest.Veth(t, "vethstray", strconv.Itoa(stray), "docker0")
	netnstest.HostPair(t, "hostA", "hostB")
	netnstest.HostPair(t, "cilium_host", "cilium_net")
	// A namespace left behind with no veth at all: a leaked namespace.
	netnstest.NamedNetns(t, "cni-nothing-left")
}

// waitOperstate waits until /sys/class/net/device/operstate is state.
func waitOperstate(t *testing.T, device, state string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile("/sys/class/net/" + device + "/operstate")
		if strings.TrimSpace(string(b)) == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s operstate %q after 5s, want %q", device, b, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dockerExporter starts the exporter against d; Docker's socket exists, so
// the resolver turns itself on.
func dockerExporter(t *testing.T, d *dockertest.Daemon, args ...string) *exporter {
	t.Helper()
	return startExporter(t, append([]string{"--docker.host=" + d.Host, "--state.path=" + filepath.Join(t.TempDir(), "state.json")}, args...)...)
}

// vethOf returns the host veth of a running container.
func vethOf(t *testing.T, d *dockertest.Daemon, id string) string {
	t.Helper()
	return netnstest.HostVeth(t, "/proc/"+strconv.Itoa(d.ContainerPID(t, id))+"/ns/net")
}

// wantSample fails t unless the series has the value.
func wantSample(t *testing.T, metrics, series string, want float64) {
	t.Helper()
	if got, ok := sample(metrics, series); !ok || got != want {
		t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
	}
}

// ownerSeries is veth_owner_info or veth_last_owner_info of a container.
func ownerSeries(family, device, id, name string) string {
	return fmt.Sprintf(`%s{device=%q,id=%q,kind="container",name=%q,pod_name="",pod_namespace="",pod_uid=""}`, family, device, id, name)
}

// seriesOf returns the lines of family for device.
func seriesOf(metrics, family, device string) []string {
	var lines []string
	for line := range strings.Lines(metrics) {
		if strings.HasPrefix(line, family+`{device="`+device+`"`) {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}

// orphans sums veth_interfaces{verdict="orphaned"}.
func orphans(metrics string) float64 {
	total := 0.0
	for line := range strings.Lines(metrics) {
		if strings.HasPrefix(line, "veth_interfaces{") && strings.Contains(line, `verdict="orphaned"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return total
}

// criExporter starts the exporter against r's CRI endpoint; the socket
// exists, so the resolver turns itself on.
func criExporter(t *testing.T, r *critest.Runtime, args ...string) *exporter {
	t.Helper()
	return startExporter(t, append([]string{"--cri.endpoint=" + r.Endpoint, "--state.path=" + filepath.Join(t.TempDir(), "state.json")}, args...)...)
}

// podOwnerSeries is veth_owner_info or veth_last_owner_info of a pod.
func podOwnerSeries(family, device string, p *critest.Pod) string {
	return fmt.Sprintf(`%s{device=%q,id=%q,kind="pod",name=%q,pod_name=%q,pod_namespace=%q,pod_uid=%q}`,
		family, device, p.ID, p.Name, p.Name, p.Namespace, p.UID)
}

func verdictSeries(device, verdict, reason string) string {
	return fmt.Sprintf(`veth_verdict_info{device=%q,reason=%q,verdict=%q}`, device, reason, verdict)
}

// startAuthExporter runs the binary in dry-run on a free loopback port
// with remediation for node1, and waits until client, with auth applied to
// each request, gets 200 from /-/ready over scheme.
func startAuthExporter(t *testing.T, client *http.Client, scheme string, auth func(*http.Request), args ...string) *exporter {
	t.Helper()
	addr := "127.0.0.1:" + freePort(t)
	log := &syncBuffer{}
	cmd := exec.Command(exporterBinary(t), append([]string{"--web.listen-address=" + addr,
		"--inventory.trust-pid-namespace", "--inventory.settle-time=0s",
		"--state.path=" + filepath.Join(t.TempDir(), "state.json"),
		"--remediation.mode=dry-run", "--remediation.instance=node1"}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &exporter{url: scheme + "://" + addr, cmd: cmd, log: log}
	t.Cleanup(func() { e.stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := request(t, client, "GET", e.url+"/-/ready", nil, auth)
		if code == http.StatusOK {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter at %s not ready after 10s (last status %d)\n%s", e.url, code, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// request sends one request and returns its status (0 when the request
// failed) and body, or the error's text.
func request(t *testing.T, client *http.Client, method, url string, body []byte, auth func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != nil {
		auth(req)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func withBasicAuth(user, password string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, password) }
}

// exitOf runs the binary with args and returns its exit code and output;
// an exporter still running after 10 s is killed: exit code -1.
func exitOf(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(exporterBinary(t), append([]string{"--web.listen-address=127.0.0.1:" + freePort(t),
		"--inventory.trust-pid-namespace", "--state.path=" + filepath.Join(t.TempDir(), "state.json")}, args...)...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), out.String()
		}
		return 0, out.String()
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		return -1, out.String() + "\n(still running after 10s: killed)"
	}
}

func writeSecret(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func basicAuthUsers(t *testing.T, users ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("basic_auth_users:\n")
	for _, u := range users {
		hash, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("  " + u + ": " + string(hash) + "\n")
	}
	return b.String()
}

const webhookToken = "s3cret-token"

type webhookAnswer struct {
	Results []struct {
		Device string `json:"device"`
		Result string `json:"result"`
		Reason string `json:"reason"`
	} `json:"results"`
}

type alertSpec struct {
	device, ifindex, instance, status string
	startsAt                          time.Time
	fingerprint                       string
}

func payloadOf(version string, alerts ...alertSpec) []byte {
	var list []map[string]any
	for _, a := range alerts {
		labels := map[string]string{"alertname": "VethOrphaned"}
		if a.instance != "-" {
			labels["instance"] = a.instance
		}
		if a.device != "-" {
			labels["device"] = a.device
		}
		if a.ifindex != "" {
			labels["ifindex"] = a.ifindex
		}
		status := a.status
		if status == "" {
			status = "firing"
		}
		fp := a.fingerprint
		if fp == "" {
			fp = fmt.Sprintf("%s/%s/%s/%s/%d", a.device, a.ifindex, a.instance, status, a.startsAt.UnixNano())
		}
		list = append(list, map[string]any{
			"status": status, "labels": labels, "annotations": map[string]string{},
			"startsAt": a.startsAt.Format(time.RFC3339Nano), "endsAt": "0001-01-01T00:00:00Z",
			"generatorURL": "http://prometheus/graph", "fingerprint": fp,
		})
	}
	b, _ := json.Marshal(map[string]any{
		"version": version, "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "veth-remediate",
		"groupLabels": map[string]string{}, "commonLabels": map[string]string{}, "commonAnnotations": map[string]string{},
		"externalURL": "http://alertmanager", "alerts": list, "notification_reason": "new",
	})
	return b
}

func links(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// remediationFixture puts on docker0 one veth owned by a container (live)
// and a leftover for each of leaks, its namespace held only by a mount.
func remediationFixture(t *testing.T, live string, leaks ...string) {
	t.Helper()
	netnstest.Bridge(t, "docker0")
	for _, n := range leaks {
		netnstest.NamedNetns(t, "ns-"+n)
		netnstest.Veth(t, n, "ns-"+n, "docker0")
	}
	holder := netnstest.Holder(t, "/docker/"+goldenContainer)
	netnstest.Veth(t, live, strconv.Itoa(holder), "docker0")
}

// postAlert sends one firing alert for device to the exporter's webhook
// with the test token and returns the answer for it.
func postAlert(t *testing.T, e *exporter, device, fingerprint string) (result, reason string) {
	t.Helper()
	status, a, raw := postWebhook(t, e, payloadOf("4", alertSpec{device: device, instance: "node1", startsAt: time.Now().Add(-time.Hour), fingerprint: fingerprint}))
	if len(a.Results) != 1 {
		t.Fatalf("status %d, answer %s", status, raw)
	}
	return a.Results[0].Result, a.Results[0].Reason
}

// webhookDetail is an answer of /remediate with its details.
type webhookDetail struct {
	Results []struct {
		Device  string `json:"device"`
		Ifindex int    `json:"ifindex"`
		Result  string `json:"result"`
		Reason  string `json:"reason"`
		Detail  string `json:"detail"`
	} `json:"results"`
}

// postWebhook POSTs body to the exporter's /remediate with the test token
// and returns the status, the decoded answer and the answer as sent.
func postWebhook(t *testing.T, e *exporter, body []byte) (int, webhookDetail, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/remediate", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+webhookToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a webhookDetail
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("status %d, answer %s: %v", resp.StatusCode, raw, err)
	}
	return resp.StatusCode, a, string(raw)
}

// ifindexOf is the ifindex of the interface name, as an alert's label
// carries it.
func ifindexOf(t testing.TB, name string) string {
	t.Helper()
	return strconv.Itoa(netnstest.LinkIndex(t, name))
}

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

// showOnFailure logs a process's output when the test has failed.
func showOnFailure(t *testing.T, name string, log *syncBuffer) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s output:\n%s", name, log)
		}
	})
}

// prometheusAlert returns Prometheus's VethOrphaned alert for device, pending
// or firing, if there is one.
func prometheusAlert(url, device string) (monitortest.Alert, bool) {
	alerts, err := monitortest.Alerts(url)
	if err != nil {
		return monitortest.Alert{}, false
	}
	return monitortest.Find(alerts, "VethOrphaned", map[string]string{"device": device})
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
	prometheus, promtool, alertmanager := monitortest.Prometheus(t), monitortest.Promtool(t), monitortest.Alertmanager(t)
	// Prometheus, with the shipped rules but a short `for`.
	rules := filepath.Join(dir, "veth_exporter.rules.yml")
	writeConfig(t, rules, shortenedRules(t))
	amAddr = "127.0.0.1:" + freePort(t)
	promConfig := filepath.Join(dir, "prometheus.yml")
	writeConfig(t, promConfig, monitortest.PrometheusConfig(rules, amAddr, instance, ""))
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

	monitortest.Start(t, dir, "alertmanager", "http://"+amAddr, alertmanager,
		"--config.file="+amConfig, "--storage.path="+filepath.Join(dir, "alertmanager"),
		"--web.listen-address="+amAddr, "--cluster.listen-address=", "--log.level=debug")
	promAddr = "127.0.0.1:" + freePort(t)
	monitortest.Start(t, dir, "prometheus", "http://"+promAddr, prometheus,
		"--config.file="+promConfig, "--storage.tsdb.path="+filepath.Join(dir, "prometheus"),
		"--web.listen-address="+promAddr)
	return promAddr, amAddr
}

// timeScrapesCounting times scrapes of e, running between (untimed)
// before each, and returns the growth of the counter per scrape.
func timeScrapesCounting(b *testing.B, e *exporter, counter string, between func()) (times []time.Duration, calls float64, last string) {
	value := func(m string) float64 { v, _ := sample(m, counter); return v }
	before := value(e.scrape(b))
	for b.Loop() {
		if between != nil {
			b.StopTimer()
			between()
			b.StartTimer()
		}
		t0 := time.Now()
		last = e.scrape(b)
		times = append(times, time.Since(t0))
	}
	return times, (value(last) - before) / float64(len(times)), last
}

// report adds median-ms, api-calls/scrape and veths to the result.
func report(b *testing.B, times []time.Duration, calls float64, last string) {
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	median := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		median = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	b.ReportMetric(float64(median)/1e6, "median-ms")
	b.ReportMetric(calls, "api-calls/scrape")
	b.ReportMetric(float64(vethCount(last)), "veths")
	b.Logf("stages of the last scrape: %s", stages(last))
}

// stages lists veth_scrape_collector_duration_seconds in milliseconds.
func stages(metrics string) string {
	var out []string
	for line := range strings.Lines(metrics) {
		rest, ok := strings.CutPrefix(line, `veth_scrape_collector_duration_seconds{collector="`)
		if !ok {
			continue
		}
		name, value, _ := strings.Cut(rest, `"} `)
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out = append(out, fmt.Sprintf("%s %.1f ms", name, v*1000))
		}
	}
	return strings.Join(out, ", ")
}

// vethCount counts the veth_info series: one per host veth.
func vethCount(metrics string) int {
	n := 0
	for line := range strings.Lines(metrics) {
		if strings.HasPrefix(line, "veth_info{") {
			n++
		}
	}
	return n
}
