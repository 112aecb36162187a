package main

import (
	"testing"

	"github.com/alecthomas/kingpin/v2"

	"github.com/veth-exporter/veth_exporter/remediate"
)

// TestMasterIncludeRoutedCNI: routed CNIs (Calico's cali*, Cilium's
// lxc*, AWS VPC's eni*) give their veths no master, which the patterns
// see as "". The default refuses them; the README's opt-in, an empty
// alternative, admits them beside the bridges; an empty pattern admits
// only them.
func TestMasterIncludeRoutedCNI(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		matches map[string]bool
	}{
		{"default", nil, map[string]bool{"": false, "docker0": true, "cni0": true, "br-0123456789ab": true, "odd0": false}},
		{"calico opt-in", []string{"--remediation.master-include=docker0|br-[0-9a-f]{12}|cni0|cbr0|"},
			map[string]bool{"": true, "docker0": true, "cni0": true, "odd0": false}},
		{"master-less only", []string{"--remediation.master-include="}, map[string]bool{"": true, "docker0": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := kingpin.New("test", "")
			var g gateFlags
			g.register(app)
			if _, err := app.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := g.config(remediate.ModeDryRun, &inventoryFlags{maxGap: 1})
			if err != nil {
				t.Fatal(err)
			}
			for master, want := range tt.matches {
				if got := cfg.MasterInclude.MatchString(master); got != want {
					t.Errorf("%v: master %q matches %v, want %v", tt.args, master, got, want)
				}
			}
		})
	}
}
