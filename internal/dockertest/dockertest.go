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

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

const (
	// readyTimeout bounds the wait for /_ping; dockerd answers in about
	// 2 s here.
	readyTimeout = 60 * time.Second
	// stopTimeout bounds a clean shutdown. The image's stop signal is
	// SIGKILL, so stopping containers costs nothing.
	stopTimeout = 30 * time.Second
	// cliTimeout bounds one docker CLI command.
	cliTimeout = 2 * time.Minute

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

// logNoise marks the lines of dockerd's log (which holds containerd's)
// that a log tail leaves out: plugin loading and gRPC connection chatter.
var logNoise = []string{"module=grpc", `msg="loading plugin`}

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

	base       string // holds Socket, ExecRoot and the pid file
	pidFile    string
	configFile string
	cliConfig  string
	dockerd    string
	cli        string
	env        []string
	proc       *fixturesys.Daemon
	reaper     *fixturesys.Reaper

	mu      sync.Mutex
	image   string
	ids     map[string]bool // containers made through Run
	bridges map[string]bool // interfaces that existed before Start
	runDirs []string        // of runtimeDirs, those missing before Start
	// removeExecRoot: the exec root is outside base, removed by the cleanup.
	removeExecRoot bool
}

// slot holds the running Daemon of this test binary.
var slot = fixturesys.NewSlot("dockertest")

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
	// DefaultExecRoot runs dockerd with Docker's default exec root,
	// /run/docker (on the private /run), as production hosts do: it pins
	// its namespaces in /run/docker/netns. The cleanup removes it.
	DefaultExecRoot bool
}

// StartWith is [Start] with options.
func StartWith(t testing.TB, opts Options) *Daemon {
	t.Helper()
	netnstest.Require(t)
	d := &Daemon{ids: map[string]bool{}}
	bins := fixturesys.Binaries(t, "dockertest", "docker.io, containerd, runc, busybox-static",
		"dockerd", "docker", "containerd", "containerd-shim-runc-v2", "runc", "busybox", "ip")
	d.dockerd, d.cli = bins[0], bins[1]
	// The Debian client matches the Debian daemon; a newer client found
	// first in PATH (/usr/local/bin) negotiates down, but one less moving
	// part is better.
	if fixturesys.IsExecutable("/usr/bin/docker") {
		d.cli = "/usr/bin/docker"
	}
	// Before the cleanup below is registered, so that it runs after it,
	// once nothing is mounted in it any more.
	tmp := t.TempDir()
	d.base = slot.Take(t, "Daemon")
	d.Socket = d.base + "/docker.sock"
	d.Host = "unix://" + d.Socket
	d.ExecRoot = d.base + "/exec"
	if opts.DefaultExecRoot {
		d.ExecRoot = "/run/docker"
		d.removeExecRoot = true
	}
	d.pidFile = d.base + "/dockerd.pid"
	d.DataRoot = filepath.Join(tmp, "data")
	d.configFile = filepath.Join(tmp, "daemon.json")
	d.cliConfig = filepath.Join(tmp, "cli")
	d.env = fixturesys.Env("DOCKER_")
	d.bridges = fixturesys.LinkNames()
	d.runDirs = fixturesys.MissingDirs(runtimeDirs...)
	// The shims daemonize: the test binary is their parent.
	d.reaper = fixturesys.StartReaper("containerd-shim")
	d.proc = fixturesys.NewDaemon("dockerd", filepath.Join(tmp, "dockerd.log"), nil)
	// The machine's cgroup hierarchies runc uses, the unified one of a
	// hybrid host included (runc puts containers in /docker/<id> there
	// too), mounted again under the fresh sysfs; undone at the end.
	var cgroups []func() error
	t.Cleanup(func() {
		d.cleanup(t)
		fixturesys.Cleanup(t, "dockertest", func() error { return fixturesys.Undo(cgroups) })
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
	d.start(t)
	return d
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
		if err := fixturesys.RemoveIfExists(f); err != nil {
			t.Fatal(err)
		}
	}
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
	if err := d.proc.Start(cmd); err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	client := d.httpClient()
	if err := d.proc.WaitReady(readyTimeout, func() error { return d.ping(client) }, logNoise...); err != nil {
		t.Fatalf("dockertest: %v", err)
	}
}

// PID returns the PID of the running dockerd, or 0 while it is down.
func (d *Daemon) PID() int {
	pid, _ := d.proc.Running()
	return pid
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
	return fixturesys.Output(cmd, nil)
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
	pid := d.PID()
	containerd := readPIDFile(d.containerdPIDFile())
	var errs []error
	if err := d.proc.Stop(stopTimeout); err != nil {
		errs = append(errs, fmt.Errorf("%w\n%s", err, d.proc.LogTail(40, logNoise...)))
	}
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
	if pid := d.PID(); pid != 0 {
		t.Fatalf("dockertest: restart dockerd: %d still runs (Stop or Crash it first)", pid)
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
	if d.PID() == 0 {
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

	if err := d.proc.Kill(); err != nil {
		t.Errorf("dockertest: crash: %v", err)
	}
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
	if pid := d.PID(); pid != 0 {
		t.Fatalf("dockertest: lose network state: dockerd %d still runs (Stop or Crash it first)", pid)
	}
	if err := os.Remove(filepath.Join(d.DataRoot, "network", "files", "local-kv.db")); err != nil {
		t.Fatalf("dockertest: lose network state: %v", err)
	}
}

// cleanup removes everything the daemon made; errors fail t but do not
// stop the cleanup.
func (d *Daemon) cleanup(t testing.TB) {
	if t.Failed() {
		t.Log(d.proc.LogTail(60, logNoise...))
	}
	var ids []string
	fixturesys.Cleanup(t, "dockertest",
		d.removeContainers,
		func() error { ids = d.containerIDs(); return d.killLeftovers(ids) },
		func() error { d.reaper.Stop(); return nil },
		func() error { return fixturesys.UnmountUnder(d.ExecRoot, d.DataRoot) },
		func() error {
			return fixturesys.DeleteBridges(d.bridges, func(name string) bool { return name == "docker0" || strings.HasPrefix(name, "br-") })
		},
		func() error { return removeContainerCgroups(ids) },
		func() error { return os.RemoveAll(d.base) },
		func() error {
			if d.removeExecRoot {
				return os.RemoveAll(d.ExecRoot)
			}
			return nil
		},
		func() error { return fixturesys.RemoveDeadSockets("/run/containerd/s") },
		func() error { return fixturesys.RemoveEmptyDirs(d.runDirs) },
	)
}

// removeContainers removes every container (docker rm -f) and stops
// dockerd, if it runs.
func (d *Daemon) removeContainers() error {
	if d.PID() == 0 {
		return nil
	}
	var errs []error
	if out, err := d.TryDocker("ps", "-aq", "--no-trunc"); err != nil {
		errs = append(errs, err)
	} else if ids := strings.Fields(out); len(ids) > 0 {
		if _, err := d.TryDocker(append([]string{"rm", "-f"}, ids...)...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, d.stop())...)
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

// killLeftovers kills what a crash left running: the daemon's containerd
// and shims (its exec root in their command line) and the processes of its
// containers (in /docker/<id> for one of ids).
func (d *Daemon) killLeftovers(ids []string) error {
	return fixturesys.KillLeftovers([]string{"containerd", "containerd-shim"}, d.ExecRoot+"/containerd/", func(cgroup string) bool {
		return slices.ContainsFunc(ids, func(id string) bool { return cgroup == "/"+cgroupParent+"/"+id })
	})
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
		procsFile := filepath.Join(fixturesys.CgroupMountDir, parts[1], parts[2], "cgroup.procs")
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

// removeContainerCgroups removes the cgroup /docker/<id> of each container
// in every hierarchy mounted under /sys/fs/cgroup (unified included), then /docker if that
// leaves it empty: the hierarchies are the machine's, and killed containers
// leave their cgroups behind.
func removeContainerCgroups(ids []string) error {
	dirs, err := os.ReadDir(fixturesys.CgroupMountDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range dirs {
		parent := filepath.Join(fixturesys.CgroupMountDir, e.Name(), cgroupParent)
		if !fixturesys.IsCgroupFS(filepath.Join(fixturesys.CgroupMountDir, e.Name())) {
			continue
		}
		for _, id := range ids {
			errs = append(errs, fixturesys.RemoveCgroup(filepath.Join(parent, id)))
		}
		errs = append(errs, fixturesys.RemoveSharedCgroup(parent))
	}
	return errors.Join(errs...)
}
