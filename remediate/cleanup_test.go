package remediate

import (
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/inventory"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

func testHandle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func ifindex(t *testing.T, name string) int {
	t.Helper()
	i, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return i.Index
}

func exists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

func TestRemoveVeth(t *testing.T) {
	netnstest.Require(t)
	h := testHandle(t)
	netnstest.Bridge(t, "rbr0")
	netnstest.NamedNetns(t, "rleak")
	netnstest.Veth(t, "vrleak", "rleak", "rbr0")
	netnstest.HostPair(t, "vkeepA", "vkeepB")

	t.Run("a leftover on a bridge", func(t *testing.T) {
		target := Target{Device: "vrleak", Index: ifindex(t, "vrleak")}
		got, err := removeVeth(h, target)
		if got != OutcomeDeleted || err != nil {
			t.Fatalf("removeVeth(%+v) = %s, %v; want deleted", target, got, err)
		}
		if exists("vrleak") {
			t.Error("vrleak still exists")
		}
		if !exists("rbr0") || !exists("vkeepA") || !exists("vkeepB") {
			t.Error("another interface disappeared")
		}
		// Again: someone was first, which is success.
		if got, err := removeVeth(h, target); got != OutcomeGone || err != nil {
			t.Errorf("second removeVeth(%+v) = %s, %v; want gone", target, got, err)
		}
	})
	t.Run("the ifindex names another link", func(t *testing.T) {
		target := Target{Device: "vrleak-old", Index: ifindex(t, "vkeepA")}
		if got, err := removeVeth(h, target); got != OutcomeChanged || err == nil {
			t.Errorf("removeVeth(%+v) = %s, %v; want changed with an error", target, got, err)
		}
		if !exists("vkeepA") {
			t.Error("vkeepA was deleted although its name did not match")
		}
	})
	t.Run("not a veth", func(t *testing.T) {
		target := Target{Device: "rbr0", Index: ifindex(t, "rbr0")}
		if got, err := removeVeth(h, target); got != OutcomeChanged || err == nil {
			t.Errorf("removeVeth(%+v) = %s, %v; want changed with an error", target, got, err)
		}
		if !exists("rbr0") {
			t.Error("the bridge was deleted")
		}
	})
	t.Run("a detached veth", func(t *testing.T) {
		target := Target{Device: "vkeepB", Index: ifindex(t, "vkeepB")}
		if got, err := removeVeth(h, target); got != OutcomeDeleted || err != nil {
			t.Fatalf("removeVeth(%+v) = %s, %v; want deleted", target, got, err)
		}
		// Either end takes the pair with it.
		if exists("vkeepA") || exists("vkeepB") {
			t.Error("the pair is still (half) there")
		}
	})
}

// TestReleaseNetns deletes a leftover through the gates in enforce mode
// with release-netns: the veth goes, and so does the mount that pinned its
// empty namespace; a mount outside the known directories stays.
func TestReleaseNetns(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "relns")
	netnstest.Veth(t, "vrel", "relns", "")
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/relns", &st); err != nil {
		t.Fatal(err)
	}
	snap := &inventory.Snapshot{Veths: []inventory.Veth{{
		Name: "vrel", Index: ifindex(t, "vrel"), Verdict: inventory.Orphaned, Reason: inventory.ReasonNetnsEmpty,
		OrphanedSince: time.Now().Add(-time.Hour),
		PeerNetns:     &inventory.Namespace{Inode: st.Ino, Mounts: []string{"/run/netns/relns", "/elsewhere/relns"}},
	}}}
	cfg := testConfig()
	cfg.Mode, cfg.ReleaseNetns, cfg.NetnsDirs, cfg.Rootfs = ModeEnforce, true, DefaultNetnsDirs, "/"
	cfg.MaxOrphanRatio = 1 // the only veth of the fixture
	cfg.MasterInclude = nil
	r := New(cfg, &fakeInventory{snap: snap}, nil, slog.New(slog.DiscardHandler))
	a := mustHandle(t, r, []Request{{Device: "vrel"}}, nil, false)[0]
	if a.Result != ResultDeleted || a.Detail != "released /run/netns/relns" {
		t.Fatalf("answer %+v, want deleted and /run/netns/relns released", a)
	}
	if exists("vrel") {
		t.Error("vrel still exists")
	}
	if _, err := os.Stat("/run/netns/relns"); err == nil {
		t.Error("/run/netns/relns is still there")
	}
}
