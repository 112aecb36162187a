package web

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRouter(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "veth_test_gauge", Help: "A test gauge."})
	reg.MustRegister(g)
	var ready atomic.Bool
	h, err := NewRouter(Config{
		TelemetryPath: "/metrics",
		Gatherer:      reg,
		Ready:         ready.Load,
		Version:       "1.2.3",
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := get("/-/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("GET /-/ready before the first inventory = %d %q, want 503", code, body)
	}
	ready.Store(true)
	for _, tt := range []struct {
		path, want string
		code       int
	}{
		{"/-/ready", "Ready", 200},
		{"/-/healthy", "Healthy", 200},
		{"/metrics", "veth_test_gauge 0", 200},
		{"/", `href="/metrics"`, 200},
		{"/", "1.2.3", 200},
		{"/nothing-here", "", 404},
		// Remediation off: the webhook is not mounted, and says so.
		{"/remediate", "remediation is off: start the exporter with --remediation.mode=dry-run", 404},
	} {
		code, body := get(tt.path)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, code, body, tt.code, tt.want)
		}
	}
}
