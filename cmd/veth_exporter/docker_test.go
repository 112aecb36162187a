package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/dockertest"
	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The Docker suite: the real binary against a real dockerd (Debian
// docker.io) running in the test's private namespaces, with containers from
// a locally imported busybox image.

func dockerUp(up float64) func(string) bool {
	return func(m string) bool {
		v, ok := sample(m, `veth_scrape_collector_success{collector="docker"}`)
		return ok && v == up
	}
}

// TestDockerOwners: containers on the default bridge and on a user-defined
// network: each veth is owned, named after its container, and the
// network's bridge maps to its name.
func TestDockerOwners(t *testing.T) {
	netnstest.Require(t)
	d := dockertest.Start(t)
	netID := d.Docker(t, "network", "create", "appnet")
	containers := []struct{ id, name, master, project, service string }{
		{d.Run(t, "web1", "--label", "com.docker.compose.project=shop", "--label", "com.docker.compose.service=web"), "web1", "docker0", "shop", "web"},
		{d.Run(t, "web2"), "web2", "docker0", "", ""},
		{d.Run(t, "app1", "--network", "appnet"), "app1", "br-" + netID[:12], "", ""},
	}
	// Containers in the host's namespace or in none own no veth.
	hostNet := d.Run(t, "hostnet", "--network", "host")
	noNet := d.Run(t, "nonet", "--network", "none")
	e := dockerExporter(t, d)
	m := e.scrape(t)
	wantSample(t, m, `veth_scrape_collector_success{collector="docker"}`, 1)
	for _, c := range containers {
		dev := vethOf(t, d, c.id)
		wantSample(t, m, ownerSeries("veth_owner_info", dev, c.id, c.name), 1)
		wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="container",verdict="owned"}`, dev), 1)
		if info := seriesOf(m, "veth_info", dev); len(info) != 1 || !strings.Contains(info[0], `master="`+c.master+`"`) {
			t.Errorf("%s (%s): veth_info %q, want master %s", c.name, dev, info, c.master)
		}
		wantSample(t, m, fmt.Sprintf(`veth_docker_container_info{compose_project=%q,compose_service=%q,id=%q,image=%q,name=%q,state="running"}`,
			c.project, c.service, c.id, d.Image(t), c.name), 1)
	}
	for _, id := range []string{hostNet, noNet} {
		if strings.Contains(m, id) {
			t.Errorf("container %s (network host or none) appears in the metrics", id)
		}
	}
	if n := strings.Count(m, "veth_owner_info{"); n != len(containers) {
		t.Errorf("%d veth_owner_info series, want %d", n, len(containers))
	}

	// Without the resolver: owners from cgroups alone, IDs without names,
	// and no docker stage.
	plain := startExporter(t, "--docker.host="+d.Host, "--no-collector.docker", "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	pm := plain.scrape(t)
	if _, ok := sample(pm, `veth_scrape_collector_success{collector="docker"}`); ok {
		t.Error("--no-collector.docker: a docker stage is still reported")
	}
	web2 := vethOf(t, d, containers[1].id)
	wantSample(t, pm, ownerSeries("veth_owner_info", web2, containers[1].id, ""), 1)
	wantSample(t, m, `veth_bridge_info{master="br-`+netID[:12]+`",network="appnet"}`, 1)
	wantSample(t, m, `veth_bridge_info{master="docker0",network="bridge"}`, 1)

	// A quiet node costs no Docker API call per scrape.
	before, _ := sample(m, "veth_docker_api_requests_total")
	for range 5 {
		m = e.scrape(t)
	}
	if after, _ := sample(m, "veth_docker_api_requests_total"); after != before {
		t.Errorf("5 scrapes of a quiet node made %v Docker API requests, want 0", after-before)
	}

	// A paused container is frozen, not gone: its veth stays owned.
	paused2 := containers[1]
	d.Docker(t, "pause", "web2")
	defer d.Docker(t, "unpause", "web2")
	paused := fmt.Sprintf(`veth_docker_container_info{compose_project="",compose_service="",id=%q,image=%q,name="web2",state="paused"}`, paused2.id, d.Image(t))
	m = e.scrapeUntil(t, "web2 paused", func(m string) bool { _, ok := sample(m, paused); return ok })
	dev := vethOf(t, d, paused2.id)
	wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="container",verdict="owned"}`, dev), 1)
}

// TestDockerSharedNamespace: two containers in one namespace make one
// veth, owned by the sandbox container.
func TestDockerSharedNamespace(t *testing.T) {
	netnstest.Require(t)
	d := dockertest.Start(t)
	sandbox := d.Run(t, "sandbox")
	sidecar := d.Run(t, "sidecar", "--network", "container:sandbox")
	dev := vethOf(t, d, sandbox)
	m := dockerExporter(t, d).scrape(t)
	wantSample(t, m, ownerSeries("veth_owner_info", dev, sandbox, "sandbox"), 1)
	if strings.Contains(m, sidecar) {
		t.Errorf("the sidecar %s owns something:\n%s", sidecar, m)
	}
	if n := strings.Count(m, "veth_owner_info{"); n != 1 {
		t.Errorf("%d veth_owner_info series, want 1 (one namespace, one veth)", n)
	}
	// inspect lists every container of the namespace, the sandbox first.
	out, err := exec.Command(exporterBinary(t), "inspect", "--output=json", "--inventory.trust-pid-namespace", "--docker.host="+d.Host,
		"--state.path="+filepath.Join(t.TempDir(), "state.json")).Output()
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	var snap struct {
		Veths []struct {
			Device    string `json:"device"`
			PeerNetns struct {
				Containers []string `json:"containers"`
			} `json:"peer_netns"`
		} `json:"veths"`
	}
	if err := json.Unmarshal(out, &snap); err != nil {
		t.Fatal(err)
	}
	for _, v := range snap.Veths {
		if v.Device == dev && fmt.Sprint(v.PeerNetns.Containers) != "[sandbox sidecar]" {
			t.Errorf("inspect lists the containers of %s's namespace as %q, want [sandbox sidecar]", dev, v.PeerNetns.Containers)
		}
	}
}

// TestDockerCrashLeftover is the production leftover: the runtime is
// killed with the container, Docker's own mount pins the namespace with no
// process in it. While Docker is down only Docker can tell, so the veth is
// unknown; once Docker is back without its network state, the container is
// Exited and the veth a leftover that still names it.
func TestDockerCrashLeftover(t *testing.T) {
	netnstest.Require(t)
	d := dockertest.Start(t)
	api := d.Run(t, "api")
	dev := vethOf(t, d, api)
	// worker's namespace is also held by a stray process (an operator's
	// nsenter), which survives the crash.
	worker := d.Run(t, "worker")
	workerDev := vethOf(t, d, worker)
	netnstest.Join(t, d.ContainerPID(t, worker))
	e := dockerExporter(t, d)
	m := e.scrape(t)
	wantSample(t, m, ownerSeries("veth_owner_info", dev, api, "api"), 1)
	wantSample(t, m, ownerSeries("veth_owner_info", workerDev, worker, "worker"), 1)

	d.Crash(t, api, worker)
	m = e.scrapeUntil(t, "Docker down", dockerUp(0))
	for _, dv := range []string{dev, workerDev} {
		wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="resolver_down",verdict="unknown"}`, dv), 1)
		wantSample(t, m, fmt.Sprintf(`veth_orphaned{device=%q}`, dv), 0)
	}

	d.LoseNetworkState(t)
	d.Restart(t)
	m = e.scrapeUntil(t, "Docker up", dockerUp(1))
	if state := d.Docker(t, "inspect", "-f", "{{.State.Status}}", api); state != "exited" {
		t.Fatalf("docker says api is %s, want exited", state)
	}
	wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="netns_empty",verdict="orphaned"}`, dev), 1)
	wantSample(t, m, ownerSeries("veth_last_owner_info", dev, api, "api"), 1)
	// Docker says worker exited, yet the stray lives in its namespace.
	wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="owner_exited",verdict="orphaned"}`, workerDev), 1)
	wantSample(t, m, ownerSeries("veth_last_owner_info", workerDev, worker, "worker"), 1)
	wantSample(t, m, "veth_leaked_netns", 0)

	// An exporter that never saw api running (a fresh inspect, no
	// history) learns the leftover's last owner from Docker's record of
	// the container's sandbox.
	out, err := exec.Command(exporterBinary(t), "inspect", "--output=json", "--inventory.trust-pid-namespace", "--docker.host="+d.Host,
		"--state.path="+filepath.Join(t.TempDir(), "state.json")).Output()
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	var snap struct {
		Veths []struct {
			Device, Verdict, Reason string
			LastOwner               *struct{ ID, Name string } `json:"last_owner"`
			LastOwnerSeen           time.Time                  `json:"last_owner_seen"`
		} `json:"veths"`
	}
	if err := json.Unmarshal(out, &snap); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range snap.Veths {
		if v.Device != dev {
			continue
		}
		found = true
		if v.Verdict != "orphaned" || v.LastOwner == nil || v.LastOwner.ID != api || v.LastOwner.Name != "api" {
			t.Errorf("fresh inspect: %s is %s/%s, last owner %+v; want orphaned, last owned by api %s", dev, v.Verdict, v.Reason, v.LastOwner, api)
		}
		// When Docker saw it stop: the last time it was seen running.
		if v.LastOwnerSeen.IsZero() || time.Since(v.LastOwnerSeen) > time.Minute {
			t.Errorf("fresh inspect: %s last owner seen %v, want Docker's recent finish time", dev, v.LastOwnerSeen)
		}
	}
	if !found {
		t.Errorf("fresh inspect does not list %s:\n%s", dev, out)
	}
	// The table names the last owner of every orphan, the one a stray
	// process holds too.
	table, err := exec.Command(exporterBinary(t), "inspect", "--inventory.trust-pid-namespace", "--docker.host="+d.Host,
		"--state.path="+filepath.Join(t.TempDir(), "state.json")).Output()
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for _, want := range []struct{ dev, id, name string }{{dev, api, "api"}, {workerDev, worker, "worker"}} {
		row := tableRow(string(table), want.dev)
		if !strings.Contains(row, "was container "+want.id[:12]+" ("+want.name+")") {
			t.Errorf("inspect's row of %s does not name its last owner, container %s (%s):\n%s", want.dev, want.id[:12], want.name, table)
		}
	}

	// Removing the veth, as an operator would, leaves Docker's mount
	// pinning an empty namespace: a leaked namespace, listed by inspect.
	sandboxKey := d.Docker(t, "inspect", "-f", "{{.NetworkSettings.SandboxKey}}", api)
	if sandboxKey == "" {
		sandboxKey = findDockerMount(t, d)
	}
	netnstest.IP(t, "link", "del", dev)
	m = e.scrape(t)
	wantSample(t, m, "veth_leaked_netns", 1)
	out, err = exec.Command(exporterBinary(t), "inspect", "--inventory.trust-pid-namespace", "--docker.host="+d.Host,
		"--state.path="+filepath.Join(t.TempDir(), "state.json")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "LEAKED NETNS") || !strings.Contains(string(out), sandboxKey) {
		t.Errorf("inspect does not list %s as a leaked namespace (%v):\n%s", sandboxKey, err, out)
	}
}

// findDockerMount returns the one nsfs mount under d's exec root.
func findDockerMount(t *testing.T, d *dockertest.Daemon) string {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(mi)) {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], d.ExecRoot+"/netns/") && strings.Contains(line, " nsfs ") {
			return f[4]
		}
	}
	t.Fatalf("no nsfs mount under %s/netns", d.ExecRoot)
	return ""
}

// TestDockerCrashStateIntact: after the same crash with its network state
// intact, Docker deletes the veth itself on restart: no veth series, no
// orphan. RECIPES saw it leave the namespace mount behind; Debian's
// 20.10.24 removes it here ("Removing stale sandbox"): whichever happens,
// a mount left is counted as a leaked namespace and a mount gone is not.
// And a process pinning a container's namespace does not stop `docker rm
// -f` from deleting the veth: no veth, no false orphan.
func TestDockerCrashStateIntact(t *testing.T) {
	netnstest.Require(t)
	d := dockertest.Start(t)
	api := d.Run(t, "api")
	dev := vethOf(t, d, api)
	sandboxKey := d.SandboxKey(t, api)
	e := dockerExporter(t, d)
	e.scrape(t)

	d.Crash(t, api)
	d.Restart(t)
	m := e.scrapeUntil(t, "Docker up and the veth gone", func(m string) bool {
		return dockerUp(1)(m) && len(seriesOf(m, "veth_info", dev)) == 0
	})
	if n := orphans(m); n != 0 {
		t.Errorf("%v veths orphaned after the restart, want none", n)
	}
	mounted, err := fixturesys.MountedAt(sandboxKey)
	if err != nil {
		t.Fatal(err)
	}
	leaked, _ := sample(m, "veth_leaked_netns")
	switch {
	case mounted && leaked != 1:
		t.Errorf("Docker left %s mounted: veth_leaked_netns = %v, want 1", sandboxKey, leaked)
	case !mounted && leaked != 0:
		t.Errorf("Docker removed %s: veth_leaked_netns = %v, want 0", sandboxKey, leaked)
	}
	t.Logf("after the restart Docker left the sandbox mount: %v", mounted)

	pinned := d.Run(t, "pinned")
	pinnedDev := vethOf(t, d, pinned)
	netnstest.Join(t, d.ContainerPID(t, pinned))
	m = e.scrapeUntil(t, "the pinned container seen", func(m string) bool {
		_, ok := sample(m, ownerSeries("veth_owner_info", pinnedDev, pinned, "pinned"))
		return ok
	})
	// Docker runs a container in every peer namespace: no process is
	// counted, and the count is absent rather than a wrong one.
	wantSample(t, m, fmt.Sprintf(`veth_peer_netns_alive{device=%q}`, pinnedDev), 1)
	if v, ok := sample(m, fmt.Sprintf(`veth_peer_netns_processes{device=%q}`, pinnedDev)); ok {
		t.Errorf("veth_peer_netns_processes for %s = %v, want it absent: Docker accounts for the namespace", pinnedDev, v)
	}
	d.Docker(t, "rm", "-f", pinned)
	if _, err := os.Stat("/sys/class/net/" + pinnedDev); err == nil {
		t.Fatalf("docker rm -f left %s behind", pinnedDev)
	}
	m = e.scrape(t)
	if s := seriesOf(m, "veth_info", pinnedDev); len(s) != 0 {
		t.Errorf("series for the deleted %s: %q", pinnedDev, s)
	}
	if n := orphans(m); n != 0 {
		t.Errorf("%v veths orphaned, want none", n)
	}
}

// TestDockerStopStart: dockerd stops while containers run on (live
// restore): the exporter keeps serving, says Docker is down, and the
// containers' veths stay owned, none orphaned; once dockerd is back the
// exporter recovers without a restart.
func TestDockerStopStart(t *testing.T) {
	netnstest.Require(t)
	d := dockertest.StartWith(t, dockertest.Options{LiveRestore: true})
	ids := map[string]string{"svc1": d.Run(t, "svc1"), "svc2": d.Run(t, "svc2")}
	devs := map[string]string{}
	for name, id := range ids {
		devs[name] = vethOf(t, d, id)
	}
	e := dockerExporter(t, d)
	m := e.scrape(t)
	for name, id := range ids {
		wantSample(t, m, ownerSeries("veth_owner_info", devs[name], id, name), 1)
	}

	d.Stop(t)
	for range 3 {
		m := e.scrapeUntil(t, "Docker down", dockerUp(0))
		for name, dev := range devs {
			wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="container",verdict="owned"}`, dev), 1)
			if len(seriesOf(m, "veth_info", dev)) != 1 {
				t.Errorf("with Docker stopped: %s's veth %s is gone; live restore should keep it", name, dev)
			}
		}
		if n := orphans(m); n != 0 {
			t.Errorf("with Docker stopped: %v veths orphaned, want none", n)
		}
	}
	d.Restart(t)
	m = e.scrapeUntil(t, "Docker up", dockerUp(1))
	for name, id := range ids {
		wantSample(t, m, ownerSeries("veth_owner_info", devs[name], id, name), 1)
	}
	if n := orphans(m); n != 0 {
		t.Errorf("after Docker restarted: %v veths orphaned, want none", n)
	}
}

// TestDockerImage builds the project's image with the real dockerd and
// runs it with the documented flags: it reports the same verdicts as the
// binary on the host.
func TestDockerImage(t *testing.T) {
	netnstest.Require(t)
	d := dockertest.Start(t)
	d.Run(t, "web")
	netnstest.NamedNetns(t, "cni-leak")
	netnstest.Veth(t, "vethleak", "cni-leak", "docker0")

	buildDir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(buildDir, "veth_exporter"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(buildDir, "Dockerfile"), dockerfile, 0o644); err != nil {
		t.Fatal(err)
	}
	d.Docker(t, "build", "-q", "-t", "veth-exporter:test", buildDir)

	// rslave needs /run to be a shared mount, as it is on a host; the
	// test's private mount namespace made it private.
	if err := syscall.Mount("", "/run", "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	stateDir := t.TempDir()
	d.Docker(t, "run", "-d", "--name", "veth_exporter",
		"--net=host", "--pid=host", "--cgroupns=host", "--cap-add=SYS_PTRACE",
		"-v", "/run:/run:ro,rslave", "-v", stateDir+":/var/lib/veth_exporter",
		"veth-exporter:test",
		"--web.listen-address=127.0.0.1:"+port, "--docker.host="+d.Host,
		// The test's PID namespace holds every process of the fixture,
		// and the binary on the host gives orphans at once too.
		"--inventory.trust-pid-namespace", "--inventory.settle-time=0s")
	inContainer := &exporter{url: "http://127.0.0.1:" + port, log: &syncBuffer{}}
	onHost := dockerExporter(t, d)

	verdicts := func(e *exporter) string {
		var lines []string
		for line := range strings.Lines(e.scrapeUntil(t, "ready", dockerUp(1))) {
			if strings.HasPrefix(line, "veth_verdict_info{") || strings.HasPrefix(line, "veth_owner_info{") {
				lines = append(lines, line)
			}
		}
		return strings.Join(lines, "")
	}
	waitReady(t, inContainer.url, func() string { return d.Docker(t, "logs", "veth_exporter") })
	got, want := verdicts(inContainer), verdicts(onHost)
	if got != want {
		t.Errorf("the image reports\n%s\nthe binary on the host\n%s", got, want)
	}
	if !strings.Contains(got, `device="vethleak",reason="netns_empty",verdict="orphaned"`) || !strings.Contains(got, `name="web"`) {
		t.Errorf("the image's verdicts miss the leaked veth or the web container:\n%s", got)
	}
}

// TestDockerResolverOff: dockerd answers on a socket other than the
// default, so the Docker resolver is off unless told where; the start-up
// log says so and why, and veth_resolver_enabled{resolver="docker"} is 0.
// After a crash the container's namespace is pinned in /run/docker/netns
// with no process in it: only Docker can tell what it is, so the veth is
// unknown / resolver_off, never orphaned. Exporters started then with the
// socket named say the resolver is on but dockerd refuses, or that a flag
// turned it off.
func TestDockerResolverOff(t *testing.T) {
	netnstest.Require(t)
	t.Setenv("DOCKER_HOST", "")
	d := dockertest.StartWith(t, dockertest.Options{DefaultExecRoot: true})
	api := d.Run(t, "api")
	dev := vethOf(t, d, api)
	if key := d.SandboxKey(t, api); !strings.HasPrefix(key, "/run/docker/netns/") {
		t.Fatalf("sandbox key %q, want one in /run/docker/netns", key)
	}
	off := startExporter(t, "--state.path="+filepath.Join(t.TempDir(), "state.json"))
	on := dockerExporter(t, d)
	for _, want := range []string{`msg="resolver off" resolver=docker`, `no socket at unix:///var/run/docker.sock`} {
		if !strings.Contains(off.log.String(), want) {
			t.Errorf("start-up log without %q:\n%s", want, off.log.String())
		}
	}
	if want := `msg="resolver on" resolver=docker host=` + d.Host; !strings.Contains(on.log.String(), want) {
		t.Errorf("start-up log without %q:\n%s", want, on.log.String())
	}
	m := off.scrape(t)
	wantSample(t, m, `veth_resolver_enabled{resolver="docker"}`, 0)
	wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="container",verdict="owned"}`, dev), 1)
	wantSample(t, on.scrape(t), `veth_resolver_enabled{resolver="docker"}`, 1)

	d.Crash(t, api)
	m = off.scrapeUntil(t, "the crashed container's namespace empty", func(m string) bool {
		v, ok := sample(m, fmt.Sprintf(`veth_peer_netns_processes{device=%q}`, dev))
		return ok && v == 0
	})
	wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="resolver_off",verdict="unknown"}`, dev), 1)
	wantSample(t, m, fmt.Sprintf(`veth_orphaned{device=%q}`, dev), 0)
	m = on.scrapeUntil(t, "Docker down", dockerUp(0))
	wantSample(t, m, fmt.Sprintf(`veth_verdict_info{device=%q,reason="resolver_down",verdict="unknown"}`, dev), 1)

	refused := dockerExporter(t, d)
	if want := "connection refused"; !strings.Contains(refused.log.String(), `msg="resolver on, runtime not answering" resolver=docker`) ||
		!strings.Contains(refused.log.String(), want) {
		t.Errorf("start-up log does not say dockerd refuses:\n%s", refused.log.String())
	}
	flagged := dockerExporter(t, d, "--no-collector.docker")
	if want := `why="off by --no-collector.docker"`; !strings.Contains(flagged.log.String(), want) {
		t.Errorf("start-up log without %q:\n%s", want, flagged.log.String())
	}
	wantSample(t, flagged.scrape(t), fmt.Sprintf(`veth_verdict_info{device=%q,reason="resolver_off",verdict="unknown"}`, dev), 1)
}
