// Package netnstest lets tests build real network fixtures (bridges, veths,
// leaked namespaces, processes in container-like cgroups) without touching
// the machine they run on.
//
// [Main] re-executes the test binary in private network, mount and PID
// namespaces with its own sysfs on /sys, tmpfs on /run and procfs on /proc,
// so that tests see their fixture's interfaces and processes and none of
// the machine's. Every helper that changes the system ([IP], [Holder],
// [CgroupRoot], [MoveToCgroup]) refuses to run anywhere else: this package
// must never create, change or delete an interface or a mount in the
// machine's own namespaces. The one thing it
// shares with the machine is a named cgroup v1 hierarchy, which is
// kernel-wide; it only ever creates cgroups below that hierarchy, and removes
// the ones it created and the ancestors it leaves empty.
package netnstest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// envMarker tells a test binary that Main already re-executed it in
	// fresh namespaces.
	envMarker = "VETH_EXPORTER_NETNS"
	// envReady records the namespaces a test binary set up, so that a
	// helper process it starts (the test binary again, through Main)
	// shares its fixture instead of mounting over it.
	envReady = "VETH_EXPORTER_NETNS_READY"
	// envParent carries the namespaces of the process that re-executed
	// the test binary: in a new PID namespace the child cannot look its
	// parent up in /proc.
	envParent = "VETH_EXPORTER_NETNS_PARENT"
	// envRequire turns the skip in Require into a failure, so that CI
	// cannot pass by skipping every privileged test.
	envRequire = "VETH_EXPORTER_REQUIRE_PRIVILEGED"

	// cgroupName names the cgroup v1 hierarchy the tests own.
	cgroupName = "veth_exporter_test"
	// cgroupMountDir is where the fresh sysfs leaves an empty directory
	// for cgroup mounts.
	cgroupMountDir = "/sys/fs/cgroup"
)

// inPrivate is set by Main before any test runs, once the process is known
// to be in namespaces of its own.
var inPrivate bool

// Main runs the package's tests inside private network, mount and PID
// namespaces. Call it from TestMain:
//
//	func TestMain(m *testing.M) { netnstest.Main(m) }
//
// As root, Main re-executes the test binary in new network, mount and PID
// namespaces, forwards termination signals to it and exits with its exit
// code (128 plus the signal number if a signal stopped it). The re-executed
// binary is PID 1 of its PID namespace: it checks that its namespaces differ
// from those of its parent and of the machine's PID 1, makes every mount
// private, mounts a fresh sysfs on /sys, a tmpfs on /run and a procfs on
// /proc, creates /run/netns, brings lo up, and runs the tests. If the
// namespaces cannot be created (root without CAP_SYS_ADMIN, for instance) or
// the process is not root, the tests run in place and privileged ones skip
// through [Require].
//
// A test may start the test binary again through Main with the environment
// it inherited: that helper process shares the fixture (same namespaces, no
// new mounts) instead of making one of its own.
//
// On SIGINT, SIGTERM or SIGHUP the tests stop at once, without running their
// cleanups: the kernel kills every process of the PID namespace with the
// test binary, and the namespaces and mounts go with them, but cgroups made
// through [Holder] or [MoveToCgroup] stay, as after a crash.
//
// Orphaned processes are reparented to the test binary, as to any PID 1, but
// Go reaps only the children it waits for (through os/exec or
// [os.Process.Wait]): a test that leaves an orphan behind (a process that
// daemonizes, for instance) leaves a zombie until the test binary exits.
// Main does not reap them, as a reaper calling wait4(-1) would steal the exit
// status of children that [exec.Cmd.Wait] waits for.
//
// The functions after run once the tests are done, wherever they ran:
// package-wide cleanups such as removing a binary built for the tests.
func Main(m *testing.M, after ...func()) {
	run := func() int {
		code := m.Run()
		for _, f := range after {
			f()
		}
		return code
	}
	if os.Geteuid() != 0 {
		os.Exit(run())
	}
	if os.Getenv(envMarker) != "1" {
		code, err := reexec()
		if err == nil {
			os.Exit(code)
		}
		fmt.Fprintf(os.Stderr, "netnstest: %v; privileged tests will not run\n", err)
		os.Exit(run())
	}
	if os.Getpid() == 1 {
		// Before anything else, so that no signal finds PID 1 without
		// its handler.
		exitOnSignal()
	}
	if err := enterPrivate(); err != nil {
		fmt.Fprintf(os.Stderr, "netnstest: refusing to run privileged fixtures: %v\n", err)
		os.Exit(2)
	}
	inPrivate = true
	os.Exit(run())
}

// reexec runs the test binary again in new network, mount and PID
// namespaces and returns its exit code. It returns an error only when the
// child could not be started, in which case nothing has run yet.
func reexec() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find the test binary: %w", err)
	}
	self, err := namespacesOf("self")
	if err != nil {
		return 0, err
	}
	cmd := &exec.Cmd{
		Path: exe,
		Args: os.Args,
		Env: append(envWithout(os.Environ(), envMarker, envReady, envParent),
			envMarker+"=1", envParent+"="+self.String()),
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			// A PID namespace with its own /proc shows the tests their
			// fixture processes and none of the machine's: an inventory
			// sees exactly what the test built, and every process the
			// tests start dies with the test binary, its PID 1.
			Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
			// If this process is killed (go test gives up on it), the
			// child and with it every fixture namespace must go too.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	// Notify before Start so that a signal arriving in between is
	// forwarded instead of killing this process alone.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	// Pdeathsig fires when the thread that forked the child exits, not
	// the process: keep this goroutine on its thread until we exit.
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s in new network, mount and PID namespaces: %w", exe, err)
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	if err == nil {
		return 0, nil
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		fmt.Fprintf(os.Stderr, "netnstest: wait for test process %d: %v\n", cmd.Process.Pid, err)
		return 1, nil
	}
	if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		fmt.Fprintf(os.Stderr, "netnstest: test process %d killed by %v\n", cmd.Process.Pid, ws.Signal())
		return 128 + int(ws.Signal()), nil
	}
	return exitErr.ExitCode(), nil
}

// exitOnSignal makes this process, PID 1 of its PID namespace, exit on
// SIGINT, SIGTERM or SIGHUP. Without a handler of its own it would survive
// them: the Go runtime dies of a signal by raising it again with the default
// action, which the kernel ignores for the init of a PID namespace, and then
// exits with status 2. Exiting with 128 plus the signal number makes [Main]
// in the parent report the signal, and the kernel then kills every other
// process of the namespace.
func exitOnSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := (<-sigs).(syscall.Signal)
		fmt.Fprintf(os.Stderr, "netnstest: tests stopped by %v\n", s)
		os.Exit(128 + int(s))
	}()
}

// envWithout returns env without the variables named in keys.
func envWithout(env []string, keys ...string) []string {
	out := make([]string, 0, len(env))
next:
	for _, kv := range env {
		for _, k := range keys {
			if strings.HasPrefix(kv, k+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// namespaces identifies the network and mount namespaces of a process.
type namespaces struct {
	net, mnt uint64
}

func (n namespaces) String() string {
	return fmt.Sprintf("net:%d,mnt:%d", n.net, n.mnt)
}

// parseNamespaces parses s as formatted by [namespaces.String].
func parseNamespaces(s string) (namespaces, error) {
	var ns namespaces
	_, err := fmt.Sscanf(s, "net:%d,mnt:%d", &ns.net, &ns.mnt)
	// Sscanf ignores what follows the last verb: formatting again
	// rejects trailing text and other spellings of the numbers.
	if err == nil && ns.String() != s {
		err = errors.New("not of the form net:N,mnt:M")
	}
	if err != nil {
		return namespaces{}, fmt.Errorf("parse namespaces %q: %w", s, err)
	}
	return ns, nil
}

// namespacesOf returns the namespaces of the process pid ("self" for this
// one).
func namespacesOf(pid string) (namespaces, error) {
	var ns namespaces
	for _, f := range []struct {
		name string
		ino  *uint64
	}{{"net", &ns.net}, {"mnt", &ns.mnt}} {
		var st unix.Stat_t
		p := "/proc/" + pid + "/ns/" + f.name
		if err := unix.Stat(p, &st); err != nil {
			return namespaces{}, &fs.PathError{Op: "stat", Path: p, Err: err}
		}
		*f.ino = st.Ino
	}
	return ns, nil
}

// enterPrivate checks that this process runs in namespaces of its own and
// prepares them for fixtures.
func enterPrivate() error {
	self, err := namespacesOf("self")
	if err != nil {
		return err
	}
	// Inherited by helper processes too, which must not run in the
	// machine's namespaces either.
	env, ok := os.LookupEnv(envParent)
	if !ok {
		return fmt.Errorf("cannot compare with the parent's namespaces: %s not set", envParent)
	}
	parent, err := parseNamespaces(env)
	if err != nil {
		return fmt.Errorf("%s: %w", envParent, err)
	}
	if err := distinct(self, parent, "the parent process"); err != nil {
		return err
	}
	if os.Getenv(envReady) == self.String() {
		// A helper process started by a test: its parent already set up
		// these very namespaces, and mounting again would hide its
		// fixtures.
		return nil
	}
	// The procfs mounted below must show the PID namespace that the
	// re-execution made, and signals rely on exitOnSignal.
	if pid := os.Getpid(); pid != 1 {
		return fmt.Errorf("PID %d, want 1 in a new PID namespace", pid)
	}
	// Until the procfs below is mounted, /proc is the parent's: its PID 1
	// is the machine's init (or, for tests that start Main again, the
	// outer test binary). A container or a VM agent may deny access to
	// its namespaces even to root (its capabilities are not a subset of
	// ours); the parent check above still holds then.
	if init, err := namespacesOf("1"); err == nil {
		if err := distinct(self, init, "PID 1"); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	// Mounts in a new mount namespace still propagate to the machine's
	// shared peers until / is made private: this must come first.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	// sysfs shows the network namespace of whoever mounts it: a fresh one
	// makes /sys/class/net list this namespace's interfaces.
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount sysfs on /sys: %w", err)
	}
	// /run holds the machine's netns mounts, runtime sockets and pid files.
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
		return fmt.Errorf("mount tmpfs on /run: %w", err)
	}
	// A fresh procfs for the new PID namespace; mounted after the checks
	// above, which read the machine's /proc.
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc on /proc: %w", err)
	}
	if err := os.Mkdir("/run/netns", 0o755); err != nil {
		return err
	}
	if err := setLoopbackUp(); err != nil {
		return err
	}
	return os.Setenv(envReady, self.String())
}

// distinct fails if self shares a namespace with other.
func distinct(self, other namespaces, who string) error {
	if self.net == other.net {
		return fmt.Errorf("network namespace %d is the same as that of %s", self.net, who)
	}
	if self.mnt == other.mnt {
		return fmt.Errorf("mount namespace %d is the same as that of %s", self.mnt, who)
	}
	return nil
}

// setLoopbackUp brings lo up, as every real network namespace has it and
// tests listen on loopback.
func setLoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// Require skips t unless it runs inside the private namespace made by [Main].
// With VETH_EXPORTER_REQUIRE_PRIVILEGED=1 (CI) it fails t instead.
//
// Under -short (`make test-unit`, which promises the tests that need no root)
// it skips every test that would build a fixture, even as root and even with
// VETH_EXPORTER_REQUIRE_PRIVILEGED=1: -short asks for the quick tests, not a
// weaker CI run. Benchmarks are not skipped: -short only shrinks them (the
// CI benchmark smoke runs the 1,000-veth size alone).
func Require(t testing.TB) {
	t.Helper()
	if _, bench := t.(*testing.B); testing.Short() && !bench {
		t.Skip("needs root and a private network namespace; skipped under -short")
	}
	if inPrivate {
		return
	}
	Unavailable(t, "needs root and a private network namespace (run as root with netnstest.Main in TestMain)")
}

// Unavailable skips t because what it needs is missing (a namespace, a
// runtime's package), saying why; with VETH_EXPORTER_REQUIRE_PRIVILEGED=1
// (CI) it fails t instead, so that a missing installation cannot pass as a
// skip.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(envRequire) == "1" {
		t.Fatalf("%s (failing instead of skipping: %s=1)", why, envRequire)
	}
	t.Skip(why)
}

// mustBePrivate fails t if what is about to change the system would change
// the machine's own namespaces.
func mustBePrivate(t testing.TB, what string) {
	t.Helper()
	if !inPrivate {
		t.Fatalf("netnstest.%s called outside the private namespace made by netnstest.Main: call netnstest.Require first", what)
	}
}

// IP runs `ip args...` and fails t with the command and its output on error.
func IP(t testing.TB, args ...string) {
	t.Helper()
	mustBePrivate(t, "IP")
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Holder starts a long-lived process in a new network namespace and returns
// its PID. If cgroupPath is not empty (such as "/docker/<64 hex>" or
// "/kubepods/besteffort/pod<uid>/<64 hex>"), the process is in that cgroup of
// the hierarchy at [CgroupRoot] when Holder returns. A cleanup kills it by
// PID, reaps it and removes the cgroup as [MoveToCgroup] does.
//
// The process gets SIGKILL when the OS thread that started it exits, so it
// does not outlive the test binary even after a panic. That thread is the
// calling goroutine's, which Go keeps alive unless that goroutine locked it
// with [runtime.LockOSThread] and exits without unlocking it: a test that
// does so loses its holders when it returns.
func Holder(t testing.TB, cgroupPath string) int {
	t.Helper()
	pid, _ := StoppableHolder(t, cgroupPath)
	return pid
}

// StoppableHolder is [Holder], and returns a stop function that kills and
// reaps the process and removes its cgroup, as a container's exit does;
// the test's end calls stop too. The holder is the first process in its
// namespace, as a container's init (or a pod's sandbox) is in the
// namespace its runtime made for it: a process that enters the namespace
// afterwards ([Join]) is younger.
func StoppableHolder(t testing.TB, cgroupPath string) (pid int, stop func()) {
	t.Helper()
	mustBePrivate(t, "Holder")
	// Validate before starting anything, so a bad path leaks nothing.
	var root string
	if cgroupPath != "" {
		var err error
		if cgroupPath, err = cleanCgroupPath(cgroupPath); err != nil {
			t.Fatal(err)
		}
		root = CgroupRoot(t)
	}
	cmd := exec.Command("sleep", "infinity")
	// No parent-death signal: it fires when the thread that forked the
	// child exits, and a test that ends a locked thread (a release in the
	// host's mount namespace does) would kill the holder early. The
	// holder dies with the test binary, PID 1 of its PID namespace.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	runtime.LockOSThread()
	err := cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("start holder: %v", err)
	}
	pid = cmd.Process.Pid
	var leafCreated, stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		// Killing and reaping our own child: its PID cannot have been
		// reused before Wait returns.
		if err := cmd.Process.Kill(); err != nil {
			t.Errorf("kill holder %d: %v", pid, err)
		}
		_ = cmd.Wait()
		if cgroupPath == "" {
			return
		}
		if err := removeCgroups(root, cgroupPath, leafCreated); err != nil {
			t.Errorf("holder %d: %v", pid, err)
		}
	}
	t.Cleanup(stop)
	if cgroupPath != "" {
		// Set even on error, for the cleanup above.
		leafCreated, err = joinCgroup(root, cgroupPath, pid)
		if err != nil {
			t.Fatalf("holder %d: %v", pid, err)
		}
	}
	return pid, stop
}

var cgroupMount struct {
	sync.Mutex
	root string
}

// CgroupRoot returns the mount point of a cgroup v1 hierarchy named
// veth_exporter_test, mounting it on first use at
// /sys/fs/cgroup/veth_exporter_test over a tmpfs on /sys/fs/cgroup (the fresh
// sysfs made by [Main] hides the machine's cgroup mounts). A process moved to
// cgroup /docker/<id> there shows a line like
// `12:name=veth_exporter_test:/docker/<id>` in /proc/PID/cgroup.
//
// The hierarchy is shared by the whole machine: create cgroups in it only
// through [MoveToCgroup] or [Holder], which remove them again.
func CgroupRoot(t testing.TB) string {
	t.Helper()
	mustBePrivate(t, "CgroupRoot")
	cgroupMount.Lock()
	defer cgroupMount.Unlock()
	if cgroupMount.root == "" {
		root, err := mountCgroup()
		if err != nil {
			t.Fatal(err)
		}
		cgroupMount.root = root
	}
	return cgroupMount.root
}

// mountCgroup mounts the test hierarchy unless a process sharing this mount
// namespace (a helper started by a test) already did.
func mountCgroup() (string, error) {
	if ok, err := isFS(cgroupMountDir, unix.TMPFS_MAGIC); err != nil {
		return "", err
	} else if !ok {
		if err := unix.Mount("tmpfs", cgroupMountDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
			return "", fmt.Errorf("mount tmpfs on %s: %w", cgroupMountDir, err)
		}
	}
	root := filepath.Join(cgroupMountDir, cgroupName)
	if err := os.Mkdir(root, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	if ok, err := isFS(root, unix.CGROUP_SUPER_MAGIC); err != nil {
		return "", err
	} else if !ok {
		// The first mount anywhere on the machine creates the hierarchy;
		// later ones, in this run or the next, attach to it with its
		// cgroups.
		if err := unix.Mount("cgroup", root, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "none,name="+cgroupName); err != nil {
			return "", fmt.Errorf("mount cgroup hierarchy name=%s on %s: %w", cgroupName, root, err)
		}
	}
	return root, nil
}

// isFS reports whether path is the root or a directory of a file system of
// type magic.
func isFS(path string, magic int64) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	return int64(st.Type) == magic, nil
}

// MoveToCgroup creates cgroupPath under [CgroupRoot] as `mkdir -p` would and
// writes pid to its cgroup.procs. A cleanup moves pid back to the root of the
// hierarchy, if it still runs, removes the cgroup if MoveToCgroup created it
// (one left by a crashed run stays), then removes its ancestors, deepest
// first, up to the first one still in use. Ancestors such as /docker are
// shared with other tests and other test binaries, so whoever leaves one
// empty removes it.
func MoveToCgroup(t testing.TB, pid int, cgroupPath string) {
	t.Helper()
	mustBePrivate(t, "MoveToCgroup")
	cgroupPath, err := cleanCgroupPath(cgroupPath)
	if err != nil {
		t.Fatal(err)
	}
	root := CgroupRoot(t)
	leafCreated, err := joinCgroup(root, cgroupPath, pid)
	t.Cleanup(func() {
		// Errors are ignored: the process has usually exited already,
		// and if it still is in the cgroup, rmdir says so.
		_ = os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		if err := removeCgroups(root, cgroupPath, leafCreated); err != nil {
			t.Errorf("process %d: %v", pid, err)
		}
	})
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
}

// cleanCgroupPath returns p as an absolute cgroup path below the root of the
// hierarchy, refusing anything that could name a directory outside it.
func cleanCgroupPath(p string) (string, error) {
	trimmed := strings.Trim(p, "/")
	if trimmed == "" {
		return "", fmt.Errorf("cgroup path %q names the root of the hierarchy", p)
	}
	for _, elem := range strings.Split(trimmed, "/") {
		if elem == "" || elem == "." || elem == ".." {
			return "", fmt.Errorf("cgroup path %q is not clean", p)
		}
	}
	return "/" + trimmed, nil
}

// joinCgroup creates the cgroup cgroupPath below root and moves pid into it.
// It reports whether it created the cgroup itself, even on error.
func joinCgroup(root, cgroupPath string, pid int) (leafCreated bool, err error) {
	leaf := filepath.Join(root, cgroupPath)
	// Another test binary sharing the hierarchy may remove an empty
	// ancestor (say /docker) between our mkdir of it and of its child:
	// starting over is enough.
	const attempts = 10
	for attempt := 1; ; attempt++ {
		var created bool
		created, err = mkdirCgroup(root, leaf)
		leafCreated = leafCreated || created
		if err == nil {
			err = os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		}
		if err == nil {
			return leafCreated, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == attempts {
			return leafCreated, fmt.Errorf("move to cgroup %s: %w", cgroupPath, err)
		}
	}
}

// mkdirCgroup creates the directory leaf and its missing ancestors below
// root, and reports whether it created leaf itself.
func mkdirCgroup(root, leaf string) (bool, error) {
	if leaf == root {
		return false, nil
	}
	if _, err := mkdirCgroup(root, filepath.Dir(leaf)); err != nil {
		return false, err
	}
	err := os.Mkdir(leaf, 0o755)
	if errors.Is(err, fs.ErrExist) {
		// Left by a crashed run, or shared with another test.
		return false, nil
	}
	return err == nil, err
}

// removeCgroups removes the cgroup cgroupPath below root if leafCreated,
// then its ancestors up to the first one in use.
func removeCgroups(root, cgroupPath string, leafCreated bool) error {
	leaf := filepath.Join(root, cgroupPath)
	if leafCreated {
		// A process killed and reaped a moment ago can still count in
		// its cgroup for a little while: EBUSY until the kernel lets go.
		err := unix.Rmdir(leaf)
		for deadline := time.Now().Add(3 * time.Second); err == unix.EBUSY && time.Now().Before(deadline); err = unix.Rmdir(leaf) {
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil && err != unix.ENOENT {
			return fmt.Errorf("remove cgroup %s: %w", cgroupPath, err)
		}
	}
	for dir := filepath.Dir(leaf); dir != root; dir = filepath.Dir(dir) {
		switch err := unix.Rmdir(dir); err {
		case nil, unix.ENOENT:
		case unix.EBUSY:
			// It has cgroups below it, and so have its ancestors.
			return nil
		default:
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
	}
	return nil
}
