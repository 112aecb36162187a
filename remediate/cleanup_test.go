package remediate

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/kernel"
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

// leftover makes a veth on master whose peer sits in a namespace held
// only by /run/netns/ns-NAME, and returns its Target as an inventory
// would approve it.
func leftover(t *testing.T, name, master string) Target {
	t.Helper()
	netnstest.NamedNetns(t, "ns-"+name)
	netnstest.Veth(t, name, "ns-"+name, master)
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/ns-"+name, &st); err != nil {
		t.Fatal(err)
	}
	return Target{Device: name, Index: ifindex(t, name), Netns: st.Ino, NetnsPaths: []string{"/run/netns/ns-" + name}, PIDs: []int{},
		NetnsPeers: []int{peerIndex(t, name)}}
}

// peerIndex is the ifindex of name's peer, in the peer's namespace.
func peerIndex(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/sys/class/net/" + name + "/iflink")
	if err != nil {
		t.Fatal(err)
	}
	i, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// enter starts a process in the namespace at path, as `ip netns exec`
// does, and stops it when the test ends.
func enter(t *testing.T, path string) int {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+path, "sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// nsenter has entered once its command runs.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile("/proc/" + itoa(cmd.Process.Pid) + "/comm"); err == nil && strings.TrimSpace(string(b)) == "sleep" {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatal("nsenter did not enter")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestRemoveOne(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "rbr0")
	rm := newRemover(testHandle(t), inventory.DefaultPaths)
	t.Run("a leftover on a bridge", func(t *testing.T) {
		target := leftover(t, "vrleak", "rbr0")
		got := rm.remove(context.Background(), []Target{target})[0]
		if got.Outcome != OutcomeDeleted || got.Err != nil || got.Batch {
			t.Fatalf("remove(%s) = %+v; want deleted, alone", target.Device, got)
		}
		if exists("vrleak") || !exists("rbr0") {
			t.Error("vrleak still exists, or the bridge went with it")
		}
		// Again: someone was first, which is success.
		if got := rm.remove(context.Background(), []Target{target})[0]; got.Outcome != OutcomeGone {
			t.Errorf("second remove(%s) = %+v; want gone", target.Device, got)
		}
	})
	t.Run("the ifindex names another link", func(t *testing.T) {
		netnstest.HostPair(t, "vkeepA", "vkeepB")
		target := Target{Device: "vrleak-old", Index: ifindex(t, "vkeepA")}
		if got := rm.remove(context.Background(), []Target{target})[0]; got.Outcome != OutcomeChanged || got.Err == nil {
			t.Errorf("remove(%+v) = %+v; want changed with an error", target, got)
		}
		if !exists("vkeepA") {
			t.Error("vkeepA was deleted although its name did not match")
		}
	})
	t.Run("not a veth", func(t *testing.T) {
		target := Target{Device: "rbr0", Index: ifindex(t, "rbr0")}
		if got := rm.remove(context.Background(), []Target{target})[0]; got.Outcome != OutcomeChanged {
			t.Errorf("remove(%+v) = %+v; want changed", target, got)
		}
		if !exists("rbr0") {
			t.Error("the bridge was deleted")
		}
	})
	t.Run("a pair on the host", func(t *testing.T) {
		netnstest.HostPair(t, "vpairA", "vpairB")
		target := Target{Device: "vpairB", Index: ifindex(t, "vpairB")}
		if got := rm.remove(context.Background(), []Target{target})[0]; got.Outcome != OutcomeDeleted {
			t.Fatalf("remove(%+v) = %+v; want deleted", target, got)
		}
		if exists("vpairA") || exists("vpairB") {
			t.Error("the pair is still (half) there")
		}
	})
	t.Run("same name and ifindex, peer in another namespace", func(t *testing.T) {
		// The veth the inventory approved is deleted and another takes its
		// name and ifindex (`ip link add … index N`), its peer elsewhere.
		target := leftover(t, "vreuse", "rbr0")
		netnstest.IP(t, "link", "del", "vreuse")
		netnstest.NamedNetns(t, "ns-other")
		netnstest.IP(t, "link", "add", "vreuse", "index", itoa(target.Index), "type", "veth", "peer", "name", "eth0", "netns", "ns-other")
		if got := rm.remove(context.Background(), []Target{target})[0]; got.Outcome != OutcomeChanged {
			t.Errorf("remove(%+v) = %+v; want changed", target, got)
		}
		if !exists("vreuse") {
			t.Error("the new vreuse was deleted")
		}
	})
	t.Run("peer moved to a live namespace", func(t *testing.T) {
		target := leftover(t, "vmoved", "rbr0")
		netnstest.NamedNetns(t, "ns-live")
		netnstest.IP(t, "-n", "ns-vmoved", "link", "set", "eth0", "netns", "ns-live")
		if got := rm.remove(context.Background(), []Target{target})[0]; got.Outcome != OutcomeChanged {
			t.Errorf("remove(%+v) = %+v; want changed", target, got)
		}
		if !exists("vmoved") {
			t.Error("vmoved was deleted although its peer moved")
		}
	})
}

// TestRemoveFinalRecheck: a process that entered a leftover's namespace
// after the inventory approved it stops its deletion, alone or in a group.
func TestRemoveFinalRecheck(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "fbr0")
	rm := newRemover(testHandle(t), inventory.DefaultPaths)
	t.Run("alone", func(t *testing.T) {
		target := leftover(t, "vfone", "fbr0")
		enter(t, "/run/netns/ns-vfone")
		if got := rm.remove(context.Background(), []Target{target})[0]; got.Outcome != OutcomeChanged || !strings.Contains(got.Err.Error(), "entered") {
			t.Errorf("remove(%s) = %+v; want changed: a process entered", target.Device, got)
		}
		if !exists("vfone") {
			t.Error("vfone was deleted while in use")
		}
	})
	t.Run("in a group", func(t *testing.T) {
		targets := []Target{leftover(t, "vfa", "fbr0"), leftover(t, "vfb", "fbr0"), leftover(t, "vfc", "fbr0")}
		enter(t, "/run/netns/ns-vfb")
		got := rm.remove(context.Background(), targets)
		want := []Outcome{OutcomeDeleted, OutcomeChanged, OutcomeDeleted}
		for i := range targets {
			if got[i].Outcome != want[i] {
				t.Errorf("%s: %+v, want %s", targets[i].Device, got[i], want[i])
			}
		}
		if !got[0].Batch || !got[2].Batch {
			t.Errorf("vfa and vfc not deleted as a group: %+v", got)
		}
		if exists("vfa") || exists("vfc") || !exists("vfb") {
			t.Error("wrong interfaces deleted")
		}
		if g := linkGroup(t, "vfb"); g != 0 {
			t.Errorf("vfb left in group %d, want its group 0 back", g)
		}
	})
	t.Run("a namespace that gained an interface", func(t *testing.T) {
		// It may route for someone now (a veth to a live container, a
		// tunnel): alone and in a group.
		one := leftover(t, "vfif", "fbr0")
		netnstest.IP(t, "-n", "ns-vfif", "link", "add", "rt0", "type", "veth", "peer", "name", "rt1")
		if got := rm.remove(context.Background(), []Target{one})[0]; got.Outcome != OutcomeChanged || !strings.Contains(got.Err.Error(), "rt0") {
			t.Errorf("remove(%s) = %+v; want changed: its namespace holds rt0", one.Device, got)
		}
		group := []Target{leftover(t, "vfig1", "fbr0"), leftover(t, "vfig2", "fbr0")}
		netnstest.IP(t, "-n", "ns-vfig2", "link", "add", "rt0", "type", "veth", "peer", "name", "rt1")
		got := rm.remove(context.Background(), group)
		if got[0].Outcome != OutcomeDeleted || got[1].Outcome != OutcomeChanged {
			t.Errorf("remove(vfig1, vfig2) = %+v; want vfig1 deleted, vfig2 changed", got)
		}
		if !exists("vfif") || !exists("vfig2") || exists("vfig1") {
			t.Error("wrong interfaces deleted")
		}
	})
	t.Run("the holder of a kept veth is not a newcomer", func(t *testing.T) {
		// owner_exited: the inventory saw a stray in the namespace.
		target := leftover(t, "vfstray", "fbr0")
		target.PIDs = []int{enter(t, "/run/netns/ns-vfstray")}
		if got := rm.remove(context.Background(), []Target{target})[0]; got.Outcome != OutcomeDeleted {
			t.Errorf("remove(%s) = %+v; want deleted: its stray was known", target.Device, got)
		}
	})
}

func linkGroup(t *testing.T, name string) uint32 {
	t.Helper()
	refs, err := kernel.DumpLinks()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range refs {
		if l.Name == name {
			return l.Group
		}
	}
	t.Fatalf("%s not found", name)
	return 0
}

// TestRemoveGroupSurprise: a link that joins the chosen group behind the
// exporter's back makes it untag its own and fall back to one by one;
// the stranger is never deleted, and gets back the group it had.
func TestRemoveGroupSurprise(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "sbr0")
	h := testHandle(t)
	targets := []Target{leftover(t, "vsa", "sbr0"), leftover(t, "vsb", "sbr0")}
	netnstest.HostPair(t, "vstranger", "vstrangerp")
	rm := newRemover(h, inventory.DefaultPaths)
	const group = 77777
	rm.pickGroup = func() uint32 { return group }
	dumps := 0
	rm.dump = func() ([]kernel.Link, error) {
		if dumps++; dumps == 2 { // the verification after tagging
			netnstest.IP(t, "link", "set", "vstranger", "group", "77777")
		}
		return kernel.DumpLinks()
	}
	got := rm.remove(context.Background(), targets)
	for i := range targets {
		if got[i].Outcome != OutcomeDeleted || got[i].Batch {
			t.Errorf("%s: %+v, want deleted one by one", targets[i].Device, got[i])
		}
	}
	if !exists("vstranger") {
		t.Fatal("the stranger in the group was deleted")
	}
	if g := linkGroup(t, "vstranger"); g != 0 {
		t.Errorf("the stranger's group is %d, want 0, the group it had before the exporter chose %d", g, group)
	}
}

// TestRemoveGroupMany deletes a hundred leftovers in one transaction and
// leaves everything else alone.
func TestRemoveGroupMany(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "mbr0")
	netnstest.HostPair(t, "vmkeepA", "vmkeepB")
	var targets []Target
	for i := range 100 {
		targets = append(targets, leftover(t, "vm"+itoa(i), "mbr0"))
	}
	start := time.Now()
	got := newRemover(testHandle(t), inventory.DefaultPaths).remove(context.Background(), targets)
	t.Logf("100 leftovers removed in %s", time.Since(start))
	for i, r := range got {
		if r.Outcome != OutcomeDeleted || !r.Batch {
			t.Fatalf("%s: %+v, want deleted in the group", targets[i].Device, r)
		}
		if exists(targets[i].Device) {
			t.Errorf("%s still exists", targets[i].Device)
		}
	}
	if !exists("mbr0") || !exists("vmkeepA") || !exists("vmkeepB") {
		t.Error("an interface outside the group disappeared")
	}
}

// TestRemoveGroupLostAnswer: when the group deletion returns an error,
// the kernel may have acted anyway. What is gone went with the group; what
// is still there goes one by one.
func TestRemoveGroupLostAnswer(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "lbr0")
	for _, tt := range []struct {
		name      string
		prefix    string
		acted     bool
		wantBatch bool
	}{
		{"deleted, answer lost", "vla", true, true},
		{"refused, nothing deleted", "vlr", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			targets := []Target{leftover(t, tt.prefix+"0", "lbr0"), leftover(t, tt.prefix+"1", "lbr0")}
			rm := newRemover(testHandle(t), inventory.DefaultPaths)
			rm.deleteGroup = func(group uint32) error {
				if tt.acted {
					if err := deleteLinkGroup(group); err != nil {
						t.Fatal(err)
					}
				}
				return errors.New("the answer was lost")
			}
			got := rm.remove(context.Background(), targets)
			for i, r := range got {
				if r.Outcome != OutcomeDeleted || r.Batch != tt.wantBatch {
					t.Errorf("%s: %+v, want deleted (in the group: %v)", targets[i].Device, r, tt.wantBatch)
				}
				if exists(targets[i].Device) {
					t.Errorf("%s still exists", targets[i].Device)
				}
			}
		})
	}
}

// TestReleaseNetns deletes a leftover through the gates in enforce mode
// with release-netns: the veth goes, and so does the mount that pinned its
// empty namespace; a mount outside the known directories stays.
func TestReleaseNetns(t *testing.T) {
	netnstest.Require(t)
	target := leftover(t, "vrel", "")
	snap := &inventory.Snapshot{Taken: time.Now(), HistoryObserved: time.Now().Add(-time.Minute), Veths: []inventory.Veth{{
		Name: "vrel", Index: target.Index, PeerIndex: target.NetnsPeers[0], Verdict: inventory.Orphaned, Reason: inventory.ReasonNetnsEmpty,
		OrphanedSince: time.Now().Add(-time.Hour),
		PeerNetns:     &inventory.Namespace{Inode: target.Netns, Mounts: []string{"/run/netns/ns-vrel", "/elsewhere/relns"}},
	}}}
	cfg := testConfig()
	cfg.Mode, cfg.ReleaseNetns, cfg.NetnsDirs = ModeEnforce, true, []string{"/run/netns", "/run/docker/netns"}
	cfg.MaxOrphanRatio = 1 // the only veth of the fixture
	cfg.MasterInclude = nil
	cfg.AuditFile = t.TempDir() + "/audit.jsonl"
	r := New(cfg, &fakeInventory{snap: snap}, nil, slog.New(slog.DiscardHandler))
	a := mustHandleDevices(t, r, Device{Name: "vrel"})[0]
	if a.Result != ResultDeleted || a.Detail != "released /run/netns/ns-vrel" {
		t.Fatalf("answer %+v, want deleted and /run/netns/ns-vrel released", a)
	}
	if exists("vrel") {
		t.Error("vrel still exists")
	}
	if _, err := os.Stat("/run/netns/ns-vrel"); err == nil {
		t.Error("/run/netns/ns-vrel is still there")
	}
	// The intent was written before the result.
	b, _ := os.ReadFile(cfg.AuditFile)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"phase":"intent"`) || !strings.Contains(lines[1], `"phase":"result"`) || !strings.Contains(lines[1], `"result":"deleted"`) {
		t.Errorf("audit file:\n%s\nwant an intent line, then the deleted result", b)
	}
}

// TestRemovePeerMovesDuringRecheck: a peer moved into another namespace
// while the final re-check reads the processes is seen by the last look
// before the deletion, alone or in a group.
func TestRemovePeerMovesDuringRecheck(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "pbr0")
	netnstest.NamedNetns(t, "ns-elsewhere")
	for _, n := range []int{1, 3} {
		t.Run(itoa(n)+" targets", func(t *testing.T) {
			var targets []Target
			for i := range n {
				targets = append(targets, leftover(t, "vpm"+itoa(n)+"x"+itoa(i), "pbr0"))
			}
			mover := targets[0].Device
			rm := newRemover(testHandle(t), inventory.DefaultPaths)
			moved := false
			rm.occupants = func(inodes map[uint64]bool) (map[uint64][]int, error) {
				if !moved {
					moved = true
					netnstest.IP(t, "-n", "ns-"+mover, "link", "set", "eth0", "netns", "ns-elsewhere")
				}
				return kernel.Occupants("/proc", inodes)
			}
			got := rm.remove(context.Background(), targets)
			if got[0].Outcome != OutcomeChanged {
				t.Errorf("%s, its peer moved: %+v, want changed", mover, got[0])
			}
			if !exists(mover) {
				t.Errorf("%s was deleted with its peer in another namespace", mover)
			}
			for i := 1; i < n; i++ {
				if got[i].Outcome != OutcomeDeleted {
					t.Errorf("%s: %+v, want deleted", targets[i].Device, got[i])
				}
			}
			netnstest.IP(t, "-n", "ns-elsewhere", "link", "del", "eth0")
		})
	}
}
