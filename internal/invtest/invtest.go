// Package invtest builds inventories for the tests of the packages that
// plug into one (runtime resolvers, annotators): an inventory of the
// test's private network namespace (see internal/netnstest) with its
// state in a temporary directory, and checks of what its snapshots say.
package invtest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// New returns an inventory of cfg for the test's private namespaces:
// default paths and infrastructure patterns, a PID namespace trusted to
// list every process (the fixture's all live in the test's), and a state
// file in a temporary directory, where cfg leaves them unset.
func New(t testing.TB, cfg inventory.Config) *inventory.Inventory {
	t.Helper()
	if cfg.Infrastructure == nil {
		infra, err := inventory.NewInfrastructure(inventory.DefaultInfrastructurePatterns)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Infrastructure = infra
	}
	if cfg.State == nil {
		cfg.State = inventory.OpenState(filepath.Join(t.TempDir(), "state.json"), inventory.StateOptions{})
	}
	cfg.TrustPIDNamespace = true
	return inventory.New(cfg)
}

// Snapshot takes a fresh snapshot and fails t if any step failed or the
// snapshot has warnings.
func Snapshot(t testing.TB, inv *inventory.Inventory) *inventory.Snapshot {
	t.Helper()
	s, err := inv.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	for _, st := range s.Steps {
		if st.Err != nil {
			t.Errorf("step %s failed: %v", st.Name, st.Err)
		}
	}
	if len(s.Warnings) > 0 {
		t.Errorf("Snapshot warnings: %q", s.Warnings)
	}
	return s
}

// MustVeth returns the veth name of s, failing t when it is missing.
func MustVeth(t testing.TB, s *inventory.Snapshot, name string) *inventory.Veth {
	t.Helper()
	v := s.Veth(name)
	if v == nil {
		t.Fatalf("veth %s missing from snapshot", name)
	}
	return v
}

// WantVerdict fails t unless v has verdict and reason.
func WantVerdict(t testing.TB, v *inventory.Veth, verdict inventory.Verdict, reason inventory.Reason) {
	t.Helper()
	if v.Verdict != verdict || v.Reason != reason {
		t.Errorf("%s: verdict %s/%s, want %s/%s", v.Name, v.Verdict, v.Reason, verdict, reason)
	}
}
