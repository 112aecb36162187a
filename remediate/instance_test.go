package remediate

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaultInstancePattern(t *testing.T) {
	for _, tt := range []struct {
		name     string
		hostname string
		listen   []string
		match    []string
		noMatch  []string
	}{
		{
			name: "host name and short name", hostname: "node1.example.com", listen: []string{":9750"},
			match:   []string{"node1.example.com", "node1", "node1:9750", "node1.example.com:9750"},
			noMatch: []string{"node10", "xnode1", "node1:9751", "node1.example.org", "node1x:9750", ":9750", "localhost:9750", "0.0.0.0:9750", ""},
		},
		{
			// Every node has loopback: naming it would take other
			// nodes' alerts for this one.
			name: "loopback listen address", hostname: "node1", listen: []string{"127.0.0.1:9750", "[::1]:9750", "localhost:9750"},
			match:   []string{"node1", "node1:9750"},
			noMatch: []string{"127.0.0.1:9750", "127.0.0.1", "[::1]:9750", "localhost:9750"},
		},
		{
			name: "IPv4 listen address", hostname: "node1", listen: []string{"10.0.0.7:9750", "10.0.0.7:9751"},
			match:   []string{"10.0.0.7", "10.0.0.7:9750", "10.0.0.7:9751", "node1:9751"},
			noMatch: []string{"10.0.0.70:9750", "10.0.0.7:9752", "10a0a0a7:9750"},
		},
		{
			name: "IPv6 listen address", hostname: "", listen: []string{"[fd00::7]:9750"},
			match:   []string{"[fd00::7]:9750", "[fd00::7]", "fd00::7"},
			noMatch: []string{"fd00::7:9750", "[fd00::70]:9750", "[fd00::7]:9751"},
		},
		{
			name: "regexp characters in the host name", hostname: "node.1", listen: nil,
			match:   []string{"node.1", "node"},
			noMatch: []string{"nodex1", "node.1:9750"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			re, err := DefaultInstancePattern(tt.hostname, tt.listen)
			if err != nil {
				t.Fatalf("DefaultInstancePattern(%q, %q): %v", tt.hostname, tt.listen, err)
			}
			i := Instance{Label: "instance", Pattern: re}
			for _, v := range tt.match {
				if !i.Matches(map[string]string{"instance": v}) {
					t.Errorf("%s does not match %q", re, v)
				}
			}
			for _, v := range tt.noMatch {
				if i.Matches(map[string]string{"instance": v}) {
					t.Errorf("%s matches %q", re, v)
				}
			}
		})
	}
	if _, err := DefaultInstancePattern("", []string{"127.0.0.1:9750", ":9750"}); !errors.Is(err, ErrNoHostName) {
		t.Errorf("no host name, loopback only: err = %v, want ErrNoHostName", err)
	}
}

func TestInstanceMatches(t *testing.T) {
	re, err := InstancePattern("node1|node2:9750")
	if err != nil {
		t.Fatal(err)
	}
	i := Instance{Label: "node", Pattern: re}
	for _, tt := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"node": "node1"}, true},
		{map[string]string{"node": "node2:9750"}, true},
		// The pattern is anchored as a whole, alternatives included.
		{map[string]string{"node": "node1:9750"}, false},
		{map[string]string{"node": "xnode2:9750"}, false},
		{map[string]string{"instance": "node1"}, false},
		{map[string]string{"node": ""}, false},
		{nil, false},
	} {
		if got := i.Matches(tt.labels); got != tt.want {
			t.Errorf("Instance{node, %s}.Matches(%v) = %v, want %v", re, tt.labels, got, tt.want)
		}
	}
	if got := (Instance{Label: "instance"}).Matches(map[string]string{"instance": "x"}); got {
		t.Error("an Instance without a pattern matched")
	}
}

// TestInstancePatternError: an error shows the pattern as the operator
// wrote it, not as it is compiled.
func TestInstancePatternError(t *testing.T) {
	if _, err := InstancePattern("node1|("); err == nil || !strings.Contains(err.Error(), "`node1|(`") {
		t.Errorf("InstancePattern(%q) = %v, want an error showing %q", "node1|(", err, "node1|(")
	}
}
