package remediate

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count what remediation did. A nil *Metrics counts nothing.
type Metrics struct {
	requests    prometheus.Counter
	actions     *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	lastDeleted prometheus.Gauge
	// last is the latest deletion counted: the webhook's and clean's
	// (read from the audit file) come in any order.
	mu   sync.Mutex
	last time.Time
}

// NewMetrics registers the remediation metrics with reg; capable reports
// whether the process may delete interfaces at all.
func NewMetrics(reg prometheus.Registerer, capable func() bool) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veth_remediation_requests_total",
			Help: "Remediation requests received by the webhook.",
		}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veth_remediation_actions_total",
			Help: "Remediation answers by result (deleted, would_delete, gone, not_found, refused, skipped, failed) and method: release or delete where the remover acted, none where a gate answered first.",
		}, []string{"result", "method"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veth_remediation_refusals_total",
			Help: "Refused or failed remediation answers by reason.",
		}, []string{"reason"}),
		lastDeleted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "veth_remediation_last_deletion_timestamp_seconds",
			Help: "When remediation last deleted a veth.",
		}),
	}
	capableGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "veth_remediation_capable",
		Help: "Whether the exporter may delete interfaces (CAP_NET_ADMIN).",
	}, func() float64 {
		if capable() {
			return 1
		}
		return 0
	})
	// Every result shows from the start, so a rate over it is never absent.
	for _, r := range Results {
		if r != ResultDeleted { // only a remover deletes, and says how
			m.actions.WithLabelValues(string(r), methodNone)
		}
	}
	for _, r := range []Result{ResultDeleted, ResultGone, ResultRefused, ResultFailed} {
		for _, method := range []Method{MethodRelease, MethodDelete} {
			m.actions.WithLabelValues(string(r), string(method))
		}
	}
	reg.MustRegister(m.requests, m.actions, m.refusals, m.lastDeleted, capableGauge)
	return m
}

// methodNone is the method label of an answer no removal was tried for.
const methodNone = "none"

func (m *Metrics) request() {
	if m != nil {
		m.requests.Inc()
	}
}

func (m *Metrics) action(a Answer) {
	if m == nil {
		return
	}
	method := string(a.Method)
	if method == "" {
		method = methodNone
	}
	m.actions.WithLabelValues(string(a.Result), method).Inc()
	if a.Result == ResultRefused || a.Result == ResultFailed || a.Result == ResultSkipped {
		m.refusals.WithLabelValues(a.Reason).Inc()
	}
}

func (m *Metrics) lastDeletion(t time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t.After(m.last) {
		m.last = t
		m.lastDeleted.Set(float64(t.UnixNano()) / 1e9)
	}
}
