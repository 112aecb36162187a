package inventory

import (
	"strconv"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// TestSnapshotOtherLinks: a namespace with no process that routes for a
// live container (its uplink on the host, a veth to the container) is in
// use: its uplink is unknown/other_links, never netns_empty. A plain
// leftover namespace holding the peers of several host veths is not.
func TestSnapshotOtherLinks(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "router")
	netnstest.Veth(t, "vrouter", "router", "")
	live := netnstest.Holder(t, "/docker/"+containerA)
	netnstest.IP(t, "-n", "router", "link", "add", "r1", "type", "veth", "peer", "name", "c1", "netns", strconv.Itoa(live))

	netnstest.NamedNetns(t, "leak2")
	netnstest.IP(t, "link", "add", "vleakA", "type", "veth", "peer", "name", "eth0", "netns", "leak2")
	netnstest.IP(t, "link", "add", "vleakB", "type", "veth", "peer", "name", "eth1", "netns", "leak2")

	s := snapshot(t, newTestInventory(t))
	v := mustVeth(t, s, "vrouter")
	wantVerdict(t, v, Unknown, ReasonOtherLinks)
	if v.PeerNetns == nil || len(v.PeerNetns.OtherLinks) != 1 || v.PeerNetns.OtherLinks[0] != "r1" {
		t.Errorf("vrouter's peer namespace: %+v, want other links [r1]", v.PeerNetns)
	}
	wantVerdict(t, mustVeth(t, s, "vleakA"), Orphaned, ReasonNetnsEmpty)
	wantVerdict(t, mustVeth(t, s, "vleakB"), Orphaned, ReasonNetnsEmpty)

	// The router loses its other link: a plain leftover again.
	netnstest.IP(t, "-n", "router", "link", "del", "r1")
	wantVerdict(t, mustVeth(t, snapshot(t, newTestInventory(t)), "vrouter"), Orphaned, ReasonNetnsEmpty)
}
