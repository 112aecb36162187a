package collector

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/veth-exporter/veth_exporter/inventory"
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

// BenchmarkScrape measures the exposition of a snapshot through the real
// HTTP handler: what a scrape costs on top of taking the inventory.
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("veths=%d", n), func(b *testing.B) {
			c := New(fakeInventory{snap: syntheticSnapshot(n)}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
			h := promhttp.HandlerFor(Gatherers{prometheus.NewRegistry(), c}, promhttp.HandlerOpts{})
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), "GET", "/metrics", nil))
				io.Copy(io.Discard, rec.Body)
			}
		})
	}
}
