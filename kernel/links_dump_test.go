package kernel

import (
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// TestDumpLinks: the links of the namespace with their groups, and for
// a veth whether its peer is on the host.
func TestDumpLinks(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "refs")
	netnstest.Veth(t, "vrefs", "refs", "")
	netnstest.HostPair(t, "refA", "refB")
	netnstest.IP(t, "link", "set", "vrefs", "group", "4242")

	refs, err := DumpLinks()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Link{}
	for _, r := range refs {
		byName[r.Name] = r
	}
	lo, vrefs, refA := byName["lo"], byName["vrefs"], byName["refA"]
	if lo.Index != 1 || lo.Veth || lo.Group != 0 || lo.PeerNetNSID != -1 {
		t.Errorf("lo = %+v, want index 1, not a veth, group 0, no peer nsid", lo)
	}
	if !vrefs.Veth || vrefs.Group != 4242 || vrefs.PeerNetNSID < 0 || vrefs.Index <= 1 {
		t.Errorf("vrefs = %+v, want a veth in group 4242 with a peer nsid", vrefs)
	}
	if !refA.Veth || refA.Group != 0 || refA.PeerNetNSID != -1 {
		t.Errorf("refA = %+v, want a veth in group 0, peer on the host", refA)
	}
}
