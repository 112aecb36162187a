package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/internal/podmantest"
)

// The Podman suite: the real binary against a real Podman 4.3 (conmon, crun,
// netavark or the CNI plugins) and its REST API service, in the test's
// private namespaces (internal/podmantest).

// podmanExporter starts the exporter with the Podman resolver of p.
func podmanExporter(t *testing.T, p *podmantest.Podman, args ...string) *exporter {
	t.Helper()
	return startExporter(t, append([]string{"--podman.host=unix://" + p.Socket(), "--no-collector.docker", "--no-collector.cri",
		"--state.path=" + filepath.Join(t.TempDir(), "state.json")}, args...)...)
}

// podmanVeth returns the host veth of a running container.
func podmanVeth(t *testing.T, p *podmantest.Podman, id string) string {
	t.Helper()
	return netnstest.HostVeth(t, "/proc/"+strconv.Itoa(p.ContainerPID(t, id))+"/ns/net")
}

// podmanPodSeries is the owner series of a veth owned by a Podman pod:
// its ID and name, no Kubernetes namespace or UID.
func podmanPodSeries(family, device, id, name string) string {
	return fmt.Sprintf(`%s{device=%q,id=%q,kind="pod",name=%q,pod_name=%q,pod_namespace="",pod_uid=""}`, family, device, id, name, name)
}

func podmanUp(up float64) func(string) bool {
	return func(m string) bool {
		v, ok := sample(m, `veth_scrape_collector_success{collector="podman"}`)
		return ok && v == up
	}
}

// TestPodmanNames: containers and a pod named through Podman's API, with
// either network backend; the network named in veth_bridge_info.
func TestPodmanNames(t *testing.T) {
	for _, backend := range []string{"netavark", "cni"} {
		t.Run(backend, func(t *testing.T) {
			p := podmantest.Start(t, podmantest.Options{NetworkBackend: backend})
			web := p.RunContainer(t, "web")
			db := p.RunContainer(t, "db")
			pod := p.CreatePod(t, "shop")
			cart := p.RunInPod(t, pod, "cart")
			// A network of the user's: its own bridge (podman1,
			// cni-podman1), named after it.
			p.Run(t, "network", "create", "usernet")
			userBridge := p.Run(t, "network", "inspect", "-f", "{{.NetworkInterface}}", "usernet")
			p.RunContainer(t, "tool", "--network", "usernet")
			devs := map[string]string{"web": podmanVeth(t, p, web), "db": podmanVeth(t, p, db), "shop": podmanVeth(t, p, cart)}

			e := podmanExporter(t, p)
			m := e.scrapeUntil(t, "Podman up", podmanUp(1))
			wantSample(t, m, ownerSeries("veth_owner_info", devs["web"], web, "web"), 1)
			wantSample(t, m, ownerSeries("veth_owner_info", devs["db"], db, "db"), 1)
			wantSample(t, m, podmanPodSeries("veth_owner_info", devs["shop"], pod, "shop"), 1)
			wantSample(t, m, verdictSeries(devs["shop"], "owned", "pod"), 1)
			wantSample(t, m, verdictSeries(devs["web"], "owned", "container"), 1)
			wantSample(t, m, fmt.Sprintf(`veth_bridge_info{master=%q,network="podman"}`, p.Bridge), 1)
			wantSample(t, m, fmt.Sprintf(`veth_bridge_info{master=%q,network="usernet"}`, userBridge), 1)
			if n := orphans(m); n != 0 {
				t.Errorf("%v veths orphaned, want none", n)
			}
			// Podman runs a container in every peer namespace: no process
			// is counted.
			if v, ok := sample(m, fmt.Sprintf(`veth_peer_netns_processes{device=%q}`, devs["web"])); ok {
				t.Errorf("veth_peer_netns_processes for web = %v, want it absent", v)
			}
			// On because the socket exists; off when refused, or when the
			// socket named does not exist.
			for _, args := range [][]string{
				{"--no-collector.podman", "--podman.host=unix://" + p.Socket()},
				{"--podman.host=unix://" + filepath.Join(t.TempDir(), "none.sock")},
			} {
				off := startExporter(t, append(args, "--no-collector.docker", "--no-collector.cri", "--state.path="+filepath.Join(t.TempDir(), "state.json"))...)
				if m := off.scrape(t); strings.Contains(m, `collector="podman"`) || strings.Contains(m, "veth_podman_api_requests_total") {
					t.Errorf("%v: a podman stage is reported, want the resolver off", args)
				}
			}
			// A quiet node costs no API call per scrape (events stream).
			before, _ := sample(m, "veth_podman_api_requests_total")
			for range 3 {
				m = e.scrape(t)
			}
			if after, _ := sample(m, "veth_podman_api_requests_total"); after != before {
				t.Errorf("3 quiet scrapes made %v Podman API requests, want none", after-before)
			}
		})
	}
}

// TestPodmanCrashLeftover: conmon and the container killed (-9): Podman
// still says running, but the exporter sees the process gone and calls
// the veth a leftover, naming the container (or pod) it came from, seen
// running or not.
func TestPodmanCrashLeftover(t *testing.T) {
	for _, backend := range []string{"netavark", "cni"} {
		t.Run(backend, func(t *testing.T) { podmanCrashLeftover(t, backend) })
	}
}

func podmanCrashLeftover(t *testing.T, backend string) {
	p := podmantest.Start(t, podmantest.Options{NetworkBackend: backend})
	api := p.RunContainer(t, "api")
	apiDev := podmanVeth(t, p, api)
	pod := p.CreatePod(t, "batch")
	job := p.RunInPod(t, pod, "job")
	podDev := podmanVeth(t, p, job)
	infra := p.InfraID(t, pod)
	e := podmanExporter(t, p, "--inventory.settle-time=1s")
	e.scrapeUntil(t, "both owned", func(m string) bool {
		_, a := sample(m, ownerSeries("veth_owner_info", apiDev, api, "api"))
		_, b := sample(m, podmanPodSeries("veth_owner_info", podDev, pod, "batch"))
		return a && b
	})

	p.Crash(t, api)
	p.Crash(t, job)
	p.Crash(t, infra)
	if state := p.Run(t, "container", "inspect", "-f", "{{.State.Status}}", api); state != "running" {
		t.Fatalf("Podman says the crashed api is %q; the scenario needs Podman to miss the crash", state)
	}
	m := e.scrapeUntil(t, "both leftovers orphaned", func(m string) bool {
		_, a := sample(m, verdictSeries(apiDev, "orphaned", "netns_empty"))
		_, b := sample(m, verdictSeries(podDev, "orphaned", "netns_empty"))
		return a && b
	})
	wantSample(t, m, ownerSeries("veth_last_owner_info", apiDev, api, "api"), 1)
	wantSample(t, m, podmanPodSeries("veth_last_owner_info", podDev, pod, "batch"), 1)

	// An exporter that never saw them running learns the last owners
	// from Podman's records of the crashed containers.
	lost := p.RunContainer(t, "lost")
	lostDev := podmanVeth(t, p, lost)
	p.Crash(t, lost)
	out, err := exec.Command(exporterBinary(t), "inspect", "--output=json", "--inventory.trust-pid-namespace",
		"--podman.host=unix://"+p.Socket(), "--no-collector.docker", "--no-collector.cri", "--cni.conf-dir=",
		"--state.path="+filepath.Join(t.TempDir(), "state.json")).Output()
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	var snap struct {
		Veths []struct {
			Device, Verdict, Reason string
			LastOwner               *struct{ Kind, ID, Name string } `json:"last_owner"`
		} `json:"veths"`
	}
	if err := json.Unmarshal(out, &snap); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ kind, id, name string }{lostDev: {"container", lost, "lost"}, podDev: {"pod", pod, "batch"}, apiDev: {"container", api, "api"}}
	for _, v := range snap.Veths {
		w, ok := want[v.Device]
		if !ok {
			continue
		}
		delete(want, v.Device)
		if v.Verdict != "orphaned" || v.Reason != "netns_empty" || v.LastOwner == nil || v.LastOwner.Kind != w.kind || v.LastOwner.ID != w.id || v.LastOwner.Name != w.name {
			t.Errorf("fresh inspect: %s is %s/%s, last owner %+v; want orphaned/netns_empty, last owned by %s %s (%s)", v.Device, v.Verdict, v.Reason, v.LastOwner, w.kind, w.name, w.id)
		}
	}
	if len(want) > 0 {
		t.Errorf("fresh inspect does not list %v:\n%s", want, out)
	}

	// `podman rm -f` cleans both the veth and the namespace mount, as the
	// runbook says.
	sandbox := p.SandboxKey(t, api)
	p.Run(t, "rm", "-f", api)
	m = e.scrape(t)
	if s := seriesOf(m, "veth_info", apiDev); len(s) != 0 {
		t.Errorf("after podman rm -f: series for %s: %q", apiDev, s)
	}
	if mounted, err := fixturesys.MountedAt(sandbox); err != nil || mounted {
		t.Errorf("after podman rm -f: %s still mounted (%v)", sandbox, err)
	}
}

// TestPodmanNormalStop: a container stopped the normal way, scraped every
// 0.2 s, is never a leftover, however its teardown is caught midway: not
// even with a settle time of 1 s (the default is 30 s), so the teardown
// never looks like a leftover for longer than that.
func TestPodmanNormalStop(t *testing.T) {
	p := podmantest.Start(t, podmantest.Options{})
	ids := []string{p.RunContainer(t, "s1"), p.RunContainer(t, "s2")}
	pod := p.CreatePod(t, "sp")
	ids = append(ids, p.RunInPod(t, pod, "s3"))
	var devs []string
	for _, id := range ids {
		devs = append(devs, podmanVeth(t, p, id))
	}
	e := podmanExporter(t, p, "--inventory.settle-time=1s")
	e.scrapeUntil(t, "Podman up", podmanUp(1))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stopped := make(chan error, 1)
	go func() {
		_, err := p.TryRun(ctx, "stop", "-t", "1", ids[0], ids[1])
		if err == nil {
			_, err = p.TryRun(ctx, "pod", "stop", "-t", "1", pod)
		}
		stopped <- err
	}()
	scrapes := 0
	for done := false; !done; {
		select {
		case err := <-stopped:
			if err != nil {
				t.Fatalf("podman stop: %v", err)
			}
			done = true
		default:
		}
		m := e.scrape(t)
		scrapes++
		if n := orphans(m); n != 0 {
			t.Fatalf("scrape %d during podman stop: %v veths orphaned, want none", scrapes, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Until every veth is gone.
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := e.scrape(t)
		scrapes++
		if n := orphans(m); n != 0 {
			t.Fatalf("scrape %d after podman stop: %v veths orphaned, want none", scrapes, n)
		}
		left := 0
		for _, dev := range devs {
			left += len(seriesOf(m, "veth_info", dev))
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after podman stop: %d veths left", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d scrapes during and after the stop, none orphaned", scrapes)
}

// TestPodmanServiceDown: with Podman's API service gone, the veths only
// Podman can decide (a crashed container's, whose namespace Podman
// pinned) are unknown / resolver_down, never orphaned; a live container
// stays owned by its process's cgroup; the exporter recovers when the
// service is back.
func TestPodmanServiceDown(t *testing.T) {
	p := podmantest.Start(t, podmantest.Options{})
	live := p.RunContainer(t, "live")
	liveDev := podmanVeth(t, p, live)
	gone := p.RunContainer(t, "gone")
	goneDev := podmanVeth(t, p, gone)
	e := podmanExporter(t, p, "--inventory.settle-time=1s")
	e.scrapeUntil(t, "both owned", func(m string) bool {
		_, a := sample(m, ownerSeries("veth_owner_info", liveDev, live, "live"))
		_, b := sample(m, ownerSeries("veth_owner_info", goneDev, gone, "gone"))
		return a && b
	})

	p.StopService(t)
	p.Crash(t, gone)
	for range 3 {
		m := e.scrapeUntil(t, "Podman down", podmanUp(0))
		wantSample(t, m, verdictSeries(goneDev, "unknown", "resolver_down"), 1)
		wantSample(t, m, verdictSeries(liveDev, "owned", "container"), 1)
		if n := orphans(m); n != 0 {
			t.Errorf("with Podman's service down: %v veths orphaned, want none", n)
		}
		time.Sleep(time.Second)
	}

	p.StartService(t)
	m := e.scrapeUntil(t, "the crash leftover orphaned", func(m string) bool {
		_, ok := sample(m, verdictSeries(goneDev, "orphaned", "netns_empty"))
		return ok
	})
	wantSample(t, m, `veth_scrape_collector_success{collector="podman"}`, 1)
	wantSample(t, m, ownerSeries("veth_last_owner_info", goneDev, gone, "gone"), 1)
	wantSample(t, m, ownerSeries("veth_owner_info", liveDev, live, "live"), 1)
}

// noOrphanFor scrapes every 0.2 s for d and fails at the first orphan.
func noOrphanFor(t *testing.T, e *exporter, d time.Duration, what string) string {
	t.Helper()
	var m string
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		m = e.scrape(t)
		if n := orphans(m); n != 0 {
			t.Fatalf("%s: %v veths orphaned, want none:\n%s", what, n, m)
		}
	}
	return m
}

// TestPodmanWithoutItsOwnCgroup: a container run with --cgroups=disabled
// has no libpod-<id> cgroup: its live process is still its process (it
// started before Podman recorded the start), never a crash; killed, it
// is one.
func TestPodmanWithoutItsOwnCgroup(t *testing.T) {
	p := podmantest.Start(t, podmantest.Options{})
	id := p.RunContainer(t, "plain", "--cgroups=disabled")
	dev := podmanVeth(t, p, id)
	e := podmanExporter(t, p, "--inventory.settle-time=1s")
	e.scrapeUntil(t, "Podman up", podmanUp(1))
	m := noOrphanFor(t, e, 3*time.Second, "a live container without a cgroup of its own")
	wantSample(t, m, fmt.Sprintf(`veth_peer_netns_alive{device=%q}`, dev), 1)
	p.Crash(t, id)
	m = e.scrapeUntil(t, "the crash orphaned", func(m string) bool {
		_, ok := sample(m, verdictSeries(dev, "orphaned", "netns_empty"))
		return ok
	})
	wantSample(t, m, ownerSeries("veth_last_owner_info", dev, id, "plain"), 1)
}

// TestPodmanRestartUnseen: a container restarted while Podman's service
// was away (its events missed, its old PID dead) is running again, not a
// crash: the record is inspected afresh when the service is back.
func TestPodmanRestartUnseen(t *testing.T) {
	p := podmantest.Start(t, podmantest.Options{})
	id := p.RunContainer(t, "again")
	dev := podmanVeth(t, p, id)
	e := podmanExporter(t, p, "--inventory.settle-time=1s")
	e.scrapeUntil(t, "owned", func(m string) bool { _, ok := sample(m, verdictSeries(dev, "owned", "container")); return ok })
	p.StopService(t)
	p.Run(t, "restart", "-t", "0", id)
	p.StartService(t)
	dev = podmanVeth(t, p, id)
	m := noOrphanFor(t, e, 5*time.Second, "restarted while the service was away")
	wantSample(t, m, verdictSeries(dev, "owned", "container"), 1)
}

// TestPodmanHungService: a service that hangs keeps its events stream
// open and silent, so the cached view lives on. A container restarted
// meanwhile stays owned; one that crashes meanwhile is not called a
// leftover on the cached record's word: asking Podman afresh times out,
// and the veth is unknown / resolver_down until the service answers.
func TestPodmanHungService(t *testing.T) {
	p := podmantest.Start(t, podmantest.Options{})
	again := p.RunContainer(t, "again")
	crash := p.RunContainer(t, "crash")
	crashDev := podmanVeth(t, p, crash)
	e := podmanExporter(t, p, "--inventory.settle-time=1s", "--podman.timeout=2s")
	e.scrapeUntil(t, "Podman up", podmanUp(1))
	for range 3 {
		e.scrape(t) // the view is cached, the stream quiet
	}
	thaw := p.FreezeService(t)
	p.Run(t, "restart", "-t", "0", again)
	againDev := podmanVeth(t, p, again)
	p.Crash(t, crash)
	m := noOrphanFor(t, e, 5*time.Second, "with the service hung")
	wantSample(t, m, verdictSeries(againDev, "owned", "container"), 1)
	wantSample(t, m, verdictSeries(crashDev, "unknown", "resolver_down"), 1)
	thaw()
	m = e.scrapeUntil(t, "the crash orphaned once the service answers", func(m string) bool {
		_, ok := sample(m, verdictSeries(crashDev, "orphaned", "netns_empty"))
		return ok
	})
	wantSample(t, m, verdictSeries(againDev, "owned", "container"), 1)
}

// TestPodmanJoinedNamespace: a container joins a namespace of the
// user's (--network ns:PATH) in which a process of the user's already
// runs. While the container runs the veth is owned; once it stops or
// crashes the namespace is the user's again: never a leftover.
func TestPodmanJoinedNamespace(t *testing.T) {
	for _, end := range []string{"stop", "crash"} {
		t.Run(end, func(t *testing.T) {
			p := podmantest.Start(t, podmantest.Options{})
			name := "usr" + end
			netnstest.NamedNetns(t, name)
			netnstest.Veth(t, "v"+name, name, "")
			user := exec.Command("ip", "netns", "exec", name, "sleep", "infinity")
			if err := user.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = user.Process.Kill()
				_ = user.Wait()
			})
			time.Sleep(100 * time.Millisecond) // the user's process is older
			id := p.RunContainer(t, "guest"+end, "--network", "ns:/run/netns/"+name)
			e := podmanExporter(t, p, "--inventory.settle-time=1s")
			e.scrapeUntil(t, "the guest's veth owned", func(m string) bool {
				_, ok := sample(m, verdictSeries("v"+name, "owned", "container"))
				return ok
			})
			noOrphanFor(t, e, 2*time.Second, "while the guest runs")
			if end == "stop" {
				p.Run(t, "stop", "-t", "0", id)
			} else {
				p.Crash(t, id)
			}
			m := noOrphanFor(t, e, 4*time.Second, "after the guest's "+end)
			wantSample(t, m, verdictSeries("v"+name, "unknown", "no_known_owner"), 1)
		})
	}
}

// TestPodmanCNILeases: Podman with its CNI backend keeps host-local leases
// in /var/lib/cni/networks/podman, named by container ID, for the network
// Debian's podman package configures in /etc/cni/net.d. A running
// container's lease is live (Podman lists it); a lease of a container
// Podman no longer knows, with no namespace left (what a cleanup that
// failed after Podman dropped its record leaves; Podman lists a container
// whose cleanup it merely missed, in any state, and its lease stays live)
// is leaked, and `clean --leases` releases it as host-local does, under
// its lock: it has no libcni cache entry. The live lease stays.
func TestPodmanCNILeases(t *testing.T) {
	p := podmantest.Start(t, podmantest.Options{NetworkBackend: "cni"})
	web := p.RunContainer(t, "web")
	// Podman's network "podman" as Debian's podman package installs it
	// for the CNI backend (podmantest's Podman keeps it in memory).
	confDir := t.TempDir()
	var conf []byte
	for _, f := range []string{"/etc/cni/net.d/87-podman-bridge.conflist", "/usr/share/doc/podman/examples/cni/net.d/87-podman-bridge.conflist"} {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), `"name": "podman"`) {
			conf = b
			break
		}
	}
	if conf == nil {
		t.Fatal("no 87-podman-bridge.conflist of Debian's podman package")
	}
	if err := os.WriteFile(filepath.Join(confDir, "87-podman-bridge.conflist"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := "/var/lib/cni/networks/podman"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("Podman's CNI leases: %v", err)
	}
	var webIP string
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(string(b), web) {
			webIP = e.Name()
		}
	}
	if webIP == "" {
		t.Fatalf("no lease names web (%s) in %s: %v", web, dir, entries)
	}
	const ghostIP = "10.88.0.200"
	ghost := strings.Repeat("6a05", 16)
	if err := os.WriteFile(filepath.Join(dir, ghostIP), []byte(ghost+"\neth0"), 0o644); err != nil {
		t.Fatal(err)
	}

	e := podmanExporter(t, p, "--inventory.settle-time=1s", "--cni.conf-dir="+confDir)
	m := e.scrapeUntil(t, "web's lease live, the other leaked", func(m string) bool {
		l, _ := sample(m, `veth_cni_ipam_addresses{network="podman",range="10.88.0.0/16",state="live"}`)
		k, _ := sample(m, `veth_cni_ipam_addresses{network="podman",range="10.88.0.0/16",state="leaked"}`)
		return l == 1 && k == 1
	})
	wantSample(t, m, `veth_cni_ipam_range_size{network="podman",range="10.88.0.0/16"}`, 65533)
	leases := leaseStates(t, e)
	if l := leases[web]; l.State != "live" || l.Reason != "listed" {
		t.Errorf("web's lease: %+v, want live/listed", l)
	}
	if l := leases[ghost]; l.State != "leaked" || l.Reason != "no_sandbox" || l.IP != ghostIP {
		t.Errorf("the unknown container's lease: %+v, want leaked/no_sandbox", l)
	}

	stdout, stderr, code := cleanBy(t, exporterBinary(t), "--podman.host=unix://"+p.Socket(), "--no-collector.docker", "--no-collector.cri",
		"--cni.conf-dir="+confDir, "--state.path="+e.flag(t, "state.path"), "--inventory.settle-time=1s", "--min-age=0s", "--leases")
	if code != 0 || !strings.Contains(stdout, "podman/"+ghostIP+"  -        deleted  leaked_lease  released "+filepath.Join(dir, ghostIP)) ||
		!strings.Contains(stderr, "1 leases: 1 deleted") {
		t.Fatalf("clean --leases: exit %d\n%s%s\nwant podman/%s deleted, released as host-local does", code, stdout, stderr, ghostIP)
	}
	if fileExists(filepath.Join(dir, ghostIP)) || !fileExists(filepath.Join(dir, webIP)) {
		t.Errorf("after clean --leases: the leaked lease there %v, web's there %v; want only web's", fileExists(filepath.Join(dir, ghostIP)), fileExists(filepath.Join(dir, webIP)))
	}
}
