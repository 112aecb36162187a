package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	// No parent-death signal: a release ends a locked thread, which may be
	// the one that forked it. It dies with the test binary, PID 1 here.
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

// removerConfig is what a remover of method needs in the fixture.
func removerConfig(method Method) Config {
	return Config{Method: method, Paths: inventory.DefaultPaths, NetnsDirs: []string{"/run/netns"}, ReleaseTimeout: 2 * time.Second}
}

func TestRemoveOne(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "rbr0")
	rm := newRemover(testHandle(t), removerConfig(MethodDelete))
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
	rm := newRemover(testHandle(t), removerConfig(MethodDelete))
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
	rm := newRemover(h, removerConfig(MethodDelete))
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
	got := newRemover(testHandle(t), removerConfig(MethodDelete)).remove(context.Background(), targets)
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
			rm := newRemover(testHandle(t), removerConfig(MethodDelete))
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

// TestReleaseThroughGates releases a leftover through the gates in
// enforce mode: the mount that pinned its empty namespace goes, and with
// the namespace the veth; the answer says so, after the audit intent.
func TestReleaseThroughGates(t *testing.T) {
	netnstest.Require(t)
	target := leftover(t, "vrel", "")
	snap := &inventory.Snapshot{Taken: time.Now(), HistoryObserved: time.Now().Add(-time.Minute), Veths: []inventory.Veth{{
		Name: "vrel", Index: target.Index, PeerIndex: target.NetnsPeers[0], Verdict: inventory.Orphaned, Reason: inventory.ReasonNetnsEmpty,
		OrphanedSince: time.Now().Add(-time.Hour),
		PeerNetns:     &inventory.Namespace{Inode: target.Netns, Mounts: []string{"/run/netns/ns-vrel"}},
	}}}
	cfg := testConfig()
	cfg.Mode, cfg.Method, cfg.NetnsDirs, cfg.ReleaseTimeout = ModeEnforce, MethodAuto, []string{"/run/netns"}, 2*time.Second
	cfg.MaxOrphanRatio = 1 // the only veth of the fixture
	cfg.MasterInclude = nil
	cfg.AuditFile = t.TempDir() + "/audit.jsonl"
	r := New(cfg, &fakeInventory{snap: snap}, nil, slog.New(slog.DiscardHandler))
	a := mustHandleDevices(t, r, Device{Name: "vrel"})[0]
	if a.Result != ResultDeleted || a.Method != MethodRelease || a.Detail != "released /run/netns/ns-vrel" {
		t.Fatalf("answer %+v, want deleted by release of /run/netns/ns-vrel", a)
	}
	if exists("vrel") {
		t.Error("vrel still exists")
	}
	if _, err := os.Stat("/run/netns/ns-vrel"); err == nil {
		t.Error("/run/netns/ns-vrel is still there")
	}
	b, _ := os.ReadFile(cfg.AuditFile)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"phase":"intent"`) || !strings.Contains(lines[1], `"phase":"result"`) ||
		!strings.Contains(lines[1], `"result":"deleted"`) || !strings.Contains(lines[1], `"method":"release"`) {
		t.Errorf("audit file:\n%s\nwant an intent line, then the deleted result by release", b)
	}
}

// releasable is a leftover a release may take: only its mount holds its
// namespace.
func releasable(t *testing.T, name, master string) Target {
	t.Helper()
	target := leftover(t, name, master)
	target.Releasable = true
	return target
}

// TestRelease: pins removed, the kernel frees the namespaces and their
// veths go, several namespaces and two veths into one of them in one
// batch; a namespace anything else holds survives, with its veth, and the
// answer names what holds it.
func TestRelease(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "rbr0")
	rm := newRemover(testHandle(t), removerConfig(MethodRelease))
	t.Run("batch", func(t *testing.T) {
		targets := []Target{releasable(t, "vra", "rbr0"), releasable(t, "vrb", "rbr0")}
		// A second veth into vrb's namespace, approved too.
		netnstest.IP(t, "link", "add", "vrb2", "type", "veth", "peer", "name", "eth1", "netns", "ns-vrb")
		second := targets[1]
		second.Device, second.Index = "vrb2", ifindex(t, "vrb2")
		targets = append(targets, second)
		got := rm.remove(context.Background(), targets)
		for i, r := range got {
			if r.Outcome != OutcomeDeleted || r.Method != MethodRelease {
				t.Errorf("%s: %+v, want deleted by release", targets[i].Device, r)
			}
			if exists(targets[i].Device) {
				t.Errorf("%s still exists", targets[i].Device)
			}
		}
		for _, ns := range []string{"ns-vra", "ns-vrb"} {
			if _, err := os.Stat("/run/netns/" + ns); err == nil {
				t.Errorf("/run/netns/%s is still there", ns)
			}
		}
	})
	held := []struct {
		name string
		hold func(t *testing.T, path string) string // what the answer must name
	}{
		{"a process entered", func(t *testing.T, path string) string {
			return "process " + itoa(enter(t, path)) + " (sleep) in it"
		}},
		{"an open descriptor", func(t *testing.T, path string) string {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return "fd " + itoa(int(f.Fd())) + " of process " + itoa(os.Getpid())
		}},
		{"a mount in another mount namespace", func(t *testing.T, path string) string {
			// unshare makes a private copy of every mount, this one too.
			cmd := exec.Command("unshare", "-m", "--propagation", "private", "sleep", "infinity")
			// No parent-death signal: a release ends a locked thread, which may be
			// the one that forked it. It dies with the test binary, PID 1 here.
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			pid := cmd.Process.Pid
			waitUntil(t, func() bool { return readComm(pid) == "sleep" })
			return "mount " + path + " in the mount namespace of process " + itoa(pid) + " (sleep)"
		}},
	}
	for i, h := range held {
		t.Run(h.name, func(t *testing.T) {
			name := "vrh" + itoa(i)
			target := releasable(t, name, "rbr0")
			want := h.hold(t, "/run/netns/ns-"+name)
			got := rm.remove(context.Background(), []Target{target})[0]
			if got.Outcome != OutcomeHeld || got.Method != MethodRelease || !strings.Contains(got.Err.Error(), want) {
				t.Errorf("remove(%s) = %+v; want held, naming %q", name, got, want)
			}
			if !exists(name) {
				t.Errorf("%s is gone although its namespace is held", name)
			}
		})
	}
}

// TestReleaseRefuses: what a release cannot take is left alone with
// method release and deleted with method auto: a namespace a process is
// in, one pinned outside the netns directories, one with another veth
// nobody approved; one that holds another interface is left alone by both.
func TestReleaseRefuses(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "nrbr0")
	for _, method := range []Method{MethodRelease, MethodAuto} {
		t.Run(string(method), func(t *testing.T) {
			rm := newRemover(testHandle(t), removerConfig(method))
			p := string(method[0])
			stray := leftover(t, "vns"+p, "nrbr0")
			stray.PIDs = []int{enter(t, "/run/netns/ns-vns"+p)}
			outside := releasable(t, "vno"+p, "nrbr0")
			elsewhere := t.TempDir() + "/pin"
			if err := os.WriteFile(elsewhere, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("/run/netns/ns-vno"+p, elsewhere, "", unix.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(elsewhere, unix.MNT_DETACH) })
			shared := releasable(t, "vnu"+p, "nrbr0")
			netnstest.IP(t, "link", "add", "vnu"+p+"x", "type", "veth", "peer", "name", "eth1", "netns", "ns-vnu"+p)
			shared.NetnsPeers = append(shared.NetnsPeers, peerIndex(t, "vnu"+p+"x")) // as an inventory lists them
			routes := releasable(t, "vnr"+p, "nrbr0")
			netnstest.IP(t, "-n", "ns-vnr"+p, "link", "add", "rt0", "type", "veth", "peer", "name", "rt1")
			targets := []Target{stray, outside, shared, routes}
			got := rm.remove(context.Background(), targets)
			for i, r := range got[:3] {
				switch method {
				case MethodRelease:
					if r.Outcome != OutcomeFailed || !errors.Is(r.Err, errNotReleasable) || !exists(targets[i].Device) {
						t.Errorf("%s: %+v, want not releasable and left alone", targets[i].Device, r)
					}
				case MethodAuto:
					if r.Outcome != OutcomeDeleted || r.Method != MethodDelete || exists(targets[i].Device) {
						t.Errorf("%s: %+v, want deleted", targets[i].Device, r)
					}
				}
			}
			if got[3].Outcome != OutcomeChanged || !strings.Contains(got[3].Err.Error(), "rt0") || !exists(routes.Device) {
				t.Errorf("%s, its namespace holds rt0: %+v, want changed and left alone", routes.Device, got[3])
			}
			if !exists("vnu" + p + "x") {
				t.Error("the veth nobody approved went too")
			}
			if kernel.NsfsInode(elsewhere) != outside.Netns {
				t.Error("the mount outside the netns directories was touched")
			}
		})
	}
}

// TestReleaseWithoutHostMounts: an exporter that cannot enter the host's
// mount namespace releases nothing: auto deletes, release refuses.
func TestReleaseWithoutHostMounts(t *testing.T) {
	netnstest.Require(t)
	for _, method := range []Method{MethodRelease, MethodAuto} {
		rm := newRemover(testHandle(t), removerConfig(method))
		rm.enterHost = func(func() error) error { return fmt.Errorf("%w: setns: operation not permitted", errNoHostMounts) }
		target := releasable(t, "vnh"+string(method[0]), "")
		got := rm.remove(context.Background(), []Target{target})[0]
		switch {
		case method == MethodRelease && (got.Outcome != OutcomeFailed || !errors.Is(got.Err, errNotReleasable) || !exists(target.Device)):
			t.Errorf("method release: %+v, want not releasable, the veth left alone", got)
		case method == MethodAuto && (got.Outcome != OutcomeDeleted || got.Method != MethodDelete):
			t.Errorf("method auto: %+v, want deleted", got)
		}
	}
}

func readComm(pid int) string {
	b, _ := os.ReadFile("/proc/" + itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
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
			rm := newRemover(testHandle(t), removerConfig(MethodDelete))
			moved := false
			rm.occupants = func(inodes map[uint64]bool) (map[uint64][]int, kernel.Tasks, error) {
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

// TestDeleteListsAgain: the delete method lists the processes and threads
// again after its pass and right before RTM_DELLINK; a process that
// entered a leftover's namespace after the pass read /proc, or after the
// last look, is seen by those listings and stops that veth's deletion,
// alone or in a group. (A thread already listed that enters afterwards is
// not: that window stays, and only a release has none.)
func TestDeleteListsAgain(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "dlbr0")
	for m, moment := range []string{"after the pass", "after the last look"} {
		for _, n := range []int{1, 3} {
			t.Run(moment+"/"+itoa(n)+" targets", func(t *testing.T) {
				var targets []Target
				for i := range n {
					// Names of their own: a namespace deleted at the end of
					// a subtest frees its veth a moment later.
					targets = append(targets, leftover(t, "vdl"+itoa(m)+itoa(n)+"x"+itoa(i), "dlbr0"))
				}
				intruded := targets[0].Device
				rm := newRemover(testHandle(t), removerConfig(MethodDelete))
				entered := false
				intrude := func() {
					if !entered {
						entered = true
						enter(t, "/run/netns/ns-"+intruded)
					}
				}
				listings := 0
				switch moment {
				case "after the pass":
					rm.occupants = func(inodes map[uint64]bool) (map[uint64][]int, kernel.Tasks, error) {
						occ, listed, err := kernel.Occupants("/proc", inodes)
						intrude()
						return occ, listed, err
					}
				case "after the last look":
					rm.newcomers = func(listed kernel.Tasks, inodes map[uint64]bool) (map[uint64][]int, error) {
						if listings++; listings == 2 {
							intrude()
						}
						return kernel.Newcomers("/proc", listed, inodes)
					}
				}
				got := rm.remove(context.Background(), targets)
				if got[0].Outcome != OutcomeChanged || !strings.Contains(got[0].Err.Error(), "entered") {
					t.Errorf("%s, entered %s: %+v, want changed", intruded, moment, got[0])
				}
				if !exists(intruded) {
					t.Errorf("%s was deleted with a process in its namespace", intruded)
				}
				for i := 1; i < n; i++ {
					if got[i].Outcome != OutcomeDeleted {
						t.Errorf("%s: %+v, want deleted", targets[i].Device, got[i])
					}
				}
			})
		}
	}
}
