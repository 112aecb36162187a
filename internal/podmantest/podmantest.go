// Package podmantest gives tests a real Podman (Debian podman 4.3, conmon,
// crun, and netavark or the CNI plugins) inside the private network, mount
// and PID namespaces made by [netnstest.Main], with its REST API served by
// `podman system service` on a private socket, so that tests can make real
// Podman leftovers: a container's veth on podman0 (netavark) or
// cni-podman0 (CNI) whose peer is in /run/netns/netns-<uuid>, a container
// that Podman still calls running after its conmon and process were killed.
//
// [Start] refuses to run outside those namespaces (it calls
// [netnstest.Require]): this package must never create, change or delete an
// interface, a mount or a process in the machine's own namespaces, it never
// changes a file under /etc (its configuration goes through
// CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF),
// and it never pulls an image ([Podman.Image] imports one from the
// machine's busybox).
//
// The one thing Podman shares with the machine is the set of cgroup
// hierarchies, which are kernel-wide: with cgroup_manager "cgroupfs" it
// creates /libpod_parent/... in each of them. The cleanup of [Start]
// removes the cgroups of the containers and pods of its test (Podman leaves
// them after a crash) and /libpod_parent once empty.
//
// What real Podman 4.3.1 shows here (cgroup v1 host, cgroupfs manager),
// the same with netavark and with CNI, as the resolvers will see it:
//
//   - a container outside a pod: "8:pids:/libpod_parent/libpod-<64 hex
//     container ID>" in /proc/PID/cgroup, the same path in every v1
//     hierarchy (name=systemd included), "0::/" for the unified one; its
//     conmon is in /libpod_parent/conmon;
//   - a container in a pod, and the pod's infra container alike:
//     "/libpod_parent/<64 hex pod ID>/libpod-<64 hex container ID>"; their
//     conmons are in /libpod_parent/<pod ID>/conmon;
//   - GET /v4.0.0/libpod/containers/json?all=true: Id, Names (["c1"]),
//     State ("running"), Pid, Pod and PodName ("" outside a pod), IsInfra,
//     Networks (["podman"]; [] for a container in a pod);
//   - GET /v4.0.0/libpod/containers/{id}/json: State.Status ("running"),
//     State.Running, State.Pid, State.ConmonPid, State.CgroupPath (the path
//     above), NetworkSettings.SandboxKey ("/run/netns/netns-<uuid>", the
//     infra container's for a container in a pod), Pod, and
//     HostConfig.NetworkMode ("bridge", or "container:<infra ID>" in a pod);
//   - GET /v4.0.0/libpod/pods/json: Id, Name, InfraId, Status ("Running"),
//     Cgroup ("/libpod_parent"), Networks, Containers [{Id, Names, Status}];
//   - GET /v4.0.0/libpod/networks/json: [{"name":"podman","driver":"bridge",
//     "network_interface":"podman0" (netavark) or "cni-podman0" (CNI), ...}];
//   - GET /v4.0.0/libpod/events?stream=true: one JSON object a line, such as
//     {"status":"start","id":"<ID>","from":"<image>","Type":"container",
//     "Action":"start","Actor":{"ID":"<ID>","Attributes":{"containerExitCode":"0",
//     "image":"<image>","name":"c4","podId":""}},"scope":"local","time":N,"timeNano":N};
//   - host veths: veth0, veth1, ... on podman0 with netavark;
//     veth<8 hex> on cni-podman0 with CNI;
//   - after [Podman.Crash] (conmon and the process killed): the API and
//     `podman ps` keep saying "running" with the dead State.Pid, even after
//     a restart of the service; the veth stays on the bridge and the
//     SandboxKey stays mounted; the pod stays "Running".
//
// Only one Podman runs at a time in a test binary: the bridge and /run are
// the namespace's, shared by all its tests. Tests that call [Start] must not
// run in parallel with each other, and must run podman through
// [Podman.Run] or [Podman.TryRun]: conmon daemonizes, so a reaper reaps the
// zombie conmon and podman children of the test binary, and it only knows
// to leave alone the commands those two wait for.
package podmantest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
	// readyTimeout bounds the wait for the API's _ping.
	readyTimeout = 60 * time.Second
	// cliTimeout bounds one podman command.
	cliTimeout = 2 * time.Minute

	// Network is the name of Podman's default network.
	Network = "podman"
	// APIVersion prefixes the libpod endpoints of the REST API.
	APIVersion = "/v4.0.0"

	// cgroupParent is Podman's default cgroup parent with the cgroupfs
	// manager.
	cgroupParent = "libpod_parent"
	// socketPath is where `podman system service` listens; /run is the
	// private tmpfs of netnstest.Main.
	socketPath = "/run/podman/podman.sock"

	imageTag = "localhost/podmantest/busybox:latest"
)

// privateDirs get a private tmpfs for the life of a Podman: Podman 4.3
// writes its blob-info cache under /var/lib/containers whatever the
// graphroot, its lock file to /dev/shm, and the CNI plugins their leases
// and cache under /var/lib/cni.
var privateDirs = []string{"/var/lib/containers", "/dev/shm", "/var/lib/cni"}

// fullID matches a full container or pod ID.
var fullID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Options change how [Start] configures Podman.
type Options struct {
	// NetworkBackend is "netavark" (the default) or "cni".
	NetworkBackend string
}

// Podman is a private Podman setup started by a test, with its REST API
// service. Its exported fields are read-only.
type Podman struct {
	// Backend is the network backend: "netavark" or "cni".
	Backend string
	// Bridge is the bridge of the default network: podman0 with
	// netavark, cni-podman0 with CNI.
	Bridge string
	// Dir is the temporary directory holding the configuration, the
	// graphroot and TMPDIR.
	Dir string

	base    string // private /run directory: runroot, tmp_dir
	podman  string
	env     []string
	service *fixturesys.Daemon
	reaper  *fixturesys.Reaper

	mu    sync.Mutex
	image string
	ids   map[string]bool // containers and pods made through this Podman
	undo  []func() error
}

// slot holds the running Podman of this test binary.
var slot = fixturesys.NewSlot("podmantest")

// Start sets up Podman in the private namespaces, imports the busybox image
// and starts `podman system service --time=0` on [Podman.Socket], waiting
// until it answers _ping. Before that it makes the cgroup hierarchies
// visible (a tmpfs on /sys/fs/cgroup, reused if there, and each v1
// hierarchy of the machine mounted again) and mounts a private tmpfs on
// /var/lib/containers, /dev/shm and /var/lib/cni (the first and last in an
// overlay of /var/lib whose upper layer is in the test's temporary
// directory when the machine lacks them: Debian's podman package does not
// create them, and nothing may be created on the machine's disk).
//
// A cleanup stops the service by PID, removes every container and pod
// (podman rm -af, podman pod rm -af), kills by PID whatever a
// [Podman.Crash] left, unmounts what Podman left (network namespaces under
// /run/netns among them), deletes the bridge and the veths on it, removes
// the cgroups of its containers and pods and undoes the mounts above.
//
// Start skips the test outside the private namespaces and when Podman is
// not installed (fails it instead with VETH_EXPORTER_REQUIRE_PRIVILEGED=1),
// and fails it if another Podman of the test binary is still running.
func Start(t testing.TB, opts Options) *Podman {
	t.Helper()
	netnstest.Require(t)
	p := &Podman{Backend: opts.NetworkBackend, ids: map[string]bool{}}
	switch p.Backend {
	case "", "netavark":
		p.Backend, p.Bridge = "netavark", "podman0"
	case "cni":
		p.Bridge = "cni-podman0"
	default:
		t.Fatalf("podmantest: network backend %q, want netavark or cni", p.Backend)
	}
	need := []string{"/usr/bin/podman", "/usr/bin/conmon", "/usr/bin/crun", "busybox"}
	if p.Backend == "netavark" {
		need = append(need, "/usr/lib/podman/netavark")
	} else {
		need = append(need, "/usr/lib/cni/bridge", "/usr/lib/cni/host-local")
	}
	p.podman = fixturesys.Binaries(t, "podmantest", "podman, conmon, crun, netavark, aardvark-dns, containernetworking-plugins, busybox-static", need...)[0]
	// Before the cleanup below is registered, so that it runs after it,
	// once nothing is mounted in it any more.
	p.Dir = t.TempDir()
	p.base = slot.Take(t, "Podman")
	// conmon daemonizes, and so does the `podman container cleanup` it
	// runs when its container exits: the test binary is their parent.
	// Every podman command goes through the reaper, which then leaves
	// it to os/exec.
	p.reaper = fixturesys.StartReaper("conmon", "podman")
	p.service = fixturesys.NewDaemon("podman system service", filepath.Join(p.Dir, "service.log"), p.reaper)
	linksBefore := fixturesys.LinkNames()
	t.Cleanup(func() { p.cleanup(t, linksBefore) })
	if err := p.configure(); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	if err := p.prepareMounts(); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	p.Image(t)
	p.StartService(t)
	return p
}

// configure writes containers.conf, storage.conf and registries.conf to
// Dir and sets the environment podman commands run with.
func (p *Podman) configure() error {
	tmp := filepath.Join(p.Dir, "tmp")
	for _, dir := range []string{tmp, filepath.Join(p.Dir, "networks"), p.base, filepath.Dir(socketPath)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	containersConf := fmt.Sprintf(`[containers]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
image_copy_tmp_dir = %q
tmp_dir = %q
infra_image = %q
runtime = "crun"

[network]
network_backend = %q
network_config_dir = %q
`, filepath.Join(p.Dir, "events.log"), tmp, filepath.Join(p.base, "libpod"), imageTag,
		p.Backend, filepath.Join(p.Dir, "networks"))
	storageConf := fmt.Sprintf(`[storage]
driver = "vfs"
graphroot = %q
runroot = %q
`, filepath.Join(p.Dir, "root"), filepath.Join(p.base, "storage"))
	files := map[string]string{
		"containers.conf": containersConf,
		"storage.conf":    storageConf,
		// No search registries: a short name never leads to a pull.
		"registries.conf": "unqualified-search-registries = []\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(p.Dir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	p.env = append(fixturesys.Env("CONTAINERS_", "CONTAINER_", "TMPDIR", "XDG_RUNTIME_DIR"),
		"CONTAINERS_CONF="+filepath.Join(p.Dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(p.Dir, "storage.conf"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(p.Dir, "registries.conf"),
		"TMPDIR="+tmp,
	)
	return nil
}

// Socket returns the path of the REST API socket, /run/podman/podman.sock
// on the private /run, as on a Podman host.
func (p *Podman) Socket() string { return socketPath }

// Env returns the environment podman commands run with: the variables
// pointing Podman at this setup's configuration, for a test that runs
// podman itself.
func (p *Podman) Env() []string { return slices.Clone(p.env) }

// Run runs podman with this setup's configuration and returns its trimmed
// standard output. It fails t with the command's standard error on error.
func (p *Podman) Run(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := p.TryRun(ctx, args...)
	if err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	return out
}

// TryRun runs podman with this setup's configuration and returns its
// trimmed standard output, or an error that carries its standard error.
func (p *Podman) TryRun(ctx context.Context, args ...string) (string, error) {
	return p.run(ctx, nil, args...)
}

func (p *Podman) run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, p.podman, args...)
	cmd.Env = p.env
	cmd.Stdin = stdin
	// Through the reaper, which reaps zombies named podman.
	return fixturesys.Output(cmd, p.reaper)
}

// Image returns the tag of a tiny image imported once per Podman from the
// machine's static busybox (`podman import`): /bin/busybox with links sh,
// sleep, cat, ip, ... and the command `/bin/sleep 100000`. It is the pods'
// infra image too (catatonit is not installed).
func (p *Podman) Image(t testing.TB) string {
	t.Helper()
	p.mu.Lock()
	image := p.image
	p.mu.Unlock()
	if image != "" {
		return image
	}
	rootfs, err := fixturesys.BusyboxRootfs()
	if err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	if _, err := p.run(ctx, bytes.NewReader(rootfs), "import", "--change", `CMD ["/bin/sleep","100000"]`, "-", imageTag); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	p.mu.Lock()
	p.image = imageTag
	p.mu.Unlock()
	return imageTag
}

// RunContainer runs `podman run -d --name NAME [args] IMAGE` with the image
// of [Podman.Image] (its command sleeps) and returns the full container ID.
func (p *Podman) RunContainer(t testing.TB, name string, args ...string) string {
	t.Helper()
	argv := append([]string{"run", "-d", "--name", name}, args...)
	argv = append(argv, p.Image(t))
	return p.record(t, "run "+name, p.Run(t, argv...))
}

// CreatePod creates a pod with an infra container of the image of
// [Podman.Image] and returns its full ID. Its infra container, and with it
// the pod's network namespace, starts with the first container run in it
// ([Podman.RunInPod]).
func (p *Podman) CreatePod(t testing.TB, name string, args ...string) string {
	t.Helper()
	argv := append([]string{"pod", "create", "--name", name, "--infra-image", p.Image(t)}, args...)
	return p.record(t, "pod create "+name, p.Run(t, argv...))
}

// RunInPod runs a container NAME in the pod (name or ID) and returns its
// full ID.
func (p *Podman) RunInPod(t testing.TB, pod, name string, args ...string) string {
	t.Helper()
	return p.RunContainer(t, name, append([]string{"--pod", pod}, args...)...)
}

// InfraID returns the full ID of the pod's infra container.
func (p *Podman) InfraID(t testing.TB, pod string) string {
	t.Helper()
	return p.record(t, "infra of "+pod, p.Run(t, "pod", "inspect", "-f", "{{.InfraContainerID}}", pod))
}

// record checks that out is a full ID and remembers it for the cleanup.
func (p *Podman) record(t testing.TB, what, out string) string {
	t.Helper()
	if !fullID.MatchString(out) {
		t.Fatalf("podmantest: %s printed %q, want an ID", what, out)
	}
	p.mu.Lock()
	p.ids[out] = true
	p.mu.Unlock()
	return out
}

// ContainerPID returns the PID of the container's process (State.Pid),
// failing t unless Podman says it runs.
func (p *Podman) ContainerPID(t testing.TB, id string) int {
	t.Helper()
	return p.inspectPID(t, id, "{{.State.Pid}}")
}

// ConmonPID returns the PID of the container's conmon (State.ConmonPid).
func (p *Podman) ConmonPID(t testing.TB, id string) int {
	t.Helper()
	return p.inspectPID(t, id, "{{.State.ConmonPid}}")
}

func (p *Podman) inspectPID(t testing.TB, id, format string) int {
	t.Helper()
	out := p.Run(t, "container", "inspect", "-f", format, id)
	pid, err := strconv.Atoi(out)
	if err != nil || pid <= 0 {
		t.Fatalf("podmantest: container %s: %s is %q, want a running container", id, format, out)
	}
	return pid
}

// SandboxKey returns the path of the container's network namespace
// (NetworkSettings.SandboxKey): /run/netns/netns-<uuid>, the infra
// container's for a container in a pod.
func (p *Podman) SandboxKey(t testing.TB, id string) string {
	t.Helper()
	return p.Run(t, "container", "inspect", "-f", "{{.NetworkSettings.SandboxKey}}", id)
}

// Crash kills (SIGKILL) the container's conmon and then its process, by
// PID, and waits until they are gone. Podman gets no exit file and runs no
// cleanup: it still calls the container running, its veth stays on the
// bridge and its namespace stays mounted at [Podman.SandboxKey].
func (p *Podman) Crash(t testing.TB, id string) {
	t.Helper()
	conmon, pid := p.ConmonPID(t, id), p.ContainerPID(t, id)
	if st, err := fixturesys.ReadStat(conmon); err != nil || st.Comm != "conmon" || !fixturesys.CmdlineContains(conmon, id) {
		t.Fatalf("podmantest: container %s: process %d is not its conmon (%q, %v)", id, conmon, st.Comm, err)
	}
	// conmon first: it would otherwise notice its container's death.
	if err := fixturesys.KillAll([]int{conmon, pid}); err != nil {
		t.Fatalf("podmantest: crash %s: %v", id, err)
	}
}

// StartService starts `podman system service --time=0` on [Podman.Socket]
// and waits until it answers _ping.
func (p *Podman) StartService(t testing.TB) {
	t.Helper()
	// A service killed by SIGKILL leaves its socket.
	if err := fixturesys.RemoveIfExists(socketPath); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.podman, "system", "service", "--time=0", "unix://"+socketPath)
	cmd.Env = p.env
	if err := p.service.Start(cmd); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	ping := func() error { _, err := p.get(APIVersion + "/libpod/_ping"); return err }
	if err := p.service.WaitReady(readyTimeout, ping); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
}

// StopService stops the API service (SIGTERM to its PID, SIGKILL after
// 10 s): the socket stops answering, the containers keep running.
func (p *Podman) StopService(t testing.TB) {
	t.Helper()
	if err := p.service.Stop(10 * time.Second); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
}

// FreezeService stops the API service with SIGSTOP, as a hung service:
// connections stay open, nothing answers. The returned function (and the
// test's end) lets it run again.
func (p *Podman) FreezeService(t testing.TB) (thaw func()) {
	t.Helper()
	if err := p.service.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("podmantest: SIGSTOP: %v", err)
	}
	thawed := false
	thaw = func() {
		if !thawed {
			thawed = true
			_ = p.service.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	return thaw
}

// HTTPClient returns a client whose requests go to [Podman.Socket],
// whatever the URL's host.
func (p *Podman) HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dialer net.Dialer
				return dialer.DialContext(ctx, "unix", socketPath)
			},
			DisableKeepAlives: true,
		},
	}
}

// Get asks the API for path (such as "/v4.0.0/libpod/pods/json") and
// returns the body, failing t unless the answer is 200 OK.
func (p *Podman) Get(t testing.TB, path string) []byte {
	t.Helper()
	body, err := p.get(path)
	if err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	return body
}

func (p *Podman) get(path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://d"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// inspectContainer is what the cleanup reads of `podman ps -a`.
type inspectContainer struct {
	ID  string `json:"Id"`
	Pod string `json:"Pod"`
}

// knownIDs returns the IDs of the containers and pods this Podman knows or
// was asked to make.
func (p *Podman) knownIDs() []string {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	set := map[string]bool{}
	if out, err := p.TryRun(ctx, "ps", "-a", "--format", "json"); err == nil {
		var cs []inspectContainer
		if json.Unmarshal([]byte(out), &cs) == nil {
			for _, c := range cs {
				set[c.ID] = true
				if c.Pod != "" {
					set[c.Pod] = true
				}
			}
		}
	}
	p.mu.Lock()
	for id := range p.ids {
		set[id] = true
	}
	p.mu.Unlock()
	ids := make([]string, 0, len(set))
	for id := range set {
		if fullID.MatchString(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// cleanup removes everything this Podman made; errors fail t but do not
// stop the cleanup.
func (p *Podman) cleanup(t testing.TB, linksBefore map[string]bool) {
	if t.Failed() {
		t.Log(p.service.LogTail(40))
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	var ids []string
	removeAll := func(args ...string) func() error {
		return func() error { _, err := p.TryRun(ctx, args...); return err }
	}
	fixturesys.Cleanup(t, "podmantest",
		func() error {
			if pid, _ := p.service.Running(); pid == 0 {
				return nil
			}
			return p.service.Stop(10 * time.Second)
		},
		func() error { ids = p.knownIDs(); return nil },
		removeAll("rm", "-af", "-t", "0"),
		removeAll("pod", "rm", "-af", "-t", "0"),
		func() error { return p.killLeftovers(ids) },
		func() error { p.reaper.Stop(); return nil },
		func() error { return fixturesys.UnmountUnder(p.Dir, p.base, "/run/netns") },
		func() error {
			return fixturesys.DeleteBridges(linksBefore, func(name string) bool {
				return strings.HasPrefix(name, "podman") || strings.HasPrefix(name, "cni-podman")
			})
		},
		func() error { return removeCgroups(ids) },
		func() error { err := fixturesys.Undo(p.undo); p.undo = nil; return err },
		func() error { return os.RemoveAll(p.base) },
		func() error {
			var errs []error
			for _, dir := range []string{"/run/podman", "/run/containers", "/run/libpod", "/run/cni", "/run/crun"} {
				errs = append(errs, os.RemoveAll(dir))
			}
			return errors.Join(errs...)
		},
	)
}

// killLeftovers kills what a crash left running: the conmons of this setup
// (its directory, which holds the graphroot, in their command line) and
// the processes in the cgroups of its containers and pods (below
// /libpod_parent, named after one of ids).
func (p *Podman) killLeftovers(ids []string) error {
	return fixturesys.KillLeftovers([]string{"conmon"}, p.Dir, func(cgroup string) bool {
		return strings.HasPrefix(cgroup, "/"+cgroupParent+"/") &&
			slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(cgroup, id) })
	})
}
