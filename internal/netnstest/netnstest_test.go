package netnstest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { Main(m) }

const (
	// helperEnv selects what TestHelperProcess does in a test binary
	// started by the tests of Main.
	helperEnv = "VETH_EXPORTER_NETNSTEST_HELPER"
	// helperPIDFileEnv names the file where a hanging helper writes its
	// PID and its holder's.
	helperPIDFileEnv = "VETH_EXPORTER_NETNSTEST_PIDFILE"
	// helperFileEnv names a file that a helper sharing the fixture must
	// see.
	helperFileEnv = "VETH_EXPORTER_NETNSTEST_FILE"
)

// TestHelperProcess is not a test: the tests of Main run the test binary
// again with only it selected and helperEnv set, to watch Main from outside.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		return
	case "netns":
		ns, err := namespacesOf("self")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("helper netns %d\n", ns.net)
	case "exit7":
		os.Exit(7)
	case "shared":
		sharedHelper(t)
	case "hang":
		// Both PIDs as this process sees them: 1 and a small number in
		// its own PID namespace.
		holder := Holder(t, "")
		pids := fmt.Sprintf("%d %d", os.Getpid(), holder)
		if err := os.WriteFile(os.Getenv(helperPIDFileEnv), []byte(pids), 0o644); err != nil {
			t.Fatal(err)
		}
		// The test binary's -test.timeout ends this if nobody else does.
		for {
			time.Sleep(time.Hour)
		}
	default:
		t.Fatalf("unknown %s=%q", helperEnv, os.Getenv(helperEnv))
	}
}

// sharedHelper checks, in a helper started from a test's own namespaces, that
// Main let it join the test's fixture.
func sharedHelper(t *testing.T) {
	if !inPrivate {
		t.Fatal("Main did not mark the helper as private")
	}
	if pid := os.Getpid(); pid == 1 {
		t.Errorf("helper is PID 1, want a PID in the test's PID namespace")
	}
	if self, err := os.Readlink("/proc/self"); err != nil || self != strconv.Itoa(os.Getpid()) {
		t.Errorf("/proc/self = %q (%v), want %d: /proc is not the test's", self, err, os.Getpid())
	}
	self, err := namespacesOf("self")
	if err != nil {
		t.Fatal(err)
	}
	init, err := namespacesOf("1")
	if err != nil {
		t.Fatal(err)
	}
	if self != init {
		t.Errorf("helper namespaces %v, want those of the test binary, PID 1: %v", self, init)
	}
	// A tmpfs mounted again on /run would hide it.
	if _, err := os.Stat(os.Getenv(helperFileEnv)); err != nil {
		t.Errorf("helper does not see the test's file: %v", err)
	}
	fmt.Printf("helper shared pid %d\n", os.Getpid())
}

// helper returns a command running this test binary through Main as if from
// the machine's namespaces, with TestHelperProcess in mode.
func helper(t *testing.T, mode string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperProcess$", "-test.v", "-test.timeout=2m")
	cmd.Env = append(envWithout(os.Environ(), envMarker, envReady), helperEnv+"="+mode)
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

func TestMainPropagatesExitCode(t *testing.T) {
	Require(t)
	self, err := namespacesOf("self")
	if err != nil {
		t.Fatal(err)
	}

	out, err := helper(t, "netns").CombinedOutput()
	if err != nil {
		t.Fatalf("helper netns: %v\n%s", err, out)
	}
	var inner uint64
	for line := range strings.Lines(string(out)) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "helper netns "); ok {
			if inner, err = strconv.ParseUint(s, 10, 64); err != nil {
				t.Fatal(err)
			}
		}
	}
	if inner == 0 || inner == self.net {
		t.Errorf("helper ran in netns %d, want one other than ours (%d)\n%s", inner, self.net, out)
	}

	out, err = helper(t, "exit7").CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 7 {
		t.Errorf("helper exit7: %v, want exit status 7\n%s", err, out)
	}
}

func TestMainHelperSharesFixture(t *testing.T) {
	Require(t)
	file := "/run/netnstest-" + randomHex(t, 8)
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(file) })
	mountsBefore, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Started as a test would start it: with the environment Main left,
	// envReady included.
	cmd := exec.Command(exe, "-test.run=^TestHelperProcess$", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), helperEnv+"=shared", helperFileEnv+"="+file)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "helper shared pid ") {
		t.Errorf("helper shared: %v, want success\n%s", err, out)
	}

	// The helper shares this mount namespace: anything it mounted would
	// still be there.
	mountsAfter, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if string(mountsAfter) != string(mountsBefore) {
		t.Errorf("mounts changed by the helper:\nbefore:\n%s\nafter:\n%s", mountsBefore, mountsAfter)
	}
}

func TestMainStopsTestsWithIt(t *testing.T) {
	Require(t)
	for _, tc := range []struct {
		name     string
		sig      syscall.Signal
		wantCode int
	}{
		// Forwarded: the tests die of it and Main reports the signal.
		{"SIGTERM", syscall.SIGTERM, 128 + int(syscall.SIGTERM)},
		// Not forwardable: Pdeathsig must take the tests and their
		// holders down.
		{"SIGKILL", syscall.SIGKILL, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pids")
			cmd := helper(t, "hang", helperPIDFileEnv+"="+pidFile)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			innerNS, holderNS := waitPIDFile(t, pidFile)
			// The helper's Main runs the tests in a PID namespace of
			// their own, nested in ours: look their PIDs up in ours.
			inner := childPID(t, cmd.Process.Pid, innerNS)
			holder := childPID(t, inner, holderNS)
			t.Cleanup(func() {
				// Only if the test failed can they still run.
				for _, pid := range []int{inner, holder} {
					if !exited(pid) {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			})

			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) || exitErr.ExitCode() != tc.wantCode {
				t.Errorf("Main after %v: %v, want exit code %d", tc.sig, err, tc.wantCode)
			}
			for _, pid := range []int{inner, holder} {
				if !waitExited(pid, 10*time.Second) {
					t.Errorf("process %d still runs after Main got %v", pid, tc.sig)
				}
			}
			// The holder was reaped by inner, PID 1 of its namespace,
			// when the kernel killed it. inner itself, its parent
			// killed, was reparented to this test binary, PID 1 of
			// ours, which reaps only what it waits for.
			if tc.sig == syscall.SIGKILL && exited(inner) {
				if _, err := unix.Wait4(inner, nil, 0, nil); err != nil {
					t.Errorf("reap %d: %v", inner, err)
				}
			}
		})
	}
}

// childPID returns the PID in our PID namespace of the child of parent whose
// PID in its own PID namespace is nsPID.
func childPID(t *testing.T, parent, nsPID int) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := readStatus(pid)
		if err != nil {
			continue // exited meanwhile
		}
		// NSpid lists the PID in every namespace from the reader's
		// down to the process's own.
		nspid := strings.Fields(status["NSpid"])
		if status["PPid"] == strconv.Itoa(parent) && len(nspid) > 0 && nspid[len(nspid)-1] == strconv.Itoa(nsPID) {
			return pid
		}
	}
	t.Fatalf("no child of %d with PID %d in its PID namespace", parent, nsPID)
	return 0
}

// readStatus returns the fields of /proc/PID/status.
func readStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	fields := make(map[string]string)
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields, nil
}

// waitPIDFile waits for a hanging helper to write its PID and its holder's.
func waitPIDFile(t *testing.T, path string) (inner, holder int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if _, err := fmt.Sscanf(string(b), "%d %d", &inner, &holder); err == nil {
				return inner, holder
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PIDs in %s after 30s: %v", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exited reports whether pid is gone or a zombie. The processes checked
// are not our children, so init reaps them when it gets to it.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and
	// may contain anything.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

func waitExited(pid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); !exited(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func TestMainMakesPrivateNamespaces(t *testing.T) {
	Require(t)
	self, err := namespacesOf("self")
	if err != nil {
		t.Fatal(err)
	}
	// Main's parent runs in the namespaces the test binary was started in.
	parent := parentNamespaces(t)
	if self.net == parent.net || self.mnt == parent.mnt {
		t.Errorf("namespaces %v, want others than the parent's %v", self, parent)
	}

	// A new PID namespace, and /proc shows it.
	if pid := os.Getpid(); pid != 1 {
		t.Errorf("test binary is PID %d, want 1", pid)
	}
	if link, err := os.Readlink("/proc/self"); err != nil || link != "1" {
		t.Errorf("/proc/self = %q (%v), want \"1\": /proc is not this PID namespace's", link, err)
	}
	// Only this process and its descendants: the machine's processes
	// (kthreadd, PID 2, for one, whose parent is outside) are not
	// listed.
	ppids := processes(t)
	for pid, ppid := range ppids {
		if _, ok := ppids[ppid]; !ok && pid != 1 {
			t.Errorf("/proc lists process %d, whose parent %d is not listed", pid, ppid)
		}
	}

	// /proc/self/net follows the reader's network namespace whatever is
	// mounted: sysfs must list the same interfaces.
	procNet := procInterfaces(t, "self")
	sysNet, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	var sysNames []string
	for _, e := range sysNet {
		sysNames = append(sysNames, e.Name())
	}
	if !slices.Equal(sysNames, procNet) {
		t.Errorf("/sys/class/net lists %q, want %q from /proc/self/net/dev", sysNames, procNet)
	}

	flags, err := os.ReadFile("/sys/class/net/lo/flags")
	if err != nil {
		t.Fatal(err)
	}
	f, err := strconv.ParseUint(strings.TrimSpace(string(flags)), 0, 32)
	if err != nil || f&unix.IFF_UP == 0 {
		t.Errorf("lo flags %q (%v), want IFF_UP set", flags, err)
	}

	if ok, err := isFS("/run", unix.TMPFS_MAGIC); err != nil || !ok {
		t.Errorf("/run is a tmpfs: %v (%v), want true", ok, err)
	}
	if entries, err := os.ReadDir("/run/netns"); err != nil || len(entries) != 0 {
		t.Errorf("/run/netns: %d entries (%v), want an empty directory", len(entries), err)
	}
}

// parentNamespaces returns the namespaces Main re-executed the test binary
// from.
func parentNamespaces(t *testing.T) namespaces {
	t.Helper()
	ns, err := parseNamespaces(os.Getenv(envParent))
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// processes returns the parent of every process in /proc by PID.
func processes(t *testing.T) map[int]int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	ppids := make(map[int]int)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := readStatus(pid)
		if err != nil {
			continue // exited meanwhile
		}
		ppid, err := strconv.Atoi(status["PPid"])
		if err != nil {
			t.Fatalf("/proc/%d/status: PPid %q: %v", pid, status["PPid"], err)
		}
		ppids[pid] = ppid
	}
	return ppids
}

// procInterfaces returns the sorted names of the interfaces in the network
// namespace of pid.
func procInterfaces(t *testing.T, pid string) []string {
	t.Helper()
	f, err := os.Open("/proc/" + pid + "/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if name, _, ok := strings.Cut(s.Text(), ":"); ok {
			names = append(names, strings.TrimSpace(name))
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func TestIPVethInPrivateSysfs(t *testing.T) {
	Require(t)
	IP(t, "link", "add", "vt0", "type", "veth", "peer", "name", "vt1")
	t.Cleanup(func() { IP(t, "link", "del", "vt0") })
	for _, name := range []string{"vt0", "vt1"} {
		if _, err := os.Stat("/sys/class/net/" + name); err != nil {
			t.Errorf("veth %s not in the private sysfs: %v", name, err)
		}
	}
	// An interface is in exactly one network namespace, and the parent's
	// is out of reach from here.
	self, err := namespacesOf("self")
	if err != nil {
		t.Fatal(err)
	}
	names := procInterfaces(t, "self")
	if !slices.Contains(names, "vt0") || !slices.Contains(names, "vt1") {
		t.Errorf("network namespace %d lists %q, want vt0 and vt1", self.net, names)
	}
	if parent := parentNamespaces(t); self.net == parent.net {
		t.Errorf("veth pair in network namespace %d, the parent's", self.net)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// cgroupOf returns the path of pid in the test hierarchy, as
// /proc/PID/cgroup shows it to the exporter.
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 && parts[1] == "name="+cgroupName {
			return parts[2]
		}
	}
	t.Fatalf("no name=%s line in /proc/%d/cgroup:\n%s", cgroupName, pid, b)
	return ""
}

func TestHolder(t *testing.T) {
	Require(t)
	root := CgroupRoot(t)
	self, err := namespacesOf("self")
	if err != nil {
		t.Fatal(err)
	}
	pod := "pod" + randomHex(t, 4) + "-" + randomHex(t, 2) + "-" + randomHex(t, 2) + "-" + randomHex(t, 2) + "-" + randomHex(t, 6)
	for _, tc := range []struct {
		name       string
		cgroupPath string
		wantGone   []string // cgroups the cleanup must remove
	}{
		{"no cgroup", "", nil},
		{"docker", "/docker/" + randomHex(t, 32), nil},
		{"kubepods", "/kubepods/besteffort/" + pod + "/" + randomHex(t, 32), []string{"/kubepods/besteffort/" + pod}},
	} {
		var pid int
		t.Run(tc.name, func(t *testing.T) {
			pid = Holder(t, tc.cgroupPath)
			ns, err := namespacesOf(strconv.Itoa(pid))
			if err != nil {
				t.Fatal(err)
			}
			if ns.net == self.net {
				t.Errorf("holder %d in netns %d, want a new one", pid, ns.net)
			}
			want := tc.cgroupPath
			if want == "" {
				want = "/"
			}
			if got := cgroupOf(t, pid); got != want {
				t.Errorf("holder %d in cgroup %q, want %q", pid, got, want)
			}
		})
		if pid == 0 {
			continue
		}
		if !exited(pid) {
			t.Errorf("%s: holder %d still runs after its test", tc.name, pid)
		}
		if tc.cgroupPath == "" {
			continue
		}
		for _, p := range append(tc.wantGone, tc.cgroupPath) {
			if _, err := os.Stat(filepath.Join(root, p)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: cgroup %s after cleanup: %v, want it removed", tc.name, p, err)
			}
		}
	}
}

func TestMoveToCgroupCleanupBeforeKill(t *testing.T) {
	Require(t)
	root := CgroupRoot(t)
	cgroupPath := "/docker/" + randomHex(t, 32)
	t.Run("move", func(t *testing.T) {
		cmd := exec.Command("sleep", "infinity")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		runtime.LockOSThread()
		err := cmd.Start()
		runtime.UnlockOSThread()
		if err != nil {
			t.Fatal(err)
		}
		// Registered first, so it runs last: MoveToCgroup's cleanup
		// finds the process still in its cgroup.
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		MoveToCgroup(t, cmd.Process.Pid, cgroupPath)
		if got := cgroupOf(t, cmd.Process.Pid); got != cgroupPath {
			t.Errorf("process in cgroup %q, want %q", got, cgroupPath)
		}
	})
	if _, err := os.Stat(filepath.Join(root, cgroupPath)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cgroup %s after cleanup: %v, want it removed", cgroupPath, err)
	}
}

func TestMoveToCgroupKeepsLeftovers(t *testing.T) {
	Require(t)
	root := CgroupRoot(t)
	// As a crashed run leaves it: an empty cgroup on the path.
	cgroupPath := "/docker/" + randomHex(t, 32)
	if err := os.MkdirAll(filepath.Join(root, cgroupPath), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeCgroups(root, cgroupPath, true); err != nil {
			t.Error(err)
		}
	})
	t.Run("holder", func(t *testing.T) {
		pid := Holder(t, cgroupPath)
		if got := cgroupOf(t, pid); got != cgroupPath {
			t.Errorf("holder in cgroup %q, want %q", got, cgroupPath)
		}
	})
	if _, err := os.Stat(filepath.Join(root, cgroupPath)); err != nil {
		t.Errorf("cgroup %s that Holder did not create: %v, want it kept", cgroupPath, err)
	}
}

func TestRemoveCgroupsSharedAncestor(t *testing.T) {
	Require(t)
	root := CgroupRoot(t)
	// Unique, so that no other test binary uses it meanwhile.
	top := "/netnstest-" + randomHex(t, 8)
	a, b := top+"/a", top+"/b"
	for _, p := range []string{a, b} {
		if created, err := mkdirCgroup(root, filepath.Join(root, p)); err != nil || !created {
			t.Fatalf("mkdirCgroup(%q) = %v, %v, want true, nil", p, created, err)
		}
	}
	t.Cleanup(func() {
		for _, p := range []string{a, b, top} {
			if err := unix.Rmdir(filepath.Join(root, p)); err != nil && err != unix.ENOENT {
				t.Errorf("remove %s: %v", p, err)
			}
		}
	})

	// a's mkdir created top, but b still uses it.
	if err := removeCgroups(root, a, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, top)); err != nil {
		t.Fatalf("%s with %s still in it: %v, want it kept", top, b, err)
	}
	// b's mkdir found top, yet b is the last to leave it.
	if err := removeCgroups(root, b, true); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a, b, top} {
		if _, err := os.Stat(filepath.Join(root, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after removeCgroups: %v, want it removed", p, err)
		}
	}
}

func TestParseNamespaces(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    namespaces
		wantErr bool
	}{
		{in: "net:4026531840,mnt:4026531841", want: namespaces{net: 4026531840, mnt: 4026531841}},
		{in: namespaces{net: 1, mnt: 2}.String(), want: namespaces{net: 1, mnt: 2}},
		{in: "", wantErr: true},
		{in: "net:1", wantErr: true},
		{in: "mnt:2,net:1", wantErr: true},
		{in: "net:1,mnt:2,pid:3", wantErr: true},
		{in: "net:1,mnt:2 ", wantErr: true},
		{in: "net:+1,mnt:2", wantErr: true},
		{in: "net:-1,mnt:2", wantErr: true},
		{in: "net:x,mnt:2", wantErr: true},
	} {
		got, err := parseNamespaces(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseNamespaces(%q) = %v, %v, want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestCleanCgroupPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		wantErr  bool
	}{
		{in: "/docker/abc", want: "/docker/abc"},
		{in: "docker/abc/", want: "/docker/abc"},
		{in: "/kubepods/besteffort/pod1/c", want: "/kubepods/besteffort/pod1/c"},
		{in: "", wantErr: true},
		{in: "/", wantErr: true},
		{in: "/docker/../..", wantErr: true},
		{in: "/docker//abc", wantErr: true},
		{in: "./abc", wantErr: true},
	} {
		got, err := cleanCgroupPath(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("cleanCgroupPath(%q) = %q, %v, want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
