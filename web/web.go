// Package web serves the exporter over HTTP: the landing page, the metrics
// endpoint, the health endpoints and the inventory (a page and its JSON),
// on a chi router.
//
// Handlers here only read; the one endpoint that may change the node is the
// remediation webhook, mounted only when remediation is enabled.
package web

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	toolkit "github.com/prometheus/exporter-toolkit/web"
)

// Config is what the router serves.
type Config struct {
	// TelemetryPath is where metrics are served, normally /metrics.
	TelemetryPath string
	// Gatherer gives the metrics; a [collector.TextGatherer] writes the
	// text format itself.
	Gatherer prometheus.Gatherer
	// Registerer receives the HTTP handler's own metrics (promhttp_*); may be nil.
	Registerer prometheus.Registerer
	// MaxRequests limits concurrent scrapes; 0 means no limit.
	MaxRequests int
	// Ready reports whether the exporter has finished starting.
	Ready func() bool
	// Remediate, when set, is mounted at /remediate; nil (remediation
	// off) answers 404 saying how to turn it on.
	Remediate http.Handler
	// Inventory, when set, serves the inventory: GET /veths (a page for
	// people) and GET /api/v1/veths (the document of `inspect
	// --output=json`), each from one fresh snapshot.
	Inventory Snapshotter
	// Clean, when set (remediation on), makes /veths show the clean
	// command of each orphan the running exporter's gates let through.
	Clean *CleanAdvice
	// Sysfs is --path.sysfs, for the age of a veth the state file does
	// not know.
	Sysfs   string
	Version string
	Logger  *slog.Logger
}

// NewRouter returns the exporter's HTTP handler.
func NewRouter(cfg Config) (http.Handler, error) {
	r := chi.NewRouter()
	metrics := newMetricsHandler(cfg.Gatherer, slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelError), cfg.MaxRequests)
	if cfg.Registerer != nil {
		metrics = promhttp.InstrumentMetricHandler(cfg.Registerer, metrics)
	}
	r.Handle(cfg.TelemetryPath, metrics)
	r.Get("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("Healthy\n"))
	})
	r.Get("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Ready != nil && !cfg.Ready() {
			http.Error(w, "Not ready: taking the first inventory", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("Ready\n"))
	})
	if cfg.Remediate != nil {
		r.Handle("/remediate", cfg.Remediate)
	} else {
		r.HandleFunc("/remediate", remediationOff)
	}
	// Browsers ask for a favicon on every page, the landing page's
	// included; there is none, and a 404 is an error in their console.
	r.Get("/favicon.ico", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	links := []toolkit.LandingLinks{
		{Address: cfg.TelemetryPath, Text: "Metrics"},
	}
	if cfg.Inventory != nil {
		cfg.Logger = discardLogger(cfg.Logger)
		r.Get("/veths", newVethsHandler(cfg))
		r.Get("/api/v1/veths", newVethsAPIHandler(cfg))
		links = append(links,
			toolkit.LandingLinks{Address: "/veths", Text: "Veths", Description: "every veth of this node, its owner and verdict"},
			toolkit.LandingLinks{Address: "/api/v1/veths", Text: "Veths (JSON)", Description: "the same inventory as inspect --output=json"})
	}
	links = append(links,
		toolkit.LandingLinks{Address: "/-/healthy", Text: "Health"},
		toolkit.LandingLinks{Address: "/-/ready", Text: "Readiness"})
	if cfg.TelemetryPath != "/" {
		landing, err := toolkit.NewLandingPage(toolkit.LandingConfig{
			Name:        "veth exporter",
			Description: "Host-side veth interfaces of this node: who owns each, and which are leftovers",
			Version:     cfg.Version,
			Links:       links,
		})
		if err != nil {
			return nil, err
		}
		r.Handle("/", landing)
	}
	return r, nil
}

// RemediationOffMessage is the body of every request to /remediate while
// remediation is off.
const RemediationOffMessage = "remediation is off: start the exporter with --remediation.mode=dry-run or --remediation.mode=enforce " +
	"(and --remediation.bearer-token-file or --remediation.users) to mount POST /remediate"

// remediationOff answers /remediate while remediation is off: 404, since
// no retry will find it on (Alertmanager retries 5xx, not 4xx), with a
// body that says why instead of a bare "404 page not found".
func remediationOff(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, RemediationOffMessage, http.StatusNotFound)
}
