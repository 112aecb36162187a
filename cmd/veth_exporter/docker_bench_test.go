package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/dockertest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The Docker scrape benchmark: the real binary against a real dockerd with
// many running containers (bench/compare.sh --docker runs it).

const (
	// envBenchContainers sets the number of containers.
	envBenchContainers = "VETH_BENCH_CONTAINERS"
	// defaultBenchContainers is the size of the node.
	defaultBenchContainers = 200
	// benchRunners is how many `docker run -d` run at once.
	benchRunners = 8
	// maxSteadyAPICalls is the O(1) target: Docker API requests per
	// scrape of a quiet node, whatever the number of containers.
	maxSteadyAPICalls = 3
	// churnSettle lets the events of a stop and start reach the exporter
	// before the next scrape, as they would between two scrapes 15 s apart.
	churnSettle = 200 * time.Millisecond
)

// benchContainer is a container of the benchmark and its host veth.
type benchContainer struct{ id, name, veth string }

// BenchmarkDockerScrape times GET /metrics on a node with
// VETH_BENCH_CONTAINERS (200) running containers, each with a veth on
// docker0, by two exporters side by side: one with the Docker resolver,
// one with --no-collector.docker. Besides ns/op (the mean scrape) each
// sub-benchmark reports median-ms, veths (veth_info series in the last
// scrape) and api-calls/scrape (the growth of
// veth_docker_api_requests_total over the timed scrapes, per scrape; 0
// without the resolver):
//
//   - resolver=on: a quiet node; fails unless api-calls/scrape <= 3 (the
//     target is O(1) per scrape, not O(containers); the resolver's events
//     cache makes it 0) and every container's veth is owned and named.
//   - resolver=off: the same node without the resolver.
//   - resolver=on,churn: one container stopped and started before each
//     scrape (not timed): what a scrape costs when events arrived.
func BenchmarkDockerScrape(b *testing.B) {
	netnstest.Require(b)
	n := benchContainers(b)
	exporterBinary(b)
	start := time.Now()
	d := dockertest.Start(b)
	d.Image(b)
	b.Logf("dockerd up and the image imported in %.1f s", time.Since(start).Seconds())

	start = time.Now()
	cs := startBenchContainers(b, d, n)
	b.Logf("started %d containers in %.1f s (%d docker run -d at a time)", n, time.Since(start).Seconds(), benchRunners)
	resolveVeths(b, d, cs)

	dir := b.TempDir()
	start = time.Now()
	on := startExporter(b, "--docker.host="+d.Host, "--state.path="+filepath.Join(dir, "on.json"))
	off := startExporter(b, "--no-collector.docker", "--state.path="+filepath.Join(dir, "off.json"))
	warm := warmUp(b, on, cs)
	if v := vethCount(off.scrape(b)); v < n {
		b.Fatalf("resolver=off: %d veths in the scrape, want at least %d", v, n)
	}
	b.Logf("exporters ready and warm in %.1f s; the resolver made %v Docker API requests to learn %d containers",
		time.Since(start).Seconds(), apiRequests(warm), n)

	b.Run("resolver=on", func(b *testing.B) {
		times, calls, last := timeScrapes(b, on, nil)
		report(b, times, calls, last)
		if calls > maxSteadyAPICalls {
			b.Fatalf("steady state: %.2f Docker API requests per scrape with %d containers, want at most %d (O(1))", calls, n, maxSteadyAPICalls)
		}
		if missing := unowned(last, cs); len(missing) != 0 {
			b.Fatalf("%d of %d containers' veths not owned with their name, such as %s", len(missing), n, missing[0])
		}
	})

	b.Run("resolver=off", func(b *testing.B) {
		times, calls, last := timeScrapes(b, off, nil)
		report(b, times, calls, last)
		if v := vethCount(last); v < n {
			b.Fatalf("%d veths in the scrape, want at least %d", v, n)
		}
	})

	b.Run("resolver=on,churn", func(b *testing.B) {
		i := 0
		times, calls, last := timeScrapes(b, on, func() {
			c := cs[i%len(cs)]
			i++
			d.Docker(b, "stop", c.id)
			d.Docker(b, "start", c.id)
			time.Sleep(churnSettle)
		})
		report(b, times, calls, last)
		if calls == 0 {
			b.Fatalf("no Docker API request in %d scrapes that each followed a container's stop and start: events did not refresh the view", len(times))
		}
		// Restarted containers have new veths: the resolver names them
		// too, once their events are in.
		resolveVeths(b, d, cs)
		deadline := time.Now().Add(30 * time.Second)
		for {
			missing := unowned(on.scrape(b), cs)
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("after the churn, %d containers' veths still not owned with their name after 30 s, such as %s", len(missing), missing[0])
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// benchContainers returns VETH_BENCH_CONTAINERS, or 200.
func benchContainers(b *testing.B) int {
	s := os.Getenv(envBenchContainers)
	if s == "" {
		return defaultBenchContainers
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number of containers", envBenchContainers, s)
	}
	return n
}

// startBenchContainers runs n containers, bench0…, benchRunners at a
// time, and removes them at the end (in parallel, before the harness's
// cleanup would remove them in one command).
func startBenchContainers(b *testing.B, d *dockertest.Daemon, n int) []benchContainer {
	image := d.Image(b)
	cs := make([]benchContainer, n)
	for i := range cs {
		cs[i].name = fmt.Sprintf("bench%d", i)
	}
	b.Cleanup(func() {
		start := time.Now()
		errs := parallel(n, func(i int) error {
			_, err := d.TryDocker("rm", "-f", cs[i].name)
			if err != nil && strings.Contains(err.Error(), "No such container") {
				return nil
			}
			return err
		})
		if len(errs) != 0 {
			b.Errorf("removing the containers: %d errors, first: %v", len(errs), errs[0])
		}
		b.Logf("removed %d containers in %.1f s", n, time.Since(start).Seconds())
	})
	errs := parallel(n, func(i int) error {
		id, err := d.TryDocker("run", "-d", "--name", cs[i].name, image, "sleep", "3600")
		cs[i].id = id
		return err
	})
	if len(errs) != 0 {
		b.Fatalf("starting %d containers: %d failed, first: %v", n, len(errs), errs[0])
	}
	return cs
}

// parallel calls f(0) … f(n-1), benchRunners at a time, and returns the
// errors.
func parallel(n int, f func(int) error) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for range benchRunners {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

// resolveVeths finds each container's host veth, with one docker inspect
// for all of them.
func resolveVeths(b *testing.B, d *dockertest.Daemon, cs []benchContainer) {
	args := []string{"inspect", "-f", "{{.Id}} {{.State.Pid}}"}
	for _, c := range cs {
		args = append(args, c.id)
	}
	pids := map[string]string{}
	for line := range strings.Lines(d.Docker(b, args...)) {
		if id, pid, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			pids[id] = pid
		}
	}
	for i := range cs {
		pid := pids[cs[i].id]
		if pid == "" || pid == "0" {
			b.Fatalf("container %s (%s) does not run", cs[i].name, cs[i].id)
		}
		cs[i].veth = netnstest.HostVeth(b, "/proc/"+pid+"/ns/net")
	}
}

// warmUp scrapes e until Docker answers, every container is owned with
// its name and two scrapes in a row made no Docker API request: the
// events stream is connected and the view cached. It returns the last
// scrape.
func warmUp(b *testing.B, e *exporter, cs []benchContainer) string {
	deadline := time.Now().Add(60 * time.Second)
	prev := -1.0
	for {
		m := e.scrape(b)
		up, _ := sample(m, `veth_scrape_collector_success{collector="docker"}`)
		calls := apiRequests(m)
		missing := unowned(m, cs)
		if up == 1 && len(missing) == 0 && calls == prev {
			return m
		}
		if time.Now().After(deadline) {
			b.Fatalf("after 60 s: Docker up %v, %d containers not owned with their name, API requests %v then %v\n%s", up, len(missing), prev, calls, e.log)
		}
		prev = calls
		time.Sleep(100 * time.Millisecond)
	}
}

// timeScrapes times one GET /metrics per iteration of b.Loop, calling
// between (untimed) before each. It returns the time of each scrape, the
// Docker API requests per scrape and the last scrape.
func timeScrapes(b *testing.B, e *exporter, between func()) (times []time.Duration, calls float64, last string) {
	return timeScrapesCounting(b, e, "veth_docker_api_requests_total", between)
}

// apiRequests is veth_docker_api_requests_total, 0 without the resolver.
func apiRequests(metrics string) float64 {
	v, _ := sample(metrics, "veth_docker_api_requests_total")
	return v
}

// unowned returns the containers whose veth is not owned, with their name,
// in metrics.
func unowned(metrics string, cs []benchContainer) []string {
	var missing []string
	for _, c := range cs {
		v, ok := sample(metrics, ownerSeries("veth_owner_info", c.veth, c.id, c.name))
		if !ok || v != 1 {
			missing = append(missing, c.name+" ("+c.veth+")")
		}
	}
	return missing
}
