package podmantest

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// pidsCgroup returns the path of pid in the pids hierarchy, as
// /proc/PID/cgroup shows it.
func pidsCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 && parts[1] == "pids" {
			return parts[2]
		}
	}
	t.Fatalf("no pids line in /proc/%d/cgroup:\n%s", pid, b)
	return ""
}

func TestSmoke(t *testing.T) {
	for _, backend := range []string{"netavark", "cni"} {
		t.Run(backend, func(t *testing.T) { testSmoke(t, backend) })
	}
}

func testSmoke(t *testing.T, backend string) {
	netnstest.Require(t)
	var ids []string
	before := mountsNow(t)
	// Registered before Start's cleanup, so it runs after it.
	t.Cleanup(func() { checkNothingLeft(t, before, ids) })
	t0 := time.Now()
	p := Start(t, Options{NetworkBackend: backend})
	t.Logf("Start (%s): %v", backend, time.Since(t0))

	t0 = time.Now()
	c1 := p.RunContainer(t, "c1")
	c2 := p.RunContainer(t, "c2")
	pod := p.CreatePod(t, "p1")
	c3 := p.RunInPod(t, "p1", "c3")
	infra := p.InfraID(t, pod)
	ids = append(ids, c1, c2, pod, c3, infra)
	t.Logf("two containers and a pod: %v", time.Since(t0))

	veths := netnstest.BridgePorts(t, p.Bridge)
	t.Logf("veths on %s: %v", p.Bridge, veths)
	if len(veths) != 3 {
		t.Errorf("%d veths on %s (%v), want 3 (c1, c2, the pod)", len(veths), p.Bridge, veths)
	}
	vethName := regexp.MustCompile(`^veth[0-9]+$`)
	if backend == "cni" {
		vethName = regexp.MustCompile(`^veth[0-9a-f]{8}$`)
	}
	for _, v := range veths {
		if !vethName.MatchString(v) {
			t.Errorf("veth %q on %s, want a name like %s", v, p.Bridge, vethName)
		}
	}

	// Cgroups, as the cgroup parser will read them.
	for _, tc := range []struct {
		what, id, want string
	}{
		{"container", c1, "/libpod_parent/libpod-" + c1},
		{"container in a pod", c3, "/libpod_parent/" + pod + "/libpod-" + c3},
		{"infra container", infra, "/libpod_parent/" + pod + "/libpod-" + infra},
	} {
		pid := p.ContainerPID(t, tc.id)
		got := pidsCgroup(t, pid)
		t.Logf("%s %.12s: pid %d, pids cgroup %s", tc.what, tc.id, pid, got)
		if got != tc.want {
			t.Errorf("%s: pids cgroup %q, want %q", tc.what, got, tc.want)
		}
		conmon := p.ConmonPID(t, tc.id)
		t.Logf("%s %.12s: conmon %d, pids cgroup %s", tc.what, tc.id, conmon, pidsCgroup(t, conmon))
	}

	// SandboxKey: a container's own namespace, the infra container's for
	// a container in a pod.
	key1, key3, keyInfra := p.SandboxKey(t, c1), p.SandboxKey(t, c3), p.SandboxKey(t, infra)
	t.Logf("SandboxKey: c1 %s, c3 %s, infra %s", key1, key3, keyInfra)
	if !strings.HasPrefix(key1, "/run/netns/netns-") {
		t.Errorf("SandboxKey of c1 = %q, want /run/netns/netns-<uuid>", key1)
	}
	if key3 != keyInfra {
		t.Errorf("SandboxKey of c3 = %q, want the infra container's %q", key3, keyInfra)
	}

	// A crash: conmon and the process killed, Podman not told.
	pid1 := p.ContainerPID(t, c1)
	t0 = time.Now()
	p.Crash(t, c1)
	t.Logf("Crash: %v", time.Since(t0))
	state := p.Run(t, "container", "inspect", "-f", "{{.State.Status}} {{.State.Pid}}", c1)
	if want := "running " + strconv.Itoa(pid1); state != want {
		t.Errorf("after Crash: podman says c1 is %q, want %q (the dead PID)", state, want)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid1)); err == nil {
		t.Errorf("after Crash: process %d of c1 still exists", pid1)
	}
	if !fixturesys.Mounted(t, key1) {
		t.Errorf("after Crash: %s is not mounted, want the mount left", key1)
	}
	if got := netnstest.BridgePorts(t, p.Bridge); len(got) != 3 {
		t.Errorf("after Crash: veths %v, want c1's still there", got)
	}

	// The API down and back.
	p.StopService(t)
	if _, err := p.get(APIVersion + "/libpod/_ping"); err == nil {
		t.Error("_ping answered after StopService")
	}
	t0 = time.Now()
	p.StartService(t)
	t.Logf("StartService: %v", time.Since(t0))
	t.Logf("podman ps -a after Crash:\n%s", p.Run(t, "ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}} {{.Status}}"))
}

// mountsNow returns the mounts of this namespace, hidden ones included.
func mountsNow(t *testing.T) []fixturesys.MountEntry {
	t.Helper()
	m, err := fixturesys.ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkNothingLeft checks, after Start's cleanup, that nothing of it is
// left: no process, interface, mount, and no cgroup named after ids.
func checkNothingLeft(t *testing.T, before []fixturesys.MountEntry, ids []string) {
	t.Helper()
	fixturesys.CheckNothingLeft(t, before)
	var globs []string
	for _, id := range ids {
		globs = append(globs, cgroupParent+"/*"+id+"*", cgroupParent+"/*/*"+id+"*")
	}
	left, err := fixturesys.CgroupsLeft(globs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, cg := range left {
		t.Errorf("after cleanup: cgroup %s left", cg)
	}
	// Another test binary may be running containers.
	if parents, err := fixturesys.CgroupsLeft(cgroupParent); err == nil && len(parents) > 0 {
		t.Logf("after cleanup: %v exist", parents)
	}
}

// TestCleanupAfterPodCrash crashes a pod (its infra container and its
// container) and a container outside it, then checks that the cleanup
// leaves nothing: Podman keeps calling them running, and their cgroups,
// veths and namespace mounts stay until the cleanup removes them.
func TestCleanupAfterPodCrash(t *testing.T) {
	netnstest.Require(t)
	var ids []string
	before := mountsNow(t)
	t.Cleanup(func() { checkNothingLeft(t, before, ids) })
	p := Start(t, Options{})
	c1 := p.RunContainer(t, "c1")
	pod := p.CreatePod(t, "p1")
	c2 := p.RunInPod(t, pod, "c2")
	infra := p.InfraID(t, pod)
	ids = append(ids, c1, pod, c2, infra)
	for _, id := range []string{c2, infra, c1} {
		p.Crash(t, id)
	}
	var pods []struct{ Status string }
	if err := json.Unmarshal(p.Get(t, APIVersion+"/libpod/pods/json"), &pods); err != nil || len(pods) != 1 {
		t.Fatalf("pods/json: %v, %+v", err, pods)
	}
	veths := netnstest.BridgePorts(t, p.Bridge)
	t.Logf("after Crash of every container of the pod: pods/json Status %q; veths %v", pods[0].Status, veths)
	if got := len(veths); got != 2 {
		t.Errorf("%d veths after the crash, want 2 (c1, the pod)", got)
	}
}
