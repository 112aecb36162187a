package netnstest

import (
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Bridge creates a Linux bridge, up, and deletes it when the test ends.
func Bridge(t testing.TB, name string) {
	t.Helper()
	IP(t, "link", "add", name, "type", "bridge")
	IP(t, "link", "set", name, "up")
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
}

// Veth creates the veth name, up, whose peer eth0 goes into netns: a PID
// (the namespace of that process) or the name of an `ip netns` namespace.
// With master it is attached to that bridge. The pair goes away with the
// peer's namespace; see [HostPair] for a pair that stays on the host.
func Veth(t testing.TB, name, netns, master string) {
	t.Helper()
	IP(t, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", netns)
	if master != "" {
		IP(t, "link", "set", name, "master", master)
	}
	IP(t, "link", "set", name, "up")
}

// HostPair creates a veth pair with both ends in this namespace and
// deletes it when the test ends.
func HostPair(t testing.TB, name, peer string) {
	t.Helper()
	IP(t, "link", "add", name, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
}

// NamedNetns creates a namespace held only by its /run/netns bind mount,
// as a missed CNI DEL leaves one, and deletes it when the test ends.
func NamedNetns(t testing.TB, name string) {
	t.Helper()
	IP(t, "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
}

// Join starts a process in the network namespace of pid, as a stray
// `nsenter` left by an operator does. It returns the process's PID and a
// stop function that kills and reaps it; the test's end calls stop too.
func Join(t testing.TB, pid int) (joined int, stop func()) {
	t.Helper()
	mustBePrivate(t, "Join")
	// No parent-death signal (see StoppableHolder): it dies with the
	// test binary, PID 1 of its PID namespace.
	cmd := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(pid)+"/ns/net", "sleep", "infinity")
	if err := cmd.Start(); err != nil {
		t.Fatalf("nsenter into the namespace of %d: %v", pid, err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	// nsenter enters the namespace a moment after it starts (longer on a
	// loaded machine): return once it is in it, as a stray would be.
	target := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	joinedNs := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	deadline := time.Now().Add(10 * time.Second)
	for {
		var want, got unix.Stat_t
		if unix.Stat(target, &want) == nil && unix.Stat(joinedNs, &got) == nil && want.Ino == got.Ino {
			return cmd.Process.Pid, stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("nsenter %d not in the namespace of %d after 10 s", cmd.Process.Pid, pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
