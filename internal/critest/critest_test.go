package critest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
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

// master returns the bridge the interface name is enslaved to, or "".
func master(t *testing.T, name string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join("/sys/class/net", name, "master"))
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err != nil {
			t.Fatalf("interface %s: %v", name, err)
		}
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Base(target)
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

// linkExists reports whether the interface name exists in this namespace.
func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// processesIn returns the processes whose network namespace is the one at
// path.
func processesIn(t *testing.T, path string) []int {
	t.Helper()
	want, err := nsInode(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if ino, err := nsInode(p + "/ns/net"); err != nil || ino != want {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(p))
		pids = append(pids, pid)
	}
	return pids
}

// mounted reports whether path is a mount point, failing t on error.
func mounted(t *testing.T, path string) bool {
	t.Helper()
	ok, err := fixturesys.MountedAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// cgroupLines returns the cgroup of pid in each hierarchy, by the
// hierarchy's controllers ("pids", "name=systemd", "" for unified).
func cgroupLines(t *testing.T, pid int) map[string]string {
	t.Helper()
	lines, err := readLines(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range lines {
		parts := strings.SplitN(line, ":", 3)
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
		if got := master(t, p.Veth); got != Bridge {
			t.Errorf("%s: master of %s = %q, want %s", what, p.Veth, got, Bridge)
		}
		if !isUp(t, p.Veth) {
			t.Errorf("%s: veth %s is down", what, p.Veth)
		}
		if veths[p.Veth] {
			t.Errorf("%s: veth %s shared with another pod", what, p.Veth)
		}
		veths[p.Veth] = true
		if !strings.HasPrefix(p.Netns, "/var/run/netns/cni-") || !mounted(t, p.Netns) {
			t.Errorf("%s: netns %q, want a mount at /var/run/netns/cni-*", what, p.Netns)
		}
		// The namespace of the pause process is the one mounted.
		if a, b := mustInode(t, p.Netns), mustInode(t, fmt.Sprintf("/proc/%d/ns/net", p.PID)); a != b {
			t.Errorf("%s: pause %d in netns %d, want the mounted %d", what, p.PID, b, a)
		}
		if name, index := HostVeth(t, fmt.Sprintf("/proc/%d/ns/net", p.PID)); name != p.Veth || index != p.VethIndex {
			t.Errorf("%s: HostVeth(pause's netns) = %s (%d), want %s (%d)", what, name, index, p.Veth, p.VethIndex)
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
	if got := brPorts(t); len(got) != len(pods) {
		t.Errorf("ports of %s = %v, want the %d pods' veths", Bridge, got, len(pods))
	}
}

func mustInode(t *testing.T, path string) uint64 {
	t.Helper()
	ino, err := nsInode(path)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// brPorts returns the interfaces enslaved to cni0.
func brPorts(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("/sys/class/net", Bridge, "brif"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
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
	if !linkExists(victim.Veth) {
		t.Fatalf("victim's veth %s deleted, want it left", victim.Veth)
	}
	if got := master(t, victim.Veth); got != Bridge {
		t.Errorf("victim's veth %s on %q, want %s", victim.Veth, got, Bridge)
	}
	if !isUp(t, victim.Veth) {
		t.Errorf("victim's veth %s is down, want up", victim.Veth)
	}
	if !mounted(t, victim.Netns) {
		t.Fatalf("victim's %s unmounted, want the mount left", victim.Netns)
	}
	if pids := processesIn(t, victim.Netns); len(pids) != 0 {
		t.Errorf("processes %v in the victim's namespace, want none", pids)
	}
	if name, index := HostVeth(t, victim.Netns); name != victim.Veth || index != victim.VethIndex {
		t.Errorf("HostVeth(%s) = %s (%d), want %s (%d)", victim.Netns, name, index, victim.Veth, victim.VethIndex)
	}
	for _, entry := range []string{NetworkName + "-" + victim.ID + "-eth0", "cni-loopback-" + victim.ID + "-lo"} {
		if _, err := os.Stat(filepath.Join(CNICacheDir, entry)); err != nil {
			t.Errorf("libcni cache entry %s: %v, want it left", entry, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(CNICacheDir, NetworkName+"-"+victim.ID+"-eth0")); err == nil {
		checkCacheEntry(t, b, victim)
	}
	// The bystander keeps its veth and its process.
	if got := master(t, bystander.Veth); got != Bridge {
		t.Errorf("bystander's veth %s on %q, want %s", bystander.Veth, got, Bridge)
	}
	if pids := processesIn(t, bystander.Netns); !slices.Contains(pids, bystander.PID) {
		t.Errorf("processes %v in the bystander's namespace, want its pause %d", pids, bystander.PID)
	}
	// LoseSandbox does all of the above at once.
	third := runPod(t, r, "other", "third")
	t0 = time.Now()
	r.LoseSandbox(t, third)
	t.Logf("LoseSandbox: %v", time.Since(t0))
	if s := listed(t, r)[third.ID]; s != nil || !linkExists(third.Veth) || !mounted(t, third.Netns) {
		t.Errorf("after LoseSandbox: listed %v, veth %s exists %v, %s mounted %v; want unlisted, both left",
			s, third.Veth, linkExists(third.Veth), third.Netns, mounted(t, third.Netns))
	}
	t.Logf("after the loss: cgroups of the victim's pod %v", podCgroups(victim.UID))
}

// checkCacheEntry checks what a libcni cache entry records of the pod: the
// exporter uses it to name the pod of a leftover.
func checkCacheEntry(t *testing.T, b []byte, p *Pod) {
	t.Helper()
	var entry struct {
		ContainerID string     `json:"containerId"`
		IfName      string     `json:"ifName"`
		NetworkName string     `json:"networkName"`
		Netns       string     `json:"netns"`
		CNIArgs     [][]string `json:"cniArgs"`
		Result      struct {
			Interfaces []struct {
				Name    string `json:"name"`
				Sandbox string `json:"sandbox"`
			} `json:"interfaces"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &entry); err != nil {
		t.Errorf("libcni cache entry: %v\n%s", err, b)
		return
	}
	args := map[string]string{}
	for _, kv := range entry.CNIArgs {
		if len(kv) == 2 {
			args[kv[0]] = kv[1]
		}
	}
	var ifNames []string
	sandbox := ""
	for _, i := range entry.Result.Interfaces {
		ifNames = append(ifNames, i.Name)
		if i.Name == "eth0" {
			sandbox = i.Sandbox
		}
	}
	// containerd 1.6's libcni records no top-level "netns" (cnitool's
	// newer one does): the pod's side names it as its sandbox.
	if entry.Netns != "" && entry.Netns != p.Netns {
		t.Errorf("libcni cache entry: netns %q, want %q", entry.Netns, p.Netns)
	}
	if entry.ContainerID != p.ID || entry.IfName != "eth0" || entry.NetworkName != NetworkName || sandbox != p.Netns ||
		args["K8S_POD_NAMESPACE"] != p.Namespace || args["K8S_POD_NAME"] != p.Name || args["K8S_POD_UID"] != p.UID ||
		!slices.Contains(ifNames, p.Veth) {
		t.Errorf("libcni cache entry does not name pod %s/%s (%s, uid %s, veth %s):\n%s", p.Namespace, p.Name, p.ID, p.UID, p.Veth, b)
	}
}

// podCgroups lists the hierarchies under /sys/fs/cgroup that hold the
// cgroup of the pod uid.
func podCgroups(uid string) []string {
	dirs, _ := filepath.Glob(filepath.Join(cgroupMountDir, "*", podCgroupBase, "pod"+uid))
	var hs []string
	for _, dir := range dirs {
		rel, _ := filepath.Rel(cgroupMountDir, dir)
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
	joined, stop := JoinNetns(t, p.Netns)
	defer stop()
	netnstest.NamedNetns(t, "critest-named")
	if !mounted(t, p.Netns) {
		t.Fatalf("after ip netns add: %s is not a mount point any more", p.Netns)
	}
	t0 := time.Now()
	r.StopPod(t, p.ID)
	t.Logf("StopPod: %v", time.Since(t0))
	if linkExists(p.Veth) {
		t.Errorf("after StopPodSandbox: veth %s still exists", p.Veth)
	}
	if s := listed(t, r)[p.ID]; s == nil || s.GetState() != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("after StopPodSandbox: listed as %v, want NOTREADY", s)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err == nil {
		t.Errorf("after StopPodSandbox: pause %d still exists", p.PID)
	}
	if pids := processesIn(t, fmt.Sprintf("/proc/%d/ns/net", joined)); len(pids) != 1 {
		t.Errorf("after StopPodSandbox: processes %v in the pinned namespace, want only %d", pids, joined)
	}
	r.RemovePod(t, p.ID)
	if n := len(r.ListPods(t)); n != 0 {
		t.Errorf("after RemovePodSandbox: %d sandboxes listed, want none", n)
	}
	if mounted(t, p.Netns) {
		t.Errorf("after RemovePodSandbox: %s still mounted", p.Netns)
	}
}

// TestOutOfBand makes a namespace kept out of band: a process joins the pod's
// namespace, the namespace's name is deleted, the pod is stopped and
// removed: the veth stays, its namespace nameless and held by that
// process.
func TestOutOfBand(t *testing.T) {
	r := startChecked(t)
	p := runPod(t, r, "default", "oob")
	joined, _ := JoinNetns(t, p.Netns)
	netnstest.IP(t, "netns", "delete", p.NetnsName)
	r.StopPod(t, p.ID)
	r.RemovePod(t, p.ID)
	if n := len(r.ListPods(t)); n != 0 {
		t.Errorf("after stop and remove: %d sandboxes listed, want none", n)
	}
	if !linkExists(p.Veth) {
		t.Fatalf("veth %s deleted, want it left", p.Veth)
	}
	if got := master(t, p.Veth); got != Bridge {
		t.Errorf("veth %s on %q, want %s", p.Veth, got, Bridge)
	}
	nsPath := fmt.Sprintf("/proc/%d/ns/net", joined)
	if name, _ := HostVeth(t, nsPath); name != p.Veth {
		t.Errorf("HostVeth(%s) = %s, want %s", nsPath, name, p.Veth)
	}
	if _, err := os.Stat(p.Netns); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: %v, want it gone", p.Netns, err)
	}
	if pids := processesIn(t, nsPath); len(pids) != 1 || pids[0] != joined {
		t.Errorf("processes %v in the namespace, want only %d", pids, joined)
	}
}

// TestRuntimeDownAndNotReady makes a runtime that is down and a NOTREADY sandbox:
// containerd stopped or killed alone leaves the pods running and recovers
// them on restart; a sandbox whose pause process died while containerd
// ran is NOTREADY with its veth and namespace still there.
func TestRuntimeDownAndNotReady(t *testing.T) {
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
		if !linkExists(p.Veth) {
			t.Errorf("after Stop, KillRuntime and Restart: veth %s of %s gone", p.Veth, p.Name)
		}
	}

	// The pause process dies (OOM, a stray kill): the task exits, CRI
	// marks the sandbox NOTREADY and leaves its network to the kubelet.
	if err := unix.Kill(b.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := listed(t, r)[b.ID]
		if s != nil && s.GetState() == runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after its pause died: b listed as %v, want NOTREADY", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, info := r.PodStatus(t, b.ID)
	t.Logf("NOTREADY b: state %v, info %+v", status.GetState(), info)
	if !linkExists(b.Veth) || !mounted(t, b.Netns) {
		t.Errorf("NOTREADY b: veth %s exists %v, %s mounted %v; want both", b.Veth, linkExists(b.Veth), b.Netns, mounted(t, b.Netns))
	}
	if pids := processesIn(t, b.Netns); len(pids) != 0 {
		t.Errorf("NOTREADY b: processes %v in its namespace, want none", pids)
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

func TestParseSandboxInfo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    SandboxInfo
		wantErr bool
	}{
		{
			name: "ready",
			in:   `{"pid":42,"processStatus":"running","netNamespaceClosed":false,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"network","path":"/var/run/netns/cni-1"}]}}}`,
			want: SandboxInfo{PID: 42, Netns: "/var/run/netns/cni-1"},
		},
		{
			name: "stopped",
			in:   `{"pid":0,"netNamespaceClosed":true,"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/cni-2"}]}}}`,
			want: SandboxInfo{Netns: "/var/run/netns/cni-2", NetNamespaceClosed: true},
		},
		{name: "empty", in: "", wantErr: true},
		{name: "not JSON", in: "{", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSandboxInfo(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseSandboxInfo(%q) = %+v, %v, want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
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
	files := untar(t, archive)
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
	if got := untar(t, layer)["pause"]; !bytes.Equal(got, pause) {
		t.Errorf("/pause in the layer = %q, want %q", got, pause)
	}
}

// untar returns the regular files of a tar by name.
func untar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = data
		}
	}
}

// checkNothingLeft checks, after Start's cleanup, that no process, mount,
// interface or cgroup of the runtime remains. before lists the mounts
// before Start: mountinfo also lists the machine's mounts that the private
// sysfs hides, such as its /sys/fs/cgroup.
func checkNothingLeft(t *testing.T, r *Runtime, before []fixturesys.MountEntry) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if pid == os.Getpid() {
			continue
		}
		if st, err := fixturesys.ReadStat(pid); err == nil {
			t.Errorf("after cleanup: process %d %s (%c, parent %d) left", pid, st.Comm, st.State, st.PPID)
		}
	}
	// netnstest.Main made /run with netns in it; nothing else may stay.
	for name := range dirNames("/run") {
		if name != "netns" {
			t.Errorf("after cleanup: /run/%s left", name)
		}
	}
	for name := range dirNames(NetnsDir) {
		t.Errorf("after cleanup: %s/%s left", NetnsDir, name)
	}
	mounts, err := fixturesys.ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	had := map[fixturesys.MountEntry]int{}
	for _, m := range before {
		had[m]++
	}
	for _, m := range mounts {
		if had[m] > 0 {
			had[m]--
			continue
		}
		for _, dir := range []string{r.Root, r.base, NetnsDir, cniStateDir, "/var/lib", cgroupMountDir} {
			if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
				t.Errorf("after cleanup: mount %s (%s) left", m.Point, m.FSType)
			}
		}
	}
	for name := range fixturesys.LinkNames() {
		if name != "lo" {
			t.Errorf("after cleanup: interface %s left", name)
		}
	}
	// The hierarchies are the machine's: look at them in a throwaway
	// mount namespace.
	hs, err := fixturesys.CgroupHierarchies(true)
	if err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("set -e\nmount -n -t tmpfs tmpfs /sys/fs/cgroup\n")
	for _, h := range hs {
		opts := ""
		if h.Options != "" {
			opts = "-o " + h.Options
		}
		fmt.Fprintf(&script, "mkdir -p '/sys/fs/cgroup/%s'\nmount -n -t %s %s cgroup '/sys/fs/cgroup/%s'\n", h.Dir, h.FSType, opts, h.Dir)
	}
	script.WriteString("set +e\n")
	r.mu.Lock()
	for uid := range r.uids {
		fmt.Fprintf(&script, "ls -d /sys/fs/cgroup/*%s/pod%s 2>/dev/null\n", podCgroupBase, uid)
	}
	r.mu.Unlock()
	fmt.Fprintf(&script, "ls -d /sys/fs/cgroup/*%s 2>/dev/null | sed 's/^/parent: /'\ntrue\n", podCgroupBase)
	out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("list cgroups: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch {
		case line == "":
		case strings.HasPrefix(line, "parent: "):
			// Another test binary may be running pods.
			t.Logf("after cleanup: %s exists", strings.TrimPrefix(line, "parent: "))
		default:
			t.Errorf("after cleanup: cgroup %s left", line)
		}
	}
}
