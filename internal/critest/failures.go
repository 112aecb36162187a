package critest

import (
	"fmt"
	"io/fs"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// KillRuntime kills containerd (SIGKILL) and waits until it is gone, as a
// crash or an OOM kill of the runtime would. Shims and pods keep running
// without it; CRI is unreachable until [Runtime.Restart]. Alone, this
// leaves nothing behind: after a restart the pods are as before.
func (r *Runtime) KillRuntime(t testing.TB) {
	t.Helper()
	cmd, exited := r.running()
	if cmd == nil {
		t.Fatal("critest: kill containerd: not running")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("critest: kill containerd %d: %v", cmd.Process.Pid, err)
	}
	<-exited
	r.markDown()
}

// KillSandbox kills (SIGKILL) the pod's shim, then its pause process, and
// waits until both are gone: its task dies without the runtime noticing
// in time, as when a node loses its runtime's processes. Both are found by
// PID and checked first: the pause process must still be in the pod's
// cgroup, its parent a shim of this runtime for this sandbox.
func (r *Runtime) KillSandbox(t testing.TB, pod *Pod) {
	t.Helper()
	st, err := fixturesys.ReadStat(pod.PID)
	if err != nil || st.Comm != "pause" || !inPodCgroup(pod.PID, []string{pod.UID}) {
		t.Fatalf("critest: kill sandbox %s: process %d is not its pause process (%q, %v)", pod.ID, pod.PID, st.Comm, err)
	}
	shim, err := fixturesys.ReadStat(st.PPID)
	if err != nil || shim.Comm != "containerd-shim" || !fixturesys.CmdlineContains(st.PPID, pod.ID) || !fixturesys.CmdlineContains(st.PPID, r.Socket) {
		t.Fatalf("critest: kill sandbox %s: parent %d of pause %d is %q (%v), want its shim", pod.ID, st.PPID, pod.PID, shim.Comm, err)
	}
	for _, pid := range []int{st.PPID, pod.PID} {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
			t.Errorf("critest: kill %d: %v", pid, err)
		}
	}
	for _, pid := range []int{st.PPID, pod.PID} {
		if err := fixturesys.WaitGone(pid, 10*time.Second); err != nil {
			t.Errorf("critest: kill sandbox %s: %v", pod.ID, err)
		}
	}
}

// RemoveSandboxRecord removes the sandbox's container record from
// containerd (`ctr -n k8s.io containers rm <id>`), as a lost or corrupted
// /var/lib/containerd would. CRI keeps the sandbox in memory until the
// next [Runtime.Restart], and forgets it then.
func (r *Runtime) RemoveSandboxRecord(t testing.TB, id string) {
	t.Helper()
	r.Ctr(t, "containers", "rm", id)
}

// LoseSandbox makes the pods the leftover of a runtime that lost its
// state: it kills containerd, then each pod's shim and pause process,
// starts containerd again (CRI now lists the pods NOTREADY), removes their
// sandbox records and restarts it. CRI then lists none of them, yet
// each pod's veth stays on cni0, up, its /var/run/netns/cni-* mount pins
// the namespace with no process in it, and the libcni cache entries, the
// host-local lease and the empty pod<UID> cgroups remain. Start's cleanup
// removes them all.
func (r *Runtime) LoseSandbox(t testing.TB, pods ...*Pod) {
	t.Helper()
	r.KillRuntime(t)
	for _, p := range pods {
		r.KillSandbox(t, p)
	}
	r.Restart(t)
	for _, p := range pods {
		r.RemoveSandboxRecord(t, p.ID)
	}
	r.Restart(t)
}

// JoinNetns starts a process in the network namespace at nsPath (a pod's
// /var/run/netns/cni-<uuid>), as a stray `nsenter` left by an operator
// does. It returns the process's PID and a stop function that kills and
// reaps it; the test's end calls stop too. With the namespace's name then
// deleted (`ip netns delete`, see [Pod].NetnsName) and the pod stopped and
// removed, the veth stays, its namespace nameless and held by this
// process.
func JoinNetns(t testing.TB, nsPath string) (pid int, stop func()) {
	t.Helper()
	netnstest.Require(t)
	cmd := exec.Command("nsenter", "--net="+nsPath, "sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("critest: nsenter into %s: %v", nsPath, err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	// nsenter joins the namespace, then execs sleep: wait for the join,
	// so that the caller finds the process in the namespace.
	want, err := nsInode(nsPath)
	if err != nil {
		stop()
		t.Fatalf("critest: %v", err)
	}
	pid = cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if got, err := nsInode(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && got == want {
			return pid, stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("critest: nsenter %d did not join %s within 10s", pid, nsPath)
		}
	}
}

// nsInode returns the inode of the namespace file at path.
func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Ino, nil
}
