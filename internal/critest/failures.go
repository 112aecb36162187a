package critest

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// KillRuntime kills containerd (SIGKILL) and waits until it is gone, as a
// crash or an OOM kill of the runtime would. Shims and pods keep running
// without it; CRI is unreachable until [Runtime.Restart]. Alone, this
// leaves nothing behind: after a restart the pods are as before.
func (r *Runtime) KillRuntime(t testing.TB) {
	t.Helper()
	if err := r.proc.Kill(); err != nil {
		t.Fatalf("critest: %v", err)
	}
}

// KillSandbox kills (SIGKILL) the pod's shim, then its pause process, and
// waits until both are gone: its task dies without the runtime noticing
// in time, as when a node loses its runtime's processes. Both are found by
// PID and checked first: the pause process must still be in the pod's
// cgroup, its parent a shim of this runtime for this sandbox.
func (r *Runtime) KillSandbox(t testing.TB, pod *Pod) {
	t.Helper()
	st, err := fixturesys.ReadStat(pod.PID)
	if err != nil || st.Comm != "pause" || !slices.ContainsFunc(fixturesys.CgroupPaths(pod.PID), func(cg string) bool { return inPod(cg, pod.UID) }) {
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
