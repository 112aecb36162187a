package main

import (
	"os/exec"
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
