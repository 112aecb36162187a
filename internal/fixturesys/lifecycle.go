package fixturesys

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The life of a runtime a harness starts, alike for all of them: one at
// a time, a base directory on the private /run, a clean environment, the
// binaries found or the test skipped, a reaper for the processes that
// daemonize, the daemon itself with its log, and a cleanup that goes on
// past errors and kills by mark, never by name alone.

// Slot is the one running instance of a harness in a test binary: a
// runtime owns the bridge, the leases and the /run directories of the
// namespace, which every test of the binary shares.
type Slot struct {
	harness string
	mu      sync.Mutex
	busy    bool
	seq     int
}

// NewSlot returns the slot of the harness named harness ("dockertest").
func NewSlot(harness string) *Slot { return &Slot{harness: harness} }

// Take claims s for t, failing t if another test holds it (tests that
// start a runtime must not run in parallel), and returns the instance's
// base directory, /run/<harness><N>, unique in the test binary and not yet
// made. A cleanup frees s: a harness registers its own cleanup after Take,
// so that it runs first.
func (s *Slot) Take(t testing.TB, what string) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy {
		t.Fatalf("%s: another %s is still running: tests that call Start must not run in parallel", s.harness, what)
	}
	s.busy = true
	s.seq++
	t.Cleanup(func() {
		s.mu.Lock()
		s.busy = false
		s.mu.Unlock()
	})
	return fmt.Sprintf("/run/%s%d", s.harness, s.seq)
}

// binDirs are the directories [SbinPath] makes sure PATH lists.
var binDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// SbinPath returns path with the sbin and bin directories it lacks
// appended: runtimes find runc, their shims and plugins through PATH, and
// a user's PATH often lacks the sbin ones.
func SbinPath(path string) string {
	dirs := filepath.SplitList(path)
	for _, dir := range binDirs {
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	return strings.Join(dirs, string(filepath.ListSeparator))
}

// Env returns this process's environment for a runtime and its CLI:
// without NOTIFY_SOCKET (the machine's systemd would hear of the runtime),
// without the variables that would point the runtime elsewhere (each of
// drop names one, or, ending in "_", a prefix: "DOCKER_"), and with PATH
// as [SbinPath] makes it.
func Env(drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		dropped := k == "NOTIFY_SOCKET" || k == "PATH"
		for _, d := range drop {
			dropped = dropped || k == d || (strings.HasSuffix(d, "_") && strings.HasPrefix(k, d))
		}
		if !dropped {
			env = append(env, kv)
		}
	}
	return append(env, "PATH="+SbinPath(os.Getenv("PATH")))
}

// Binaries returns the paths of the programs a harness needs, in the order
// of names: a name is looked up in PATH as [SbinPath] extends it, an
// absolute path is taken as it is. If one is not an executable file, it
// skips t, naming it and the Debian packages that provide them (fails t
// instead under VETH_EXPORTER_REQUIRE_PRIVILEGED=1, see
// [netnstest.Unavailable]).
func Binaries(t testing.TB, harness, packages string, names ...string) []string {
	t.Helper()
	path := SbinPath(os.Getenv("PATH"))
	paths := make([]string, len(names))
	for i, name := range names {
		if filepath.IsAbs(name) {
			if IsExecutable(name) {
				paths[i] = name
			}
		} else {
			for _, dir := range filepath.SplitList(path) {
				if p := filepath.Join(dir, name); IsExecutable(p) {
					paths[i] = p
					break
				}
			}
		}
		if paths[i] == "" {
			netnstest.Unavailable(t, fmt.Sprintf("%s: %s not found (Debian packages %s)", harness, name, packages))
		}
	}
	return paths
}

// IsExecutable reports whether path is a regular file someone may run.
func IsExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Reaper reaps the zombie children of the test binary that have one of
// its command names: a runtime's shims and monitors (containerd-shim,
// conmon) daemonize, and a container's init whose shim died is
// reparented too, to PID 1 of the namespace, the test binary, which does
// not reap orphans (see [netnstest.Main]). On a real host PID 1 reaps
// them; here they would stay zombies until the test binary exits.
//
// Reaping one PID cannot steal the exit status of a child that os/exec
// waits for, unless that child has a reaped name: a harness starts those
// through [Reaper.Start] and [Reaper.Wait], which the reaper leaves alone.
type Reaper struct {
	comms  []string
	mu     sync.Mutex
	waited map[int]bool // children os/exec waits for
	stop   chan struct{}
	done   chan struct{}
}

// StartReaper starts reaping, every 200 ms until [Reaper.Stop], the
// zombie children of this process named one of comms (as the kernel
// truncates a command name, to 15 bytes: containerd-shim-runc-v2 is
// containerd-shim).
func StartReaper(comms ...string) *Reaper {
	r := &Reaper{comms: comms, waited: map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			r.reap()
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

// Stop stops the reaper after reaping once more. It may be called again.
func (r *Reaper) Stop() {
	r.mu.Lock()
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.mu.Unlock()
	<-r.done
	r.reap()
}

// Start starts cmd, which the reaper then leaves to [Reaper.Wait].
func (r *Reaper) Start(cmd *exec.Cmd) error {
	// Under the lock: a pass of the reaper never sees the child before
	// it is marked.
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.waited[cmd.Process.Pid] = true
	return nil
}

// Wait waits for cmd, started by [Reaper.Start], as [exec.Cmd.Wait] does.
func (r *Reaper) Wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	r.mu.Lock()
	delete(r.waited, cmd.Process.Pid)
	r.mu.Unlock()
	return err
}

// reap makes one pass over /proc.
func (r *Reaper) reap() {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || r.waited[pid] {
			continue
		}
		st, err := ReadStat(pid)
		if err != nil || st.State != 'Z' || st.PPID != self || !slices.Contains(r.comms, st.Comm) {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// Output runs cmd, through reaper unless it is nil, and returns its
// trimmed standard output, or an error that names the command and carries
// its standard error: a runtime's CLI says there what went wrong.
func Output(cmd *exec.Cmd, reaper *Reaper) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var err error
	if reaper == nil {
		err = cmd.Run()
	} else if err = reaper.Start(cmd); err == nil {
		err = reaper.Wait(cmd)
	}
	out := strings.TrimSpace(stdout.String())
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", filepath.Base(cmd.Path), strings.Join(cmd.Args[1:], " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// ErrNeverReady wraps the error of a readiness check after which waiting
// longer is pointless (a daemon that serves without the service asked for).
var ErrNeverReady = errors.New("will never be ready")

// Daemon is the long-running process of a runtime that a harness starts
// (dockerd, containerd, `podman system service`), its output appended to
// a log file. It is safe for concurrent use.
type Daemon struct {
	name   string
	log    string
	reaper *Reaper // nil unless the daemon has a reaped name

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd is reaped
}

// NewDaemon returns a Daemon named name ("dockerd") that logs to the file
// log and, if reaper is not nil, is started and waited for through it.
func NewDaemon(name, log string, reaper *Reaper) *Daemon {
	return &Daemon{name: name, log: log, reaper: reaper}
}

// Start starts cmd, which must not be running, with its standard output
// and error appended to the log after a line that says when.
func (d *Daemon) Start(cmd *exec.Cmd) error {
	if pid, _ := d.Running(); pid != 0 {
		return fmt.Errorf("start %s: %d still runs", d.name, pid)
	}
	logFile, err := os.OpenFile(d.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== starting %s at %s ===\n", d.name, time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start, wait := cmd.Start, cmd.Wait
	if d.reaper != nil {
		start = func() error { return d.reaper.Start(cmd) }
		wait = func() error { return d.reaper.Wait(cmd) }
	}
	if err := start(); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = wait()
		close(exited)
	}()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	return nil
}

// Running returns the PID of the daemon and a channel closed once it has
// exited and was reaped, or 0 and nil if it is down (stopped, killed, or
// exited on its own).
func (d *Daemon) Running() (pid int, exited <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0, nil
	}
	select {
	case <-d.exited:
		d.cmd = nil
		return 0, nil
	default:
		return d.cmd.Process.Pid, d.exited
	}
}

// WaitReady waits up to timeout until ready returns nil, polling every
// 50 ms. It gives up at once if the daemon exits or ready's error wraps
// [ErrNeverReady]; its errors end with the tail of the log.
func (d *Daemon) WaitReady(timeout time.Duration, ready func() error, logDrop ...string) error {
	pid, exited := d.Running()
	if pid == 0 {
		return fmt.Errorf("%s is not running", d.name)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrNeverReady) {
			return fmt.Errorf("%s %d: %w\n%s", d.name, pid, err, d.LogTail(40, logDrop...))
		}
		select {
		case <-exited:
			d.Running()
			return fmt.Errorf("%s %d exited before it was ready: %v\n%s", d.name, pid, err, d.LogTail(40, logDrop...))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %d not ready after %v: %v\n%s", d.name, pid, timeout, err, d.LogTail(40, logDrop...))
		}
	}
}

// Stop sends the daemon SIGTERM and waits for it to exit; after timeout
// it kills it (SIGKILL) and says so.
func (d *Daemon) Stop(timeout time.Duration) error {
	pid, exited := d.Running()
	if pid == 0 {
		return fmt.Errorf("stop %s: not running", d.name)
	}
	if err := d.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s %d: %w", d.name, pid, err)
	}
	var err error
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = d.Signal(syscall.SIGKILL)
		<-exited
		err = fmt.Errorf("%s %d did not stop within %v of SIGTERM: killed", d.name, pid, timeout)
	}
	d.Running()
	return err
}

// Kill kills the daemon (SIGKILL) and waits until it is reaped.
func (d *Daemon) Kill() error {
	pid, exited := d.Running()
	if pid == 0 {
		return fmt.Errorf("kill %s: not running", d.name)
	}
	if err := d.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s %d: %w", d.name, pid, err)
	}
	<-exited
	d.Running()
	return nil
}

// Signal sends sig to the running daemon.
func (d *Daemon) Signal(sig os.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return fmt.Errorf("%s is not running", d.name)
	}
	return d.cmd.Process.Signal(sig)
}

// LogTail returns the last n lines of the daemon's log, without the lines
// that contain one of drop (plugin loading and connection chatter).
func (d *Daemon) LogTail(n int, drop ...string) string {
	b, err := os.ReadFile(d.log)
	if err != nil {
		return fmt.Sprintf("(%s log: %v)", d.name, err)
	}
	var lines []string
	for line := range strings.Lines(string(b)) {
		if !slices.ContainsFunc(drop, func(s string) bool { return strings.Contains(line, s) }) {
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "--- " + d.name + " log " + d.log + " (last lines) ---\n" + strings.Join(lines, "\n")
}

// Cleanup runs steps in order and reports the error of each on t as
// "<harness>: cleanup: <error>" without stopping: a cleanup removes all it
// can. A step may be nil.
func Cleanup(t testing.TB, harness string, steps ...func() error) {
	for _, step := range steps {
		if step == nil {
			continue
		}
		if err := step(); err != nil {
			t.Errorf("%s: cleanup: %v", harness, err)
		}
	}
}

// CgroupPaths returns the cgroup of pid in each hierarchy, as the lines of
// /proc/PID/cgroup name them ("/docker/<id>"), or nil if pid is gone.
func CgroupPaths(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil
	}
	var paths []string
	for line := range strings.Lines(string(b)) {
		if parts := strings.SplitN(strings.TrimSpace(line), ":", 3); len(parts) == 3 {
			paths = append(paths, parts[2])
		}
	}
	return paths
}

// KillLeftovers kills (as [KillAll]) what a crash of a runtime left
// running in the test's PID namespace: each process whose command name is
// one of comms and whose command line holds mark (the runtime's socket or
// directory, which only its own daemons and shims name), and each process
// with a cgroup for which ours is true (the runtime's containers). Every
// one is known by a mark of this runtime, never by a name alone.
func KillLeftovers(comms []string, mark string, ours func(cgroup string) bool) error {
	var victims []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		// Other commands may name the mark too (an exporter given the
		// runtime's socket): the name must match as well.
		if st, err := ReadStat(pid); err == nil && slices.Contains(comms, st.Comm) && CmdlineContains(pid, mark) {
			victims = append(victims, pid)
			continue
		}
		if slices.ContainsFunc(CgroupPaths(pid), ours) {
			victims = append(victims, pid)
		}
	}
	return KillAll(victims)
}

// DeleteBridges deletes each bridge of this namespace that was not there
// before (a name in before) and that ours says the runtime makes, with
// the ports still on it (the veths a crash leaves).
func DeleteBridges(before map[string]bool, ours func(name string) bool) error {
	var errs []error
	for name := range LinkNames() {
		if before[name] || !ours(name) {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/class/net", name, "bridge")); err != nil {
			continue
		}
		ports, _ := os.ReadDir(filepath.Join("/sys/class/net", name, "brif"))
		for _, p := range ports {
			errs = append(errs, DeleteLink(p.Name()))
		}
		errs = append(errs, DeleteLink(name))
	}
	return errors.Join(errs...)
}

// MissingDirs returns those of dirs that do not exist: the ones a runtime
// is about to make outside its own directories, for [RemoveEmptyDirs].
func MissingDirs(dirs ...string) []string {
	var missing []string
	for _, dir := range dirs {
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, dir)
		}
	}
	return missing
}

// RemoveEmptyDirs removes each of dirs, in order, if it is empty.
func RemoveEmptyDirs(dirs []string) error {
	var errs []error
	for _, dir := range dirs {
		if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT && err != unix.ENOTEMPTY && err != unix.EEXIST {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// RemoveDeadSockets removes the unix sockets in dir that nothing listens
// on any more (those of killed shims in /run/containerd/s); a live one is
// someone else's.
func RemoveDeadSockets(dir string) error {
	var errs []error
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			conn.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			errs = append(errs, RemoveIfExists(path))
		}
	}
	return errors.Join(errs...)
}

// RemoveCgroup removes the cgroup dir unless it is gone already. A
// process killed a moment ago can still count in it for a little while:
// it retries EBUSY for up to 3 s.
func RemoveCgroup(dir string) error {
	err := unix.Rmdir(dir)
	for deadline := time.Now().Add(3 * time.Second); err == unix.EBUSY && time.Now().Before(deadline); err = unix.Rmdir(dir) {
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// RemoveSharedCgroup removes the cgroup dir if nothing uses it any more.
// Parents such as /docker are shared with other test binaries and with a
// runtime of the machine's: whoever leaves one empty removes it.
func RemoveSharedCgroup(dir string) error {
	if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT && err != unix.EBUSY && err != unix.ENOTEMPTY {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}
