package web

import (
	"testing"

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
