package dockertest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// startChecked starts a Daemon and checks, once its cleanup has run, that
// nothing of it is left (see checkNothingLeft). ids collects the containers
// whose cgroups must be gone.
func startChecked(t *testing.T) (d *Daemon, ids *[]string) {
	t.Helper()
	netnstest.Require(t)
	ids = new([]string)
	before, err := fixturesys.ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	// Registered before Start's cleanup, so it runs after it.
	t.Cleanup(func() {
		if d != nil {
			checkNothingLeft(t, before, *ids)
		}
	})
	t0 := time.Now()
	d = Start(t)
	t.Logf("Start: %v", time.Since(t0))
	return d, ids
}

// procNetns returns the path of the network namespace of pid.
func procNetns(pid int) string {
	return "/proc/" + strconv.Itoa(pid) + "/ns/net"
}

// nsIno returns the inode of the namespace file at path.
func nsIno(t *testing.T, path string) uint64 {
	t.Helper()
	ino, err := fixturesys.NsInode(path)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// state returns the container's State.Status and its `docker ps -a` status.
func state(t *testing.T, d *Daemon, id string) (status, ps string) {
	t.Helper()
	status = d.Docker(t, "inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}}", id)
	ps = d.Docker(t, "ps", "-a", "--no-trunc", "--filter", "id="+id, "--format", "{{.Status}}")
	return status, ps
}

// TestNetworks checks where Docker puts containers' veths: on docker0 for
// the default bridge, on br-<12 hex of the network ID> for a user-defined
// network, none for a container sharing another's namespace; and that a
// clean Stop and Restart leaves the containers Exited without their veths.
func TestNetworks(t *testing.T) {
	d, ids := startChecked(t)
	t0 := time.Now()
	web1 := d.Run(t, "web1")
	t.Logf("first Run (image import and build included): %v", time.Since(t0))
	web2 := d.Run(t, "web2")
	netID := d.Docker(t, "network", "create", "appnet")
	if !fullID.MatchString(netID) {
		t.Fatalf("docker network create printed %q, want a network ID", netID)
	}
	api := d.Run(t, "api", "--network", "appnet")
	sidecar := d.Run(t, "sidecar", "--network", "container:web1")
	*ids = append(*ids, web1, web2, api, sidecar)

	appBridge := "br-" + netID[:12]
	veths := map[string]string{}
	for _, c := range []struct {
		name, id, bridge string
	}{
		{"web1", web1, "docker0"},
		{"web2", web2, "docker0"},
		{"api", api, appBridge},
	} {
		pid := d.ContainerPID(t, c.id)
		veth := netnstest.HostVeth(t, procNetns(pid))
		if got := netnstest.Master(t, veth); got != c.bridge {
			t.Errorf("master of %s (veth of %s) = %q, want %q", veth, c.name, got, c.bridge)
		}
		key := d.SandboxKey(t, c.id)
		if !strings.HasPrefix(key, d.ExecRoot+"/netns/") || !fixturesys.Mounted(t, key) {
			t.Errorf("SandboxKey(%s) = %q, want a mount under %s/netns", c.name, key, d.ExecRoot)
		} else if got := netnstest.HostVeth(t, key); got != veth {
			t.Errorf("HostVeth(SandboxKey(%s)) = %q, want %q", c.name, got, veth)
		}
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			t.Fatal(err)
		}
		if want := ":pids:/docker/" + c.id + "\n"; !strings.Contains(string(cg), want) {
			t.Errorf("/proc/%d/cgroup of %s lacks %q:\n%s", pid, c.name, want, cg)
		}
		t.Logf("%s: pid %d, veth %s on %s, sandbox %s", c.name, pid, veth, c.bridge, key)
		veths[c.name] = veth
	}
	if veths["web1"] == veths["web2"] {
		t.Errorf("web1 and web2 share veth %s", veths["web1"])
	}
	if got := netnstest.BridgePorts(t, "docker0"); len(got) != 2 {
		t.Errorf("ports of docker0 = %v, want the veths of web1 and web2", got)
	}
	if got := netnstest.BridgePorts(t, appBridge); len(got) != 1 || got[0] != veths["api"] {
		t.Errorf("ports of %s = %v, want [%s]", appBridge, got, veths["api"])
	}

	// The sidecar joins web1's namespace: no veth of its own.
	sidecarPID, web1PID := d.ContainerPID(t, sidecar), d.ContainerPID(t, web1)
	if a, b := nsIno(t, procNetns(sidecarPID)), nsIno(t, procNetns(web1PID)); a != b {
		t.Errorf("network namespace of sidecar = %d, want web1's %d", a, b)
	}
	if got := netnstest.HostVeth(t, procNetns(sidecarPID)); got != veths["web1"] {
		t.Errorf("HostVeth(sidecar) = %q, want web1's %q", got, veths["web1"])
	}
	if key := d.SandboxKey(t, sidecar); key != "" {
		t.Errorf("SandboxKey(sidecar) = %q, want \"\"", key)
	}
	if mode := d.Docker(t, "inspect", "-f", "{{.HostConfig.NetworkMode}}", sidecar); mode != "container:"+web1 {
		t.Errorf("NetworkMode of sidecar = %q, want container:<web1's ID>", mode)
	}

	// A clean stop: dockerd stops the containers and removes their veths.
	t0 = time.Now()
	d.Stop(t)
	t.Logf("Stop with 4 running containers: %v", time.Since(t0))
	if d.PID() != 0 || d.Ping() == nil {
		t.Errorf("after Stop: PID %d, /_ping answered", d.PID())
	}
	for name, veth := range veths {
		if netnstest.LinkExists(veth) {
			t.Errorf("after Stop: veth %s of %s still exists", veth, name)
		}
	}
	if n := netnsMounts(t, d); len(n) != 0 {
		t.Errorf("after Stop: namespace mounts %v remain", n)
	}
	t.Logf("after Stop: docker0 exists: %v, %s exists: %v", netnstest.LinkExists("docker0"), appBridge, netnstest.LinkExists(appBridge))
	t0 = time.Now()
	d.Restart(t)
	t.Logf("Restart after Stop: %v", time.Since(t0))
	// The image's stop signal is SIGKILL: 137.
	for _, id := range []string{web1, web2, api, sidecar} {
		wantExited(t, d, "after Stop and Restart: container "+id[:12], id, 137)
	}
	if got := netnstest.BridgePorts(t, "docker0"); len(got) != 0 {
		t.Errorf("after Stop and Restart: ports of docker0 = %v, want none", got)
	}
}

// TestWithNetnstestCgroups shares /sys/fs/cgroup with
// netnstest.CgroupRoot, which mounts its own hierarchy in the same tmpfs:
// whichever comes first mounts the tmpfs, the other reuses it, and Start's
// cleanup leaves it while netnstest's hierarchy is mounted in it.
func TestWithNetnstestCgroups(t *testing.T) {
	d, ids := startChecked(t)
	root := netnstest.CgroupRoot(t)
	holder := netnstest.Holder(t, "/docker/dockertest-holder")
	id := d.Run(t, "c1")
	*ids = append(*ids, id)
	for pid, want := range map[int]string{
		holder:                ":name=veth_exporter_test:/docker/dockertest-holder\n",
		d.ContainerPID(t, id): ":pids:/docker/" + id + "\n",
	} {
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(cg), want) {
			t.Errorf("/proc/%d/cgroup lacks %q:\n%s", pid, want, cg)
		}
	}
	t.Logf("netnstest.CgroupRoot: %s; /sys/fs/cgroup: %v", root, cgroupEntries(t))
}

// cgroupEntries lists /sys/fs/cgroup.
func cgroupEntries(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(fixturesys.CgroupMountDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// netnsMounts returns the mounts under ExecRoot/netns.
func netnsMounts(t *testing.T, d *Daemon) []string {
	t.Helper()
	mounts, err := fixturesys.ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range mounts {
		if strings.HasPrefix(m.Point, d.ExecRoot+"/netns/") {
			out = append(out, m.Point)
		}
	}
	return out
}

// leftover is a container's network as observed before a crash.
type leftover struct {
	id, veth, key string
}

// runAndCrash runs two containers on docker0, victim and bystander, then
// crashes the daemon with the victim only, and checks what that leaves: the
// victim's veth on docker0 and its namespace mounted at its sandbox key
// with no process in it, while the bystander keeps running without
// dockerd or containerd.
func runAndCrash(t *testing.T, d *Daemon, ids *[]string) (victim, bystander leftover) {
	t.Helper()
	for _, c := range []*leftover{&victim, &bystander} {
		name := "victim"
		if c == &bystander {
			name = "bystander"
		}
		c.id = d.Run(t, name)
		*ids = append(*ids, c.id)
		c.key = d.SandboxKey(t, c.id)
		c.veth = netnstest.HostVeth(t, procNetns(d.ContainerPID(t, c.id)))
	}
	victimPID, bystanderPID := d.ContainerPID(t, victim.id), d.ContainerPID(t, bystander.id)

	t0 := time.Now()
	d.Crash(t, victim.id)
	t.Logf("Crash: %v", time.Since(t0))

	if d.PID() != 0 || d.Ping() == nil {
		t.Errorf("after Crash: PID %d, /_ping answered", d.PID())
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", victimPID)); err == nil {
		t.Errorf("after Crash: victim's process %d still exists", victimPID)
	}
	for _, c := range []leftover{victim, bystander} {
		if got := netnstest.Master(t, c.veth); got != "docker0" {
			t.Errorf("after Crash: master of %s = %q, want docker0", c.veth, got)
		}
		if !fixturesys.Mounted(t, c.key) {
			t.Fatalf("after Crash: %s is not a mount point", c.key)
		}
		if got := netnstest.HostVeth(t, c.key); got != c.veth {
			t.Errorf("after Crash: HostVeth(%s) = %q, want %q", c.key, got, c.veth)
		}
	}
	if pids := fixturesys.NetnsProcesses(t, victim.key); len(pids) != 0 {
		t.Errorf("after Crash: processes %v in the victim's namespace, want none", pids)
	}
	if pids := fixturesys.NetnsProcesses(t, bystander.key); len(pids) != 1 || pids[0] != bystanderPID {
		t.Errorf("after Crash: processes %v in the bystander's namespace, want [%d]", pids, bystanderPID)
	}
	t.Logf("after Crash: victim's veth %s on docker0, %s mounted, empty; victim's cgroups %s; processes: %s",
		victim.veth, victim.key, cgroupsOf(victim.id), processCount(t))
	return victim, bystander
}

// cgroupsOf lists the hierarchies under /sys/fs/cgroup that hold the
// cgroup /docker/<id>.
func cgroupsOf(id string) []string {
	dirs, _ := filepath.Glob(filepath.Join(fixturesys.CgroupMountDir, "*", cgroupParent, id))
	var hs []string
	for _, dir := range dirs {
		hs = append(hs, filepath.Base(filepath.Dir(filepath.Dir(dir))))
	}
	return hs
}

// TestCrashWithoutRestart leaves the daemon crashed, the bystander still
// running without dockerd and containerd: Start's cleanup must take down
// its shim and process, the namespace mounts, the veths and the cgroups
// (checked by startChecked).
func TestCrashWithoutRestart(t *testing.T) {
	d, ids := startChecked(t)
	runAndCrash(t, d, ids)
	if _, err := d.TryDocker("ps"); err == nil {
		t.Error("docker ps answered after Crash")
	}
}

// processCount describes the processes other than the test binary.
func processCount(t *testing.T) string {
	t.Helper()
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if pid == os.Getpid() {
			continue
		}
		st, err := fixturesys.ReadStat(pid)
		if err != nil {
			continue
		}
		out = append(out, fmt.Sprintf("%d:%s(%c,ppid %d)", pid, st.Comm, st.State, st.PPID))
	}
	return strings.Join(out, " ")
}

// wantExited checks that the container is exited with the given code, as
// docker inspect and docker ps -a show it.
func wantExited(t *testing.T, d *Daemon, what, id string, code int) {
	t.Helper()
	status, ps := state(t, d, id)
	want := fmt.Sprintf("exited exit=%d", code)
	if status != want || !strings.HasPrefix(ps, fmt.Sprintf("Exited (%d)", code)) {
		t.Errorf("%s is %q (docker ps -a: %q), want %q", what, status, ps, want)
	}
}

// TestCrashLostNetworkState crashes dockerd with a running container, then
// restarts it without its network store: Docker shows the container Exited
// but, knowing nothing of its endpoint, leaves its veth on docker0 and its
// namespace mounted. The bystander, which still ran, is killed on restart
// and its veth and mount stay too.
func TestCrashLostNetworkState(t *testing.T) {
	d, ids := startChecked(t)
	victim, bystander := runAndCrash(t, d, ids)

	d.LoseNetworkState(t)
	t0 := time.Now()
	d.Restart(t)
	t.Logf("Restart after Crash and LoseNetworkState: %v", time.Since(t0))
	// Leave Docker more time than it takes with intact state to delete
	// a veth (it has done so before /_ping answers), so that a survival
	// is not a race.
	time.Sleep(500 * time.Millisecond)
	wantExited(t, d, "after Restart: victim", victim.id, 255)
	// With live-restore off, dockerd kills a container it finds running.
	wantExited(t, d, "after Restart: bystander", bystander.id, 137)
	for _, c := range []leftover{victim, bystander} {
		if !netnstest.LinkExists(c.veth) {
			t.Errorf("after Restart without network state: veth %s was deleted, want it left", c.veth)
		} else if got := netnstest.Master(t, c.veth); got != "docker0" {
			t.Errorf("after Restart without network state: master of %s = %q, want docker0", c.veth, got)
		}
		if !fixturesys.Mounted(t, c.key) {
			t.Errorf("after Restart without network state: %s is not mounted, want the mount left", c.key)
		} else if pids := fixturesys.NetnsProcesses(t, c.key); len(pids) != 0 {
			t.Errorf("after Restart without network state: processes %v in the namespace at %s, want none", pids, c.key)
		}
	}
	t.Logf("after Restart without network state: docker0 ports %v; cgroups of victim %v, of bystander %v; processes: %s",
		netnstest.BridgePorts(t, "docker0"), cgroupsOf(victim.id), cgroupsOf(bystander.id), processCount(t))
}

// checkNothingLeft checks, after Start's cleanup, that no process, mount,
// interface or cgroup of the daemon remains.
func checkNothingLeft(t *testing.T, before []fixturesys.MountEntry, ids []string) {
	t.Helper()
	fixturesys.CheckNothingLeft(t, before)
	var globs []string
	for _, id := range ids {
		globs = append(globs, cgroupParent+"/"+id)
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
