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
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

	cniBinDir   = "/usr/lib/cni"
	cniStateDir = "/var/lib/cni"
	// podCgroupBase is the kubelet's cgroup of BestEffort pods with the
	// cgroupfs driver; each pod gets pod<UID> below it.
	podCgroupBase = "/kubepods/besteffort"
)

// runtimeDirs are the directories that containerd and its shims create on
// /run outside their state directory, children first: the shims' sockets
// go to the hard-coded /run/containerd/s whatever the state directory is.
var runtimeDirs = []string{"/run/containerd/s", "/run/containerd"}

// logNoise marks the lines of containerd's log that a log tail leaves
// out: plugin loading.
var logNoise = []string{`msg="loading plugin`}

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
	// Subnet is the pod network's host-local range: [Subnet] unless
	// [Options] said otherwise.
	Subnet string
	// SandboxImage is the tag of the pause image, the CRI sandbox_image.
	SandboxImage string

	base       string // holds Socket, State and the runc root
	configFile string
	containerd string
	ctr        string
	env        []string
	image      []byte // the pause image, a docker-archive tar
	proc       *fixturesys.Daemon
	reaper     *fixturesys.Reaper

	mu       sync.Mutex
	conn     *grpc.ClientConn
	client   runtimeapi.RuntimeServiceClient
	uids     map[string]bool // pod UIDs whose cgroups to remove
	links    map[string]bool // interfaces that existed before Start
	netnsWas map[string]bool // entries of NetnsDir before Start
	runDirs  []string        // of runtimeDirs, those missing before Start
	undo     []func() error  // mounts to undo at the end, in order
}

// slot holds the running Runtime of this test binary.
var slot = fixturesys.NewSlot("critest")

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
	return StartWith(t, Options{})
}

// Options are what a harness built on this one (internal/kubelettest)
// adds to [Start].
type Options struct {
	// PrivateDirs are more directories to hide behind a private tmpfs
	// before containerd starts, as /var/lib/cni is (see
	// [fixturesys.PrivateDirs]: one missing from the machine must be in
	// /var/lib).
	PrivateDirs []string
	// Socket, when set, is containerd's socket instead of one in its
	// base directory: /run/containerd/containerd.sock is where the
	// kubelet and the exporter look on a node. It must be on the private
	// /run.
	Socket string
	// Subnet, when set, is the pod network's host-local range instead
	// of [Subnet]: a small one runs out of addresses.
	Subnet string
	// PortMap chains the portmap plugin after the bridge, with the
	// portMappings capability: a pod's hostPorts become iptables DNAT
	// chains in the private network namespace (containerd passes them
	// from the CRI sandbox config).
	PortMap bool
	// LegacyIptables makes iptables iptables-legacy in the test's mount
	// namespace, where the plugins run, as on a node whose kube-proxy
	// runs in iptables mode: Debian's iptables is the alternative
	// iptables-nft, a link to xtables-nft-multi, which
	// xtables-legacy-multi is bind-mounted over (both pick their
	// command by argv[0]). The cleanup unmounts it.
	LegacyIptables bool
}

// StartWith is [Start] with opts.
func StartWith(t testing.TB, opts Options) *Runtime {
	t.Helper()
	netnstest.Require(t)
	r := &Runtime{uids: map[string]bool{}, Subnet: Subnet}
	if opts.Subnet != "" {
		r.Subnet = opts.Subnet
	}
	bins := fixturesys.Binaries(t, "critest", "containerd, runc, containernetworking-plugins",
		"containerd", "ctr", "containerd-shim-runc-v2", "runc", "ip",
		filepath.Join(cniBinDir, "bridge"), filepath.Join(cniBinDir, "host-local"), filepath.Join(cniBinDir, "loopback"))
	r.containerd, r.ctr = bins[0], bins[1]
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
	r.base = slot.Take(t, "Runtime")
	r.Socket = r.base + "/containerd.sock"
	if opts.Socket != "" {
		if !strings.HasPrefix(opts.Socket, "/run/") {
			t.Fatalf("critest: socket %s is not on the private /run", opts.Socket)
		}
		r.Socket = opts.Socket
	}
	r.Endpoint = "unix://" + r.Socket
	r.State = r.base + "/state"
	r.Root = filepath.Join(tmp, "root")
	r.CNIConfDir = filepath.Join(tmp, "net.d")
	r.configFile = filepath.Join(tmp, "config.toml")
	r.env = fixturesys.Env("CONTAINERD_")
	r.links = fixturesys.LinkNames()
	r.netnsWas = dirNames(NetnsDir)
	r.runDirs = fixturesys.MissingDirs(runtimeDirs...)
	// A shim daemonizes; a pause process whose shim was killed is
	// reparented too: the test binary is their parent.
	r.reaper = fixturesys.StartReaper("containerd-shim", "pause")
	r.proc = fixturesys.NewDaemon("containerd", filepath.Join(tmp, "containerd.log"), nil)
	t.Cleanup(func() { r.cleanup(t) })

	for _, dir := range []string{r.base, r.Root, r.CNIConfDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.prepareMounts(opts.PrivateDirs, opts.LegacyIptables); err != nil {
		t.Fatalf("critest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(r.CNIConfDir, "10-"+NetworkName+".conflist"), []byte(cniConfig(r.Subnet, opts.PortMap)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.configFile, []byte(r.config()), 0o600); err != nil {
		t.Fatal(err)
	}
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
// cni0 with host-local addresses from subnet, as a plain kubeadm cluster
// with the reference plugins has it, and portmap after it if asked. No
// masquerading: nothing leaves the namespace.
func cniConfig(subnet string, portMap bool) string {
	portmap := ""
	if portMap {
		portmap = `,
    {
      "type": "portmap",
      "capabilities": {"portMappings": true},
      "snat": false
    }`
	}
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
    }%s
  ]
}
`, NetworkName, Bridge, subnet, portmap)
}

// start starts containerd and waits until CRI reports ready.
func (r *Runtime) start(t testing.TB) {
	t.Helper()
	// A kill -9 leaves the socket behind.
	for _, f := range []string{r.Socket, r.Socket + ".ttrpc"} {
		if err := fixturesys.RemoveIfExists(f); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(r.containerd, "--config", r.configFile)
	cmd.Env = r.env
	if err := r.proc.Start(cmd); err != nil {
		t.Fatalf("critest: %v", err)
	}
	conn, client, err := dial(r.Endpoint)
	if err != nil {
		_ = r.proc.Kill()
		t.Fatalf("critest: %v", err)
	}
	r.mu.Lock()
	if r.conn != nil {
		r.conn.Close()
	}
	r.conn, r.client = conn, client
	r.mu.Unlock()
	if err := r.proc.WaitReady(readyTimeout, func() error { return ready(client) }, logNoise...); err != nil {
		t.Fatalf("critest: %v", err)
	}
}

// ready asks CRI for its status and returns nil once the runtime and the
// network are ready (the CNI configuration is loaded).
func ready(client runtimeapi.RuntimeServiceClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := client.Status(ctx, &runtimeapi.StatusRequest{})
	if status.Code(err) == codes.Unimplemented {
		// containerd serves, without the CRI plugin: it failed to load,
		// and will not on its own.
		return fmt.Errorf("runs without its CRI plugin: %w (%w)", err, fixturesys.ErrNeverReady)
	}
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

// PID returns the PID of the running containerd, or 0 while it is down.
func (r *Runtime) PID() int {
	pid, _ := r.proc.Running()
	return pid
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
	if err := r.proc.Stop(stopTimeout); err != nil {
		return fmt.Errorf("%w\n%s", err, r.proc.LogTail(40, logNoise...))
	}
	return nil
}

// Restart stops containerd cleanly if it runs (as [Runtime.Stop]), then
// starts it again with the same root, state and configuration and waits
// until CRI reports ready. CRI recovers its sandboxes from containerd's
// records: one whose task is gone (see [Runtime.KillSandbox]) is listed
// NOTREADY, one whose record is gone (see [Runtime.RemoveSandboxRecord])
// is forgotten.
func (r *Runtime) Restart(t testing.TB) {
	t.Helper()
	if r.PID() != 0 {
		r.Stop(t)
	}
	r.start(t)
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
	return fixturesys.Output(cmd, nil)
}

// importImage imports the pause image (see [Runtime.ImportImage]).
func (r *Runtime) importImage(t testing.TB) {
	t.Helper()
	r.ImportImage(t, r.image, r.SandboxImage)
}

// ImportImage imports archive, a docker-archive tar, into the CRI
// plugin's namespace (`ctr images import`, which unpacks it for the
// overlayfs snapshotter; no registry is involved), and waits until CRI
// lists it by ref, one of its tags: the kubelet or a RunPodSandbox asking
// for it earlier would try to pull it. A tag without a registry is
// docker.io/library/NAME, as the kubelet and CRI name it.
func (r *Runtime) ImportImage(t testing.TB, archive []byte, ref string) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(r.configFile), "image-*.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(archive); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r.Ctr(t, "images", "import", f.Name())
	r.mu.Lock()
	images := runtimeapi.NewImageServiceClient(r.conn)
	r.mu.Unlock()
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		cancel()
		if err == nil && resp.GetImage() != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("critest: CRI does not list %s %v after import: %v", ref, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanup removes everything the runtime made; errors fail t but do not
// stop the cleanup.
func (r *Runtime) cleanup(t testing.TB) {
	if t.Failed() {
		t.Log(r.proc.LogTail(60, logNoise...))
	}
	fixturesys.Cleanup(t, "critest",
		func() error {
			if r.PID() == 0 {
				return nil
			}
			return errors.Join(r.removeAllPods(), r.stop())
		},
		func() error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.conn != nil {
				r.conn.Close()
				r.conn, r.client = nil, nil
			}
			return nil
		},
		r.killLeftovers,
		func() error { r.reaper.Stop(); return nil },
		r.removeNetns,
		func() error { return fixturesys.UnmountUnder(r.Root, r.base) },
		func() error {
			return fixturesys.DeleteBridges(r.links, func(name string) bool { return name == Bridge })
		},
		r.removePodCgroups,
		func() error { return os.RemoveAll(r.base) },
		func() error {
			// A socket outside the base directory (Options.Socket),
			// left by a kill.
			return errors.Join(fixturesys.RemoveIfExists(r.Socket), fixturesys.RemoveIfExists(r.Socket+".ttrpc"))
		},
		func() error { return fixturesys.RemoveDeadSockets("/run/containerd/s") },
		func() error { return fixturesys.RemoveEmptyDirs(r.runDirs) },
		func() error { err := fixturesys.Undo(r.undo); r.undo = nil; return err },
	)
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
// containerd and shims (its socket in their command line) and the
// processes of its pods (in the cgroup of a pod UID of its own).
func (r *Runtime) killLeftovers() error {
	return fixturesys.KillLeftovers([]string{"containerd", "containerd-shim"}, r.Socket, r.inPodCgroup)
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
