package podmantest

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// apiContainer is what the smoke test reads of
// /libpod/containers/{id}/json.
type apiContainer struct {
	ID    string `json:"Id"`
	Name  string `json:"Name"`
	Pod   string `json:"Pod"`
	State struct {
		Status     string `json:"Status"`
		Running    bool   `json:"Running"`
		Pid        int    `json:"Pid"`
		ConmonPid  int    `json:"ConmonPid"`
		CgroupPath string `json:"CgroupPath"`
	} `json:"State"`
	NetworkSettings struct {
		SandboxKey string `json:"SandboxKey"`
	} `json:"NetworkSettings"`
	HostConfig struct {
		NetworkMode string `json:"NetworkMode"`
	} `json:"HostConfig"`
}

// apiListed is what the smoke test reads of /libpod/containers/json.
type apiListed struct {
	ID       string   `json:"Id"`
	Names    []string `json:"Names"`
	Pid      int      `json:"Pid"`
	Pod      string   `json:"Pod"`
	PodName  string   `json:"PodName"`
	IsInfra  bool     `json:"IsInfra"`
	State    string   `json:"State"`
	Networks []string `json:"Networks"`
}

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

func inspectAPI(t *testing.T, p *Podman, id string) apiContainer {
	t.Helper()
	var c apiContainer
	body := p.Get(t, APIVersion+"/libpod/containers/"+id+"/json")
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("containers/%s/json: %v\n%s", id, err, body)
	}
	return c
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
	t.Cleanup(func() { checkNothingLeft(t, ids, before) })
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

	veths := p.HostVeths(t)
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

	// The REST API.
	var listed []apiListed
	body := p.Get(t, APIVersion+"/libpod/containers/json?all=true")
	if err := json.Unmarshal(body, &listed); err != nil {
		t.Fatalf("containers/json: %v\n%s", err, body)
	}
	seen := map[string]apiListed{}
	for _, c := range listed {
		seen[c.ID] = c
		t.Logf("containers/json: Id %.12s Names %v State %q Pid %d Pod %.12s PodName %q IsInfra %v Networks %v", c.ID, c.Names, c.State, c.Pid, c.Pod, c.PodName, c.IsInfra, c.Networks)
	}
	for _, id := range []string{c1, c2, c3, infra} {
		if c, ok := seen[id]; !ok || c.State != "running" || c.Pid <= 0 {
			t.Errorf("containers/json: %.12s is %+v, want it running", id, c)
		}
	}
	if !seen[infra].IsInfra || seen[c3].Pod != pod || seen[c3].PodName != "p1" {
		t.Errorf("containers/json: infra %+v, c3 %+v: want IsInfra and the pod", seen[infra], seen[c3])
	}
	for _, id := range []string{c1, c3} {
		c := inspectAPI(t, p, id)
		t.Logf("containers/%.12s/json: Name %q Pod %.12s State.Status %q State.Pid %d State.ConmonPid %d State.CgroupPath %q NetworkSettings.SandboxKey %q HostConfig.NetworkMode %q",
			id, c.Name, c.Pod, c.State.Status, c.State.Pid, c.State.ConmonPid, c.State.CgroupPath, c.NetworkSettings.SandboxKey, c.HostConfig.NetworkMode)
		if c.State.Pid != p.ContainerPID(t, id) || c.NetworkSettings.SandboxKey != p.SandboxKey(t, id) {
			t.Errorf("containers/%.12s/json: Pid %d, SandboxKey %q: not what podman inspect says", id, c.State.Pid, c.NetworkSettings.SandboxKey)
		}
	}
	var pods []struct {
		ID         string `json:"Id"`
		Name       string `json:"Name"`
		InfraID    string `json:"InfraId"`
		Status     string `json:"Status"`
		Cgroup     string `json:"Cgroup"`
		Networks   []string
		Containers []struct {
			ID     string `json:"Id"`
			Names  string `json:"Names"`
			Status string `json:"Status"`
		}
	}
	body = p.Get(t, APIVersion+"/libpod/pods/json")
	if err := json.Unmarshal(body, &pods); err != nil {
		t.Fatalf("pods/json: %v\n%s", err, body)
	}
	t.Logf("pods/json: %s", compact(body))
	if len(pods) != 1 || pods[0].ID != pod || pods[0].InfraID != infra || len(pods[0].Containers) != 2 {
		t.Errorf("pods/json: %+v, want pod %.12s with infra %.12s and c3", pods, pod, infra)
	}
	var networks []struct {
		Name      string `json:"name"`
		Interface string `json:"network_interface"`
		Driver    string `json:"driver"`
	}
	body = p.Get(t, APIVersion+"/libpod/networks/json")
	if err := json.Unmarshal(body, &networks); err != nil {
		t.Fatalf("networks/json: %v\n%s", err, body)
	}
	t.Logf("networks/json: %s", compact(body))
	if len(networks) != 1 || networks[0].Name != Network || networks[0].Interface != p.Bridge {
		t.Errorf("networks/json: %+v, want %s on %s", networks, Network, p.Bridge)
	}

	// Events: a container start.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://d"+APIVersion+"/libpod/events?stream=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
		for sc.Scan() {
			var ev struct {
				Type   string
				Action string
				Actor  struct{ Attributes map[string]string }
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Type == "container" && ev.Action == "start" && ev.Actor.Attributes["name"] == "c4" {
				started <- sc.Text()
				return
			}
		}
		close(started)
	}()
	c4 := p.RunContainer(t, "c4")
	ids = append(ids, c4)
	select {
	case line, ok := <-started:
		if !ok {
			t.Error("events: stream ended without a start event for c4")
		}
		t.Logf("events: %s", line)
	case <-ctx.Done():
		t.Error("events: no start event for c4 within 60s")
	}
	cancel()

	// A crash: conmon and the process killed, Podman not told.
	pid1 := p.ContainerPID(t, c1)
	t0 = time.Now()
	p.Crash(t, c1)
	t.Logf("Crash: %v", time.Since(t0))
	c := inspectAPI(t, p, c1)
	_, statErr := os.Stat("/proc/" + strconv.Itoa(c.State.Pid))
	t.Logf("after Crash: containers/%.12s/json: State.Status %q Running %v Pid %d (process exists: %v) ConmonPid %d; SandboxKey %q mounted: %v; veths %v",
		c1, c.State.Status, c.State.Running, c.State.Pid, statErr == nil, c.State.ConmonPid, c.NetworkSettings.SandboxKey, mounted(t, key1), p.HostVeths(t))
	if c.State.Status != "running" || c.State.Pid != pid1 {
		t.Errorf("after Crash: Status %q Pid %d, want running with the dead PID %d", c.State.Status, c.State.Pid, pid1)
	}
	if len(p.HostVeths(t)) != 4 {
		t.Errorf("after Crash: veths %v, want c1's still there", p.HostVeths(t))
	}

	// The API down and back.
	p.StopService(t)
	if _, err := p.get(APIVersion + "/libpod/_ping"); err == nil {
		t.Error("_ping answered after StopService")
	}
	t0 = time.Now()
	p.StartService(t)
	t.Logf("StartService: %v", time.Since(t0))
	c = inspectAPI(t, p, c1)
	t.Logf("after Crash and a service restart: containers/%.12s/json: State.Status %q Pid %d", c1, c.State.Status, c.State.Pid)
	t.Logf("podman ps -a after Crash:\n%s", p.Run(t, "ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}} {{.Status}}"))
}

// compact returns body on one line, cut to 600 bytes.
func compact(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return s
}

// mounted reports whether path is a mount point here.
func mounted(t *testing.T, path string) bool {
	t.Helper()
	mounts, err := fixturesys.ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Point == path {
			return true
		}
	}
	return false
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

// checkNothingLeft checks, after Start's cleanup, that no process but the
// test binary, no interface but lo, no mount that was not there before, no
// network namespace mount and no cgroup named after ids (in the pids
// hierarchy, looked at through a mount of its own) is left.
func checkNothingLeft(t *testing.T, ids []string, before []fixturesys.MountEntry) {
	t.Helper()
	had := map[fixturesys.MountEntry]int{}
	for _, m := range before {
		had[m]++
	}
	for _, m := range mountsNow(t) {
		if had[m] > 0 {
			had[m]--
			continue
		}
		t.Errorf("after cleanup: mount %s (%s) left", m.Point, m.FSType)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, proc := range procs {
		pid, _ := strconv.Atoi(filepath.Base(proc))
		if pid == os.Getpid() {
			continue
		}
		if st, err := fixturesys.ReadStat(pid); err == nil {
			t.Errorf("after cleanup: process %d %s (%c, parent %d) left", pid, st.Comm, st.State, st.PPID)
		}
	}
	for name := range fixturesys.LinkNames() {
		if name != "lo" {
			t.Errorf("after cleanup: interface %s left", name)
		}
	}
	if entries, _ := os.ReadDir("/run/netns"); len(entries) > 0 {
		t.Errorf("after cleanup: /run/netns holds %d entries", len(entries))
	}
	dir, err := os.MkdirTemp("", "podmantest-pids")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "pids"); err != nil {
		t.Fatalf("mount the pids hierarchy: %v", err)
	}
	defer func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}()
	_ = filepath.WalkDir(filepath.Join(dir, cgroupParent), func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		for _, id := range ids {
			if strings.Contains(d.Name(), id) {
				t.Errorf("after cleanup: cgroup %s left", strings.TrimPrefix(path, dir))
			}
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, cgroupParent)); err == nil {
		// Another test binary may be running containers.
		t.Logf("after cleanup: cgroup /%s exists", cgroupParent)
	}
	for _, name := range []string{"/run/podman", "/run/libpod", "/run/containers"} {
		if _, err := os.Stat(name); err == nil {
			t.Errorf("after cleanup: %s left", name)
		}
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
	t.Cleanup(func() { checkNothingLeft(t, ids, before) })
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
	t.Logf("after Crash of every container of the pod: pods/json Status %q; veths %v", pods[0].Status, p.HostVeths(t))
	if got := len(p.HostVeths(t)); got != 2 {
		t.Errorf("%d veths after the crash, want 2 (c1, the pod)", got)
	}
}
