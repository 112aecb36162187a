// Package systemd_test checks that the capabilities the systemd unit keeps
// are what the exporter needs: it runs the real binary with exactly the
// capability bounding set of the unit (and of the unit with its remediation
// drop-in), those ambient, as root, over a fixture in private namespaces.
package systemd_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// unitCaps returns the capabilities that the key (CapabilityBoundingSet or
// AmbientCapabilities) of the unit files, read in order, add up to as
// systemd merges them (each line adds; an empty assignment resets), named
// as setpriv names them (sys_ptrace).
func unitCaps(t *testing.T, key string, files ...string) []string {
	t.Helper()
	var caps []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			v, ok := strings.CutPrefix(line, key+"=")
			if !ok {
				continue
			}
			if strings.TrimSpace(v) == "" {
				caps = nil
			}
			if strings.HasPrefix(v, "~") {
				t.Fatalf("%s: %s=%s: this test reads only lists of capabilities to keep", f, key, v)
			}
			for _, c := range strings.Fields(v) {
				if c = strings.ToLower(strings.TrimPrefix(c, "CAP_")); !slices.Contains(caps, c) {
					caps = append(caps, c)
				}
			}
		}
	}
	if len(caps) == 0 {
		t.Fatalf("%v: no %s=", files, key)
	}
	return caps
}

// setprivArgs returns the setpriv command line that runs a command with
// only caps, in the bounding, inheritable and ambient sets, as systemd
// starts the unit's ExecStart= as root.
func setprivArgs(caps []string) []string {
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	return []string{"setpriv", "--bounding-set=" + set, "--inh-caps=" + set, "--ambient-caps=" + set}
}

type verdict struct{ Verdict, Reason string }

// fixtureFlags keep the exporter to what the fixture holds: no runtime is
// asked, and the machine's CNI files are no part of it.
var fixtureFlags = []string{
	"--inventory.trust-pid-namespace", "--no-collector.docker", "--no-collector.cri", "--no-collector.podman",
	"--cni.conf-dir=", "--cni.cache-dir=",
}

// build builds the exporter for one test.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "veth_exporter")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/veth_exporter").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// inspect runs `veth_exporter inspect -o json` as root with only caps,
// bounding and ambient, and returns each device's verdict.
func inspect(t *testing.T, bin string, caps []string) map[string]verdict {
	t.Helper()
	args := append(setprivArgs(caps), "--", bin, "inspect", "-o", "json", "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	out, err := exec.Command(args[0], append(args[1:], fixtureFlags...)...).Output()
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	var doc struct {
		Veths []struct {
			Device string
			verdict
		}
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("inspect -o json: %v\n%s", err, out)
	}
	got := map[string]verdict{}
	for _, v := range doc.Veths {
		got[v.Device] = v.verdict
	}
	return got
}

// TestUnitCapabilitiesSuffice: with the unit's capabilities alone, root sees
// into the namespace of another user's process and calls an empty pinned
// namespace's veth orphaned; without them the same fixture is a partial view,
// so the test would notice a capability the unit lacks.
func TestUnitCapabilitiesSuffice(t *testing.T) {
	netnstest.Require(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) not found: %v", err)
	}
	caps := unitCaps(t, "CapabilityBoundingSet", "veth_exporter.service")
	bin := build(t)

	// A process of another user (nobody) in a namespace of its own, as a
	// container's process whose user the exporter does not share.
	nobody := exec.Command("unshare", "-n", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "infinity")
	nobody.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := nobody.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nobody.Process.Kill(); _ = nobody.Wait() })
	// unshare execs setpriv, which execs sleep: the PID stays; wait until
	// the namespace is a new one.
	self, _ := os.Readlink("/proc/self/ns/net")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ns, err := os.Readlink("/proc/" + strconv.Itoa(nobody.Process.Pid) + "/ns/net")
		if err == nil && ns != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d is not in a network namespace of its own after 5s", nobody.Process.Pid)
		}
	}
	netnstest.Veth(t, "vethnobody", strconv.Itoa(nobody.Process.Pid), "")
	netnstest.NamedNetns(t, "cni-left")
	netnstest.Veth(t, "vethleft", "cni-left", "")

	want := map[string]verdict{
		"vethnobody": {"unknown", "no_known_owner"},
		"vethleft":   {"orphaned", "netns_empty"},
	}
	got := inspect(t, bin, caps)
	for dev, w := range want {
		if got[dev] != w {
			t.Errorf("with the unit's capabilities %v: %s = %+v, want %+v", caps, dev, got[dev], w)
		}
	}
	if got := inspect(t, bin, nil); got["vethleft"] != (verdict{"unknown", "partial_view"}) {
		t.Errorf("with no capability: vethleft = %+v, want unknown/partial_view (else this test proves nothing)", got["vethleft"])
	}
	t.Logf("root with only %v: %v", caps, got)
}

// unitScript runs its arguments after making the mount namespace it runs
// in look like the one systemd gives the unit: every mount read-only
// (ProtectSystem=strict) but the state directory, its first argument
// (StateDirectory=). util-linux 2.38 has no recursive read-only remount,
// hence one remount per mount; "bind" makes each change that mount only,
// never its file system. A mount hidden under another (the machine's
// cgroup mounts under netnstest's fresh /sys) cannot be named by a path,
// nor reached through one: it may stay as it is, and is known by its path
// leading to another file system.
const unitScript = `set -e
state=$1; shift
awk '{print $3, $5}' /proc/self/mountinfo | while read -r dev point; do
	if ! mount -o remount,bind,ro "$point" 2>/dev/null && [ "$(stat -c %Hd:%Ld "$point" 2>/dev/null)" = "$dev" ]; then
		echo "cannot make $point read-only" >&2
		exit 97
	fi
done
mount --bind "$state" "$state"
mount -o remount,bind,rw "$state"
if [ -w / ] || [ -w /run/netns ] || ! [ -w "$state" ]; then
	echo "the unit's mount namespace: / or /run/netns writable, or $state read-only" >&2
	exit 97
fi
exec "$@"`

// asUnit returns the command that runs bin with args as systemd runs the
// unit: root with only caps and no new privileges, in a mount namespace of
// its own that is a slave of the test's, as systemd makes one for
// ProtectSystem= (the test's unmounts reach it, its own stay in it), read-
// only but stateDir. It must run inside netnstest's private namespaces:
// the test's mount namespace stands for the host's, its PID 1 (the test
// binary) for the host's init.
func asUnit(caps []string, stateDir, bin string, args ...string) *exec.Cmd {
	a := append([]string{"-m", "--propagation", "slave", "--", "sh", "-c", unitScript, "sh", stateDir}, setprivArgs(caps)...)
	a = append(append(a, "--no-new-privs", "--", bin), args...)
	cmd := exec.Command("unshare", a...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// recordOrphans runs `veth_exporter serve` as the unit with caps and
// flags, scrapes it once and stops it: its state file then records when
// it first saw each leftover orphaned (each lease leaked), which clean's
// gates ask for.
func recordOrphans(t *testing.T, caps []string, stateDir, bin string, flags []string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var log strings.Builder
	cmd := asUnit(caps, stateDir, bin, append([]string{"--web.listen-address=" + addr,
		"--state.path=" + filepath.Join(stateDir, "state.json"), "--inventory.settle-time=0s"}, flags...)...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// unshare, sh and setpriv each exec the next: the PID is the
	// exporter's once it listens.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("veth_exporter serve as the unit: %v\n%s", err, log.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			t.Fatalf("veth_exporter serve as the unit: no scrape after 15 s: %v\n%s", err, log.String())
		}
	}
	// The state file is written with each inventory; SIGTERM, as systemd
	// stops the unit, ends the exporter (Go's default: the signal kills it).
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !(errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM) {
			t.Fatalf("veth_exporter serve as the unit, stopped: %v\n%s", err, log.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("veth_exporter serve ignored SIGTERM for 10 s\n%s", log.String())
	}
}

// cleanAsUnit runs `veth_exporter clean` as the unit with caps and returns
// its table row for device (DEVICE IFINDEX RESULT REASON DETAIL, split at
// the first four blanks), its whole output and its exit code.
func cleanAsUnit(t *testing.T, caps []string, stateDir, bin, method, device string) (row []string, out string, code int) {
	t.Helper()
	out, code = runAsUnit(t, caps, stateDir, bin, append([]string{"clean", "--state.path=" + filepath.Join(stateDir, "state.json"),
		"--min-age=0s", "--inventory.settle-time=0s", "--remediation.max-orphan-ratio=1", "--remediation.method=" + method}, append(fixtureFlags, device)...)...)
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) >= 4 && f[0] == device {
			row = append(f[:4:4], strings.Join(f[4:], " "))
		}
	}
	return row, out, code
}

// runAsUnit runs bin with args as the unit with caps, and returns its
// output and exit code.
func runAsUnit(t *testing.T, caps []string, stateDir, bin string, args ...string) (out string, code int) {
	t.Helper()
	b, err := asUnit(caps, stateDir, bin, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("veth_exporter %s as the unit: %v\n%s", args[0], err, b)
	}
	return string(b), code
}

// mounted reports whether point is a mount point in the test's mount
// namespace, the one that stands for the host's.
func mounted(t *testing.T, point string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 4 && f[4] == point {
			return true
		}
	}
	return false
}

// TestRemediationDropInReleases: the unit with remediation.conf, in a
// mount namespace of its own, read-only and a slave of the host's as
// ProtectSystem=strict makes it, releases a leftover whose namespace only
// a /run/netns mount holds: the mount is gone from the host's mount table
// and the kernel has freed the namespace with its veth. Without
// CAP_SYS_ADMIN, or without CAP_SYS_CHROOT, the same release is refused
// (not_releasable) and changes nothing, so the drop-in needs each; with
// the base unit's capabilities alone nothing is removed; and the
// alternative for who refuses CAP_SYS_ADMIN, method delete with
// CAP_NET_ADMIN, deletes the veth and leaves the namespace pinned.
func TestRemediationDropInReleases(t *testing.T) {
	netnstest.Require(t)
	for _, tool := range []string{"setpriv", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (util-linux) not found: %v", tool, err)
		}
	}
	base := unitCaps(t, "CapabilityBoundingSet", "veth_exporter.service")
	unit := unitCaps(t, "CapabilityBoundingSet", "veth_exporter.service", "remediation.conf")
	if ambient := unitCaps(t, "AmbientCapabilities", "veth_exporter.service", "remediation.conf"); !sameSet(ambient, unit) {
		t.Fatalf("with remediation.conf: AmbientCapabilities %v, CapabilityBoundingSet %v: this test runs with one set", ambient, unit)
	}
	for _, c := range []string{"net_admin", "sys_admin", "sys_chroot", "sys_ptrace"} {
		if !slices.Contains(unit, c) {
			t.Fatalf("remediation.conf: the unit's capabilities %v lack %s", unit, c)
		}
	}
	without := func(c string) []string {
		return slices.DeleteFunc(slices.Clone(unit), func(u string) bool { return u == c })
	}
	bin := build(t)

	netnstest.Bridge(t, "cni0")
	netnstest.NamedNetns(t, "cni-released")
	netnstest.Veth(t, "vethrel", "cni-released", "cni0")
	netnstest.NamedNetns(t, "cni-deleted")
	netnstest.Veth(t, "vethdel", "cni-deleted", "cni0")
	const pin, otherPin = "/run/netns/cni-released", "/run/netns/cni-deleted"
	// A live veth keeps the share of orphans plausible.
	live := netnstest.Holder(t, "")
	netnstest.Veth(t, "vethlive", strconv.Itoa(live), "cni0")
	stateDir := t.TempDir()
	recordOrphans(t, unit, stateDir, bin, fixtureFlags)

	for _, tc := range []struct {
		name   string
		caps   []string
		reason string
	}{
		{"without CAP_SYS_ADMIN", without("sys_admin"), "not_releasable"},
		{"without CAP_SYS_CHROOT", without("sys_chroot"), "not_releasable"},
		// No CAP_NET_ADMIN: the last gate stops before any release.
		{"with the base unit's capabilities", base, "no_permission"},
	} {
		row, out, code := cleanAsUnit(t, tc.caps, stateDir, bin, "release", "vethrel")
		if code != 1 || row == nil || row[2] != "refused" || row[3] != tc.reason {
			t.Errorf("%s %v: clean --remediation.method=release vethrel: exit %d\n%s\nwant 1 and refused %s", tc.name, tc.caps, code, out, tc.reason)
		}
		if !netnstest.LinkExists("vethrel") || !mounted(t, pin) {
			t.Fatalf("%s %v: a refused release changed something: vethrel there %v, %s mounted %v",
				tc.name, tc.caps, netnstest.LinkExists("vethrel"), pin, mounted(t, pin))
		}
		t.Logf("%s %v: %s", tc.name, tc.caps, strings.Join(row, " | "))
	}

	index := strconv.Itoa(netnstest.LinkIndex(t, "vethrel"))
	row, out, code := cleanAsUnit(t, unit, stateDir, bin, "release", "vethrel")
	if code != 0 || row == nil || row[1] != index || row[2] != "deleted" {
		t.Fatalf("the unit with remediation.conf %v: clean --remediation.method=release vethrel: exit %d\n%s\nwant 0 and deleted, ifindex %s", unit, code, out, index)
	}
	if netnstest.LinkExists("vethrel") {
		t.Error("vethrel is still there after its release")
	}
	if mounted(t, pin) {
		t.Errorf("%s is still mounted in the host's mount namespace after the release", pin)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: %v after the release, want it removed as `ip netns delete` does", pin, err)
	}
	t.Logf("the unit with remediation.conf %v: %s", unit, strings.Join(row, " | "))

	// The documented alternative: method delete, CAP_NET_ADMIN beside the
	// base unit's.
	deleteCaps := append(slices.Clone(base), "net_admin")
	row, out, code = cleanAsUnit(t, deleteCaps, stateDir, bin, "delete", "vethdel")
	if code != 0 || row == nil || row[2] != "deleted" {
		t.Errorf("%v: clean --remediation.method=delete vethdel: exit %d\n%s\nwant 0 and deleted", deleteCaps, code, out)
	}
	if netnstest.LinkExists("vethdel") || !mounted(t, otherPin) {
		t.Errorf("%v: after method delete vethdel there %v, %s mounted %v: want the veth gone, its namespace still pinned",
			deleteCaps, netnstest.LinkExists("vethdel"), otherPin, mounted(t, otherPin))
	}
	if !netnstest.LinkExists("vethlive") {
		t.Error("the live vethlive is gone")
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
