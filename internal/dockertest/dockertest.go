// Package dockertest gives tests a real dockerd (Debian docker.io 20.10, its
// containerd and runc) inside the private network, mount and PID namespaces
// made by [netnstest.Main], so that tests can make real Docker leftovers: a
// container's veth on docker0 or on a user-defined network's bridge, a
// namespace pinned by a mount under the exec root after a crash, a container
// that Docker forgot.
//
// [Start] refuses to run outside those namespaces (it calls
// [netnstest.Require]): this package must never create, change or delete an
// interface, a mount or a process in the machine's own namespaces, and it
// never pulls an image ([Daemon.Image] imports one from the machine's
// busybox). dockerd runs with --iptables=false --ip-masq=false, so it leaves
// the firewall alone, and with a data root under the test's temporary
// directory and an exec root on the private /run.
//
// The one thing a daemon shares with the machine is the set of cgroup
// hierarchies (v1 controllers, name=systemd and, on a hybrid host, the
// unified one), which are kernel-wide: runc creates /docker/<id> in each of
// them. The cleanup of [Start] removes the cgroups of every container of the
// daemon (killed containers leave them) and /docker itself once empty.
//
// Only one Daemon runs at a time in a test binary: dockerd owns docker0 in
// the namespace, which all tests of the binary share. Tests that call
// [Start] must not run in parallel with each other.
package dockertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

const (
	// envRequire is netnstest's switch that turns skips into failures
	// (CI): a missing Docker installation must not pass as a skip there.
	envRequire = "VETH_EXPORTER_REQUIRE_PRIVILEGED"

	// readyTimeout bounds the wait for /_ping; dockerd answers in about
	// 2 s here.
	readyTimeout = 60 * time.Second
	// stopTimeout bounds a clean shutdown. The image's stop signal is
	// SIGKILL, so stopping containers costs nothing.
	stopTimeout = 30 * time.Second
	// cliTimeout bounds one docker CLI command.
	cliTimeout = 2 * time.Minute

	cgroupMountDir = "/sys/fs/cgroup"
	// cgroupParent is dockerd's default --cgroup-parent with the
	// cgroupfs driver: containers land in /docker/<id>.
	cgroupParent = "docker"

	rootfsTag = "dockertest/busybox:rootfs"
	imageTag  = "dockertest/busybox:latest"
)

// runtimeDirs are the directories that dockerd and the shims create on
// /run outside the exec root, children first: the shims' sockets
// (containerd's hard-coded /run/containerd/s) and dockerd's plugin
// directory.
var runtimeDirs = []string{"/run/containerd/s", "/run/containerd", "/run/docker/plugins", "/run/docker"}

// fullID matches a full container, image or network ID.
var fullID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Daemon is a dockerd started by a test, with its own data root and exec
// root. Its fields are read-only.
type Daemon struct {
	// Socket is the path of dockerd's API socket, such as
	// /run/dockertest1/docker.sock.
	Socket string
	// Host is "unix://" + Socket, for DOCKER_HOST or --docker.host.
	Host string
	// DataRoot is dockerd's --data-root, below t.TempDir().
	DataRoot string
	// ExecRoot is dockerd's --exec-root, such as /run/dockertest1/exec.
	// Docker bind-mounts container network namespaces at
	// ExecRoot/netns/<sandbox id> (see [Daemon.SandboxKey]); the managed
	// containerd keeps its pid file and socket in ExecRoot/containerd.
	ExecRoot string
	// PID is the PID of the running dockerd; 0 while it is down.
	PID int

	base       string // holds Socket, ExecRoot and the pid file
	pidFile    string
	configFile string
	logPath    string
	cliConfig  string
	dockerd    string
	cli        string
	env        []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd is reaped
	image   string
	ids     map[string]bool // containers made through Run
	bridges map[string]bool // interfaces that existed before Start
	runDirs []string        // of runtimeDirs, those missing before Start

	stopReaper chan struct{}
	reaperDone chan struct{}
}

// active is the running Daemon of this test binary, if any.
var active struct {
	sync.Mutex
	d   *Daemon
	seq int
}

// Start starts dockerd in the private namespaces and waits until it answers
// /_ping. It first makes the cgroup hierarchies visible to runc, which the
// fresh sysfs of [netnstest.Main] hides: a tmpfs on /sys/fs/cgroup (reused
// if [netnstest.CgroupRoot] already mounted one) and, mounted again, each
// hierarchy the machine has (every v1 controller, name=systemd, and
// unified on a hybrid host). A container's /proc/PID/cgroup then reads as
// on a Docker host with the cgroupfs driver: "8:pids:/docker/<id>", …,
// "0::/docker/<id>".
//
// A cleanup removes every container (docker rm -f), stops dockerd (SIGTERM,
// then SIGKILL), its containerd and any shim or container process left by
// [Daemon.Crash], unmounts what Docker left under the data and exec roots
// (network namespaces of crashed containers among them), deletes the
// bridges and veths Docker made, removes the containers' cgroups and
// unmounts the hierarchies. If the test failed, it logs the tail of
// dockerd's log, which also holds containerd's.
//
// Start skips the test outside the private namespaces and when Docker is
// not installed (fails it instead with VETH_EXPORTER_REQUIRE_PRIVILEGED=1),
// and fails it if another Daemon of the test binary is still running.
func Start(t testing.TB) *Daemon {
	t.Helper()
	return StartWith(t, Options{})
}

// Options change how [StartWith] configures dockerd.
type Options struct {
	// LiveRestore keeps containers running while dockerd is down
	// ("live-restore": true), as production hosts often configure it.
	LiveRestore bool
}

// StartWith is [Start] with options.
func StartWith(t testing.TB, opts Options) *Daemon {
	t.Helper()
	netnstest.Require(t)
	d := &Daemon{ids: map[string]bool{}}
	d.dockerd, d.cli = findBinaries(t)
	// Before the cleanup below is registered, so that it runs after it,
	// once nothing is mounted in it any more.
	tmp := t.TempDir()

	active.Lock()
	if active.d != nil {
		active.Unlock()
		t.Fatal("dockertest: another Daemon is still running: tests that call Start must not run in parallel")
	}
	active.d = d
	active.seq++
	seq := active.seq
	active.Unlock()

	d.base = fmt.Sprintf("/run/dockertest%d", seq)
	d.Socket = d.base + "/docker.sock"
	d.Host = "unix://" + d.Socket
	d.ExecRoot = d.base + "/exec"
	d.pidFile = d.base + "/dockerd.pid"
	d.DataRoot = filepath.Join(tmp, "data")
	d.configFile = filepath.Join(tmp, "daemon.json")
	d.logPath = filepath.Join(tmp, "dockerd.log")
	d.cliConfig = filepath.Join(tmp, "cli")
	d.env = dockerEnv()
	d.bridges = fixturesys.LinkNames()
	for _, dir := range runtimeDirs {
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			d.runDirs = append(d.runDirs, dir)
		}
	}
	// The machine's cgroup hierarchies runc uses, the unified one of a
	// hybrid host included (runc puts containers in /docker/<id> there
	// too), mounted again under the fresh sysfs; undone at the end.
	var cgroups []func() error
	t.Cleanup(func() {
		d.cleanup(t)
		if err := fixturesys.Undo(cgroups); err != nil {
			t.Errorf("dockertest: %v", err)
		}
		active.Lock()
		active.d = nil
		active.Unlock()
	})

	for _, dir := range []string{d.base, d.cliConfig} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A configuration file of our own keeps the machine's
	// /etc/docker/daemon.json, if any, out of the test, and moves the
	// daemon's identity key, which dockerd 20.10 would otherwise create
	// as /etc/docker/key.json on the machine's file system.
	config := fmt.Sprintf("{\"deprecated-key-path\": %q, \"live-restore\": %v}\n", filepath.Join(tmp, "key.json"), opts.LiveRestore)
	if err := os.WriteFile(d.configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	hs, err := fixturesys.CgroupHierarchies(true)
	if err == nil {
		err = fixturesys.MountCgroups(hs, &cgroups)
	}
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	d.stopReaper, d.reaperDone = make(chan struct{}), make(chan struct{})
	go d.reap()
	d.start(t)
	return d
}

// reap reaps the daemon's shims as they exit, until stopReaper closes.
// A shim daemonizes: its parent is PID 1 of the namespace, the test binary,
// which does not reap orphans (see [netnstest.Main]). On a real host PID 1
// reaps it; here it would stay a zombie until the test binary exits.
func (d *Daemon) reap() {
	defer close(d.reaperDone)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		reapShims()
		select {
		case <-d.stopReaper:
			return
		case <-tick.C:
		}
	}
}

// reapShims reaps the zombie children of this process that were
// containerd shims. Reaping one PID cannot steal the exit status of a child
// that os/exec waits for, and no test starts a shim through os/exec.
func reapShims() {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		// The kernel truncates names to 15 bytes:
		// containerd-shim-runc-v2 shows as containerd-shim.
		st, err := fixturesys.ReadStat(pid)
		if err != nil || st.State != 'Z' || st.PPID != self || st.Comm != "containerd-shim" {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// findBinaries returns the paths of dockerd and of the docker CLI, skipping
// t if Docker is not installed.
func findBinaries(t testing.TB) (dockerd, cli string) {
	t.Helper()
	missing := func(what string) {
		t.Helper()
		msg := fmt.Sprintf("dockertest: %s not found (Debian packages docker.io, containerd, runc, busybox-static)", what)
		if os.Getenv(envRequire) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	path := pathWithSbin(os.Getenv("PATH"))
	look := func(name string) string {
		for _, dir := range filepath.SplitList(path) {
			p := filepath.Join(dir, name)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p
			}
		}
		return ""
	}
	for _, name := range []string{"containerd", "containerd-shim-runc-v2", "runc", "busybox", "ip"} {
		if look(name) == "" {
			missing(name)
		}
	}
	if dockerd = look("dockerd"); dockerd == "" {
		missing("dockerd")
	}
	// The Debian client matches the Debian daemon; a newer client found
	// first in PATH (/usr/local/bin) negotiates down, but one less moving
	// part is better.
	cli = "/usr/bin/docker"
	if _, err := os.Stat(cli); err != nil {
		if cli = look("docker"); cli == "" {
			missing("the docker CLI")
		}
	}
	return dockerd, cli
}

// pathWithSbin returns path with the sbin directories appended: dockerd
// finds runc and containerd through PATH.
func pathWithSbin(path string) string {
	dirs := filepath.SplitList(path)
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	return strings.Join(dirs, string(filepath.ListSeparator))
}

// dockerEnv returns this process's environment without the variables that
// would point the daemon or the CLI elsewhere (DOCKER_*, a systemd notify
// socket), with sbin directories in PATH.
func dockerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DOCKER_") || k == "NOTIFY_SOCKET" || k == "PATH" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+pathWithSbin(os.Getenv("PATH")))
}

// containerdPIDFile is where the containerd that dockerd manages writes its
// PID.
func (d *Daemon) containerdPIDFile() string {
	return filepath.Join(d.ExecRoot, "containerd", "containerd.pid")
}

// start starts dockerd and waits for /_ping.
func (d *Daemon) start(t testing.TB) {
	t.Helper()
	// After a kill -9 the pid files stay: dockerd refuses to start over
	// its own if the PID runs again, and reuses a "containerd" whose PID
	// is in the containerd pid file.
	for _, f := range []string{d.pidFile, d.containerdPIDFile()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	logFile, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== dockertest: starting dockerd at %s ===\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(d.dockerd,
		"--config-file", d.configFile,
		"--data-root", d.DataRoot,
		"--exec-root", d.ExecRoot,
		"--pidfile", d.pidFile,
		"-H", d.Host,
		// The namespace is private, but iptables rules are not worth
		// making: no test needs NAT or port mappings.
		"--iptables=false", "--ip-masq=false",
	)
	cmd.Env = d.env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("dockertest: start dockerd: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	d.mu.Lock()
	d.cmd, d.exited, d.PID = cmd, exited, cmd.Process.Pid
	d.mu.Unlock()

	client := d.httpClient()
	deadline := time.Now().Add(readyTimeout)
	for {
		if d.ping(client) == nil {
			return
		}
		select {
		case <-exited:
			d.markDown()
			t.Fatalf("dockertest: dockerd exited before answering /_ping (%v)\n%s", cmd.ProcessState, d.logTail(40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockertest: dockerd %d did not answer /_ping in %v\n%s", cmd.Process.Pid, readyTimeout, d.logTail(40))
		}
	}
}

// markDown records that dockerd has exited and was reaped.
func (d *Daemon) markDown() {
	d.mu.Lock()
	d.cmd, d.PID = nil, 0
	d.mu.Unlock()
}

// running returns dockerd's command and exit channel, or nil if it is down,
// even if it exited on its own.
func (d *Daemon) running() (*exec.Cmd, chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		select {
		case <-d.exited:
			d.cmd, d.PID = nil, 0
		default:
		}
	}
	return d.cmd, d.exited
}

func (d *Daemon) httpClient() *http.Client {
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dialer net.Dialer
				return dialer.DialContext(ctx, "unix", d.Socket)
			},
			DisableKeepAlives: true,
		},
	}
}

// ping asks dockerd for /_ping.
func (d *Daemon) ping(client *http.Client) error {
	resp, err := client.Get("http://docker/_ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/_ping: %s: %s", resp.Status, body)
	}
	return nil
}

// Ping asks dockerd for /_ping and returns nil if it answered OK.
func (d *Daemon) Ping() error {
	return d.ping(d.httpClient())
}

// logTail returns the last n lines of dockerd's log, without the lines of
// containerd's plugin loading and gRPC connection chatter.
func (d *Daemon) logTail(n int) string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return fmt.Sprintf("(dockerd log: %v)", err)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(line, "module=grpc") || strings.Contains(line, `msg="loading plugin`) {
			continue
		}
		lines = append(lines, line)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "--- dockerd log " + d.logPath + " (last lines) ---\n" + strings.Join(lines, "\n")
}

// Docker runs the docker CLI against this daemon and returns its trimmed
// standard output. It fails t with the command's standard error on error.
func (d *Daemon) Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.TryDocker(args...)
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	return out
}

// TryDocker runs the docker CLI against this daemon and returns its trimmed
// standard output, or an error that carries its standard error.
func (d *Daemon) TryDocker(args ...string) (string, error) {
	return d.docker(nil, args...)
}

func (d *Daemon) docker(stdin io.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.cli, args...)
	// DOCKER_BUILDKIT=0: Image builds with the classic builder, which
	// needs no buildkit and no registry.
	cmd.Env = append(slices.Clip(d.env), "DOCKER_HOST="+d.Host, "DOCKER_CONFIG="+d.cliConfig, "DOCKER_BUILDKIT=0")
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Image returns the tag of a tiny image imported once per daemon from the
// machine's static busybox: /bin/busybox with links sh, sleep, cat, ip, …
// Its default command is `sleep 3600` and its stop signal SIGKILL, so that
// stopping a container (docker stop, or dockerd shutting down) does not
// wait 10 s for a PID 1 that ignores SIGTERM.
func (d *Daemon) Image(t testing.TB) string {
	t.Helper()
	d.mu.Lock()
	image := d.image
	d.mu.Unlock()
	if image != "" {
		return image
	}
	rootfs, err := fixturesys.BusyboxRootfs()
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	if _, err := d.docker(bytes.NewReader(rootfs), "import", "-", rootfsTag); err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	// docker import of 20.10 refuses STOPSIGNAL in --change; the
	// classic builder sets it without running a container.
	dockerfile := "FROM " + rootfsTag + "\nSTOPSIGNAL SIGKILL\nCMD [\"sleep\", \"3600\"]\n"
	if _, err := d.docker(strings.NewReader(dockerfile), "build", "-q", "-t", imageTag, "-"); err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	d.mu.Lock()
	d.image = imageTag
	d.mu.Unlock()
	return imageTag
}

// Run runs `docker run -d --name NAME [args] IMAGE sleep 3600` with the
// image of [Daemon.Image] and returns the full container ID.
func (d *Daemon) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	image := d.Image(t)
	argv := append([]string{"run", "-d", "--name", name}, args...)
	argv = append(argv, image, "sleep", "3600")
	id := d.Docker(t, argv...)
	if !fullID.MatchString(id) {
		t.Fatalf("dockertest: docker run %s printed %q, want a container ID", name, id)
	}
	d.mu.Lock()
	d.ids[id] = true
	d.mu.Unlock()
	return id
}

// ContainerPID returns the PID of the container's init process (docker
// inspect -f '{{.State.Pid}}'), failing t if it does not run.
func (d *Daemon) ContainerPID(t testing.TB, id string) int {
	t.Helper()
	out := d.Docker(t, "inspect", "-f", "{{.State.Pid}}", id)
	pid, err := strconv.Atoi(out)
	if err != nil || pid <= 0 {
		t.Fatalf("dockertest: container %s: PID %q, want a running container", id, out)
	}
	return pid
}

// SandboxKey returns the path at which Docker bind-mounts the container's
// network namespace (ExecRoot/netns/<12 hex of the sandbox ID>), or "" for
// a container without a namespace of its own (--network container:X).
func (d *Daemon) SandboxKey(t testing.TB, id string) string {
	t.Helper()
	return d.Docker(t, "inspect", "-f", "{{.NetworkSettings.SandboxKey}}", id)
}

// Stop stops dockerd cleanly: SIGTERM, then a wait for dockerd and its
// containerd to exit. dockerd stops the running containers first, as with
// live-restore off it does on every shutdown.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if err := d.stop(); err != nil {
		t.Fatalf("dockertest: %v", err)
	}
}

func (d *Daemon) stop() error {
	cmd, exited := d.running()
	if cmd == nil {
		return errors.New("stop dockerd: not running")
	}
	pid := cmd.Process.Pid
	containerd := readPIDFile(d.containerdPIDFile())
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop dockerd %d: %w", pid, err)
	}
	var errs []error
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-exited
		errs = append(errs, fmt.Errorf("dockerd %d did not stop within %v of SIGTERM: killed\n%s", pid, stopTimeout, d.logTail(40)))
	}
	d.markDown()
	// dockerd stops the containerd it manages on shutdown, but does not
	// wait for long.
	if containerd > 0 {
		if err := stopProcess(containerd, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("containerd of dockerd %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// Restart starts dockerd again with the same roots after [Daemon.Stop] or
// [Daemon.Crash], removing the pid files a kill -9 leaves first, and waits
// for /_ping.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	if cmd, _ := d.running(); cmd != nil {
		t.Fatalf("dockertest: restart dockerd: %d still runs (Stop or Crash it first)", cmd.Process.Pid)
	}
	d.start(t)
}

// Crash leaves what a crash of the Docker host's runtime leaves: it kills
// (SIGKILL) dockerd, its containerd and, for each container in
// containerIDs, the container's shim (the parent of its init) and every
// process of the container (those in its pids cgroup), in that order, and
// waits until they are gone. Docker gets no chance to clean up: the
// container's veth stays on its bridge and its namespace stays mounted at
// [Daemon.SandboxKey], with no process in it unless another container
// shares it. The daemon is down afterwards; other containers keep running
// without it until [Daemon.Restart] or the test's end.
func (d *Daemon) Crash(t testing.TB, containerIDs ...string) {
	t.Helper()
	cmd, exited := d.running()
	if cmd == nil {
		t.Fatal("dockertest: crash dockerd: not running")
	}
	// Everything is looked up while Docker still answers.
	var shims, procs []int
	for _, id := range containerIDs {
		pid := d.ContainerPID(t, id)
		st, err := fixturesys.ReadStat(pid)
		if err != nil {
			t.Fatalf("dockertest: container %s: %v", id, err)
		}
		parent, err := fixturesys.ReadStat(st.PPID)
		if err != nil || parent.Comm != "containerd-shim" {
			t.Fatalf("dockertest: container %s: parent %d of its process %d is %q (%v), want its shim", id, st.PPID, pid, parent.Comm, err)
		}
		if !slices.Contains(shims, st.PPID) {
			shims = append(shims, st.PPID)
		}
		inCgroup, err := cgroupProcs(pid)
		if err != nil {
			t.Fatalf("dockertest: container %s: %v", id, err)
		}
		for _, p := range append([]int{pid}, inCgroup...) {
			if !slices.Contains(procs, p) {
				procs = append(procs, p)
			}
		}
	}
	containerd := readPIDFile(d.containerdPIDFile())
	if containerd <= 0 || !fixturesys.CmdlineContains(containerd, d.ExecRoot) {
		t.Fatalf("dockertest: no containerd of this daemon at the PID in %s (%d)", d.containerdPIDFile(), containerd)
	}

	_ = cmd.Process.Kill()
	<-exited
	d.markDown()
	victims := append([]int{containerd}, shims...)
	victims = append(victims, procs...)
	// The test binary is PID 1 and the parent of orphans: never a victim.
	victims = slices.DeleteFunc(victims, func(pid int) bool { return pid <= 1 || pid == os.Getpid() })
	if err := fixturesys.KillAll(victims); err != nil {
		t.Errorf("dockertest: crash: %v", err)
	}
}

// LoseNetworkState deletes Docker's network store,
// DataRoot/network/files/local-kv.db, as a lost or corrupted /var/lib/docker
// would: on its next start dockerd no longer knows the endpoints of the
// containers that were running. The daemon must be down.
func (d *Daemon) LoseNetworkState(t testing.TB) {
	t.Helper()
	if cmd, _ := d.running(); cmd != nil {
		t.Fatalf("dockertest: lose network state: dockerd %d still runs (Stop or Crash it first)", cmd.Process.Pid)
	}
	if err := os.Remove(filepath.Join(d.DataRoot, "network", "files", "local-kv.db")); err != nil {
		t.Fatalf("dockertest: lose network state: %v", err)
	}
}

// HostVeth returns the name, in this network namespace, of the veth whose
// peer is eth0 in the network namespace at nsPath (/proc/PID/ns/net, or a
// bind mount such as [Daemon.SandboxKey]).
func HostVeth(t testing.TB, nsPath string) string {
	t.Helper()
	name, err := hostVeth(nsPath)
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	return name
}

func hostVeth(nsPath string) (string, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return "", fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return "", fmt.Errorf("eth0 in %s: %w", nsPath, err)
	}
	if eth0.Type() != "veth" {
		return "", fmt.Errorf("eth0 in %s is a %s, want a veth", nsPath, eth0.Type())
	}
	// eth0's link index is the ifindex of its peer in the peer's
	// namespace, this one for Docker. An ifindex names different links in
	// different namespaces: the peer must point back at eth0.
	peer, err := netlink.LinkByIndex(eth0.Attrs().ParentIndex)
	if err != nil {
		return "", fmt.Errorf("peer %d of eth0 in %s: %w", eth0.Attrs().ParentIndex, nsPath, err)
	}
	if peer.Type() != "veth" || peer.Attrs().ParentIndex != eth0.Attrs().Index {
		return "", fmt.Errorf("link %d (%s, %s) here is not the peer of eth0 (%d) in %s", peer.Attrs().Index, peer.Attrs().Name, peer.Type(), eth0.Attrs().Index, nsPath)
	}
	return peer.Attrs().Name, nil
}

// cleanup removes everything the daemon made; errors fail t but do not
// stop the cleanup.
func (d *Daemon) cleanup(t testing.TB) {
	if t.Failed() {
		t.Log(d.logTail(60))
	}
	if cmd, _ := d.running(); cmd != nil {
		if out, err := d.TryDocker("ps", "-aq", "--no-trunc"); err != nil {
			t.Errorf("dockertest: cleanup: %v", err)
		} else if ids := strings.Fields(out); len(ids) > 0 {
			if _, err := d.TryDocker(append([]string{"rm", "-f"}, ids...)...); err != nil {
				t.Errorf("dockertest: cleanup: %v", err)
			}
		}
		if err := d.stop(); err != nil {
			t.Errorf("dockertest: cleanup: %v", err)
		}
	}
	ids := d.containerIDs()
	if err := d.killLeftovers(ids); err != nil {
		t.Errorf("dockertest: cleanup: %v", err)
	}
	if d.stopReaper != nil {
		close(d.stopReaper)
		<-d.reaperDone
		reapShims()
	}
	if err := fixturesys.UnmountUnder(d.ExecRoot, d.DataRoot); err != nil {
		t.Errorf("dockertest: cleanup: %v", err)
	}
	if err := d.deleteLinks(); err != nil {
		t.Errorf("dockertest: cleanup: %v", err)
	}
	if err := removeContainerCgroups(ids); err != nil {
		t.Errorf("dockertest: cleanup: %v", err)
	}
	if err := os.RemoveAll(d.base); err != nil {
		t.Errorf("dockertest: cleanup: %v", err)
	}
	if err := d.removeRuntimeDirs(); err != nil {
		t.Errorf("dockertest: cleanup: %v", err)
	}
}

// removeRuntimeDirs removes the sockets that killed shims left in
// /run/containerd/s, then those of runtimeDirs that did not exist before
// Start, if empty.
func (d *Daemon) removeRuntimeDirs() error {
	var errs []error
	entries, _ := os.ReadDir("/run/containerd/s")
	for _, e := range entries {
		path := filepath.Join("/run/containerd/s", e.Name())
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			// A live shim, not this daemon's.
			conn.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for _, dir := range d.runDirs {
		if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT && err != unix.ENOTEMPTY {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// containerIDs returns the IDs of every container the daemon knows or was
// asked to run, read from its data root so that it works while it is down.
func (d *Daemon) containerIDs() []string {
	d.mu.Lock()
	set := maps.Clone(d.ids)
	d.mu.Unlock()
	entries, _ := os.ReadDir(filepath.Join(d.DataRoot, "containers"))
	for _, e := range entries {
		if fullID.MatchString(e.Name()) {
			set[e.Name()] = true
		}
	}
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// killLeftovers kills what a crash left running: the daemon's containerd,
// its shims and the processes of its containers. All of them are known by
// a mark of this daemon (its exec root in their command line, its
// container IDs in their cgroup), never by a name alone, and all of them
// are in the test binary's PID namespace.
func (d *Daemon) killLeftovers(ids []string) error {
	var victims []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == os.Getpid() {
			continue
		}
		// The containerd or a shim of this daemon: its socket, in its
		// command line, is under the exec root. Other commands may name
		// that socket too (an exporter under test): the name must match
		// as well.
		if st, err := fixturesys.ReadStat(pid); err == nil && (st.Comm == "containerd" || st.Comm == "containerd-shim") &&
			fixturesys.CmdlineContains(pid, d.ExecRoot+"/containerd/") {
			victims = append(victims, pid)
			continue
		}
		if inContainerCgroup(pid, ids) {
			victims = append(victims, pid)
		}
	}
	victims = slices.DeleteFunc(victims, func(pid int) bool { return pid <= 1 || pid == os.Getpid() })
	return fixturesys.KillAll(victims)
}

// inContainerCgroup reports whether pid is in the cgroup /docker/<id> of a
// hierarchy, for one of ids.
func inContainerCgroup(pid int, ids []string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, id := range ids {
			if parts[2] == "/"+cgroupParent+"/"+id {
				return true
			}
		}
	}
	return false
}

// cgroupProcs returns the processes in the pids cgroup of pid (all the
// processes of a container, whose init pid is).
func cgroupProcs(pid int) ([]int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !slices.Contains(strings.Split(parts[1], ","), "pids") {
			continue
		}
		procsFile := filepath.Join(cgroupMountDir, parts[1], parts[2], "cgroup.procs")
		b, err := os.ReadFile(procsFile)
		if err != nil {
			return nil, err
		}
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
		return pids, nil
	}
	return []int{pid}, nil
}

// readPIDFile returns the PID in file, or 0.
func readPIDFile(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// stopProcess sends SIGTERM to pid and, if it has not exited within
// timeout, SIGKILL; it returns once pid is gone.
func stopProcess(pid int, timeout time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if err == syscall.ESRCH {
			return nil
		}
		return fmt.Errorf("stop %d: %w", pid, err)
	}
	if fixturesys.WaitGone(pid, timeout) == nil {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	if err := fixturesys.WaitGone(pid, 10*time.Second); err != nil {
		return err
	}
	return fmt.Errorf("%d did not exit within %v of SIGTERM: killed", pid, timeout)
}

// mountPoints returns the mount points of this mount namespace in the order
// of /proc/self/mountinfo.
func mountPoints() ([]string, error) {
	mounts, err := fixturesys.ReadMountinfo()
	if err != nil {
		return nil, err
	}
	points := make([]string, len(mounts))
	for i, m := range mounts {
		points[i] = m.Point
	}
	return points, nil
}

// deleteLinks deletes the bridges Docker made since Start (docker0 and
// br-<network>) and the veths still on them, which a crash leaves.
func (d *Daemon) deleteLinks() error {
	var errs []error
	for name := range fixturesys.LinkNames() {
		if d.bridges[name] || (name != "docker0" && !strings.HasPrefix(name, "br-")) {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/class/net", name, "bridge")); err != nil {
			continue
		}
		ports, _ := os.ReadDir(filepath.Join("/sys/class/net", name, "brif"))
		for _, p := range ports {
			errs = append(errs, fixturesys.DeleteLink(p.Name()))
		}
		errs = append(errs, fixturesys.DeleteLink(name))
	}
	return errors.Join(errs...)
}

// removeContainerCgroups removes the cgroup /docker/<id> of each container
// in every hierarchy mounted under /sys/fs/cgroup (unified included), then /docker if that
// leaves it empty: the hierarchies are the machine's, and killed containers
// leave their cgroups behind.
func removeContainerCgroups(ids []string) error {
	dirs, err := os.ReadDir(cgroupMountDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range dirs {
		parent := filepath.Join(cgroupMountDir, e.Name(), cgroupParent)
		if !fixturesys.IsCgroupFS(filepath.Join(cgroupMountDir, e.Name())) {
			continue
		}
		for _, id := range ids {
			if err := unix.Rmdir(filepath.Join(parent, id)); err != nil && err != unix.ENOENT {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", filepath.Join(parent, id), err))
			}
		}
		// Shared with other test binaries and with a Docker running on
		// the machine: whoever leaves it empty removes it.
		if err := unix.Rmdir(parent); err != nil && err != unix.ENOENT && err != unix.EBUSY {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", parent, err))
		}
	}
	return errors.Join(errs...)
}
