package web

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/remediate"
)

type authorizerFunc func(r *http.Request) error

func (f authorizerFunc) Authorize(r *http.Request) error { return f(r) }

// TestRemediateHandlerRefusals: a refused request gets the policy's
// status and challenge, and a handler without a policy refuses everything.
func TestRemediateHandlerRefusals(t *testing.T) {
	for _, tt := range []struct {
		name      string
		auth      Authorizer
		status    int
		challenge string
	}{
		{"no policy", nil, http.StatusForbidden, ""},
		{"no credential", authorizerFunc(func(*http.Request) error {
			return &remediate.AuthError{Status: http.StatusUnauthorized, Challenge: `Bearer realm="x"`, Msg: "a bearer token is required"}
		}), http.StatusUnauthorized, `Bearer realm="x"`},
		{"not a remediation user", authorizerFunc(func(*http.Request) error {
			return &remediate.AuthError{Status: http.StatusForbidden, Msg: "no"}
		}), http.StatusForbidden, ""},
		{"token file unusable", authorizerFunc(func(*http.Request) error {
			return &remediate.AuthError{Status: http.StatusServiceUnavailable, Msg: "unusable"}
		}), http.StatusServiceUnavailable, ""},
		{"any other error", authorizerFunc(func(*http.Request) error { return errors.New("odd") }), http.StatusForbidden, ""},
	} {
		h := NewRemediateHandler(RemediateConfig{Auth: tt.auth, BodyLimit: 1 << 10})
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/remediate", strings.NewReader(`{"version":"4","alerts":[]}`))
		r.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(w, r)
		if w.Code != tt.status || w.Header().Get("WWW-Authenticate") != tt.challenge {
			t.Errorf("%s: %d, WWW-Authenticate %q; want %d, %q", tt.name, w.Code, w.Header().Get("WWW-Authenticate"), tt.status, tt.challenge)
		}
	}
}
