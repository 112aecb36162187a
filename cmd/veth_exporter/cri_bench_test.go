package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The CRI scrape benchmark: the real binary against a real containerd
// with many pod sandboxes (bench/compare.sh --cri runs it).

const (
	// envBenchPods sets the number of pods.
	envBenchPods = "VETH_BENCH_PODS"
	// defaultBenchPods is the size of the node.
	defaultBenchPods = 100
	// maxSteadyCRICalls: a scrape of a quiet node costs one
	// ListPodSandbox at most.
	maxSteadyCRICalls = 1
)

// BenchmarkCRIScrape times GET /metrics on a node with VETH_BENCH_PODS
// (100) pod sandboxes, each with a veth on cni0, by two exporters side by
// side: one with the CRI resolver, one with --no-collector.cri. Besides
// ns/op each sub-benchmark reports median-ms, veths and api-calls/scrape
// (the growth of veth_cri_api_requests_total per scrape):
//
//   - resolver=on: a quiet node; fails unless api-calls/scrape <= 1 and
//     every pod's veth is owned by that pod, named.
//   - resolver=off: the same node without the resolver.
//   - resolver=on,churn: one pod stopped, removed and run again before
//     each scrape (not timed).
func BenchmarkCRIScrape(b *testing.B) {
	netnstest.Require(b)
	n := defaultBenchPods
	if s := os.Getenv(envBenchPods); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("%s=%q: want a positive number", envBenchPods, s)
		}
		n = v
	}
	exporterBinary(b)
	start := time.Now()
	rt := critest.Start(b)
	b.Logf("containerd up in %.1f s", time.Since(start).Seconds())
	start = time.Now()
	pods := make([]*critest.Pod, n)
	for i := range pods {
		pods[i] = rt.RunPod(b, fmt.Sprintf("ns%d", i%5), fmt.Sprintf("pod%d", i), "")
	}
	b.Logf("ran %d pods in %.1f s", n, time.Since(start).Seconds())

	dir := b.TempDir()
	start = time.Now()
	on := startExporter(b, "--collector.cri", "--cri.endpoint="+rt.Endpoint, "--no-collector.docker", "--state.path="+filepath.Join(dir, "on.json"))
	off := startExporter(b, "--no-collector.cri", "--no-collector.docker", "--state.path="+filepath.Join(dir, "off.json"))
	warm := on.scrape(b)
	off.scrape(b)
	v, _ := sample(warm, "veth_cri_api_requests_total")
	b.Logf("exporters ready and warm in %.1f s; the resolver made %v CRI requests to learn %d pods", time.Since(start).Seconds(), v, n)

	b.Run("resolver=on", func(b *testing.B) {
		times, calls, last := timeScrapesCounting(b, on, "veth_cri_api_requests_total", nil)
		report(b, times, calls, last)
		if calls > maxSteadyCRICalls {
			b.Fatalf("steady state: %.2f CRI requests per scrape with %d pods, want at most %d", calls, n, maxSteadyCRICalls)
		}
		for _, p := range pods {
			if !strings.Contains(last, `veth_owner_info{device="`+p.Veth+`",id="`+p.ID+`",kind="pod",name="`+p.Name+`"`) {
				b.Fatalf("pod %s/%s's veth %s not owned by it, named:\n%s", p.Namespace, p.Name, p.Veth, ownerLines(last))
			}
		}
	})
	b.Run("resolver=off", func(b *testing.B) {
		times, calls, last := timeScrapesCounting(b, off, "veth_cri_api_requests_total", nil)
		report(b, times, calls, last)
		if v := vethCount(last); v < n {
			b.Fatalf("%d veths in the scrape, want at least %d", v, n)
		}
	})
	b.Run("resolver=on,churn", func(b *testing.B) {
		i := 0
		times, calls, last := timeScrapesCounting(b, on, "veth_cri_api_requests_total", func() {
			p := pods[i%len(pods)]
			rt.StopPod(b, p.ID)
			rt.RemovePod(b, p.ID)
			pods[i%len(pods)] = rt.RunPod(b, p.Namespace, p.Name, "")
			i++
		})
		report(b, times, calls, last)
	})
}

// ownerLines are the veth_owner_info lines of a scrape, for a failure.
func ownerLines(metrics string) string {
	var out []string
	for line := range strings.Lines(metrics) {
		if strings.HasPrefix(line, "veth_owner_info{") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "\n")
}
