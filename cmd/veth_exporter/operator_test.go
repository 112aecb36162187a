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
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The text an operator reads: help, start-up warnings, the answers of
// endpoints that are off.

// TestCommandHelp wants `COMMAND --help` to list that command's own flags
// first, then the global ones, and no other command's flags.
func TestCommandHelp(t *testing.T) {
	for _, tt := range []struct {
		command string
		own     []string // flags of the command, in the order it registers them
		others  []string // flags of other commands, absent from its help
	}{
		{"clean", []string{"--[no-]dry-run", "--[no-]all-orphans", "--remediation.reasons="}, []string{"--output=", "--web.listen-address=", "--remediation.mode="}},
		{"inspect", []string{"--output="}, []string{"--remediation.reasons=", "--[no-]dry-run", "--web.listen-address="}},
		{"serve", []string{"--web.listen-address=", "--remediation.mode="}, []string{"--output=", "--[no-]dry-run"}},
	} {
		t.Run(tt.command, func(t *testing.T) {
			out, err := exec.Command(exporterBinary(t), tt.command, "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("veth_exporter %s --help: %v\n%s", tt.command, err, out)
			}
			help := string(out)
			if !strings.HasPrefix(help, "usage: veth_exporter "+tt.command+" ") {
				t.Errorf("veth_exporter %s --help starts %q, want the command's usage line", tt.command, firstLine(help))
			}
			own := strings.Index(help, "Flags of "+tt.command+":")
			global := strings.Index(help, "Global flags (every command):")
			if own < 0 || global < own {
				t.Fatalf("veth_exporter %s --help: section \"Flags of %s:\" at %d, \"Global flags\" at %d; want the command's first:\n%s", tt.command, tt.command, own, global, help)
			}
			last := own
			for _, f := range tt.own {
				i := strings.Index(help, f)
				if i < last || i > global {
					t.Errorf("veth_exporter %s --help: %s at %d, want it among the command's flags (%d..%d), in order", tt.command, f, i, own, global)
				}
				last = i
			}
			if i := strings.Index(help, "--path.procfs"); i < global {
				t.Errorf("veth_exporter %s --help: global --path.procfs at %d, want it after the command's flags (%d)", tt.command, i, global)
			}
			for _, f := range tt.others {
				if strings.Contains(help, f) {
					t.Errorf("veth_exporter %s --help lists %s, a flag of another command", tt.command, f)
				}
			}
		})
	}
	// The application's help still shows every command with its flags:
	// serve's work without naming it.
	out, err := exec.Command(exporterBinary(t), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("veth_exporter --help: %v\n%s", err, out)
	}
	for _, f := range []string{"--web.listen-address=", "--[no-]dry-run", "--output=", "--path.procfs="} {
		if !strings.Contains(string(out), f) {
			t.Errorf("veth_exporter --help does not list %s", f)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestRemediationOff starts the exporter with remediation flags but the
// mode off: it warns at start-up that they do nothing, and /remediate
// answers 404 saying how to turn remediation on.
func TestRemediationOff(t *testing.T) {
	dir := t.TempDir()
	e := startExporter(t, "--state.path="+filepath.Join(dir, "state.json"),
		"--remediation.bearer-token-file="+filepath.Join(dir, "token"), "--remediation.reasons=owner_exited")
	const warning = `msg="remediation flags set but --remediation.mode=off: /remediate is not mounted and they do nothing" flags=--remediation.bearer-token-file,--remediation.reasons`
	if !strings.Contains(e.log.String(), warning) {
		t.Errorf("start-up log has no %s:\n%s", warning, e.log)
	}
	for _, method := range []string{"POST", "GET"} {
		req, _ := http.NewRequest(method, e.url+"/remediate", bytes.NewReader(payloadOf("4", alertSpec{device: "vleak", instance: "node1"})))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		const want = "remediation is off: start the exporter with --remediation.mode=dry-run or --remediation.mode=enforce"
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), want) {
			t.Errorf("%s /remediate with remediation off = %d %q, want 404 saying %q", method, resp.StatusCode, body, want)
		}
	}

	// Without remediation flags there is nothing to warn about.
	quiet := startExporter(t, "--state.path="+filepath.Join(dir, "state2.json"))
	if strings.Contains(quiet.log.String(), "remediation flags set") {
		t.Errorf("warning without any remediation flag:\n%s", quiet.log)
	}
}

// TestOtherNodeAnswer: an alert whose instance label this node does not
// expect is answered other_node with the value and the pattern it
// expected (built from this host's name and listen address when
// --remediation.instance is not given), and counted where an alert sees it.
func TestOtherNodeAnswer(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vlive", "vleak")
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	writeSecret(t, token, webhookToken+"\n", 0o600)
	e := startExporter(t, "--state.path="+filepath.Join(dir, "state.json"),
		"--remediation.mode=dry-run", "--remediation.bearer-token-file="+token)
	if v, ok := sample(e.scrape(t), `veth_remediation_refusals_total{reason="other_node"}`); !ok || v != 0 {
		t.Fatalf(`veth_remediation_refusals_total{reason="other_node"} = %v (present %v) before any request, want 0`, v, ok)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range []struct {
		instance, want string
	}{
		{"10.0.0.5:9750", `instance "10.0.0.5:9750" does not match ^(?:`},
		{"-", `the alert has no instance label; this node expects ^(?:`},
	} {
		_, a, raw := postWebhook(t, e, payloadOf("4", alertSpec{device: "vleak", instance: tt.instance, startsAt: time.Now().Add(-time.Hour), fingerprint: strconv.Itoa(i)}))
		if len(a.Results) != 1 {
			t.Fatalf("instance %s: answer %s, want one result", tt.instance, raw)
		}
		r := a.Results[0]
		wantSource := fmt.Sprintf("(this host's name %q and listen addresses %s; set --remediation.instance to the instance label Prometheus gives this node)",
			host, strings.TrimPrefix(e.url, "http://"))
		if r.Result != "skipped" || r.Reason != "other_node" || !strings.HasPrefix(r.Detail, tt.want) ||
			!strings.Contains(r.Detail, regexp.QuoteMeta(host)) || !strings.HasSuffix(r.Detail, wantSource) {
			t.Errorf("instance %s: %s/%s %q, want skipped/other_node, detail starting %q, naming %s, ending %q", tt.instance, r.Result, r.Reason, r.Detail, tt.want, host, wantSource)
		}
	}
	if v, ok := sample(e.scrape(t), `veth_remediation_refusals_total{reason="other_node"}`); v != 2 {
		t.Errorf(`veth_remediation_refusals_total{reason="other_node"} = %v (present %v) after two, want 2`, v, ok)
	}
}

// tableRow is the line of an inspect table whose first column is device.
func tableRow(table, device string) string {
	for line := range strings.Lines(table) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == device {
			return line
		}
	}
	return ""
}

// TestInspectTableText: inspect prints its answer and nothing else at the
// default log level (a resolver turned on is no news), and on a partial
// view says the leaked-namespace section is not counted, and why, instead
// of leaving it out.
func TestInspectTableText(t *testing.T) {
	netnstest.Require(t)
	goldenFixture(t)
	bin := exporterBinary(t)
	docker := fakeDockerEngine(t, goldenContainer, "web", ownerPID(t, goldenContainer), "docker0")
	state := "--state.path=" + filepath.Join(t.TempDir(), "state.json")
	run := func(cred *syscall.Credential, args ...string) (stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"inspect", "--inventory.trust-pid-namespace", state}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("inspect %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String(), errOut.String()
	}
	const notCounted = "LEAKED NETNS not counted: the view is partial (see the warnings), so no namespace is proved to hold no process"

	out, errOut := run(nil, "--docker.host="+docker)
	if errOut != "" {
		t.Errorf("inspect as root wrote to standard error at the default log level:\n%s", errOut)
	}
	if !strings.Contains(out, "/run/netns/cni-nothing-left") || strings.Contains(out, notCounted) {
		t.Errorf("inspect as root: want the leaked namespace listed, not %q:\n%s", notCounted, out)
	}
	// inspect answers on its output: the resolvers' start-up lines, which
	// serve logs at info, it logs at debug.
	if _, errOut := run(nil, "--docker.host="+docker, "--log.level=debug"); !strings.Contains(errOut, `msg="resolver on" resolver=docker`) {
		t.Errorf("inspect --log.level=debug does not log the resolvers:\n%s", errOut)
	}

	// nobody must be able to execute the binary in its temporary directory.
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	out, errOut = run(&syscall.Credential{Uid: 65534, Gid: 65534})
	if !strings.Contains(out, notCounted) || strings.Contains(out, "/run/netns/cni-nothing-left") {
		t.Errorf("inspect as nobody: want %q instead of the leaked namespaces:\n%s", notCounted, out)
	}
	if !strings.Contains(errOut, "warning: ") {
		t.Errorf("inspect as nobody: the warnings it points at are not on standard error:\n%s", errOut)
	}
}

// readmeExample is the worked webhook example of the README: the shell
// lines (the exporter's command line, the curl command), the payload, the
// answer, and the detail it says an other_node answer carries.
type readmeExample struct {
	exporter, curl    string
	payload, answer   string
	otherNodeInstance string
	otherNodeDetail   string
}

var (
	fenceBlock      = regexp.MustCompile("(?ms)^```(\\w+)\\n(.*?)^```")
	otherNodeSample = regexp.MustCompile("`instance` been `([^`]+)`.*?the detail `([^`]+)`")
)

func readReadmeExample(t *testing.T) readmeExample {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "**A worked example**")
	end := strings.Index(readme, "**Who may remediate.**")
	if start < 0 || end < start {
		t.Fatal("README.md has no worked example before \"Who may remediate\"")
	}
	section := readme[start:end]
	var ex readmeExample
	var jsons []string
	for _, m := range fenceBlock.FindAllStringSubmatch(section, -1) {
		switch m[1] {
		case "sh":
			for line := range strings.Lines(m[2]) {
				switch line = strings.TrimSpace(line); {
				case strings.HasPrefix(line, "veth_exporter "):
					ex.exporter = line
				case strings.HasPrefix(line, "curl "):
					ex.curl = line
				}
			}
		case "json":
			jsons = append(jsons, m[2])
		}
	}
	if ex.exporter == "" || ex.curl == "" || len(jsons) != 2 {
		t.Fatalf("README's worked example: exporter %q, curl %q, %d JSON blocks; want both commands, a payload and an answer", ex.exporter, ex.curl, len(jsons))
	}
	ex.payload, ex.answer = jsons[0], jsons[1]
	m := otherNodeSample.FindStringSubmatch(strings.Join(strings.Fields(section), " "))
	if m == nil {
		t.Fatal("README's worked example names no other_node detail")
	}
	ex.otherNodeInstance, ex.otherNodeDetail = m[1], m[2]
	return ex
}

// shellWords splits a command line as sh does.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	out, err := exec.Command("sh", "-c", `for a in `+line+`; do printf '%s\0' "$a"; done`).Output()
	if err != nil {
		t.Fatalf("sh cannot split %q: %v", line, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// TestReadmeWebhookExample runs the README's worked webhook example: the
// exporter with the flags it shows, over a fixture holding its device (a
// leftover on docker0), the curl command as written, with the payload as
// written, and wants the answer as written. What differs is what must: the
// token file, the address, the state file, the ifindex (the fixture's), and
// the min-age (2s: the exporter must have recorded the orphan that long).
func TestReadmeWebhookExample(t *testing.T) {
	netnstest.Require(t)
	ex := readReadmeExample(t)
	var payload struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
		} `json:"alerts"`
	}
	if err := json.Unmarshal([]byte(ex.payload), &payload); err != nil || len(payload.Alerts) != 1 {
		t.Fatalf("README's payload: %v, %d alerts; want valid JSON with one alert", err, len(payload.Alerts))
	}
	labels := payload.Alerts[0].Labels
	device, readmeIfindex := labels["device"], labels["ifindex"]
	remediationFixture(t, "vlive", device)
	ifindex := ifindexOf(t, device)

	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	writeSecret(t, token, webhookToken+"\n", 0o600)
	const tokenPath, address = "/etc/veth_exporter/token", "http://node1:9750"
	words := shellWords(t, strings.ReplaceAll(ex.exporter, tokenPath, token))
	e := startExporter(t, append(words[1:], "--state.path="+filepath.Join(dir, "state.json"), "--remediation.min-age=2s")...)
	e.scrape(t)
	time.Sleep(2500 * time.Millisecond)

	readmeIfindexLabel := `"ifindex": "` + readmeIfindex + `"`
	if strings.Count(ex.payload, readmeIfindexLabel) != 2 {
		t.Fatalf("README's payload has %q %d times, want 2 (labels and commonLabels)", readmeIfindexLabel, strings.Count(ex.payload, readmeIfindexLabel))
	}
	alert := strings.ReplaceAll(ex.payload, readmeIfindexLabel, `"ifindex": "`+ifindex+`"`)
	if err := os.WriteFile(filepath.Join(dir, "alert.json"), []byte(alert), 0o600); err != nil {
		t.Fatal(err)
	}
	curl := strings.ReplaceAll(strings.ReplaceAll(ex.curl, tokenPath, token), address, e.url)
	cmd := exec.Command("sh", "-c", curl+` -w '\n%{http_code}'`)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s\n%s", curl, err, out, e.log)
	}
	text := strings.TrimSpace(string(out))
	i := strings.LastIndexByte(text, '\n')
	body, status := strings.TrimSpace(text[:i+1]), text[i+1:]
	if status != "200" {
		t.Errorf("the README's curl command: status %s, want 200: %s", status, body)
	}
	var got, want any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	wantText := strings.ReplaceAll(ex.answer, `"ifindex":`+readmeIfindex+`,`, `"ifindex":`+ifindex+`,`)
	if err := json.Unmarshal([]byte(wantText), &want); err != nil {
		t.Fatalf("README's answer %q: %v", ex.answer, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the README's example answers\n%s\nwant, as the README shows (ifindex %s for %s),\n%s", body, ifindex, readmeIfindex, wantText)
	}

	// The same alert for another instance: the detail the README quotes.
	other := strings.ReplaceAll(strings.ReplaceAll(alert, `"instance": "node1:9750"`, `"instance": "`+ex.otherNodeInstance+`"`), `"fingerprint": "`, `"fingerprint": "x`)
	_, a, raw := postWebhook(t, e, []byte(other))
	if len(a.Results) != 1 || a.Results[0].Result != "skipped" || a.Results[0].Reason != "other_node" || a.Results[0].Detail != ex.otherNodeDetail {
		t.Errorf("the example's alert for instance %s answers %s, want skipped/other_node with the README's detail %q", ex.otherNodeInstance, raw, ex.otherNodeDetail)
	}
}
