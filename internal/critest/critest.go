// Package critest gives tests a real containerd (Debian containerd 1.6, its
// CRI plugin, runc) inside the private network, mount and PID namespaces
// made by [netnstest.Main], and drives Kubernetes pod sandboxes through the
// CRI API over gRPC (k8s.io/cri-api), as the kubelet does, so that tests can
// make real Kubernetes leftovers: a pod's veth on cni0 whose peer is in
// /var/run/netns/cni-<uuid>, a pod the runtime forgot while its namespace
// stays mounted, a namespace held only by a stray process.
//
// [Start] refuses to run outside those namespaces (it calls
// [netnstest.Require]): this package must never create, change or delete an
// interface, a mount or a process in the machine's own namespaces, and it
// never pulls an image (the sandbox image is a pause binary it builds and
// imports itself). containerd keeps its root under the test's temporary
// directory and its state, socket and runc root on the private /run; the CNI
// plugins (Debian containernetworking-plugins, /usr/lib/cni) keep their
// leases and libcni cache on a private tmpfs at /var/lib/cni.
//
// The one thing containerd shares with the machine is the set of cgroup
// hierarchies (v1 controllers, name=systemd and, on a hybrid host, the
// unified one), which are kernel-wide: runc creates
// /kubepods/besteffort/pod<UID>/<sandbox id> in each of them, as under a
// kubelet with the cgroupfs driver. The cleanup of [Start] removes the
// cgroups of every pod it ran (runc leaves pod<UID>, and killed sandboxes
// their own), then /kubepods/besteffort and /kubepods once empty. A machine
// that is itself a Kubernetes node is no place for these tests.
//
// Only one Runtime runs at a time in a test binary: the CNI bridge cni0 and
// the host-local leases are the namespace's, shared by all its tests. Tests
// that call [Start] must not run in parallel with each other.
package critest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

const (
	// envRequire is netnstest's switch that turns skips into failures
	// (CI): a missing containerd installation must not pass as a skip.
	envRequire = "VETH_EXPORTER_REQUIRE_PRIVILEGED"

	// readyTimeout bounds the wait for the CRI plugin to report the
	// runtime and the network ready; containerd takes about a second.
	readyTimeout = 60 * time.Second
	// stopTimeout bounds a clean shutdown of containerd.
	stopTimeout = 30 * time.Second
	// callTimeout bounds one CRI call or ctr command.
	callTimeout = 2 * time.Minute

	// Bridge is the bridge the CNI configuration attaches pods to.
	Bridge = "cni0"
	// NetworkName is the name of the CNI network: libcni caches its
	// attachments as /var/lib/cni/results/podnet-<sandbox id>-eth0.
	NetworkName = "podnet"
	// Subnet is the host-local range of pod addresses.
	Subnet = "10.88.0.0/16"
	// NetnsDir is where containerd mounts pod network namespaces
	// (cni-<uuid>): /var/run/netns, through the /var/run symlink.
	NetnsDir = "/run/netns"
	// CNICacheDir is where libcni, run by containerd, caches its
	// results; a private tmpfs (see [Start]).
	CNICacheDir = "/var/lib/cni/results"
	// K8sNamespace is the containerd namespace of the CRI plugin.
	K8sNamespace = "k8s.io"

	cniBinDir      = "/usr/lib/cni"
	cniStateDir    = "/var/lib/cni"
	cgroupMountDir = "/sys/fs/cgroup"
	// podCgroupBase is the kubelet's cgroup of BestEffort pods with the
	// cgroupfs driver; each pod gets pod<UID> below it.
	podCgroupBase = "/kubepods/besteffort"
)

// runtimeDirs are the directories that containerd and its shims create on
// /run outside their state directory, children first: the shims' sockets
// go to the hard-coded /run/containerd/s whatever the state directory is.
var runtimeDirs = []string{"/run/containerd/s", "/run/containerd"}

// Runtime is a containerd with its CRI plugin, started by a test. Its
// exported fields are read-only.
type Runtime struct {
	// Socket is containerd's gRPC socket, such as
	// /run/critest1/containerd.sock; the CRI services answer there.
	Socket string
	// Endpoint is "unix://" + Socket, for an exporter's --cri.endpoint.
	Endpoint string
	// Root is containerd's root directory, below t.TempDir().
	Root string
	// State is containerd's state directory, such as /run/critest1/state.
	State string
	// CNIConfDir holds the CNI configuration: one conflist, network
	// [NetworkName], bridge [Bridge], host-local IPAM.
	CNIConfDir string
	// SandboxImage is the tag of the pause image, the CRI sandbox_image.
	SandboxImage string

	base       string // holds Socket, State and the runc root
	configFile string
	logPath    string
	containerd string
	ctr        string
	env        []string
	image      []byte // the pause image, a docker-archive tar

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed once cmd is reaped
	conn     *grpc.ClientConn
	client   runtimeapi.RuntimeServiceClient
	uids     map[string]bool // pod UIDs whose cgroups to remove
	links    map[string]bool // interfaces that existed before Start
	netnsWas map[string]bool // entries of NetnsDir before Start
	runDirs  []string        // of runtimeDirs, those missing before Start
	undo     []func() error  // mounts to undo at the end, in order
	stopReap chan struct{}
	reapDone chan struct{}
}

// active is the running Runtime of this test binary, if any.
var active struct {
	sync.Mutex
	r   *Runtime
	seq int
}

// Start starts containerd with its CRI plugin in the private namespaces,
// imports the pause image and waits until CRI reports the runtime and the
// network ready. Before containerd starts, it
//   - makes the cgroup hierarchies visible to runc, which the fresh sysfs
//     of [netnstest.Main] hides: a tmpfs on /sys/fs/cgroup (reused if one
//     is there) and, mounted again, each hierarchy of the machine (every v1
//     controller, name=systemd, and unified on a hybrid host), so that a
//     pause process's /proc/PID/cgroup reads as on a kubelet's node:
//     "8:pids:/kubepods/besteffort/pod<UID>/<sandbox id>";
//   - mounts a tmpfs on /var/lib/cni (over an overlay of /var/lib when the
//     machine has no /var/lib/cni, so that nothing is created on its disk)
//     for the host-local leases and the libcni cache;
//   - makes /run/netns a shared mount point: otherwise a later `ip netns
//     add` bind-mounts /run/netns over itself, hides containerd's cni-*
//     mounts, and StopPodSandbox fails with "device or resource busy".
//
// A cleanup stops and removes every pod (StopPodSandbox, RemovePodSandbox),
// stops containerd (SIGTERM, then SIGKILL), kills by PID every shim and
// pause process left by [Runtime.KillRuntime] or [Runtime.KillSandbox],
// unmounts what containerd left (cni-* namespaces of lost pods, sandbox
// root file systems and shm), deletes cni0 and the veths left on it,
// removes the pods' cgroups in every hierarchy and undoes the mounts above.
// If the test failed, it logs the tail of containerd's log.
//
// Start skips the test outside the private namespaces and when containerd,
// runc, ctr or the CNI plugins are not installed (fails it instead with
// VETH_EXPORTER_REQUIRE_PRIVILEGED=1), and fails it if another Runtime of
// the test binary is still running.
func Start(t testing.TB) *Runtime {
	t.Helper()
	netnstest.Require(t)
	r := &Runtime{uids: map[string]bool{}}
	r.containerd, r.ctr = findBinaries(t)
	// The pause image is built before anything is started or mounted:
	// a cold build takes seconds, and a failure leaves nothing to undo.
	tag, image, err := pauseImage()
	if err != nil {
		t.Fatalf("critest: %v", err)
	}
	r.SandboxImage, r.image = tag, image
	// Before the cleanup below is registered, so that it runs after it,
	// once nothing is mounted in it any more.
	tmp := t.TempDir()

	active.Lock()
	if active.r != nil {
		active.Unlock()
		t.Fatal("critest: another Runtime is still running: tests that call Start must not run in parallel")
	}
	active.r = r
	active.seq++
	seq := active.seq
	active.Unlock()

	r.base = fmt.Sprintf("/run/critest%d", seq)
	r.Socket = r.base + "/containerd.sock"
	r.Endpoint = "unix://" + r.Socket
	r.State = r.base + "/state"
	r.Root = filepath.Join(tmp, "root")
	r.CNIConfDir = filepath.Join(tmp, "net.d")
	r.configFile = filepath.Join(tmp, "config.toml")
	r.logPath = filepath.Join(tmp, "containerd.log")
	r.env = runtimeEnv()
	r.links = fixturesys.LinkNames()
	r.netnsWas = dirNames(NetnsDir)
	for _, dir := range runtimeDirs {
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			r.runDirs = append(r.runDirs, dir)
		}
	}
	t.Cleanup(func() {
		r.cleanup(t)
		active.Lock()
		active.r = nil
		active.Unlock()
	})

	for _, dir := range []string{r.base, r.Root, r.CNIConfDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.prepareMounts(); err != nil {
		t.Fatalf("critest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(r.CNIConfDir, "10-"+NetworkName+".conflist"), []byte(cniConfig()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.configFile, []byte(r.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	r.stopReap, r.reapDone = make(chan struct{}), make(chan struct{})
	go r.reap()
	r.start(t)
	r.importImage(t)
	return r
}

// config returns containerd's configuration file.
func (r *Runtime) config() string {
	// restrict_oom_score_adj: some machines (this VM kind among them)
	// drop CAP_SYS_RESOURCE even for root, and runc then fails with
	// "can't get final child's PID from pipe: EOF" when asked to lower a
	// score. disable_apparmor: profiles are loaded into the machine's
	// kernel, which a test must not change. The snapshotters left out
	// are not used and would only probe the machine. (The v1 runtime
	// stays: containerd 1.6's tasks service, and with it CRI, needs it.)
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, r.Root, r.State, r.Socket, filepath.Join(r.Root, "opt"), r.SandboxImage,
		filepath.Join(r.base, "runc"), cniBinDir, r.CNIConfDir)
}

// cniConfig returns the conflist of the pod network: the bridge plugin on
// cni0 with host-local addresses, as a plain kubeadm cluster with the
// reference plugins has it. No masquerading: nothing leaves the namespace.
func cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, NetworkName, Bridge, Subnet)
}

// findBinaries returns the paths of containerd and ctr, skipping t if
// containerd, its shim, runc, ctr or the CNI plugins are not installed.
func findBinaries(t testing.TB) (containerd, ctr string) {
	t.Helper()
	missing := func(what string) {
		t.Helper()
		msg := fmt.Sprintf("critest: %s not found (Debian packages containerd, runc, containernetworking-plugins)", what)
		if os.Getenv(envRequire) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	path := pathWithSbin(os.Getenv("PATH"))
	look := func(name string) string {
		for _, dir := range filepath.SplitList(path) {
			p := filepath.Join(dir, name)
			if isExecutable(p) {
				return p
			}
		}
		return ""
	}
	for _, name := range []string{"containerd-shim-runc-v2", "runc", "ip", "nsenter"} {
		if look(name) == "" {
			missing(name)
		}
	}
	for _, name := range []string{"bridge", "host-local", "loopback"} {
		if !isExecutable(filepath.Join(cniBinDir, name)) {
			missing("CNI plugin " + filepath.Join(cniBinDir, name))
		}
	}
	if containerd = look("containerd"); containerd == "" {
		missing("containerd")
	}
	if ctr = look("ctr"); ctr == "" {
		missing("ctr")
	}
	return containerd, ctr
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// pathWithSbin returns path with the sbin directories appended: containerd
// finds runc and its shim through PATH.
func pathWithSbin(path string) string {
	dirs := filepath.SplitList(path)
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	return strings.Join(dirs, string(filepath.ListSeparator))
}

// runtimeEnv returns this process's environment without the variables that
// would point containerd or ctr elsewhere (CONTAINERD_*, a systemd notify
// socket), with sbin directories in PATH.
func runtimeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "CONTAINERD_") || k == "NOTIFY_SOCKET" || k == "PATH" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+pathWithSbin(os.Getenv("PATH")))
}

// start starts containerd and waits until CRI reports ready.
func (r *Runtime) start(t testing.TB) {
	t.Helper()
	// A kill -9 leaves the socket behind.
	for _, f := range []string{r.Socket, r.Socket + ".ttrpc"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	logFile, err := os.OpenFile(r.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== critest: starting containerd at %s ===\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(r.containerd, "--config", r.configFile)
	cmd.Env = r.env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("critest: start containerd: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	conn, client, err := dial(r.Endpoint)
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("critest: %v", err)
	}
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	if r.conn != nil {
		r.conn.Close()
	}
	r.conn, r.client = conn, client
	r.mu.Unlock()

	deadline := time.Now().Add(readyTimeout)
	for {
		err := r.ready(client)
		if err == nil {
			return
		}
		if status.Code(err) == codes.Unimplemented {
			// containerd serves, without the CRI plugin: it failed to
			// load, and will not on its own.
			t.Fatalf("critest: containerd %d runs without its CRI plugin: %v\n%s", cmd.Process.Pid, err, r.logTail(40))
		}
		select {
		case <-exited:
			r.markDown()
			t.Fatalf("critest: containerd exited before CRI was ready (%v)\n%s", cmd.ProcessState, r.logTail(40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("critest: containerd %d: CRI not ready after %v: %v\n%s", cmd.Process.Pid, readyTimeout, err, r.logTail(40))
		}
	}
}

// ready asks CRI for its status and returns nil once the runtime and the
// network are ready (the CNI configuration is loaded).
func (r *Runtime) ready(client runtimeapi.RuntimeServiceClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := client.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return err
	}
	var notReady []string
	for _, c := range resp.GetStatus().GetConditions() {
		if !c.GetStatus() {
			notReady = append(notReady, fmt.Sprintf("%s: %s %s", c.GetType(), c.GetReason(), c.GetMessage()))
		}
	}
	if len(resp.GetStatus().GetConditions()) == 0 {
		return errors.New("CRI status without conditions")
	}
	if len(notReady) > 0 {
		return fmt.Errorf("not ready: %s", strings.Join(notReady, "; "))
	}
	return nil
}

// markDown records that containerd has exited and was reaped.
func (r *Runtime) markDown() {
	r.mu.Lock()
	r.cmd = nil
	r.mu.Unlock()
}

// running returns containerd's command and exit channel, or nil if it is
// down, even if it exited on its own.
func (r *Runtime) running() (*exec.Cmd, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		select {
		case <-r.exited:
			r.cmd = nil
		default:
		}
	}
	return r.cmd, r.exited
}

// PID returns the PID of the running containerd, or 0 while it is down.
func (r *Runtime) PID() int {
	if cmd, _ := r.running(); cmd != nil {
		return cmd.Process.Pid
	}
	return 0
}

// Stop stops containerd cleanly (SIGTERM) and waits for it to exit. As on
// a node, shims and pods keep running without it: CRI is unreachable until
// [Runtime.Restart].
func (r *Runtime) Stop(t testing.TB) {
	t.Helper()
	if err := r.stop(); err != nil {
		t.Fatalf("critest: %v", err)
	}
}

func (r *Runtime) stop() error {
	cmd, exited := r.running()
	if cmd == nil {
		return errors.New("stop containerd: not running")
	}
	pid := cmd.Process.Pid
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop containerd %d: %w", pid, err)
	}
	var err error
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-exited
		err = fmt.Errorf("containerd %d did not stop within %v of SIGTERM: killed\n%s", pid, stopTimeout, r.logTail(40))
	}
	r.markDown()
	return err
}

// Restart stops containerd cleanly if it runs (as [Runtime.Stop]), then
// starts it again with the same root, state and configuration and waits
// until CRI reports ready. CRI recovers its sandboxes from containerd's
// records: one whose task is gone (see [Runtime.KillSandbox]) is listed
// NOTREADY, one whose record is gone (see [Runtime.RemoveSandboxRecord])
// is forgotten.
func (r *Runtime) Restart(t testing.TB) {
	t.Helper()
	if cmd, _ := r.running(); cmd != nil {
		r.Stop(t)
	}
	r.start(t)
}

// logTail returns the last n lines of containerd's log, without the lines
// of plugin loading.
func (r *Runtime) logTail(n int) string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		return fmt.Sprintf("(containerd log: %v)", err)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(line, `msg="loading plugin`) {
			continue
		}
		lines = append(lines, line)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "--- containerd log " + r.logPath + " (last lines) ---\n" + strings.Join(lines, "\n")
}

// Ctr runs `ctr -a SOCKET -n k8s.io args...` against this containerd and
// returns its trimmed standard output, failing t with its standard error
// on error.
func (r *Runtime) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := r.runCtr(args...)
	if err != nil {
		t.Fatalf("critest: %v", err)
	}
	return out
}

func (r *Runtime) runCtr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	argv := append([]string{"-a", r.Socket, "-n", K8sNamespace}, args...)
	cmd := exec.CommandContext(ctx, r.ctr, argv...)
	cmd.Env = r.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("ctr %s: %w\n%s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// importImage imports the pause image into the CRI plugin's namespace and
// unpacks it for the overlayfs snapshotter.
func (r *Runtime) importImage(t testing.TB) {
	t.Helper()
	archive := filepath.Join(filepath.Dir(r.configFile), "pause.tar")
	if err := os.WriteFile(archive, r.image, 0o600); err != nil {
		t.Fatal(err)
	}
	r.Ctr(t, "images", "import", archive)
	// CRI learns of the image from containerd's events: wait until it
	// lists it, or the first RunPodSandbox would try to pull it.
	images := runtimeapi.NewImageServiceClient(r.conn)
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: r.SandboxImage}})
		cancel()
		if err == nil && resp.GetImage() != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("critest: CRI does not list %s %v after import: %v", r.SandboxImage, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reap reaps this process's zombie children that were shims or pause
// processes, until stopReap closes. A shim daemonizes: once containerd is
// gone its parent is PID 1 of the namespace, the test binary, which does
// not reap orphans (see [netnstest.Main]); a pause process whose shim was
// killed is reparented the same way. On a node PID 1 reaps them; here they
// would stay zombies until the test binary exits.
func (r *Runtime) reap() {
	defer close(r.reapDone)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		reapOrphans()
		select {
		case <-r.stopReap:
			return
		case <-tick.C:
		}
	}
}

// reapOrphans reaps the zombie children of this process named
// containerd-shim (the kernel truncates containerd-shim-runc-v2 to 15
// bytes) or pause. Reaping one PID cannot steal the exit status of a child
// that os/exec waits for, and no test starts either through os/exec.
func reapOrphans() {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		st, err := fixturesys.ReadStat(pid)
		if err != nil || st.State != 'Z' || st.PPID != self || (st.Comm != "containerd-shim" && st.Comm != "pause") {
			continue
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}

// cleanup removes everything the runtime made; errors fail t but do not
// stop the cleanup.
func (r *Runtime) cleanup(t testing.TB) {
	if t.Failed() {
		t.Log(r.logTail(60))
	}
	errorf := func(err error) {
		if err != nil {
			t.Errorf("critest: cleanup: %v", err)
		}
	}
	if cmd, _ := r.running(); cmd != nil {
		errorf(r.removeAllPods())
		errorf(r.stop())
	}
	r.mu.Lock()
	if r.conn != nil {
		r.conn.Close()
		r.conn, r.client = nil, nil
	}
	r.mu.Unlock()
	errorf(r.killLeftovers())
	if r.stopReap != nil {
		close(r.stopReap)
		<-r.reapDone
		reapOrphans()
	}
	errorf(r.removeNetns())
	errorf(fixturesys.UnmountUnder(r.Root, r.base))
	errorf(r.deleteLinks())
	errorf(r.removePodCgroups())
	errorf(os.RemoveAll(r.base))
	errorf(r.removeRuntimeDirs())
	for i := len(r.undo) - 1; i >= 0; i-- {
		errorf(r.undo[i]())
	}
	r.undo = nil
}

// removeAllPods stops and removes every sandbox CRI lists, as the kubelet
// does when pods are deleted: CNI DEL runs and the veths go.
func (r *Runtime) removeAllPods() error {
	client := r.cri()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := client.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	var errs []error
	for _, p := range resp.GetItems() {
		if _, err := client.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			errs = append(errs, fmt.Errorf("stop pod sandbox %s: %w", p.GetId(), err))
			continue
		}
		if _, err := client.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			errs = append(errs, fmt.Errorf("remove pod sandbox %s: %w", p.GetId(), err))
		}
	}
	return errors.Join(errs...)
}

// killLeftovers kills what a crash left running: this runtime's
// containerd, its shims and the processes of its pods. All of them are
// known by a mark of this runtime (its socket in their command line, a pod
// UID of its own in their cgroup), never by a name alone, and all of them
// are in the test binary's PID namespace.
func (r *Runtime) killLeftovers() error {
	r.mu.Lock()
	uids := make([]string, 0, len(r.uids))
	for uid := range r.uids {
		uids = append(uids, uid)
	}
	r.mu.Unlock()
	var victims []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		// The containerd or a shim of this runtime: its socket is in
		// their command line. Other commands may name that socket too
		// (an exporter under test): the name must match as well.
		if st, err := fixturesys.ReadStat(pid); err == nil && (st.Comm == "containerd" || st.Comm == "containerd-shim") &&
			fixturesys.CmdlineContains(pid, r.Socket) {
			victims = append(victims, pid)
			continue
		}
		if inPodCgroup(pid, uids) {
			victims = append(victims, pid)
		}
	}
	return fixturesys.KillAll(victims)
}

// removeNetns unmounts and removes the cni-* namespace mounts that
// containerd made and left (those of pods whose record was lost), and any
// other entry of /run/netns that did not exist before Start and is this
// runtime's (cni-*).
func (r *Runtime) removeNetns() error {
	var errs []error
	for name := range dirNames(NetnsDir) {
		if r.netnsWas[name] || !strings.HasPrefix(name, "cni-") {
			continue
		}
		path := filepath.Join(NetnsDir, name)
		if err := fixturesys.UnmountUnder(path); err != nil {
			errs = append(errs, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteLinks deletes cni0, if Start did not find it, and the veths still
// on it, which lost pods leave.
func (r *Runtime) deleteLinks() error {
	if r.links[Bridge] {
		return nil
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", Bridge, "bridge")); err != nil {
		return nil
	}
	var errs []error
	ports, _ := os.ReadDir(filepath.Join("/sys/class/net", Bridge, "brif"))
	for _, p := range ports {
		errs = append(errs, fixturesys.DeleteLink(p.Name()))
	}
	errs = append(errs, fixturesys.DeleteLink(Bridge))
	return errors.Join(errs...)
}

// removeRuntimeDirs removes the sockets that killed shims left in
// /run/containerd/s, then those of runtimeDirs that did not exist before
// Start, if empty.
func (r *Runtime) removeRuntimeDirs() error {
	var errs []error
	entries, _ := os.ReadDir("/run/containerd/s")
	for _, e := range entries {
		path := filepath.Join("/run/containerd/s", e.Name())
		if err := removeDeadSocket(path); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range r.runDirs {
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// readLines returns the lines of a file.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}
