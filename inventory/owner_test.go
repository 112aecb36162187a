package inventory

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/proctest"
	"golang.org/x/sys/unix"
)

// TestOwnerCache follows one PID over scrapes with a fake procfs whose
// ns/net is a plain file standing for the namespace.
func TestOwnerCache(t *testing.T) {
	procfs := t.TempDir()
	dir := filepath.Join(procfs, "100")
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	proctest.WriteFile(t, dir, "stat", proctest.Stat("100", "sh"))
	proctest.WriteFile(t, dir, "comm", "sh\n")
	proctest.WriteFile(t, dir, "cgroup", "0::/user.slice\n")
	proctest.WriteFile(t, dir, "ns/net", "")
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "ns/net"), &st); err != nil {
		t.Fatal(err)
	}
	n := &Namespace{Inode: st.Ino, PIDs: []int{100}}
	cache := newOwnerCache(testCgroups)

	// Forked by a runtime, not yet moved into the container's cgroup: a
	// plain process, and nothing cached.
	if o := resolveOwner(procfs, n, cache); o == nil || o.Kind != OwnerProcess {
		t.Fatalf("before the move: owner = %+v, want a process", o)
	}
	if cache.len() != 0 {
		t.Errorf("before the move: %d cached, want none: a negative answer is never cached", cache.len())
	}
	// Moved into the container's cgroup: the next scrape sees it.
	proctest.WriteFile(t, dir, "cgroup", "0::/system.slice/docker-"+id+".scope\n")
	if o := resolveOwner(procfs, n, cache); o == nil || o.Kind != OwnerContainer || o.ID != id {
		t.Fatalf("after the move: owner = %+v, want container %s", o, id)
	}
	if cache.len() != 1 {
		t.Errorf("after the move: %d cached, want 1", cache.len())
	}
	// The cache answers without the cgroup file for the same process.
	proctest.WriteFile(t, dir, "cgroup", "")
	if o := resolveOwner(procfs, n, cache); o == nil || o.Kind != OwnerContainer || o.ID != id {
		t.Fatalf("cached: owner = %+v, want container %s", o, id)
	}
	// The PID reused by a new process (another start time) in another
	// cgroup: not the old owner.
	proctest.WriteFile(t, dir, "stat", strings.Replace(proctest.Stat("100", "sh"), " 5678901 ", " 5679999 ", 1))
	proctest.WriteFile(t, dir, "cgroup", "0::/user.slice\n")
	if o := resolveOwner(procfs, n, cache); o == nil || o.Kind != OwnerProcess {
		t.Fatalf("reused PID: owner = %+v, want a process", o)
	}
	// A process read now that is not in the namespace (its PID taken by
	// another process since the scan) is not counted.
	other := &Namespace{Inode: st.Ino + 1, PIDs: []int{100}}
	if o := resolveOwner(procfs, other, cache); o != nil {
		t.Errorf("process elsewhere: owner = %+v, want none", o)
	}
	// Gone processes are evicted.
	cache.keep(func(int) bool { return false })
	if cache.len() != 0 {
		t.Errorf("after eviction: %d cached, want none", cache.len())
	}
}

// TestNamespaceOwnerCache: a namespace keeps the container owner it was
// resolved to while that owner's process is among the processes the scan
// found in it, with one stat read; it is resolved again from every
// process once that process left the namespace or its PID was reused.
func TestNamespaceOwnerCache(t *testing.T) {
	procfs := t.TempDir()
	const (
		sandbox = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		sidecar = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	)
	// PID 100, the oldest, runs in the sandbox; 101 and 102 in a sidecar
	// sharing the namespace.
	nsFile := ""
	for i, pid := range []string{"100", "101", "102"} {
		dir := filepath.Join(procfs, pid)
		proctest.WriteFile(t, dir, "stat", strings.Replace(proctest.Stat(pid, "app"), " 5678901 ", " 567890"+strconv.Itoa(i)+" ", 1))
		id := sidecar
		if pid == "100" {
			id = sandbox
		}
		proctest.WriteFile(t, dir, "cgroup", "0::/system.slice/docker-"+id+".scope\n")
		if nsFile == "" {
			proctest.WriteFile(t, dir, "ns/net", "")
			nsFile = filepath.Join(dir, "ns/net")
		} else if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		} else if err := os.Link(nsFile, filepath.Join(dir, "ns/net")); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(nsFile, &st); err != nil {
		t.Fatal(err)
	}
	n := &Namespace{Inode: st.Ino, PIDs: []int{100, 101, 102}}
	cache := newOwnerCache(testCgroups)
	if o := resolveOwner(procfs, n, cache); o == nil || o.ID != sandbox {
		t.Fatalf("first scrape: owner = %+v, want the sandbox %s", o, sandbox)
	}
	// The sidecar's processes are not read again: shown older than the
	// sandbox process now (as processes that entered with setns can be),
	// they would win a resolution from every process; the namespace
	// keeps its owner, standing on the sandbox process alone.
	for _, pid := range []string{"101", "102"} {
		proctest.WriteFile(t, filepath.Join(procfs, pid), "stat", strings.Replace(proctest.Stat(pid, "app"), " 5678901 ", " 1000 ", 1))
	}
	if o := resolveOwner(procfs, &Namespace{Inode: st.Ino, PIDs: []int{100, 101, 102}}, newOwnerCache(testCgroups)); o == nil || o.ID != sidecar {
		t.Fatalf("uncached: owner = %+v, want the oldest process's sidecar %s", o, sidecar)
	}
	if o := resolveOwner(procfs, n, cache); o == nil || o.ID != sandbox {
		t.Fatalf("cached: owner = %+v, want the sandbox %s", o, sandbox)
	}
	// The answer is a copy: a reader that changes it changes no cache.
	o := resolveOwner(procfs, n, cache)
	o.Name = "changed"
	if o := resolveOwner(procfs, n, cache); o.Name != "" {
		t.Errorf("cached owner changed through a returned copy: %+v", o)
	}
	// The sandbox process no longer in the namespace (the scan did not
	// find it there): every process is read again.
	restore := func(pid string) {
		proctest.WriteFile(t, filepath.Join(procfs, pid), "stat", strings.Replace(proctest.Stat(pid, "app"), " 5678901 ", " 5678902 ", 1))
		proctest.WriteFile(t, filepath.Join(procfs, pid), "cgroup", "0::/system.slice/docker-"+sidecar+".scope\n")
	}
	restore("101")
	restore("102")
	moved := &Namespace{Inode: st.Ino, PIDs: []int{101, 102}}
	if o := resolveOwner(procfs, moved, cache); o == nil || o.ID != sidecar {
		t.Fatalf("owner's process gone from the namespace: owner = %+v, want the sidecar %s", o, sidecar)
	}
	// The PID reused (another start time) by a plain process: not the
	// sandbox, whatever the cache held for the namespace.
	fresh := newOwnerCache(testCgroups)
	if o := resolveOwner(procfs, n, fresh); o == nil || o.ID != sandbox {
		t.Fatalf("owner = %+v, want the sandbox %s", o, sandbox)
	}
	proctest.WriteFile(t, filepath.Join(procfs, "100"), "stat", strings.Replace(proctest.Stat("100", "sh"), " 5678901 ", " 5999999 ", 1))
	proctest.WriteFile(t, filepath.Join(procfs, "100"), "cgroup", "0::/user.slice\n")
	if o := resolveOwner(procfs, n, fresh); o == nil || o.ID != sidecar {
		t.Fatalf("owner's PID reused: owner = %+v, want the sidecar %s", o, sidecar)
	}
	// Eviction follows the owner's process.
	fresh.keep(func(pid int) bool { return pid != 101 })
	fresh.mu.Lock()
	left := len(fresh.byNetns)
	fresh.mu.Unlock()
	if left != 0 {
		t.Errorf("after the owner's process went: %d namespaces cached, want none", left)
	}
}

// TestGuestOwner: a container whose processes all started after a plain
// process in the namespace is a guest there; one with the oldest
// process is not, whatever joins later.
func TestGuestOwner(t *testing.T) {
	for _, tc := range []struct {
		name             string
		plain, container string // start times
		guest            bool
	}{
		{"the user's namespace, a container joined", "1000", "2000", true},
		{"the container's namespace, a stray joined", "3000", "2000", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			procfs := t.TempDir()
			proctest.WriteFile(t, filepath.Join(procfs, "10"), "stat", strings.Replace(proctest.Stat("10", "sleep"), " 5678901 ", " "+tc.plain+" ", 1))
			proctest.WriteFile(t, filepath.Join(procfs, "10"), "cgroup", "0::/user.slice\n")
			proctest.WriteFile(t, filepath.Join(procfs, "20"), "stat", strings.Replace(proctest.Stat("20", "app"), " 5678901 ", " "+tc.container+" ", 1))
			proctest.WriteFile(t, filepath.Join(procfs, "20"), "cgroup", "8:pids:/libpod_parent/libpod-"+ctrA+"\n")
			proctest.WriteFile(t, filepath.Join(procfs, "10"), "ns/net", "")
			if err := os.MkdirAll(filepath.Join(procfs, "20", "ns"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(filepath.Join(procfs, "10", "ns/net"), filepath.Join(procfs, "20", "ns/net")); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(procfs, "10", "ns/net"), &st); err != nil {
				t.Fatal(err)
			}
			cache := newOwnerCache(testCgroups)
			for range 2 { // computed, then from the cache
				n := &Namespace{Inode: st.Ino, PIDs: []int{10, 20}}
				n.resolve(procfs, cache)
				if n.Owner == nil || n.Owner.ID != ctrA || n.Guest != tc.guest {
					t.Errorf("owner %+v, guest %v; want container %s, guest %v", n.Owner, n.Guest, ctrA, tc.guest)
				}
			}
		})
	}
}
