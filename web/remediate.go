package web

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/remediate"
)

// RemediateConfig is what the Alertmanager webhook needs.
type RemediateConfig struct {
	Remediator *remediate.Remediator
	// BearerToken, when set, must be presented as "Authorization: Bearer
	// <token>"; it is compared in constant time.
	BearerToken []byte
	// Authenticated, when set, re-checks at each request that the web
	// config (re-read by exporter-toolkit at each request) still makes
	// clients authenticate.
	Authenticated func() bool
	// InstanceLabel names the alert label that says which node an alert
	// is for; Instance must match its whole value for this node.
	InstanceLabel string
	Instance      *regexp.Regexp
	// BodyLimit bounds the request body (413 beyond it).
	BodyLimit int64
	// Timeout bounds one request, well under Alertmanager's own.
	Timeout time.Duration
}

// remediateResponse is the body of every processed request.
type remediateResponse struct {
	Results []remediate.Answer `json:"results"`
}

// NewRemediateHandler returns the handler of POST /remediate. A processed
// request answers 200 with one result per alert, refusals included, so
// that Alertmanager does not retry what was refused on purpose; 4xx is for
// requests that cannot be processed, 5xx only for a transient failure
// (the inventory could not be taken).
func NewRemediateHandler(cfg RemediateConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST an Alertmanager webhook payload (version 4)", http.StatusMethodNotAllowed)
			return
		}
		if cfg.Authenticated != nil && !cfg.Authenticated() {
			// The web config was edited since start-up and no longer
			// makes clients authenticate: refuse rather than open up.
			http.Error(w, "remediation refused: --web.config.file no longer requires authentication", http.StatusForbidden)
			return
		}
		if cfg.BearerToken != nil {
			scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				w.Header().Set("WWW-Authenticate", `Bearer realm="veth_exporter remediation"`)
				http.Error(w, "a bearer token is required", http.StatusUnauthorized)
				return
			}
			if subtle.ConstantTimeCompare([]byte(token), cfg.BearerToken) != 1 {
				http.Error(w, "wrong bearer token", http.StatusForbidden)
				return
			}
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

		reqs := make([]remediate.Request, len(payload.Alerts))
		for i, a := range payload.Alerts {
			reqs[i] = remediate.Request{
				Device:      a.Labels["device"],
				StartsAt:    a.StartsAt,
				Fingerprint: a.Fingerprint,
				Resolved:    !a.Firing(),
			}
			if s, ok := a.Labels["ifindex"]; ok {
				if idx, err := remediate.ParseIfindex(s); err != nil {
					reqs[i].BadIndex = s
				} else {
					reqs[i].Index = idx
				}
			}
		}
		thisNode := func(i int) bool {
			v, ok := payload.Alerts[i].Labels[cfg.InstanceLabel]
			return ok && cfg.Instance.MatchString(v)
		}
		ctx, cancel := context.WithTimeout(r.Context(), cfg.Timeout)
		defer cancel()
		answers, err := cfg.Remediator.Handle(ctx, reqs, thisNode, true)
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
		json.NewEncoder(w).Encode(remediateResponse{Results: answers})
	})
}
