// Package kubelettest gives tests a real Kubernetes node: a standalone
// kubelet (static pods, no API server), built from the k8s.io/kubernetes
// module at the version pinned in kubelettest/kubelet/go.mod, on the
// containerd of internal/critest (Debian's containerd 1.6 with its CRI
// plugin, the CNI bridge and host-local plugins), inside the private
// network, mount and PID namespaces made by [netnstest.Main].
//
// The kubelet touches nothing of the machine:
//   - its cgroups are below a cgroup root of its own, [CgroupRoot], in each
//     hierarchy (the kubelet refuses a missing one; the cleanup removes
//     the tree);
//   - protectKernelDefaults is on: it checks the kernel-wide sysctls it
//     would otherwise write (kernel.panic, vm.overcommit_memory, …), and
//     the values it wants are bind-mounted over those /proc/sys files in
//     the private mount namespace only;
//   - no iptables chains (makeIPTablesUtilChains: false);
//   - its root and volume plugin directories are below t.TempDir(), and
//     /var/log (pod logs), /var/lib/veth_exporter (the exporter pod's state
//     volume) and /etc/cni/net.d (the CNI configuration, critest's) are
//     private mounts;
//   - its address is on host0, an empty bridge of the private network
//     namespace (this kernel has no dummy links), and it serves only on
//     loopback.
//
// Pods are static pods written to its manifest directory; their status
// comes from the kubelet's read-only port (GET /pods), their images from
// docker-archive tars imported into containerd (no registry). The kubelet
// binary is built once per version by .ci/kubelet into a cache directory
// ([Binary] says where); without it the tests skip (fail in CI).
package kubelettest

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

const (
	// NodeName is the node's name: static pods are named
	// <name>-<NodeName>, as on any node.
	NodeName = "vethk8s-node"
	// NodeIP is the node's address, on [NodeBridge].
	NodeIP = "192.168.77.1"
	// NodeBridge holds [NodeIP]: an empty bridge, no veth.
	NodeBridge = "host0"
	// CgroupRoot is the kubelet's cgroupRoot in every hierarchy: its
	// pods are in /veth-exporter-kubelettest/kubepods/….
	CgroupRoot = "/veth-exporter-kubelettest"
	// ReadOnlyPort serves GET /pods (and /healthz on HealthzPort), on
	// 127.0.0.1.
	ReadOnlyPort = 10255
	// HealthzPort is the kubelet's health port, on 127.0.0.1.
	HealthzPort = 10248

	// readyTimeout bounds the kubelet's start until /healthz answers.
	readyTimeout = 60 * time.Second
	// stopTimeout bounds a clean stop of the kubelet.
	stopTimeout = 30 * time.Second
)

// sysctls are the kernel settings the kubelet checks with
// protectKernelDefaults, and the values it wants (its
// setupKernelTunables).
var sysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// privateDirs hide what the kubelet and its pods write outside the test's
// directory: pod logs, and the exporter pod's state volume.
var privateDirs = []string{"/var/log", "/var/lib/veth_exporter"}

// cniConfDir is where the exporter pod reads the CNI configuration.
const cniConfDir = "/etc/cni/net.d"

// Socket is containerd's socket where a node has it, and where the
// exporter's CRI resolver looks by default.
const Socket = "/run/containerd/containerd.sock"

// Node is a standalone kubelet on critest's containerd. Its exported
// fields are read-only.
type Node struct {
	// Runtime is the containerd the kubelet runs pods with.
	Runtime *critest.Runtime
	// ManifestDir is the kubelet's staticPodPath.
	ManifestDir string
	// RootDir is the kubelet's --root-dir.
	RootDir string
	// Version is the kubelet's version, such as v1.34.4.
	Version string

	binary, config, dir string
	proc                *fixturesys.Daemon
	links               map[string]bool
	undo                []func() error
}

var slot = fixturesys.NewSlot("kubelettest")

// Start starts containerd (critest) and a standalone kubelet on it, and
// waits until the kubelet's /healthz answers. A cleanup stops the kubelet
// first (its static pods are then stopped and removed by critest's
// cleanup, through CRI, CNI DEL included), then removes its cgroups, its
// node bridge and its mounts.
func Start(t testing.TB) *Node {
	t.Helper()
	return StartWith(t, critest.Options{})
}

// StartWith is [Start] with containerd's pod network as opts says
// (Subnet, PortMap); its private directories and socket are the node's.
func StartWith(t testing.TB, opts critest.Options) *Node {
	t.Helper()
	netnstest.Require(t)
	bin, version, err := Binary()
	if err != nil {
		netnstest.Unavailable(t, err.Error())
	}
	n := &Node{binary: bin, Version: version, dir: t.TempDir()}
	slot.Take(t, "Node")
	n.ManifestDir = filepath.Join(n.dir, "manifests")
	n.RootDir = filepath.Join(n.dir, "kubelet")
	n.config = filepath.Join(n.dir, "kubelet.yaml")
	n.proc = fixturesys.NewDaemon("kubelet", filepath.Join(n.dir, "kubelet.log"), nil)
	n.links = fixturesys.LinkNames()
	// Registered before critest's: it runs after containerd and the pods
	// are gone.
	t.Cleanup(func() { n.cleanup(t) })
	for _, d := range []string{n.ManifestDir, n.RootDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// containerd accepts a HostToContainer (rslave) volume only from a
	// shared or slave mount: the private /run of netnstest.Main becomes a
	// shared one (of this mount namespace alone), before critest makes
	// /run/netns shared in turn.
	if err := unix.Mount("", "/run", "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatalf("kubelettest: make /run shared: %v", err)
	}
	n.undo = append(n.undo, func() error { return unix.Mount("", "/run", "", unix.MS_PRIVATE|unix.MS_REC, "") })
	opts.PrivateDirs, opts.Socket = append(opts.PrivateDirs, privateDirs...), Socket
	n.Runtime = critest.StartWith(t, opts)
	if err := n.prepare(); err != nil {
		t.Fatalf("kubelettest: %v", err)
	}
	if err := os.WriteFile(n.config, []byte(n.kubeletConfig()), 0o600); err != nil {
		t.Fatal(err)
	}
	n.StartKubelet(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(n.proc.LogTail(80))
		}
		if pid, _ := n.proc.Running(); pid != 0 {
			if err := n.proc.Stop(stopTimeout); err != nil {
				t.Errorf("kubelettest: %v", err)
			}
		}
	})
	return n
}

// Binary returns the kubelet that .ci/kubelet builds for the version in
// kubelet/go.mod, and that version, or an error saying how to build it.
// The cache is $VETH_TEST_CACHE, else $XDG_CACHE_HOME/veth_exporter, else
// ~/.cache/veth_exporter, as .ci/kubelet has it.
func Binary() (path, version string, err error) {
	_, src, _, ok := runtime.Caller(0)
	if !ok {
		return "", "", errors.New("cannot locate kubelettest's source")
	}
	gomod := filepath.Join(filepath.Dir(src), "kubelet", "go.mod")
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", "", err
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "require" && f[1] == "k8s.io/kubernetes" {
			version = f[2]
		}
	}
	if version == "" {
		return "", "", fmt.Errorf("%s requires no k8s.io/kubernetes", gomod)
	}
	cache := os.Getenv("VETH_TEST_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", "", err
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "veth_exporter")
	}
	path = filepath.Join(cache, "kubelet-"+version, "kubelet")
	if !fixturesys.IsExecutable(path) {
		return "", "", fmt.Errorf("no kubelet %s at %s: build it with .ci/kubelet (7-18 minutes, once)", version, path)
	}
	return path, version, nil
}

// prepare makes the node's cgroup root, the sysctl stand-ins, the CNI
// configuration at /etc/cni/net.d and the node's address, recording in
// n.undo how to undo each step.
func (n *Node) prepare() error {
	hs, err := fixturesys.CgroupHierarchies(true)
	if err != nil {
		return err
	}
	for _, h := range hs {
		root := filepath.Join(fixturesys.CgroupMountDir, h.Dir)
		if !fixturesys.IsCgroupFS(root) {
			continue
		}
		dir := filepath.Join(root, CgroupRoot)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if h.Dir == "cpuset" {
			// A new cpuset has no CPUs and no memory nodes until given.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(root, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return err
				}
			}
		}
	}
	values := filepath.Join(n.dir, "sysctl")
	if err := os.Mkdir(values, 0o755); err != nil {
		return err
	}
	for key, value := range sysctls {
		file := filepath.Join(values, strings.ReplaceAll(key, "/", "."))
		if err := os.WriteFile(file, []byte(value+"\n"), 0o644); err != nil {
			return err
		}
		target := filepath.Join("/proc/sys", key)
		if err := unix.Mount(file, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount %s over %s: %w", file, target, err)
		}
		n.undo = append(n.undo, func() error { return unix.Unmount(target, unix.MNT_DETACH) })
	}
	if err := unix.Mount(n.Runtime.CNIConfDir, cniConfDir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s on %s: %w", n.Runtime.CNIConfDir, cniConfDir, err)
	}
	n.undo = append(n.undo, func() error { return unix.Unmount(cniConfDir, unix.MNT_DETACH) })
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: NodeBridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s: %w", NodeBridge, err)
	}
	addr, err := netlink.ParseAddr(NodeIP + "/24")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, NodeBridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return err
	}
	return nil
}

// kubeletConfig is the kubelet's KubeletConfiguration: static pods only,
// on critest's containerd, in a cgroup root of its own, changing nothing
// kernel-wide.
func (n *Node) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: %q
fileCheckFrequency: 1s
syncFrequency: 5s
containerRuntimeEndpoint: %q
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
failSwapOn: false
failCgroupV1: false
protectKernelDefaults: true
makeIPTablesUtilChains: false
volumePluginDir: %q
address: 127.0.0.1
readOnlyPort: %d
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  imagefs.inodesFree: "1%%"
`, n.ManifestDir, n.Runtime.Endpoint, CgroupRoot, filepath.Join(n.dir, "volume-plugins"), ReadOnlyPort, HealthzPort)
}

// StartKubelet starts the kubelet and waits until its /healthz answers.
func (n *Node) StartKubelet(t testing.TB) {
	t.Helper()
	cmd := exec.Command(n.binary, "--config="+n.config, "--root-dir="+n.RootDir,
		"--hostname-override="+NodeName, "--node-ip="+NodeIP, "--v=2")
	cmd.Env = fixturesys.Env()
	if err := n.proc.Start(cmd); err != nil {
		t.Fatalf("kubelettest: %v", err)
	}
	healthz := fmt.Sprintf("http://127.0.0.1:%d/healthz", HealthzPort)
	client := &http.Client{Timeout: 2 * time.Second}
	if err := n.proc.WaitReady(readyTimeout, func() error {
		resp, err := client.Get(healthz)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", healthz, resp.Status)
		}
		return nil
	}); err != nil {
		t.Fatalf("kubelettest: %v", err)
	}
}

// StopKubelet stops the kubelet (SIGTERM) and waits until it exits; its
// pods keep running, as on a node whose kubelet is down.
func (n *Node) StopKubelet(t testing.TB) {
	t.Helper()
	if err := n.proc.Stop(stopTimeout); err != nil {
		t.Fatalf("kubelettest: %v", err)
	}
}

// KubeletLog returns the last lines of the kubelet's log.
func (n *Node) KubeletLog(lines int) string {
	return n.proc.LogTail(lines)
}

// cleanup removes what the node made besides critest's: the kubelet's
// cgroup tree in every hierarchy, the node bridge, the mounts under its
// root directory and the mounts of prepare.
func (n *Node) cleanup(t testing.TB) {
	fixturesys.Cleanup(t, "kubelettest",
		n.stopIfRunning,
		func() error { return fixturesys.UnmountUnder(n.RootDir) },
		n.removeCgroups,
		func() error {
			return fixturesys.DeleteBridges(n.links, func(name string) bool { return name == NodeBridge })
		},
		func() error { err := fixturesys.Undo(n.undo); n.undo = nil; return err },
	)
}

func (n *Node) stopIfRunning() error {
	if pid, _ := n.proc.Running(); pid == 0 {
		return nil
	}
	return n.proc.Stop(stopTimeout)
}

// removeCgroups removes CgroupRoot and every cgroup below it, children
// first, in every hierarchy. critest's cleanup, which runs first, has
// unmounted the hierarchies: they are mounted again for this.
func (n *Node) removeCgroups() (err error) {
	hs, err := fixturesys.CgroupHierarchies(true)
	if err != nil {
		return err
	}
	var undo []func() error
	defer func() { err = errors.Join(err, fixturesys.Undo(undo)) }()
	if err := fixturesys.MountCgroups(hs, &undo); err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(fixturesys.CgroupMountDir, h.Dir, CgroupRoot)
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			errs = append(errs, fixturesys.RemoveCgroup(dirs[i]))
		}
	}
	return errors.Join(errs...)
}
