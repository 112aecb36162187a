package critest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// startChecked starts a Runtime and checks, once its cleanup has run, that
// nothing of it is left (see checkNothingLeft).
func startChecked(t *testing.T) *Runtime {
	t.Helper()
	netnstest.Require(t)
	var r *Runtime
	before, err := fixturesys.ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	// Registered before Start's cleanup, so it runs after it.
	t.Cleanup(func() {
		if r != nil {
			checkNothingLeft(t, r, before)
		}
	})
	t0 := time.Now()
	r = Start(t)
	t.Logf("Start (pause image, containerd, CRI ready, import): %v", time.Since(t0))
	return r
}

// runPod runs a pod and logs how long RunPod took.
func runPod(t *testing.T, r *Runtime, namespace, name string) *Pod {
	t.Helper()
	t0 := time.Now()
	p := r.RunPod(t, namespace, name, "")
	t.Logf("RunPod %s/%s: %v: sandbox %.12s, pause %d, %s, veth %s (%d)", namespace, name, time.Since(t0), p.ID, p.PID, p.Netns, p.Veth, p.VethIndex)
	return p
}

// isUp reports whether the interface name has IFF_UP set.
func isUp(t *testing.T, name string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/class/net", name, "flags"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 32)
	if err != nil {
		t.Fatal(err)
	}
	return f&unix.IFF_UP != 0
}

// cgroupLines returns the cgroup of pid in each hierarchy, by the
// hierarchy's controllers ("pids", "name=systemd", "" for unified).
func cgroupLines(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for line := range strings.Lines(string(b)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 {
			m[parts[1]] = parts[2]
		}
	}
	return m
}

// listed returns the sandboxes CRI lists, by ID.
func listed(t *testing.T, r *Runtime) map[string]*runtimeapi.PodSandbox {
	t.Helper()
	m := map[string]*runtimeapi.PodSandbox{}
	for _, p := range r.ListPods(t) {
		m[p.GetId()] = p
	}
	return m
}

// TestPods runs three pods in two Kubernetes namespaces, as a kubelet
// would: each gets a veth on cni0 whose peer is eth0 in the pod's
// /var/run/netns/cni-* namespace, and a pause process in
// /kubepods/besteffort/pod<UID>/<sandbox id> in every hierarchy.
func TestPods(t *testing.T) {
	r := startChecked(t)
	pods := []*Pod{
		runPod(t, r, "default", "web"),
		runPod(t, r, "default", "api"),
		runPod(t, r, "kube-system", "coredns"),
	}
	byID := listed(t, r)
	if len(byID) != len(pods) {
		t.Errorf("ListPodSandbox lists %d sandboxes, want %d", len(byID), len(pods))
	}
	veths := map[string]bool{}
	for _, p := range pods {
		what := p.Namespace + "/" + p.Name
		if s := byID[p.ID]; s == nil {
			t.Errorf("%s: sandbox %s not listed", what, p.ID)
		} else {
			md := s.GetMetadata()
			if s.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY || md.GetNamespace() != p.Namespace || md.GetName() != p.Name || md.GetUid() != p.UID {
				t.Errorf("%s: listed as %v %s/%s uid %s, want READY %s uid %s", what, s.GetState(), md.GetNamespace(), md.GetName(), md.GetUid(), what, p.UID)
			}
		}
		if got := netnstest.Master(t, p.Veth); got != Bridge {
			t.Errorf("%s: master of %s = %q, want %s", what, p.Veth, got, Bridge)
		}
		if !isUp(t, p.Veth) {
			t.Errorf("%s: veth %s is down", what, p.Veth)
		}
		if veths[p.Veth] {
			t.Errorf("%s: veth %s shared with another pod", what, p.Veth)
		}
		veths[p.Veth] = true
		if !strings.HasPrefix(p.Netns, "/var/run/netns/cni-") || !fixturesys.Mounted(t, p.Netns) {
			t.Errorf("%s: netns %q, want a mount at /var/run/netns/cni-*", what, p.Netns)
		}
		// The namespace of the pause process is the one mounted.
		if a, b := mustInode(t, p.Netns), mustInode(t, fmt.Sprintf("/proc/%d/ns/net", p.PID)); a != b {
			t.Errorf("%s: pause %d in netns %d, want the mounted %d", what, p.PID, b, a)
		}
		if index := netnstest.LinkIndex(t, p.Veth); index != p.VethIndex {
			t.Errorf("%s: VethIndex = %d, want %s's ifindex %d", what, p.VethIndex, p.Veth, index)
		}
		want := "/kubepods/besteffort/pod" + p.UID + "/" + p.ID
		if p.Cgroup != want {
			t.Errorf("%s: Cgroup = %q, want %q", what, p.Cgroup, want)
		}
		cg := cgroupLines(t, p.PID)
		for _, h := range []string{"pids", "memory", "name=systemd"} {
			if cg[h] != want {
				t.Errorf("%s: pause %d in %s cgroup %q, want %q", what, p.PID, h, cg[h], want)
			}
		}
		for h, path := range cg {
			if !strings.HasPrefix(h, "name=") || h == "name=systemd" {
				if path != want {
					t.Logf("%s: pause %d in cgroup %s:%s", what, p.PID, h, path)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(CNICacheDir, NetworkName+"-"+p.ID+"-eth0")); err != nil {
			t.Errorf("%s: libcni cache entry: %v", what, err)
		}
	}
	if got := netnstest.BridgePorts(t, Bridge); len(got) != len(pods) {
		t.Errorf("ports of %s = %v, want the %d pods' veths", Bridge, got, len(pods))
	}
}

func mustInode(t *testing.T, path string) uint64 {
	t.Helper()
	ino, err := fixturesys.NsInode(path)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestLostState makes the leftover of a runtime that lost its state: CRI lists the pod no more, yet its veth stays
// on cni0, up, and its /var/run/netns/cni-* mount pins the namespace with
// no process in it; the libcni cache entries stay too. A bystander pod is
// untouched.
func TestLostState(t *testing.T) {
	r := startChecked(t)
	victim := runPod(t, r, "default", "victim")
	bystander := runPod(t, r, "other", "bystander")

	t0 := time.Now()
	r.KillRuntime(t)
	r.KillSandbox(t, victim)
	t.Logf("KillRuntime, KillSandbox: %v", time.Since(t0))
	t0 = time.Now()
	r.Restart(t)
	t.Logf("Restart: %v", time.Since(t0))
	byID := listed(t, r)
	if s := byID[victim.ID]; s == nil || s.GetState() != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("after kill and restart: victim listed as %v, want NOTREADY", s)
	}
	if s := byID[bystander.ID]; s == nil || s.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("after kill and restart: bystander listed as %v, want READY", s)
	}
	r.RemoveSandboxRecord(t, victim.ID)
	r.Restart(t)

	byID = listed(t, r)
	if s := byID[victim.ID]; s != nil {
		t.Errorf("after the record's removal: victim still listed (%v)", s.GetState())
	}
	if s := byID[bystander.ID]; s == nil || s.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("after the record's removal: bystander listed as %v, want READY", s)
	}
	if !netnstest.LinkExists(victim.Veth) {
		t.Fatalf("victim's veth %s deleted, want it left", victim.Veth)
	}
	if got := netnstest.Master(t, victim.Veth); got != Bridge {
		t.Errorf("victim's veth %s on %q, want %s", victim.Veth, got, Bridge)
	}
	if !isUp(t, victim.Veth) {
		t.Errorf("victim's veth %s is down, want up", victim.Veth)
	}
	if !fixturesys.Mounted(t, victim.Netns) {
		t.Fatalf("victim's %s unmounted, want the mount left", victim.Netns)
	}
	if pids := fixturesys.NetnsProcesses(t, victim.Netns); len(pids) != 0 {
		t.Errorf("processes %v in the victim's namespace, want none", pids)
	}
	if name := netnstest.HostVeth(t, victim.Netns); name != victim.Veth {
		t.Errorf("HostVeth(%s) = %s, want %s", victim.Netns, name, victim.Veth)
	}
	for _, entry := range []string{NetworkName + "-" + victim.ID + "-eth0", "cni-loopback-" + victim.ID + "-lo"} {
		if _, err := os.Stat(filepath.Join(CNICacheDir, entry)); err != nil {
			t.Errorf("libcni cache entry %s: %v, want it left", entry, err)
		}
	}
	// The bystander keeps its veth and its process.
	if got := netnstest.Master(t, bystander.Veth); got != Bridge {
		t.Errorf("bystander's veth %s on %q, want %s", bystander.Veth, got, Bridge)
	}
	if pids := fixturesys.NetnsProcesses(t, bystander.Netns); !slices.Contains(pids, bystander.PID) {
		t.Errorf("processes %v in the bystander's namespace, want its pause %d", pids, bystander.PID)
	}
	// LoseSandbox does all of the above at once.
	third := runPod(t, r, "other", "third")
	t0 = time.Now()
	r.LoseSandbox(t, third)
	t.Logf("LoseSandbox: %v", time.Since(t0))
	if s := listed(t, r)[third.ID]; s != nil || !netnstest.LinkExists(third.Veth) || !fixturesys.Mounted(t, third.Netns) {
		t.Errorf("after LoseSandbox: listed %v, veth %s exists %v, %s mounted %v; want unlisted, both left",
			s, third.Veth, netnstest.LinkExists(third.Veth), third.Netns, fixturesys.Mounted(t, third.Netns))
	}
	t.Logf("after the loss: cgroups of the victim's pod %v", podCgroups(victim.UID))
}

// podCgroups lists the hierarchies under /sys/fs/cgroup that hold the
// cgroup of the pod uid.
func podCgroups(uid string) []string {
	dirs, _ := filepath.Glob(filepath.Join(fixturesys.CgroupMountDir, "*", podCgroupBase, "pod"+uid))
	var hs []string
	for _, dir := range dirs {
		rel, _ := filepath.Rel(fixturesys.CgroupMountDir, dir)
		hs = append(hs, strings.SplitN(rel, "/", 2)[0])
	}
	return hs
}

// TestStopPodDeletesVeth checks that a normal StopPodSandbox deletes the
// veth (CNI DEL) even while a process pins the namespace, and that
// RemovePodSandbox then removes the sandbox and its mount, even after an
// `ip netns add` (which must not hide containerd's mounts: Start made
// /run/netns a shared mount point).
func TestStopPodDeletesVeth(t *testing.T) {
	r := startChecked(t)
	p := runPod(t, r, "default", "stopped")
	joined, stop := netnstest.Join(t, p.PID)
	defer stop()
	netnstest.NamedNetns(t, "critest-named")
	if !fixturesys.Mounted(t, p.Netns) {
		t.Fatalf("after ip netns add: %s is not a mount point any more", p.Netns)
	}
	t0 := time.Now()
	r.StopPod(t, p.ID)
	t.Logf("StopPod: %v", time.Since(t0))
	if netnstest.LinkExists(p.Veth) {
		t.Errorf("after StopPodSandbox: veth %s still exists", p.Veth)
	}
	if s := listed(t, r)[p.ID]; s == nil || s.GetState() != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("after StopPodSandbox: listed as %v, want NOTREADY", s)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err == nil {
		t.Errorf("after StopPodSandbox: pause %d still exists", p.PID)
	}
	if pids := fixturesys.NetnsProcesses(t, fmt.Sprintf("/proc/%d/ns/net", joined)); len(pids) != 1 {
		t.Errorf("after StopPodSandbox: processes %v in the pinned namespace, want only %d", pids, joined)
	}
	r.RemovePod(t, p.ID)
	if n := len(r.ListPods(t)); n != 0 {
		t.Errorf("after RemovePodSandbox: %d sandboxes listed, want none", n)
	}
	if fixturesys.Mounted(t, p.Netns) {
		t.Errorf("after RemovePodSandbox: %s still mounted", p.Netns)
	}
}

// TestStopAndKillRuntime checks that the runtime alone going down leaves
// nothing behind: containerd stopped or killed leaves the pods running,
// and recovers them on restart.
func TestStopAndKillRuntime(t *testing.T) {
	r := startChecked(t)
	a := runPod(t, r, "default", "a")
	b := runPod(t, r, "default", "b")

	r.Stop(t)
	if r.PID() != 0 {
		t.Errorf("after Stop: PID %d, want 0", r.PID())
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", a.PID)); err != nil {
		t.Errorf("after Stop: pause %d of a: %v, want it running", a.PID, err)
	}
	r.Restart(t)
	r.KillRuntime(t)
	t0 := time.Now()
	r.Restart(t)
	t.Logf("Restart after KillRuntime: %v", time.Since(t0))
	for _, p := range []*Pod{a, b} {
		if s := listed(t, r)[p.ID]; s == nil || s.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
			t.Errorf("after Stop, KillRuntime and Restart: %s listed as %v, want READY", p.Name, s)
		}
		if !netnstest.LinkExists(p.Veth) {
			t.Errorf("after Stop, KillRuntime and Restart: veth %s of %s gone", p.Veth, p.Name)
		}
	}
}

// TestCleanupAfterKill ends with containerd killed and its pods running
// without it: Start's cleanup must kill the shims and pause processes,
// unmount the namespaces, delete the veths and cni0 and remove the
// cgroups (checked by startChecked).
func TestCleanupAfterKill(t *testing.T) {
	r := startChecked(t)
	p := runPod(t, r, "default", "orphan-to-be")
	runPod(t, r, "other", "running")
	r.KillRuntime(t)
	if r.PID() != 0 {
		t.Errorf("after KillRuntime: PID %d, want 0", r.PID())
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err != nil {
		t.Errorf("after KillRuntime: pause %d: %v, want it running", p.PID, err)
	}
}

// TestDockerArchive checks the layout `ctr images import` reads: a
// manifest naming the tag, a config whose diff ID is the layer's digest,
// and /pause in the layer.
func TestDockerArchive(t *testing.T) {
	pause := []byte("#!pause")
	archive, err := dockerArchive("localhost/x:1", pause)
	if err != nil {
		t.Fatal(err)
	}
	again, err := dockerArchive("localhost/x:1", pause)
	if err != nil || !bytes.Equal(archive, again) {
		t.Errorf("dockerArchive is not deterministic (%v)", err)
	}
	files := fixturesys.MustTarFiles(t, archive)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v: %s", err, files["manifest.json"])
	}
	m := manifest[0]
	if !slices.Equal(m.RepoTags, []string{"localhost/x:1"}) || len(m.Layers) != 1 {
		t.Errorf("manifest = %+v, want tag localhost/x:1 and one layer", m)
	}
	var config struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[m.Config], &config); err != nil {
		t.Fatalf("config %s: %v", m.Config, err)
	}
	layer := files[m.Layers[0]]
	if want := "sha256:" + strings.TrimSuffix(m.Layers[0], "/layer.tar"); !slices.Equal(config.RootFS.DiffIDs, []string{want}) {
		t.Errorf("diff_ids = %v, want [%s]", config.RootFS.DiffIDs, want)
	}
	if !slices.Equal(config.Config.Entrypoint, []string{"/pause"}) {
		t.Errorf("Entrypoint = %v, want [/pause]", config.Config.Entrypoint)
	}
	if got := fixturesys.MustTarFiles(t, layer)["pause"]; !bytes.Equal(got, pause) {
		t.Errorf("/pause in the layer = %q, want %q", got, pause)
	}
}

// checkNothingLeft checks, after Start's cleanup, that no process, mount,
// interface or cgroup of the runtime remains.
func checkNothingLeft(t *testing.T, r *Runtime, before []fixturesys.MountEntry) {
	t.Helper()
	fixturesys.CheckNothingLeft(t, before)
	var globs []string
	r.mu.Lock()
	for uid := range r.uids {
		globs = append(globs, podCgroupBase[1:]+"/pod"+uid)
	}
	r.mu.Unlock()
	left, err := fixturesys.CgroupsLeft(globs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, cg := range left {
		t.Errorf("after cleanup: cgroup %s left", cg)
	}
	// Another test binary may be running pods.
	if parents, err := fixturesys.CgroupsLeft(podCgroupBase[1:]); err == nil && len(parents) > 0 {
		t.Logf("after cleanup: %v exist", parents)
	}
}
