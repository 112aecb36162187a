package web

import (
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// TestProcsAndHeldBy: the columns inspect prints for the peer namespace
// say a count that was not taken is unknown ("-"), never 0.
func TestProcsAndHeldBy(t *testing.T) {
	for _, tc := range []struct {
		name          string
		netns         *inventory.Namespace
		procs, heldBy string
	}{
		{"peer on the host", nil, "-", "-"},
		{"leaked", &inventory.Namespace{PIDs: []int{}, Mounts: []string{"/run/netns/leak"}}, "0", "/run/netns/leak"},
		{"processes", &inventory.Namespace{PIDs: []int{7, 9, 12}}, "3", "pid 7 +2"},
		{"uncounted", &inventory.Namespace{Uncounted: true, Mounts: []string{"/run/docker/netns/abc"}}, "-", "/run/docker/netns/abc,a running container"},
	} {
		v := &inventory.Veth{PeerNetns: tc.netns}
		if got := Procs(v); got != tc.procs {
			t.Errorf("%s: Procs = %q, want %q", tc.name, got, tc.procs)
		}
		if got := HeldBy(v); got != tc.heldBy {
			t.Errorf("%s: HeldBy = %q, want %q", tc.name, got, tc.heldBy)
		}
	}
}

func TestDeviceText(t *testing.T) {
	for _, tt := range []struct{ name, want string }{
		{"veth1a2b3c", "veth1a2b3c"},
		{"veth😀", "veth😀"},
		{"a\u2003b", `"a\u2003b"`},
		{"a\u3000b", `"a\u3000b"`},
		{"a\xffb", `"a\xffb"`},
		{"a\x01b", `"a\x01b"`},
	} {
		if got := DeviceText(tt.name); got != tt.want {
			t.Errorf("DeviceText(%q) = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestOwnerText wants every orphan's last owner in the owner column, the
// stray process holding an owner_exited orphan's namespace included.
func TestOwnerText(t *testing.T) {
	seen := time.Date(2026, 11, 27, 11, 57, 0, 0, time.UTC)
	stray := &inventory.Owner{Kind: inventory.OwnerProcess, ID: "77", Name: "sleep"}
	web := &inventory.Owner{Kind: inventory.OwnerContainer, ID: "c0ffee00c0ffee00c0ffee", Name: "web"}
	for _, tt := range []struct {
		name string
		v    inventory.Veth
		want string
	}{
		{"owned", inventory.Veth{Verdict: inventory.Owned, Owner: web, LastOwner: web, LastOwnerSeen: seen}, "container c0ffee00c0ff (web)"},
		{"netns_empty", inventory.Veth{Verdict: inventory.Orphaned, Reason: inventory.ReasonNetnsEmpty, LastOwner: web, LastOwnerSeen: seen},
			"was container c0ffee00c0ff (web), seen 2026-11-27 11:57:00"},
		{"owner_exited", inventory.Veth{Verdict: inventory.Orphaned, Reason: inventory.ReasonOwnerExited, Owner: stray, LastOwner: web, LastOwnerSeen: seen},
			"process 77 (sleep); was container c0ffee00c0ff (web), seen 2026-11-27 11:57:00"},
		{"never owned", inventory.Veth{Verdict: inventory.Orphaned, Reason: inventory.ReasonPeerOnHost}, "-"},
	} {
		if got := OwnerText(&tt.v); got != tt.want {
			t.Errorf("%s: OwnerText = %q, want %q", tt.name, got, tt.want)
		}
	}
}
