package collector_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"

	"github.com/veth-exporter/veth_exporter/collector"
	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/web"
)

// syntheticSnapshot is a node of n veths in n/20 namespaces, one in five
// of them leaked.
func syntheticSnapshot(n int) *inventory.Snapshot {
	s := &inventory.Snapshot{Taken: time.Now(), Steps: []inventory.Step{{Name: "links"}, {Name: "netns"}}}
	var ns *inventory.Namespace
	var owner *inventory.Owner
	for i := range n {
		if i%20 == 0 {
			ns = &inventory.Namespace{Inode: uint64(4026531840 + i), NSID: i / 20, PIDs: []int{1000 + i}}
			owner = &inventory.Owner{Kind: inventory.OwnerContainer, ID: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("app-%d", i)}
			if (i/20)%5 == 4 {
				ns.PIDs, owner = nil, nil
			}
		}
		v := inventory.Veth{
			Name: fmt.Sprintf("veth%08x", i), Index: 100 + i, Master: fmt.Sprintf("br%d", i/1000), OperState: "up",
			PeerIndex: 2 + i%20, PeerNetNSID: i / 20, PeerNetns: ns, Owner: owner,
			Verdict: inventory.Owned, Reason: inventory.ReasonContainer, FirstSeen: s.Taken,
		}
		if owner == nil {
			v.Verdict, v.Reason, v.OrphanedSince = inventory.Orphaned, inventory.ReasonNetnsEmpty, s.Taken
		}
		s.Veths = append(s.Veths, v)
	}
	return s
}

// snapshots hands out its snapshots in turn: as on a node, every scrape
// gets a snapshot of its own, never the previous scrape's.
type snapshots struct {
	snaps []*inventory.Snapshot
	next  atomic.Uint64
}

func (s *snapshots) SharedSnapshot(context.Context) (*inventory.Snapshot, error) {
	return s.snaps[(s.next.Add(1)-1)%uint64(len(s.snaps))], nil
}

// discardResponse is an http.ResponseWriter that keeps nothing but the
// status and the number of bytes: the benchmark times the handler, not a
// buffer growing to hold the body.
type discardResponse struct {
	header http.Header
	status int
	n      int
}

func (d *discardResponse) Header() http.Header { return d.header }
func (d *discardResponse) WriteHeader(status int) {
	if d.status == 0 {
		d.status = status
	}
}

func (d *discardResponse) Write(p []byte) (int, error) {
	d.WriteHeader(http.StatusOK)
	d.n += len(p)
	return len(p), nil
}

// BenchmarkScrape measures GET /metrics through the exporter's HTTP
// handler, wired as serve wires it (the registry's Go, process and build
// metrics, the handler's own instrumentation), on a snapshot of n
// synthetic veths: what a scrape costs on top of taking the inventory.
// encoding=gzip is a scrape as Prometheus makes it (Accept-Encoding: gzip).
func BenchmarkScrape(b *testing.B) {
	logger := slog.New(slog.DiscardHandler)
	for _, n := range []int{1000, 5000, 10000} {
		for _, encoding := range []string{"identity", "gzip"} {
			b.Run(fmt.Sprintf("veths=%d/encoding=%s", n, encoding), func(b *testing.B) {
				src := &snapshots{snaps: []*inventory.Snapshot{syntheticSnapshot(n), syntheticSnapshot(n)}}
				reg := prometheus.NewRegistry()
				reg.MustRegister(
					versioncollector.NewCollector("veth_exporter"),
					collectors.NewGoCollector(),
					collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
				)
				h, err := web.NewRouter(web.Config{
					TelemetryPath: "/metrics",
					Gatherer:      collector.Gatherers{reg, collector.New(src, collector.Config{PerDevice: true}, logger)},
					Registerer:    reg,
					Logger:        logger,
				})
				if err != nil {
					b.Fatal(err)
				}
				req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/metrics", nil)
				if encoding == "gzip" {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				var size int
				for b.Loop() {
					w := &discardResponse{header: http.Header{}}
					h.ServeHTTP(w, req)
					if w.status != http.StatusOK {
						b.Fatalf("GET /metrics: status %d", w.status)
					}
					if got := w.header.Get("Content-Encoding"); (encoding == "gzip") != (got == "gzip") {
						b.Fatalf("GET /metrics with Accept-Encoding %q: Content-Encoding %q", req.Header.Get("Accept-Encoding"), got)
					}
					size = w.n
				}
				b.ReportMetric(float64(size), "bytes/scrape")
			})
		}
	}
}
