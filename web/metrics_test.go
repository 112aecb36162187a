package web

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/veth-exporter/veth_exporter/collector"
	"github.com/veth-exporter/veth_exporter/inventory"
)

type fakeSnapshots struct{ snap *inventory.Snapshot }

func (f fakeSnapshots) SharedSnapshot(context.Context) (*inventory.Snapshot, error) {
	return f.snap, nil
}

func metricsTestGatherer() prometheus.Gatherer {
	t0 := time.Unix(1_700_000_000, 5)
	ns := &inventory.Namespace{Inode: 1, NSID: 3, PIDs: []int{7}}
	owner := &inventory.Owner{Kind: inventory.OwnerContainer, ID: "abc", Name: `we"ird\name`}
	snap := &inventory.Snapshot{Taken: t0, Steps: []inventory.Step{{Name: "links"}, {Name: "netns"}}}
	for i, name := range []string{"veth1", "veth\xff2", `veth"3`} {
		snap.Veths = append(snap.Veths, inventory.Veth{Name: name, Index: 10 + i, Master: "docker0", OperState: "up",
			PeerIndex: 2, PeerNetNSID: 3, PeerNetns: ns, Owner: owner, Verdict: inventory.Owned,
			Reason: inventory.ReasonContainer, FirstSeen: t0})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	return collector.Gatherers{reg, collector.New(fakeSnapshots{snap}, collector.Config{PerDevice: true}, slog.New(slog.DiscardHandler))}
}

// TestMetricsHandlerAsPromhttp: whatever the scraper asks, the metrics
// handler answers what promhttp's would: status, content type and coding,
// Vary, and the same text once decompressed.
func TestMetricsHandlerAsPromhttp(t *testing.T) {
	g := metricsTestGatherer()
	errorLog := log.New(io.Discard, "", 0)
	ours := newMetricsHandler(g, errorLog, 0)
	theirs := promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: errorLog, ErrorHandling: promhttp.ContinueOnError})
	const (
		prometheus3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
		prometheus2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
		protobuf    = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3"
	)
	tests := []struct {
		name, accept, encoding, query string
		wantGzip                      bool
	}{
		{name: "no headers"},
		{name: "gzip", encoding: "gzip", wantGzip: true},
		{name: "Prometheus 3", accept: prometheus3, encoding: "gzip", wantGzip: true},
		{name: "Prometheus 2", accept: prometheus2, encoding: "gzip", wantGzip: true},
		{name: "protobuf", accept: protobuf, encoding: "gzip", wantGzip: true},
		{name: "text 1.0.0 UTF-8", accept: "text/plain;version=1.0.0;escaping=allow-utf-8"},
		{name: "curl --compressed", encoding: "deflate, gzip, br, zstd", wantGzip: true},
		{name: "gzip refused", encoding: "gzip;q=0"},
		{name: "identity refused", encoding: "identity;q=0"},
		{name: "anything", encoding: "*"},
		{name: "nothing", encoding: "*;q=0"},
		{name: "identity first on a tie", encoding: "gzip, identity"},
		{name: "weights", encoding: "identity;q=0.5, gzip ; q=0.9", wantGzip: true},
		{name: "unknown coding", encoding: "br"},
		{name: "names", encoding: "gzip", query: "?name[]=veth_info&name[]=veth_up&name[]=go_goroutines", wantGzip: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serve := func(h http.Handler) *httptest.ResponseRecorder {
				req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/metrics"+tt.query, nil)
				if tt.accept != "" {
					req.Header.Set("Accept", tt.accept)
				}
				if tt.encoding != "" {
					req.Header.Set("Accept-Encoding", tt.encoding)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec
			}
			got, want := serve(ours), serve(theirs)
			if got.Code != want.Code {
				t.Errorf("status %d, want %d", got.Code, want.Code)
			}
			for _, h := range []string{"Content-Type", "Content-Encoding", "Vary"} {
				if g, w := got.Header().Values(h), want.Header().Values(h); !slices.Equal(g, w) {
					t.Errorf("%s: %q, want %q", h, g, w)
				}
			}
			if gz := got.Header().Get("Content-Encoding") == "gzip"; gz != tt.wantGzip {
				t.Errorf("gzipped: %v, want %v", gz, tt.wantGzip)
			}
			if strings.Contains(tt.accept, "protobuf") {
				// promhttp's own answer, whose Go collector figures move
				// between two scrapes.
				return
			}
			gotBody, wantBody := withoutGo(body(t, got)), withoutGo(body(t, want))
			if tt.query == "" && !bytes.Contains(gotBody, []byte(`veth_info{device="veth\"3",ifindex="12"`)) {
				t.Errorf("no veth_info in:\n%s", gotBody)
			}
			if !bytes.Equal(gotBody, wantBody) {
				t.Errorf("body:\n%s\nwant:\n%s", gotBody, wantBody)
			}
		})
	}
}

func body(t *testing.T, rec *httptest.ResponseRecorder) []byte {
	t.Helper()
	if rec.Header().Get("Content-Encoding") != "gzip" {
		return rec.Body.Bytes()
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withoutGo drops the samples of the Go collector's families, keeping
// their HELP and TYPE lines.
func withoutGo(text []byte) []byte {
	var out []byte
	for line := range bytes.Lines(text) {
		if !bytes.HasPrefix(line, []byte("go_")) {
			out = append(out, line...)
		}
	}
	return out
}

type failingGatherer struct{}

func (failingGatherer) Gather() ([]*dto.MetricFamily, error) { return nil, errors.New("no inventory") }
func (failingGatherer) GatherText() ([]collector.TextFamily, error) {
	return nil, errors.New("no inventory")
}

// TestMetricsHandlerGatherError: nothing gathered is a 500 with the
// error, as from promhttp.
func TestMetricsHandlerGatherError(t *testing.T) {
	errorLog := log.New(io.Discard, "", 0)
	serve := func(h http.Handler) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	got := serve(newMetricsHandler(failingGatherer{}, errorLog, 0))
	want := serve(promhttp.HandlerFor(failingGatherer{}, promhttp.HandlerOpts{ErrorLog: errorLog, ErrorHandling: promhttp.ContinueOnError}))
	if got.Code != http.StatusInternalServerError || got.Code != want.Code || got.Body.String() != want.Body.String() {
		t.Errorf("got %d %q, want %d %q", got.Code, got.Body, want.Code, want.Body)
	}
}

type blockingGatherer struct {
	prometheus.Gatherer
	entered chan struct{}
	release chan struct{}
}

func (b blockingGatherer) GatherText() ([]collector.TextFamily, error) {
	b.entered <- struct{}{}
	<-b.release
	return nil, nil
}

// TestMetricsHandlerMaxRequests: past the limit of scrapes in flight a
// scrape is refused with promhttp's 503.
func TestMetricsHandlerMaxRequests(t *testing.T) {
	g := blockingGatherer{Gatherer: prometheus.NewRegistry(), entered: make(chan struct{}), release: make(chan struct{})}
	h := newMetricsHandler(g, log.New(io.Discard, "", 0), 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/metrics", nil))
	})
	<-g.entered
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/metrics", nil))
	close(g.release)
	wg.Wait()
	if want := "Limit of concurrent requests reached (1), try again later.\n"; rec.Code != http.StatusServiceUnavailable || rec.Body.String() != want {
		t.Errorf("second scrape: %d %q, want 503 %q", rec.Code, rec.Body, want)
	}
}
