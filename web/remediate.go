package web

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"time"

	"github.com/veth-exporter/veth_exporter/remediate"
)

// RemediateConfig is what the Alertmanager webhook needs.
type RemediateConfig struct {
	Remediator *remediate.Remediator
	// Auth decides who may call the webhook (see [remediate.Auth]); it
	// is required: the webhook is never open.
	Auth Authorizer
	// BodyLimit bounds the request body (413 beyond it).
	BodyLimit int64
	// Timeout bounds one request, well under Alertmanager's own.
	Timeout time.Duration
}

// Authorizer decides whether a request may call the webhook: nil, or an
// error; a [*remediate.AuthError] carries the status to answer, any other
// error is answered 403.
type Authorizer interface {
	Authorize(r *http.Request) error
}

// remediateResponse is the body of every processed request.
type remediateResponse struct {
	Results []remediate.Answer `json:"results"`
}

// NewRemediateHandler returns the handler of POST /remediate. A processed
// request answers 200 with one result per alert, refusals included, so
// that Alertmanager does not retry what was refused on purpose; 4xx is for
// requests that cannot be processed or may not be (401, 403: see
// [RemediateConfig.Auth]), 5xx only for a transient failure (the
// inventory could not be taken, the bearer token file is unusable until
// fixed).
func NewRemediateHandler(cfg RemediateConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST an Alertmanager webhook payload (version 4)", http.StatusMethodNotAllowed)
			return
		}
		if err := authorize(cfg.Auth, r); err != nil {
			status := http.StatusForbidden
			var ae *remediate.AuthError
			if errors.As(err, &ae) {
				status = ae.Status
				if ae.Challenge != "" {
					w.Header().Set("WWW-Authenticate", ae.Challenge)
				}
			}
			http.Error(w, err.Error(), status)
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
			return
		}
		payload, err := remediate.DecodePayload(http.MaxBytesReader(w, r.Body, cfg.BodyLimit), cfg.BodyLimit)
		switch {
		case errors.Is(err, remediate.ErrTooLarge):
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}

		ctx, cancel := context.WithTimeout(r.Context(), cfg.Timeout)
		defer cancel()
		answers, err := cfg.Remediator.HandleAlerts(ctx, payload)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		status := http.StatusOK
		for _, a := range answers {
			if a.Transient() {
				// Worth a retry: nothing was decided about that device.
				status = http.StatusServiceUnavailable
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		// A client gone before its answer is its own problem; the audit
		// file and the log have the decisions.
		_ = json.NewEncoder(w).Encode(remediateResponse{Results: answers})
	})
}

// authorize fails closed: a handler built without an Authorizer refuses
// every request.
func authorize(a Authorizer, r *http.Request) error {
	if a == nil {
		return errors.New("remediation refused: no authentication configured")
	}
	return a.Authorize(r)
}
