package inventory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/kernel"
)

// Privileged tests in this file build real fixtures with ip(8) inside the
// private network, mount and PID namespaces made by netnstest.Main.
func TestMain(m *testing.M) { netnstest.Main(m) }

const (
	containerA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	containerB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	testPodUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
)

// newTestInventory returns an inventory of the private namespace with its
// state in a temporary directory.
func newTestInventory(t *testing.T) *Inventory {
	t.Helper()
	infra, err := NewInfrastructure(DefaultInfrastructurePatterns)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{
		Paths:          DefaultPaths,
		Infrastructure: infra,
		// The fixture's processes all live in the test's PID namespace.
		TrustPIDNamespace: true,
		Cgroups:           testCgroups,
		State:             OpenState(filepath.Join(t.TempDir(), "state.json"), StateOptions{}),
	})
}

// testCgroups name cgroups as the registered runtimes do (the command's
// test TestRegisteredCgroupNamings holds them to the registrations): the
// tests' fixtures put processes in such cgroups.
var testCgroups = []CgroupNaming{
	{Runtime: "containerd", Prefixes: []string{"cri-containerd-", "nerdctl-"}},
	{Runtime: "crio", Prefixes: []string{"crio-"}},
	{Runtime: "docker", Prefixes: []string{"docker-"}, Parents: []string{"docker"}},
	{Runtime: "podman", Prefixes: []string{"libpod-", "libpod-payload-"}, PodParents: []string{"libpod_parent"}, PodSlicePrefixes: []string{"libpod_pod_"}},
}

func snapshot(t *testing.T, inv *Inventory) *Snapshot {
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

func mustVeth(t *testing.T, s *Snapshot, name string) *Veth {
	t.Helper()
	v := s.Veth(name)
	if v == nil {
		t.Fatalf("veth %s missing from snapshot", name)
	}
	return v
}

func wantVerdict(t *testing.T, v *Veth, verdict Verdict, reason Reason) {
	t.Helper()
	if v.Verdict != verdict || v.Reason != reason {
		t.Errorf("%s: verdict %s/%s, want %s/%s", v.Name, v.Verdict, v.Reason, verdict, reason)
	}
}

func TestSnapshotVerdicts(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "br0")
	br0If, err := net.InterfaceByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	br0 := br0If.Index

	owned := netnstest.Holder(t, "/docker/"+containerA)
	netnstest.Veth(t, "vowned", strconv.Itoa(owned), "br0")

	pod := netnstest.Holder(t, "/kubepods/besteffort/pod"+testPodUID+"/"+containerB)
	netnstest.Veth(t, "vpod", strconv.Itoa(pod), "br0")

	// The leaked namespace's eth0 gets br0's ifindex there: a peer index
	// that is also a host link's must not be resolved on the host.
	netnstest.NamedNetns(t, "leak")
	netnstest.IP(t, "-n", "leak", "link", "add", "eth0", "index", strconv.Itoa(br0), "type", "veth", "peer", "name", "vleak", "netns", strconv.Itoa(os.Getpid()))
	netnstest.IP(t, "link", "set", "vleak", "master", "br0", "up")

	stray := netnstest.Holder(t, "")
	netnstest.Veth(t, "vstray", strconv.Itoa(stray), "br0")

	netnstest.HostPair(t, "hostA", "hostB")
	netnstest.HostPair(t, "cilium_host", "cilium_net")

	s := snapshot(t, newTestInventory(t))

	t.Run("owned by a container", func(t *testing.T) {
		v := mustVeth(t, s, "vowned")
		wantVerdict(t, v, Owned, ReasonContainer)
		want := Owner{Kind: OwnerContainer, ID: containerA, Runtime: "docker"}
		if v.Owner == nil || *v.Owner != want {
			t.Errorf("owner = %+v, want %+v", v.Owner, want)
		}
		if v.Master != "br0" || v.PeerNetns == nil || len(v.PeerNetns.PIDs) != 1 || v.PeerNetns.PIDs[0] != owned {
			t.Errorf("master %q, peer netns %+v, want br0 and PID %d", v.Master, v.PeerNetns, owned)
		}
	})
	t.Run("owned by a pod", func(t *testing.T) {
		v := mustVeth(t, s, "vpod")
		wantVerdict(t, v, Owned, ReasonPod)
		want := Owner{Kind: OwnerPod, ID: containerB, PodUID: testPodUID}
		if v.Owner == nil || *v.Owner != want {
			t.Errorf("owner = %+v, want %+v", v.Owner, want)
		}
	})
	t.Run("leaked namespace held by a bind mount", func(t *testing.T) {
		v := mustVeth(t, s, "vleak")
		wantVerdict(t, v, Orphaned, ReasonNetnsEmpty)
		if v.PeerNetns == nil || fmt.Sprint(v.PeerNetns.Mounts) != "[/run/netns/leak]" || len(v.PeerNetns.PIDs) != 0 {
			t.Errorf("peer netns = %+v, want held by /run/netns/leak only", v.PeerNetns)
		}
		// The peer's index is an index in the leaked namespace, equal to
		// the host bridge's: it must not be resolved on the host.
		if v.PeerIndex != br0 || v.PeerName != "" || v.PeerOnHost {
			t.Errorf("peer index %d name %q nsid %d, want index %d (br0's) in another namespace and no host name", v.PeerIndex, v.PeerName, v.PeerNetNSID, br0)
		}
		if v.Owner != nil {
			t.Errorf("owner = %+v, want none", v.Owner)
		}
	})
	t.Run("namespace held by an unknown process", func(t *testing.T) {
		v := mustVeth(t, s, "vstray")
		wantVerdict(t, v, Unknown, ReasonNoKnownOwner)
		if v.Owner == nil || v.Owner.Kind != OwnerProcess || v.Owner.ID != strconv.Itoa(stray) || v.Owner.Name != "sleep" {
			t.Errorf("owner = %+v, want process %d (sleep)", v.Owner, stray)
		}
	})
	t.Run("pair left on the host", func(t *testing.T) {
		for _, name := range []string{"hostA", "hostB"} {
			v := mustVeth(t, s, name)
			wantVerdict(t, v, Orphaned, ReasonPeerOnHost)
		}
		if v := mustVeth(t, s, "hostA"); v.PeerName != "hostB" || !v.PeerOnHost {
			t.Errorf("hostA peer = %q, want hostB", v.PeerName)
		}
	})
	t.Run("infrastructure pair", func(t *testing.T) {
		for _, name := range []string{"cilium_host", "cilium_net"} {
			wantVerdict(t, mustVeth(t, s, name), Owned, ReasonInfrastructure)
		}
	})
	t.Run("only veths", func(t *testing.T) {
		if s.Veth("br0") != nil || s.Veth("lo") != nil {
			t.Error("snapshot lists non-veth links")
		}
		if len(s.Veths) != 8 {
			t.Errorf("snapshot has %d veths, want 8", len(s.Veths))
		}
	})
}

// TestSnapshotOwnerExited follows a namespace through its life: owned while
// the container's process is in it, orphaned with reason owner_exited once
// that process is gone and only a stray process holds it.
func TestSnapshotOwnerExited(t *testing.T) {
	netnstest.Require(t)
	// The container's process comes first in the namespace its runtime
	// made; a stray enters it later and outlives the container.
	container, stopContainer := netnstest.StoppableHolder(t, "/system.slice/docker-"+containerA+".scope")
	netnstest.Join(t, container)
	netnstest.Veth(t, "vexit", strconv.Itoa(container), "")

	inv := newTestInventory(t)
	v := mustVeth(t, snapshot(t, inv), "vexit")
	wantVerdict(t, v, Owned, ReasonContainer)
	if v.Owner == nil || v.Owner.ID != containerA {
		t.Fatalf("owner = %+v, want container %s", v.Owner, containerA)
	}

	stopContainer()
	v = mustVeth(t, snapshot(t, inv), "vexit")
	wantVerdict(t, v, Orphaned, ReasonOwnerExited)
	if v.LastOwner == nil || v.LastOwner.ID != containerA {
		t.Errorf("last owner = %+v, want container %s", v.LastOwner, containerA)
	}
	if v.OrphanedSince.IsZero() || v.LastOwnerSeen.IsZero() {
		t.Errorf("orphaned since %v, last owner seen %v: want both set", v.OrphanedSince, v.LastOwnerSeen)
	}
}

// TestSnapshotSharedNamespace checks that two containers in one namespace
// (docker run --network container:X) give the namespace to the first.
func TestSnapshotSharedNamespace(t *testing.T) {
	netnstest.Require(t)
	first := netnstest.Holder(t, "/docker/"+containerA)
	second, _ := netnstest.Join(t, first)
	netnstest.MoveToCgroup(t, second, "/docker/"+containerB)
	netnstest.Veth(t, "vshared", strconv.Itoa(first), "")

	v := mustVeth(t, snapshot(t, newTestInventory(t)), "vshared")
	wantVerdict(t, v, Owned, ReasonContainer)
	if v.Owner == nil || v.Owner.ID != containerA {
		t.Errorf("owner = %+v, want the first container %s", v.Owner, containerA)
	}
	if v.PeerNetns == nil || len(v.PeerNetns.PIDs) != 2 {
		t.Errorf("peer netns = %+v, want 2 processes", v.PeerNetns)
	}
}

// TestAttachLooksUpLateNSIDs covers the race of a scan running beside the
// dump: a namespace scanned before the kernel gave it an nsid must still
// be found for the veth whose peer it holds.
func TestAttachLooksUpLateNSIDs(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "late")
	netnstest.Veth(t, "vlate", "late", "")
	ns, err := scanNamespaces(DefaultPaths, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.close()
	links, err := kernel.DumpLinks()
	if err != nil {
		t.Fatal(err)
	}
	var n *Namespace
	for _, l := range links {
		if l.Name == "vlate" {
			n = ns.byNSID[l.PeerNetNSID]
		}
	}
	if n == nil {
		t.Fatal("vlate missing from the dump, or its peer nsid not found by the scan")
	}
	// As if the scan had run before the kernel assigned the id.
	id := n.NSID
	delete(ns.byNSID, id)
	n.NSID = -1

	dumps := 0
	veths, err := ns.attach(links, func() error { return ns.lookupLate(DefaultPaths, nil) }, func() ([]kernel.Link, error) {
		dumps++
		return kernel.DumpLinks()
	})
	if err != nil {
		t.Fatal(err)
	}
	var v *Veth
	for i := range veths {
		if veths[i].Name == "vlate" {
			v = &veths[i]
		}
	}
	if v == nil || v.PeerNetns != n || n.NSID != id || v.PeerNetNSID != id {
		t.Errorf("vlate = %+v, want the namespace of /run/netns/late with nsid %d", v, id)
	}
	if dumps != 1 {
		t.Errorf("%d second dumps, want 1", dumps)
	}
}

// TestAttachReusedNSID replays the race behind a false orphan under churn:
// the dump shows nsid 3 for vlive, whose namespace (never scanned: its
// last process had just exited) is being destroyed. Its cleanup frees
// nsid 3, and the kernel gives the lowest free id to the leaked namespace
// of a veth created meanwhile, which the scan found without an nsid. The
// late lookup then finds nsid 3 on the leaked namespace: vlive must not be
// attached to it (it would be orphaned, netns_empty, while its own
// namespace was alive a moment ago). The veths come from a second dump.
func TestAttachReusedNSID(t *testing.T) {
	veth := func(index int, name string, nsid int) kernel.Link {
		return kernel.Link{Index: index, Name: name, Veth: true, PeerIndex: 2, PeerNetNSID: nsid, PeerElsewhere: true}
	}
	owned := &Namespace{Inode: 100, NSID: 1, PIDs: []int{42}, Owner: &Owner{Kind: OwnerContainer, ID: containerA}}
	newScan := func() (*namespaces, *Namespace) {
		leak := &Namespace{Inode: 200, NSID: -1, Mounts: []string{"/run/netns/leak"}}
		return &namespaces{
			byInode: map[uint64]*Namespace{100: owned, 200: leak},
			byNSID:  map[int]*Namespace{1: owned},
		}, leak
	}
	first := []kernel.Link{veth(10, "vowned", 1), veth(11, "vlive", 3)}
	second := []kernel.Link{veth(10, "vowned", 1), veth(12, "vleak", 3)}

	t.Run("reused nsid", func(t *testing.T) {
		ns, leak := newScan()
		lookupLate := func() error {
			leak.NSID = 3
			ns.byNSID[3] = leak
			return nil
		}
		veths, err := ns.attach(first, lookupLate, func() ([]kernel.Link, error) { return second, nil })
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*Namespace{}
		for _, v := range veths {
			got[v.Name] = v.PeerNetns
		}
		if len(veths) != 2 || got["vowned"] != owned || got["vleak"] != leak {
			t.Errorf("attach = %+v, want vowned in its namespace and vleak in the leaked one, from the second dump", veths)
		}
		if p, ok := got["vlive"]; ok {
			t.Errorf("vlive attached to %+v: the first dump's nsid was trusted after the late lookup", p)
		}
	})
	t.Run("unknown nsid in the second dump", func(t *testing.T) {
		ns, _ := newScan()
		veths, err := ns.attach(first, func() error { return nil }, func() ([]kernel.Link, error) { return first, nil })
		if err != nil {
			t.Fatal(err)
		}
		if len(veths) != 2 || veths[0].PeerNetns != owned || veths[1].PeerNetns != nil || veths[1].PeerNetNSID != 3 {
			t.Errorf("attach = %+v, want vowned attached and vlive (nsid 3) not", veths)
		}
	})
	t.Run("second dump fails", func(t *testing.T) {
		ns, leak := newScan()
		lookupLate := func() error {
			leak.NSID = 3
			ns.byNSID[3] = leak
			return nil
		}
		veths, err := ns.attach(first, lookupLate, func() ([]kernel.Link, error) { return nil, errors.New("dump failed") })
		if err == nil {
			t.Error("attach hid the failed second dump")
		}
		// Only what the scan knew before the late lookup is attached.
		if len(veths) != 2 || veths[0].PeerNetns != owned || veths[1].PeerNetns != nil {
			t.Errorf("attach = %+v, want vowned attached and vlive not", veths)
		}
	})
	t.Run("nothing missing: one dump", func(t *testing.T) {
		ns, _ := newScan()
		veths, err := ns.attach([]kernel.Link{veth(10, "vowned", 1)}, func() error {
			t.Error("late lookup without a missing nsid")
			return nil
		}, func() ([]kernel.Link, error) {
			t.Error("second dump without a missing nsid")
			return nil, nil
		})
		if err != nil || len(veths) != 1 || veths[0].PeerNetns != owned || veths[0].Owner != owned.Owner {
			t.Errorf("attach = %+v, %v; want vowned attached", veths, err)
		}
	})
}

// TestConcurrentSnapshots takes snapshots from several goroutines at once,
// as concurrent scrapes do; run with -race. Each must see the same verdict.
func TestConcurrentSnapshots(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "conc")
	netnstest.Veth(t, "vconc", "conc", "")
	inv := newTestInventory(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				s, err := inv.Snapshot(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if v := s.Veth("vconc"); v == nil || v.Verdict != Orphaned || v.Reason != ReasonNetnsEmpty {
					t.Errorf("vconc = %+v, want orphaned/netns_empty", v)
				}
			}
		})
	}
	wg.Wait()
}

// threadInNewNetns puts one thread of this process, alone, into a new
// network namespace and returns its TID. The test's end moves the thread
// back into its own namespace before it is released: a locked thread
// normally dies with its goroutine, but Go keeps the main thread (wedged)
// instead, and it would hold the namespace, and its veths, for good.
func threadInNewNetns(t *testing.T) int {
	t.Helper()
	tids := make(chan int)
	release, released := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(released)
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			defer unix.Close(home)
			err = unix.Unshare(unix.CLONE_NEWNET)
		}
		if err != nil {
			t.Error(err)
			close(tids)
			return
		}
		tids <- unix.Gettid()
		<-release
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			// Locked, the thread dies (or is wedged) with the goroutine:
			// the namespace change never leaks to other goroutines.
			t.Errorf("back to the test's namespace: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	tid, ok := <-tids
	if !ok {
		t.FailNow()
	}
	t.Cleanup(func() {
		close(release)
		<-released
	})
	return tid
}

// TestThreadHoldsNamespace: one thread of a process enters a namespace
// that is also bind-mounted. The namespace is not empty, whatever the
// process's leader shows, so the veth must not be netns_empty.
func TestThreadHoldsNamespace(t *testing.T) {
	netnstest.Require(t)
	tid := threadInNewNetns(t)
	netnstest.IP(t, "netns", "attach", "thread", strconv.Itoa(tid))
	t.Cleanup(func() { exec.Command("ip", "netns", "del", "thread").Run() })
	netnstest.Veth(t, "vthread", "thread", "")

	v := mustVeth(t, snapshot(t, newTestInventory(t)), "vthread")
	wantVerdict(t, v, Unknown, ReasonNoKnownOwner)
	if v.PeerNetns == nil || fmt.Sprint(v.PeerNetns.PIDs) != fmt.Sprint([]int{os.Getpid()}) {
		t.Errorf("peer netns = %+v, want held by this process (%d) through its thread", v.PeerNetns, os.Getpid())
	}
}

// TestThreadAloneHoldsNamespace: one thread of a process that lives in
// the host namespace is the only thing in a namespace (no mount, no
// process): the process pass alone does not find it at all, so the
// threads must be read, the namespace's nsid looked up late, and the veth
// still found held by that process, never orphaned.
func TestThreadAloneHoldsNamespace(t *testing.T) {
	netnstest.Require(t)
	tid := threadInNewNetns(t)
	netnstest.IP(t, "netns", "attach", "lonethread", strconv.Itoa(tid))
	netnstest.Veth(t, "vlonethread", "lonethread", "")
	// Only the thread holds it now.
	netnstest.IP(t, "netns", "del", "lonethread")

	s := snapshot(t, newTestInventory(t))
	v := mustVeth(t, s, "vlonethread")
	wantVerdict(t, v, Unknown, ReasonNoKnownOwner)
	if v.PeerNetns == nil || fmt.Sprint(v.PeerNetns.PIDs) != fmt.Sprint([]int{os.Getpid()}) {
		t.Errorf("peer netns = %+v, want held by this process (%d) through its thread", v.PeerNetns, os.Getpid())
	}
	if !s.threadsRead {
		t.Error("threads not read, want them read")
	}
}

// TestContainerWithStrayProcess: a container's namespace that also holds a
// stray process (an nsenter left behind) is still the container's, and
// since a process of a container holds it, no thread needs reading.
func TestContainerWithStrayProcess(t *testing.T) {
	netnstest.Require(t)
	holder := netnstest.Holder(t, "/docker/"+containerA)
	netnstest.Veth(t, "vstrayed", strconv.Itoa(holder), "")
	stray := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(holder)+"/ns/net", "sleep", "infinity")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stray.Process.Kill()
		_ = stray.Wait()
	})
	want := []int{holder, stray.Process.Pid}
	slices.Sort(want)
	// nsenter enters the namespace before it execs sleep, and the
	// namespaces of earlier tests die a moment after them (their veths,
	// whose peers no scan finds, would call for the threads).
	threads := func(s *Snapshot) bool { return s.threadsRead }
	s := settled(t, newTestInventory(t), func(s *Snapshot) bool {
		v := s.Veth("vstrayed")
		return v != nil && v.PeerNetns != nil && fmt.Sprint(v.PeerNetns.PIDs) == fmt.Sprint(want) && !threads(s)
	})
	v := mustVeth(t, s, "vstrayed")
	wantVerdict(t, v, Owned, ReasonContainer)
	if v.PeerNetns == nil || fmt.Sprint(v.PeerNetns.PIDs) != fmt.Sprint(want) {
		t.Errorf("peer netns = %+v, want PIDs %v", v.PeerNetns, want)
	}
	if v.Owner == nil || v.Owner.ID != containerA {
		t.Errorf("owner = %+v, want container %s", v.Owner, containerA)
	}
	if threads(s) {
		t.Error("threads read, want only the process pass")
	}
}

// TestPinnedNSIDsAreNotReused: while a scan holds its namespaces open, a
// namespace deleted meanwhile keeps its nsid, so a new namespace cannot
// take it over and be mistaken for the deleted one by the dump that runs
// beside the scan.
func TestPinnedNSIDsAreNotReused(t *testing.T) {
	netnstest.Require(t)
	netnstest.IP(t, "netns", "add", "doomed")
	netnstest.Veth(t, "vdoomed", "doomed", "")
	ns, err := scanNamespaces(DefaultPaths, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.close()
	var doomed *Namespace
	for _, n := range ns.byInode {
		if fmt.Sprint(n.Mounts) == "[/run/netns/doomed]" {
			doomed = n
		}
	}
	if doomed == nil || doomed.NSID < 0 {
		t.Fatalf("scan did not find /run/netns/doomed with an nsid: %+v", doomed)
	}
	// Without the pin this destroys the namespace and frees its nsid,
	// which the kernel hands to the next namespace that needs one.
	netnstest.IP(t, "netns", "del", "doomed")
	netnstest.NamedNetns(t, "newcomer")
	netnstest.Veth(t, "vnewcomer", "newcomer", "")
	links, err := kernel.DumpLinks()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vethsFromLinks(links) {
		if v.Name == "vnewcomer" && v.PeerNetNSID == doomed.NSID {
			t.Errorf("vnewcomer's peer got nsid %d, still pinned for the deleted namespace", v.PeerNetNSID)
		}
		if v.Name == "vdoomed" && v.PeerNetNSID != doomed.NSID {
			t.Errorf("vdoomed's peer nsid = %d, want %d while pinned", v.PeerNetNSID, doomed.NSID)
		}
	}
}

// TestSnapshotHistory: a veth's orphaned-since equals Taken only in the
// first snapshot that sees it orphaned; each snapshot says when the
// history behind it was last refreshed; a deleted veth is listed as gone.
func TestSnapshotHistory(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "hist")
	netnstest.Veth(t, "vhist", "hist", "")
	netnstest.NamedNetns(t, "histgone")
	netnstest.Veth(t, "vhistgone", "histgone", "")
	inv := newTestInventory(t)

	first := snapshot(t, inv)
	if v := mustVeth(t, first, "vhist"); !v.OrphanedSince.Equal(first.Taken) {
		t.Errorf("first snapshot: vhist orphaned since %v, want its Taken %v", v.OrphanedSince, first.Taken)
	}
	if !first.HistoryObserved.IsZero() {
		t.Errorf("first snapshot: HistoryObserved = %v, want zero", first.HistoryObserved)
	}
	index := mustVeth(t, first, "vhistgone").Index
	netnstest.IP(t, "link", "del", "vhistgone")

	second := snapshot(t, inv)
	if v := mustVeth(t, second, "vhist"); !v.OrphanedSince.Equal(first.Taken) || !v.OrphanedSince.Before(second.Taken) {
		t.Errorf("second snapshot: vhist orphaned since %v, want the first snapshot's Taken %v", v.OrphanedSince, first.Taken)
	}
	if !second.HistoryObserved.Equal(first.Taken) {
		t.Errorf("second snapshot: HistoryObserved = %v, want the first's Taken %v", second.HistoryObserved, first.Taken)
	}
	// Veths of earlier tests may go too: namespaces die asynchronously.
	want := GoneVeth{Device: "vhistgone", Index: index, Since: second.Taken}
	if !slices.ContainsFunc(second.Gone, func(g GoneVeth) bool { return g == want }) {
		t.Errorf("second snapshot: Gone = %v, want it to hold %v", second.Gone, want)
	}
}

// TestSnapshotReusedIfindex: a leftover is deleted and a new veth made
// with its name and ifindex (ip link add … index N), its peer in another
// namespace, between two snapshots. The new veth must not inherit the
// old one's orphaned-since.
func TestSnapshotReusedIfindex(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "reuse1")
	netnstest.NamedNetns(t, "reuse2")
	netnstest.IP(t, "link", "add", "vreuse", "index", "4000", "type", "veth", "peer", "name", "eth0", "netns", "reuse1")
	inv := newTestInventory(t)
	first := snapshot(t, inv)
	if v := mustVeth(t, first, "vreuse"); v.Index != 4000 || v.Verdict != Orphaned {
		t.Fatalf("vreuse = %+v, want ifindex 4000, orphaned", v)
	}
	netnstest.IP(t, "link", "del", "vreuse")
	netnstest.IP(t, "link", "add", "vreuse", "index", "4000", "type", "veth", "peer", "name", "eth0", "netns", "reuse2")

	second := snapshot(t, inv)
	v := mustVeth(t, second, "vreuse")
	if v.Index != 4000 || v.PeerNetns == nil || fmt.Sprint(v.PeerNetns.Mounts) != "[/run/netns/reuse2]" {
		t.Fatalf("vreuse = %+v, want ifindex 4000 with its peer in reuse2", v)
	}
	if !v.OrphanedSince.Equal(second.Taken) || !v.FirstSeen.Equal(second.Taken) {
		t.Errorf("new vreuse: first seen %v, orphaned since %v; want both %v (a new veth), not the old one's %v",
			v.FirstSeen, v.OrphanedSince, second.Taken, first.Taken)
	}
}

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

// TestReusedPIDIsNotTheOldContainer: a process of a container is cached as
// the container's; once it exits, a new process that gets its PID (forced
// through ns_last_pid in the test's PID namespace) in no container is a
// plain process, whatever the cache held for that PID.
func TestReusedPIDIsNotTheOldContainer(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "reuse")
	netnstest.Veth(t, "vreuse", "reuse", "")
	inv := newTestInventory(t)
	start := func() *exec.Cmd {
		cmd := exec.Command("nsenter", "--net=/run/netns/reuse", "sleep", "infinity")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		return cmd
	}
	waitOwner := func(pid int, kind OwnerKind) *Veth {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			v := mustVeth(t, snapshot(t, inv), "vreuse")
			if v.PeerNetns != nil && slices.Contains(v.PeerNetns.PIDs, pid) && v.Owner != nil && v.Owner.Kind == kind || time.Now().After(deadline) {
				return v
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	old := start()
	pid := old.Process.Pid
	netnstest.MoveToCgroup(t, pid, "/docker/"+containerA)
	if v := waitOwner(pid, OwnerContainer); v.Owner == nil || v.Owner.ID != containerA {
		t.Fatalf("first process: owner = %+v, want container %s", v.Owner, containerA)
	}
	if inv.owners.len() != 1 {
		t.Fatalf("%d processes cached, want the container's", inv.owners.len())
	}
	_ = old.Process.Kill()
	_ = old.Wait()
	// A later start time: the clock ticks at least every 10 ms.
	time.Sleep(30 * time.Millisecond)
	var reused *exec.Cmd
	for try := 0; try < 20 && reused == nil; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next PID: %v", err)
		}
		if c := start(); c.Process.Pid == pid {
			reused = c
		}
	}
	if reused == nil {
		t.Skipf("PID %d was not given again", pid)
	}
	if v := waitOwner(pid, OwnerProcess); v.Owner == nil || v.Owner.Kind != OwnerProcess {
		t.Errorf("reused PID %d: owner = %+v, want a plain process", pid, v.Owner)
	}
}

// TestDumpBesideScanFreedNSID: the link dump that runs beside the scan
// shows a namespace's nsid; that namespace dies before the scan reaches
// it and a new namespace, which the scan finds, gets the same nsid. The
// nsid watch saw it freed: the links are dumped again, and the dead
// namespace's veth is not judged by the newcomer's evidence.
func TestDumpBesideScanFreedNSID(t *testing.T) {
	netnstest.Require(t)
	netnstest.IP(t, "netns", "add", "churnx")
	t.Cleanup(func() { exec.Command("ip", "netns", "del", "churnx").Run() })
	netnstest.Veth(t, "vchurnx", "churnx", "")
	nsid := func(name string) int {
		out, err := exec.Command("ip", "netns", "list-id").CombinedOutput()
		if err != nil {
			t.Fatalf("ip netns list-id: %v\n%s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			// nsid 3 (iproute2 netns name: churnx)
			if f := strings.Fields(line); len(f) >= 2 && strings.Contains(line, "name: "+name+")") {
				id, _ := strconv.Atoi(f[1])
				return id
			}
		}
		return -1
	}
	old := nsid("churnx")
	inv := newTestInventory(t)
	inv.betweenDumpAndScan = func() {
		netnstest.IP(t, "netns", "del", "churnx")
		deadline := time.Now().Add(5 * time.Second)
		for exec.Command("ip", "link", "show", "vchurnx").Run() == nil && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		netnstest.NamedNetns(t, "churny")
		// The kernel hands out the lowest free nsid: the freed one, or
		// a lower one freed by an earlier test. Given explicitly, as a
		// runtime may too.
		netnstest.IP(t, "netns", "set", "churny", strconv.Itoa(old))
		netnstest.Veth(t, "vchurny", "churny", "")
	}
	s := snapshot(t, inv)
	if got := nsid("churny"); got != old {
		t.Fatalf("the new namespace has nsid %d, not the freed %d", got, old)
	}
	if v := s.Veth("vchurnx"); v != nil {
		t.Errorf("vchurnx (deleted with its namespace) in the snapshot: %+v, peer %+v", v, v.PeerNetns)
	}
	v := mustVeth(t, s, "vchurny")
	if v.PeerNetns == nil || fmt.Sprint(v.PeerNetns.Mounts) != "[/run/netns/churny]" {
		t.Errorf("vchurny: peer netns = %+v, want the namespace of /run/netns/churny", v.PeerNetns)
	}
}

// TestLeakedNetnsNamedAfterLastOwner: a container's namespace pinned by a
// mount outlives the container and its veth (deleted, as the delete method
// does): the leaked namespace is named after the container, by a running
// inventory and by a read-only one over its state file (inspect, clean).
func TestLeakedNetnsNamedAfterLastOwner(t *testing.T) {
	netnstest.Require(t)
	container, stopContainer := netnstest.StoppableHolder(t, "/system.slice/docker-"+containerA+".scope")
	// Pin the container's namespace at /run/netns/leakowned, as a
	// runtime's bind mount does.
	netnstest.IP(t, "netns", "attach", "leakowned", strconv.Itoa(container))
	t.Cleanup(func() { exec.Command("ip", "netns", "del", "leakowned").Run() })
	netnstest.Veth(t, "vleakown", strconv.Itoa(container), "")

	statePath := filepath.Join(t.TempDir(), "state.json")
	inv := New(Config{Paths: DefaultPaths, TrustPIDNamespace: true, Cgroups: testCgroups, State: OpenState(statePath, StateOptions{})})
	wantVerdict(t, mustVeth(t, snapshot(t, inv), "vleakown"), Owned, ReasonContainer)

	stopContainer()
	netnstest.IP(t, "link", "del", "vleakown")
	for _, tc := range []struct {
		name string
		inv  *Inventory
	}{
		{"running", inv},
		{"read-only", New(Config{Paths: DefaultPaths, TrustPIDNamespace: true, Cgroups: testCgroups,
			State: OpenState(statePath, StateOptions{ReadOnly: true})})},
	} {
		var leaked *Namespace
		for _, n := range snapshot(t, tc.inv).LeakedNetns {
			if slices.Contains(n.Mounts, "/run/netns/leakowned") {
				leaked = n
			}
		}
		switch {
		case leaked == nil:
			t.Fatalf("%s: /run/netns/leakowned is not a leaked namespace", tc.name)
		case leaked.LastOwner == nil || leaked.LastOwner.ID != containerA || leaked.LastOwnerSeen.IsZero():
			t.Errorf("%s: leaked namespace's last owner %+v (seen %v), want container %s", tc.name, leaked.LastOwner, leaked.LastOwnerSeen, containerA)
		}
	}
}

// TestLeakedSince: the history records since when a namespace has been
// leaked, lends it to a read-only inventory over its file, and starts
// anew when the namespace's mounts change.
func TestLeakedSince(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "lksince")
	statePath := filepath.Join(t.TempDir(), "state.json")
	inv := New(Config{Paths: DefaultPaths, TrustPIDNamespace: true, Cgroups: testCgroups, State: OpenState(statePath, StateOptions{})})
	leakedAt := func(inv *Inventory) (since, taken time.Time) {
		t.Helper()
		s := snapshot(t, inv)
		for _, n := range s.LeakedNetns {
			if slices.Contains(n.Mounts, "/run/netns/lksince") {
				return n.LeakedSince, s.Taken
			}
		}
		t.Fatal("/run/netns/lksince is not leaked")
		return
	}
	first, taken := leakedAt(inv)
	if !first.Equal(taken) {
		t.Errorf("first sight: leaked since %v, want the snapshot's time %v", first, taken)
	}
	if again, _ := leakedAt(inv); !again.Equal(first) {
		t.Errorf("second sight: leaked since %v, want %v", again, first)
	}
	readOnly := New(Config{Paths: DefaultPaths, TrustPIDNamespace: true, Cgroups: testCgroups, State: OpenState(statePath, StateOptions{ReadOnly: true})})
	if lent, _ := leakedAt(readOnly); !lent.Equal(first) {
		t.Errorf("read-only: leaked since %v, want %v from the file", lent, first)
	}
	extra := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(extra, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/run/netns/lksince", extra, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(extra, unix.MNT_DETACH) })
	if moved, taken := leakedAt(inv); !moved.Equal(taken) {
		t.Errorf("after another mount: leaked since %v, want a new start %v", moved, taken)
	}
}

// TestSnapshotResolverOff: while a runtime's resolver is off, a namespace
// pinned where that runtime pins them is the runtime's to decide
// (resolver_off), never netns_empty; in a directory shared with `ip
// netns`, only a pin in the runtime's naming is. With the resolver on, the
// same namespaces are left to the resolver and the evidence.
func TestSnapshotResolverOff(t *testing.T) {
	netnstest.Require(t)
	const podmanPin = "netns-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
	// Docker's pin as a crashed dockerd leaves it: a bind mount in its
	// netns directory, no process in the namespace.
	netnstest.NamedNetns(t, "dk")
	netnstest.Veth(t, "vdocker", "dk", "")
	if err := os.MkdirAll("/run/docker/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/run/docker/netns/0123456789ab", nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", "/run/netns/dk", "/run/docker/netns/0123456789ab").CombinedOutput(); err != nil {
		t.Fatalf("pin in Docker's directory: %v %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("umount", "/run/docker/netns/0123456789ab").Run()
		os.RemoveAll("/run/docker")
	})
	netnstest.IP(t, "netns", "delete", "dk")
	netnstest.NamedNetns(t, podmanPin)
	netnstest.Veth(t, "vpodman", podmanPin, "")
	netnstest.NamedNetns(t, "mine")
	netnstest.Veth(t, "vmine", "mine", "")

	runtimes := []RuntimeSetup{
		{Name: "docker", Why: "off: no socket", Pins: []NetnsPin{{Dir: "/run/docker/netns"}}},
		{Name: "podman", Why: "off by flag", Pins: []NetnsPin{{Dir: "/run/netns", Name: regexp.MustCompile(`^netns-` + UUIDPattern + `$`)}}},
	}
	inv := newTestInventory(t)
	inv.cfg.Runtimes = runtimes
	s := snapshot(t, inv)
	wantVerdict(t, mustVeth(t, s, "vdocker"), Unknown, ReasonResolverOff)
	wantVerdict(t, mustVeth(t, s, "vpodman"), Unknown, ReasonResolverOff)
	wantVerdict(t, mustVeth(t, s, "vmine"), Orphaned, ReasonNetnsEmpty)
	if len(s.Resolvers) != 2 || s.Resolvers[0].Name != "docker" || s.Resolvers[0].Enabled || s.Resolvers[1].Why != "off by flag" {
		t.Errorf("Resolvers = %+v, want the two registered ones, off", s.Resolvers)
	}

	for i := range runtimes {
		runtimes[i].Enabled = true
	}
	inv = newTestInventory(t)
	inv.cfg.Runtimes = runtimes
	s = snapshot(t, inv)
	for _, name := range []string{"vdocker", "vpodman", "vmine"} {
		wantVerdict(t, mustVeth(t, s, name), Orphaned, ReasonNetnsEmpty)
	}
}
