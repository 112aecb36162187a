package inventory

import (
	"testing"

	"github.com/veth-exporter/veth_exporter/kernel"
)

// TestVethsFromLinks runs on dumps as the kernel would send them; the
// indexes of peers in other namespaces are deliberately those of host
// links, as they often are (every namespace numbers its links from 1).
func TestVethsFromLinks(t *testing.T) {
	lo := kernel.Link{Index: 1, Name: "lo", OperState: 0, PeerNetNSID: -1}
	eth0 := kernel.Link{Index: 2, Name: "eth0", OperState: 6, PeerNetNSID: -1}
	docker0 := kernel.Link{Index: 3, Name: "docker0", OperState: 6, PeerNetNSID: -1}
	for _, tc := range []struct {
		name  string
		links []kernel.Link
		want  []Veth
	}{
		{"no veths", []kernel.Link{lo, eth0, docker0,
			{Index: 4, Name: "vxlan.calico", OperState: 0, PeerIndex: 2, PeerNetNSID: -1}}, nil},
		{"container veth on a bridge", []kernel.Link{lo, eth0, docker0,
			{Index: 10, Name: "veth9f1c2a1", Veth: true, Master: 3, OperState: 6, PeerIndex: 2, PeerNetNSID: 0, PeerElsewhere: true}},
			[]Veth{{Name: "veth9f1c2a1", Index: 10, Master: "docker0", OperState: "up", PeerIndex: 2, PeerNetNSID: 0}}},
		{"master after the veth in the dump", []kernel.Link{
			{Index: 10, Name: "veth9f1c2a1", Veth: true, Master: 30, OperState: 6, PeerIndex: 2, PeerNetNSID: 1, PeerElsewhere: true},
			{Index: 30, Name: "br-5d7e", OperState: 6, PeerNetNSID: -1}},
			[]Veth{{Name: "veth9f1c2a1", Index: 10, Master: "br-5d7e", OperState: "up", PeerIndex: 2, PeerNetNSID: 1}}},
		{"master missing from the dump", []kernel.Link{lo,
			{Index: 10, Name: "veth9f1c2a1", Veth: true, Master: 99, OperState: 6, PeerIndex: 2, PeerNetNSID: 0, PeerElsewhere: true}},
			[]Veth{{Name: "veth9f1c2a1", Index: 10, OperState: "up", PeerIndex: 2, PeerNetNSID: 0}}},
		{"pair on the host", []kernel.Link{lo,
			{Index: 20, Name: "cilium_host", Veth: true, OperState: 6, PeerIndex: 21, PeerNetNSID: -1},
			{Index: 21, Name: "cilium_net", Veth: true, OperState: 6, PeerIndex: 20, PeerNetNSID: -1}},
			[]Veth{
				{Name: "cilium_host", Index: 20, OperState: "up", PeerIndex: 21, PeerNetNSID: -1, PeerOnHost: true, PeerName: "cilium_net"},
				{Name: "cilium_net", Index: 21, OperState: "up", PeerIndex: 20, PeerNetNSID: -1, PeerOnHost: true, PeerName: "cilium_host"},
			}},
		{"host peer index at a bridge", []kernel.Link{lo, docker0,
			{Index: 30, Name: "vethbad", Veth: true, OperState: 7, PeerIndex: 3, PeerNetNSID: -1}},
			[]Veth{{Name: "vethbad", Index: 30, OperState: "unknown", PeerIndex: 3, PeerNetNSID: -1}}},
		{"host peer index at a veth that does not point back", []kernel.Link{
			{Index: 40, Name: "vethstale", Veth: true, OperState: 6, PeerIndex: 41, PeerNetNSID: -1},
			{Index: 41, Name: "vethnewA", Veth: true, OperState: 6, PeerIndex: 42, PeerNetNSID: -1},
			{Index: 42, Name: "vethnewB", Veth: true, OperState: 6, PeerIndex: 41, PeerNetNSID: -1}},
			[]Veth{
				{Name: "vethstale", Index: 40, OperState: "up", PeerIndex: 41, PeerNetNSID: -1},
				{Name: "vethnewA", Index: 41, OperState: "up", PeerIndex: 42, PeerNetNSID: -1, PeerOnHost: true, PeerName: "vethnewB"},
				{Name: "vethnewB", Index: 42, OperState: "up", PeerIndex: 41, PeerNetNSID: -1, PeerOnHost: true, PeerName: "vethnewA"},
			}},
		{"host peer index missing from the dump", []kernel.Link{lo,
			{Index: 50, Name: "vethgone", Veth: true, OperState: 5, PeerIndex: 51, PeerNetNSID: -1}},
			[]Veth{{Name: "vethgone", Index: 50, OperState: "dormant", PeerIndex: 51, PeerNetNSID: -1}}},
		// The peer index is an index in the peer's namespace: that it
		// names a host bridge means nothing.
		{"peer elsewhere at the index of a host bridge", []kernel.Link{lo, eth0, docker0,
			{Index: 60, Name: "veth3e0a", Veth: true, Master: 3, OperState: 6, PeerIndex: 3, PeerNetNSID: 3, PeerElsewhere: true}},
			[]Veth{{Name: "veth3e0a", Index: 60, Master: "docker0", OperState: "up", PeerIndex: 3, PeerNetNSID: 3}}},
		// Nor does it when the host link there is a veth pointing back,
		// from either side, nor when the peer's namespace is dying (-1).
		{"peer elsewhere at the index of a host veth pointing back", []kernel.Link{
			{Index: 70, Name: "vethA", Veth: true, OperState: 6, PeerIndex: 71, PeerNetNSID: 3, PeerElsewhere: true},
			{Index: 71, Name: "vethB", Veth: true, OperState: 6, PeerIndex: 70, PeerNetNSID: -1}},
			[]Veth{
				{Name: "vethA", Index: 70, OperState: "up", PeerIndex: 71, PeerNetNSID: 3},
				{Name: "vethB", Index: 71, OperState: "up", PeerIndex: 70, PeerNetNSID: -1},
			}},
		{"peer in a dying namespace at the index of a host veth pointing back", []kernel.Link{
			{Index: 80, Name: "vethA", Veth: true, OperState: 3, PeerIndex: 81, PeerNetNSID: -1, PeerElsewhere: true},
			{Index: 81, Name: "vethB", Veth: true, OperState: 6, PeerIndex: 80, PeerNetNSID: -1, PeerElsewhere: true}},
			[]Veth{
				{Name: "vethA", Index: 80, OperState: "lowerlayerdown", PeerIndex: 81, PeerNetNSID: -1},
				{Name: "vethB", Index: 81, OperState: "up", PeerIndex: 80, PeerNetNSID: -1},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := vethsFromLinks(tc.links)
			if len(got) != len(tc.want) {
				t.Fatalf("vethsFromLinks(%+v) = %+v, want %+v", tc.links, got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("vethsFromLinks(%+v)[%d] = %+v, want %+v", tc.links, i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestLinkOperStateName checks the names against the kernel's operstates[]
// in net/core/net-sysfs.c, which /sys/class/net/X/operstate prints.

// TestVethsFromParsedLinks: the links of [kernel.TestParseLinkDump]'s dump,
// as the veths they are.
func TestVethsFromParsedLinks(t *testing.T) {
	links := []kernel.Link{
		{Index: 1, Name: "lo", PeerNetNSID: -1},
		{Index: 3, Name: "docker0", OperState: 6, PeerNetNSID: -1},
		{Index: 9, Name: "veth5c1d", Veth: true, Master: 3, OperState: 3, PeerIndex: 3, PeerNetNSID: -1, PeerElsewhere: true},
	}
	want := []Veth{{Name: "veth5c1d", Index: 9, Master: "docker0", OperState: "lowerlayerdown", PeerIndex: 3, PeerNetNSID: -1}}
	got := vethsFromLinks(links)
	if len(got) != 1 || got[0] != want[0] {
		t.Errorf("vethsFromLinks(%+v) = %+v, want %+v", links, got, want)
	}
}
