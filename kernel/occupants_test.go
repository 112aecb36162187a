package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/internal/proctest"
)

// fakeProcfs is a synthetic procfs: each "ns/net" is a regular file whose
// inode stands for a namespace, so that the walk's handling of every kind
// of failure can be tried without privileges.
type fakeProcfs struct {
	t   *testing.T
	dir string
}

func newFakeProcfs(t *testing.T) *fakeProcfs {
	f := &fakeProcfs{t: t, dir: t.TempDir()}
	// The exporter's own process, in the "host" namespace.
	f.file("self/net/dev")
	return f
}

// file creates name and returns its inode.
func (f *fakeProcfs) file(name string) uint64 {
	f.t.Helper()
	proctest.WriteFile(f.t, f.dir, name, "")
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(f.dir, name), &st); err != nil {
		f.t.Fatal(err)
	}
	return st.Ino
}

// link makes name a symlink to target (relative to the fake procfs).
func (f *fakeProcfs) link(name, target string) {
	f.t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(f.dir, target), path); err != nil {
		f.t.Fatal(err)
	}
}

// loop makes name a symlink to itself: stat fails with ELOOP, an error
// that is not "the process exited".
func (f *fakeProcfs) loop(name string) {
	f.t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(path, path); err != nil {
		f.t.Fatal(err)
	}
}

// TestOccupantsFakeProcfs: processes and threads in the namespaces asked
// about are found; a process or thread that vanished is skipped; any other
// failure to read a process, a thread or a task directory is an error,
// never an empty answer.
func TestOccupantsFakeProcfs(t *testing.T) {
	f := newFakeProcfs(t)
	nsA := f.file("ns-a")
	nsB := f.file("ns-b")
	other := f.file("ns-other")
	// 10: in A, one thread in B.
	f.link("10/ns/net", "ns-a")
	f.link("10/task/10/ns/net", "ns-a")
	f.link("10/task/11/ns/net", "ns-b")
	// 20: elsewhere, but two threads in A (counted once).
	f.link("20/ns/net", "ns-other")
	f.link("20/task/20/ns/net", "ns-other")
	f.link("20/task/21/ns/net", "ns-a")
	f.link("20/task/22/ns/net", "ns-a")
	// 30: a leader that exited before its thread, which is in B.
	f.link("30/task/31/ns/net", "ns-b")
	// 40: vanished: its directory is there, nothing in it.
	if err := os.MkdirAll(filepath.Join(f.dir, "40"), 0o755); err != nil {
		t.Fatal(err)
	}
	// 50: a thread that exited between the listing and its stat.
	f.link("50/ns/net", "ns-other")
	f.link("50/task/50/ns/net", "ns-other")
	if err := os.MkdirAll(filepath.Join(f.dir, "50/task/51"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Not processes.
	f.file("net/dev")
	f.file("sys/kernel/random/boot_id")

	inodes := map[uint64]bool{nsA: true, nsB: true}
	got, _, err := Occupants(f.dir, inodes)
	if err != nil {
		t.Fatalf("Occupants: %v", err)
	}
	want := map[uint64][]int{nsA: {10, 20}, nsB: {10, 30}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Occupants = %v, want %v (A=%d B=%d other=%d)", got, want, nsA, nsB, other)
	}

	for _, tc := range []struct {
		name  string
		setup func(f *fakeProcfs)
		want  string
	}{
		{"process namespace unreadable", func(f *fakeProcfs) { f.loop("60/ns/net") }, "PID 60"},
		{"task directory unreadable", func(f *fakeProcfs) {
			f.link("60/ns/net", "ns-other")
			f.file("60/task") // a file: listing it fails with ENOTDIR
		}, "PID 60"},
		{"thread namespace unreadable", func(f *fakeProcfs) {
			f.link("60/ns/net", "ns-other")
			f.link("60/task/60/ns/net", "ns-other")
			f.loop("60/task/61/ns/net")
		}, "thread 61"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeProcfs(t)
			nsA := f.file("ns-a")
			f.file("ns-other")
			f.link("10/ns/net", "ns-a")
			tc.setup(f)
			got, _, err := Occupants(f.dir, map[uint64]bool{nsA: true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Occupants = %v, %v; want an error naming %q", got, err, tc.want)
			}
			// What it did see is still returned.
			if fmt.Sprint(got[nsA]) != "[10]" {
				t.Errorf("Occupants[A] = %v, want [10] beside the error", got[nsA])
			}

			// The walk behind a snapshot's scan says the same.
			w, err := WalkProcesses(f.dir, true, func(int, uint64) {})
			if err != nil {
				t.Fatal(err)
			}
			if werr := w.Err(); werr == nil || !strings.Contains(werr.Error(), tc.want) {
				t.Errorf("WalkProcesses = %v, want an error naming %q", werr, tc.want)
			}
		})
	}

	t.Run("missing procfs", func(t *testing.T) {
		if got, _, err := Occupants(filepath.Join(t.TempDir(), "nothing"), inodes); err == nil {
			t.Errorf("Occupants of a missing procfs = %v, nil; want an error", got)
		}
	})
}

// TestOccupants finds, in the real procfs, a process in a namespace and a
// process with only one thread in another, and nothing in a namespace held
// only by a mount.
func TestOccupants(t *testing.T) {
	netnstest.Require(t)
	holder := netnstest.Holder(t, "")
	netnstest.NamedNetns(t, "occthread")
	netnstest.NamedNetns(t, "occempty")

	ready := make(chan error)
	release := make(chan struct{})
	go func() {
		// The thread stays locked and so dies with this goroutine: its
		// namespace change never leaks to other goroutines.
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/occthread", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		ready <- err
		if err == nil {
			<-release
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	defer close(release)

	inode := func(path string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	held := inode("/proc/" + strconv.Itoa(holder) + "/ns/net")
	thread := inode("/run/netns/occthread")
	empty := inode("/run/netns/occempty")
	got, _, err := Occupants("/proc", map[uint64]bool{held: true, thread: true, empty: true})
	if err != nil {
		t.Fatalf("Occupants: %v", err)
	}
	if !slices.Equal(got[held], []int{holder}) {
		t.Errorf("Occupants[holder's namespace] = %v, want [%d]", got[held], holder)
	}
	if !slices.Equal(got[thread], []int{os.Getpid()}) {
		t.Errorf("Occupants[namespace one thread entered] = %v, want this process [%d]", got[thread], os.Getpid())
	}
	if len(got[empty]) != 0 {
		t.Errorf("Occupants[mount-held namespace] = %v, want none", got[empty])
	}
}
