package main

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
