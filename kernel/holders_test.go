package kernel

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// start runs a command that stays, and stops it when the test ends; it
// returns once the command runs comm.
func start(t *testing.T, comm string, args ...string) int {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	// No parent-death signal: a release ends a locked thread, which may be
	// the one that forked it. It dies with the test binary, PID 1 here.
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	dir := "/proc/" + strconv.Itoa(cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); ProcessName(dir) != comm; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v does not run %s", args, comm)
		}
	}
	return cmd.Process.Pid
}

// setnsThread puts a new locked thread of this process into the namespace
// at path when told to (ready is closed once it is in) and keeps it there
// until the test ends.
func setnsThread(t *testing.T, path string) (enter func()) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	go_, done, stop := make(chan struct{}), make(chan error), make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		// Never unlocked: the thread dies with this goroutine.
		runtime.LockOSThread()
		<-go_
		err := unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		done <- err
		<-stop
	}()
	return func() {
		close(go_)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestNewcomers: a listing after a pass finds a process started since,
// and not a thread the pass listed that entered afterwards: no listing
// can see that.
func TestNewcomers(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "nwproc")
	netnstest.NamedNetns(t, "nwthread")
	proc, thread := nsInode(t, "/run/netns/nwproc"), nsInode(t, "/run/netns/nwthread")
	inodes := map[uint64]bool{proc: true, thread: true}
	enterThread := setnsThread(t, "/run/netns/nwthread")
	time.Sleep(10 * time.Millisecond) // the thread exists before the pass lists
	occ, listed, err := Occupants("/proc", inodes)
	if err != nil || len(occ[proc]) > 0 || len(occ[thread]) > 0 {
		t.Fatalf("Occupants before anyone entered: %v, %v", occ, err)
	}
	pid := start(t, "sleep", "nsenter", "--net=/run/netns/nwproc", "sleep", "infinity")
	enterThread()
	got, err := Newcomers("/proc", listed, inodes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got[proc], []int{pid}) {
		t.Errorf("Newcomers[namespace a new process entered] = %v, want [%d]", got[proc], pid)
	}
	if len(got[thread]) > 0 {
		t.Errorf("Newcomers[namespace a listed thread entered] = %v: a listing cannot see that, the test is wrong", got[thread])
	}
	if !listed[pid] {
		t.Errorf("the newcomer %d was not added to the listing", pid)
	}
	if again, err := Newcomers("/proc", listed, inodes); err != nil || len(again[proc]) > 0 {
		t.Errorf("Newcomers again = %v, %v; want nothing new", again, err)
	}
}

// TestHolders names everything that keeps a namespace alive: a process
// and a thread in it, a descriptor opened through its mount, its mount in
// this mount namespace and a copy in another.
func TestHolders(t *testing.T) {
	netnstest.Require(t)
	for _, ns := range []string{"hdproc", "hdthread", "hdfd", "hdcopy"} {
		netnstest.NamedNetns(t, ns)
	}
	inode := map[string]uint64{}
	inodes := map[uint64]bool{}
	for _, ns := range []string{"hdproc", "hdthread", "hdfd", "hdcopy"} {
		inode[ns] = nsInode(t, "/run/netns/"+ns)
		inodes[inode[ns]] = true
	}
	proc := start(t, "sleep", "nsenter", "--net=/run/netns/hdproc", "sleep", "infinity")
	setnsThread(t, "/run/netns/hdthread")()
	f, err := os.Open("/run/netns/hdfd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	copier := start(t, "sleep", "unshare", "-m", "--propagation", "private", "sleep", "infinity")
	// Only the copy holds hdcopy once the mount here is gone.
	if err := unix.Unmount("/run/netns/hdcopy", unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	got := Holders("/proc", inodes)
	want := map[string][]string{
		"hdproc":   {"process " + strconv.Itoa(proc) + " (sleep) in it", "mount /run/netns/hdproc in the mount namespace of process 1"},
		"hdthread": {"process " + strconv.Itoa(self) + " (", "mount /run/netns/hdthread in the mount namespace of process 1"},
		"hdfd":     {"fd " + strconv.Itoa(int(f.Fd())) + " of process " + strconv.Itoa(self) + " ("},
		"hdcopy":   {"mount /run/netns/hdcopy in the mount namespace of process " + strconv.Itoa(copier) + " (sleep)"},
	}
	for ns, wants := range want {
		var names []string
		for _, h := range got[inode[ns]] {
			names = append(names, h.String())
		}
		for _, w := range wants {
			if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, w) }) {
				t.Errorf("Holders of %s = %q, want one starting %q", ns, names, w)
			}
		}
	}
	if len(got[inode["hdcopy"]]) != 1 {
		t.Errorf("Holders of hdcopy = %v, want only the copy", got[inode["hdcopy"]])
	}
}
