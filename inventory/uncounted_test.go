package inventory

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// running is what a runtime says of a container whose process is pid:
// it runs in that process's namespace.
func running(t *testing.T, pid int) RunningNetns {
	t.Helper()
	path := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return RunningNetns{Inode: st.Ino, Path: path, PID: pid}
}

// resolverInventory is newTestInventory with one resolver.
func resolverInventory(t *testing.T, r Resolver) *Inventory {
	inv := newTestInventory(t)
	inv.cfg.Resolvers = []Resolver{r}
	return inv
}

// settled takes snapshots until ok says the node is as the test built
// it: the namespaces of earlier tests die a moment after them, and their
// veths, whose peers no runtime accounts for, call for a scan.
//
// The kernel frees a namespace in a background worker, which takes
// seconds on a loaded machine: settled waits up to 30 s, and says what it
// waited for when that took long.
func settled(t *testing.T, inv *Inventory, ok func(*Snapshot) bool) *Snapshot {
	t.Helper()
	start := time.Now()
	for {
		s := snapshot(t, inv)
		if ok(s) || time.Since(start) > settleWait {
			if waited := time.Since(start); waited > time.Second {
				t.Logf("waited %v for the node to settle; veths then: %s", waited.Round(time.Millisecond), vethList(s))
			}
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settleWait bounds how long tests wait for the namespaces of earlier
// tests to be freed.
const settleWait = 30 * time.Second

// vethList names the veths of s with their peers' namespaces, for logs.
func vethList(s *Snapshot) string {
	var b strings.Builder
	for _, v := range s.Veths {
		fmt.Fprintf(&b, "%s(nsid %d", v.Name, v.PeerNetNSID)
		if n := v.PeerNetns; n != nil {
			fmt.Fprintf(&b, ", pids %v, mounts %v, uncounted %v", n.PIDs, n.Mounts, n.Uncounted)
		}
		b.WriteString(") ")
	}
	return b.String()
}

func uncounted(s *Snapshot, names ...string) bool {
	for _, name := range names {
		v := s.Veth(name)
		if v == nil || v.PeerNetns == nil || !v.PeerNetns.Uncounted {
			return false
		}
	}
	return true
}

// TestRuntimeAccountsForEveryNamespace: when a runtime runs a container
// in every peer namespace, no process is counted: the veths are owned by
// the runtime's word, their owner read from the cgroup of the process
// the runtime names, and a stray process in a container's namespace
// changes nothing. Two veths whose peers share one accounted namespace
// (a second veth moved into a running container) are both owned.
func TestRuntimeAccountsForEveryNamespace(t *testing.T) {
	netnstest.Require(t)
	a := netnstest.Holder(t, "/docker/"+containerA)
	b := netnstest.Holder(t, "/docker/"+containerB)
	netnstest.Veth(t, "vacct1", strconv.Itoa(a), "")
	netnstest.IP(t, "link", "add", "vacct2", "type", "veth", "peer", "name", "eth1", "netns", strconv.Itoa(a))
	netnstest.Veth(t, "vacct3", strconv.Itoa(b), "")
	_, stop := netnstest.Join(t, b)
	defer stop()

	r := &fakeResolver{step: "fake", timeout: time.Minute, running: []RunningNetns{running(t, a), running(t, b)}}
	s := settled(t, resolverInventory(t, r), func(s *Snapshot) bool { return uncounted(s, "vacct1", "vacct2", "vacct3") })
	for _, name := range []string{"vacct1", "vacct2", "vacct3"} {
		v := mustVeth(t, s, name)
		wantVerdict(t, v, Owned, ReasonContainer)
		if v.PeerNetns == nil || !v.PeerNetns.Uncounted || len(v.PeerNetns.PIDs) != 0 {
			t.Fatalf("%s: peer netns = %+v, want its processes not counted", name, v.PeerNetns)
		}
	}
	if mustVeth(t, s, "vacct1").PeerNetns != mustVeth(t, s, "vacct2").PeerNetns {
		t.Error("vacct1 and vacct2: two namespaces, want the one both peers are in")
	}
	if s.threadsRead {
		t.Error("threads read, want no pass over /proc at all")
	}
	// The runtime's claim names the owner; the cgroup of its process
	// was read for the namespace all the same.
	if n := mustVeth(t, s, "vacct3").PeerNetns; n.Owner == nil || n.Owner.ID != containerB {
		t.Errorf("vacct3: namespace owner = %+v, want container %s from its process's cgroup", n.Owner, containerB)
	}
	if s.LeakedNetns == nil || len(s.LeakedNetns) != 0 {
		t.Errorf("leaked namespaces = %v, want none (every mount-held namespace is a running container's)", s.LeakedNetns)
	}
}

// TestUnaccountedNamespaceScans: one namespace no runtime accounts for
// (a leftover held by a stray process, a leaked mount) makes the snapshot
// read every process: the leftover gets its verdict from the evidence,
// the accounted namespaces stay owned and get their processes counted.
func TestUnaccountedNamespaceScans(t *testing.T) {
	netnstest.Require(t)
	a := netnstest.Holder(t, "/docker/"+containerA)
	netnstest.Veth(t, "vscan1", strconv.Itoa(a), "")
	netnstest.IP(t, "link", "add", "vscan2", "type", "veth", "peer", "name", "eth1", "netns", strconv.Itoa(a))
	r := &fakeResolver{step: "fake", timeout: time.Minute, running: []RunningNetns{running(t, a)}}
	inv := resolverInventory(t, r)
	settled(t, inv, func(s *Snapshot) bool { return uncounted(s, "vscan1", "vscan2") })

	for _, tc := range []struct {
		name   string
		build  func(t *testing.T)
		device string
		reason Reason
	}{
		{"leaked namespace with a veth", func(t *testing.T) {
			netnstest.NamedNetns(t, "scanleak")
			netnstest.Veth(t, "vscanleak", "scanleak", "")
		}, "vscanleak", ReasonNetnsEmpty},
		{"stray process's namespace", func(t *testing.T) {
			stray := netnstest.Holder(t, "")
			netnstest.Veth(t, "vscanstray", strconv.Itoa(stray), "")
		}, "vscanstray", ReasonNoKnownOwner},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.build(t)
			s := snapshot(t, inv)
			v := mustVeth(t, s, tc.device)
			if tc.reason == ReasonNetnsEmpty {
				wantVerdict(t, v, Orphaned, tc.reason)
			} else {
				wantVerdict(t, v, Unknown, tc.reason)
			}
			for _, name := range []string{"vscan1", "vscan2"} {
				v := mustVeth(t, s, name)
				wantVerdict(t, v, Owned, ReasonContainer)
				if v.PeerNetns == nil || v.PeerNetns.Uncounted || fmt.Sprint(v.PeerNetns.PIDs) != fmt.Sprint([]int{a}) {
					t.Errorf("%s: peer netns = %+v, want its process %d counted", name, v.PeerNetns, a)
				}
			}
		})
	}
	// A mount-held namespace with no veth: only a scan can count it as
	// leaked.
	settled(t, inv, func(s *Snapshot) bool { return s.Veth("vscanleak") == nil && s.Veth("vscanstray") == nil })
	netnstest.NamedNetns(t, "scanmount")
	s := snapshot(t, inv)
	if uncounted(s, "vscan1") {
		t.Error("a mount-held namespace no runtime accounts for: processes not counted, want a scan")
	}
	found := false
	for _, n := range s.LeakedNetns {
		found = found || fmt.Sprint(n.Mounts) == "[/run/netns/scanmount]"
	}
	if !found {
		t.Errorf("leaked namespaces = %v, want /run/netns/scanmount among them", s.LeakedNetns)
	}
}

// TestStaleRunningNamespace: a runtime's answer naming a namespace by a
// path that no longer opens to it (the container stopped, its sandbox
// mount now pins another namespace) accounts for nothing: the snapshot
// reads the processes.
func TestStaleRunningNamespace(t *testing.T) {
	netnstest.Require(t)
	a := netnstest.Holder(t, "/docker/"+containerA)
	other := netnstest.Holder(t, "")
	netnstest.Veth(t, "vstale", strconv.Itoa(a), "")
	stale := running(t, a)
	stale.Path = "/proc/" + strconv.Itoa(other) + "/ns/net"
	r := &fakeResolver{step: "fake", timeout: time.Minute, running: []RunningNetns{stale}}
	s := snapshot(t, resolverInventory(t, r))
	v := mustVeth(t, s, "vstale")
	if v.PeerNetns == nil || v.PeerNetns.Uncounted || fmt.Sprint(v.PeerNetns.PIDs) != fmt.Sprint([]int{a}) {
		t.Errorf("peer netns = %+v, want its process %d counted", v.PeerNetns, a)
	}
}
