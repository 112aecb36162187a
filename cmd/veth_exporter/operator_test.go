package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	if _, errOut := run(nil, "--docker.host="+docker, "--log.level=info"); !strings.Contains(errOut, `msg="resolver on" resolver=docker`) {
		t.Errorf("inspect --log.level=info does not log the resolvers:\n%s", errOut)
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
