package remediate

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// Web configs of the tests. The files they name need not exist: the
// policy reads the config, exporter-toolkit loads the certificates.
const (
	mtlsConfig = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n" +
		"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
	tlsOnlyConfig = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
)

func basicAuthConfig(t *testing.T, users ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("basic_auth_users:\n")
	for _, u := range users {
		hash, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("  " + u + ": " + string(hash) + "\n")
	}
	return b.String()
}

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWebConfigAuthenticates(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		config string
		want   bool
	}{
		{basicAuthConfig(t, "am"), true},
		{mtlsConfig, true},
		// Without a client CA any certificate a public CA issued would do.
		{"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n", false},
		{"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.pem\n", false},
		{"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n", false},
		{tlsOnlyConfig, false},
		{"tls_server_config:\n  client_auth_type: RequestClientCert\n", false},
		{"", false},
		{"{}\n", false},
	} {
		c, err := ReadWebConfig(writeFile(t, dir, "web.yml", tt.config, 0o600))
		if err != nil {
			t.Errorf("ReadWebConfig(%q): %v", tt.config, err)
			continue
		}
		if got := WebConfigAuthenticates(c); got != tt.want {
			t.Errorf("WebConfigAuthenticates(%q) = %v, want %v", tt.config, got, tt.want)
		}
	}
	for _, bad := range []string{
		// Strict, as exporter-toolkit reads it: a misspelled key is
		// an error, not a config without authentication.
		"basic_auth_user:\n  am: x\n",
		"tls_server_config:\n  client_ca: [\n",
		"tls_server_config:\n  min_version: TLS99\n",
	} {
		if _, err := ReadWebConfig(writeFile(t, dir, "web.yml", bad, 0o600)); err == nil {
			t.Errorf("ReadWebConfig(%q) = nil error", bad)
		}
	}
	if _, err := ReadWebConfig(filepath.Join(dir, "missing.yml")); err == nil {
		t.Error("ReadWebConfig(missing) = nil error")
	}
	c, err := ReadWebConfig(writeFile(t, dir, "web.yml", mtlsConfig, 0o600))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "ca.pem"); c.TLSConfig.ClientCAs != want {
		t.Errorf("client_ca_file = %q, want %q (relative to the config)", c.TLSConfig.ClientCAs, want)
	}
}

// TestNewAuth is the start-up policy: which configurations start, and the
// flag each refusal names.
func TestNewAuth(t *testing.T) {
	dir := t.TempDir()
	basic := writeFile(t, dir, "basic.yml", basicAuthConfig(t, "prom", "am"), 0o600)
	mtls := writeFile(t, dir, "mtls.yml", mtlsConfig, 0o600)
	mtlsIfGiven := writeFile(t, dir, "mtls-if-given.yml", strings.Replace(mtlsConfig, "RequireAndVerifyClientCert", "VerifyClientCertIfGiven", 1), 0o600)
	mtlsNoCA := writeFile(t, dir, "mtls-no-ca.yml", strings.Replace(mtlsConfig, "  client_ca_file: ca.pem\n", "", 1), 0o600)
	tlsOnly := writeFile(t, dir, "tls.yml", tlsOnlyConfig, 0o600)
	misspelled := writeFile(t, dir, "misspelled.yml", "basic_auth_user:\n  am: x\n", 0o600)
	token := writeFile(t, dir, "token", "s3cret\n", 0o600)
	openToken := writeFile(t, dir, "token-644", "s3cret\n", 0o644)
	emptyToken := writeFile(t, dir, "token-empty", "", 0o600)

	for _, tt := range []struct {
		name string
		cfg  AuthConfig
		want string // part of the error; "" starts
	}{
		{"nothing", AuthConfig{}, "needs authentication"},
		{"TLS without client certificates", AuthConfig{WebConfigFile: tlsOnly}, "needs authentication"},
		{"client certificates without a client CA", AuthConfig{WebConfigFile: mtlsNoCA}, "needs authentication"},
		{"basic auth alone", AuthConfig{WebConfigFile: basic}, "--remediation.users is required"},
		{"client certificates alone", AuthConfig{WebConfigFile: mtls}, "--remediation.users is required"},
		{"basic auth and a token", AuthConfig{WebConfigFile: basic, TokenFile: token}, "cannot be combined"},
		{"users without a web config", AuthConfig{Users: []string{"am"}}, "--remediation.users names"},
		{"users with TLS only", AuthConfig{WebConfigFile: tlsOnly, Users: []string{"am"}}, "--remediation.users names"},
		{"users, no client CA", AuthConfig{WebConfigFile: mtlsNoCA, Users: []string{"am"}}, "--remediation.users names"},
		{"unknown basic-auth user", AuthConfig{WebConfigFile: basic, Users: []string{"am", "alertmanager"}}, `"alertmanager" is not in basic_auth_users`},
		{"empty user", AuthConfig{WebConfigFile: basic, Users: []string{""}}, "empty user name"},
		{"world-readable token", AuthConfig{TokenFile: openToken}, "--remediation.bearer-token-file: " + openToken + " is accessible by group or others"},
		{"empty token", AuthConfig{TokenFile: emptyToken}, "--remediation.bearer-token-file: " + emptyToken + " is empty"},
		{"missing token", AuthConfig{TokenFile: filepath.Join(dir, "nope")}, "--remediation.bearer-token-file"},
		{"misspelled web config", AuthConfig{WebConfigFile: misspelled, Users: []string{"am"}}, "--web.config.file"},
		{"missing web config", AuthConfig{WebConfigFile: filepath.Join(dir, "nope.yml"), TokenFile: token}, "--web.config.file"},

		{"token", AuthConfig{TokenFile: token}, ""},
		{"token behind client certificates", AuthConfig{WebConfigFile: mtls, TokenFile: token}, ""},
		{"token and certificate CNs", AuthConfig{WebConfigFile: mtls, TokenFile: token, Users: []string{"alertmanager"}}, ""},
		{"basic-auth users", AuthConfig{WebConfigFile: basic, Users: []string{"am"}}, ""},
		{"certificate CNs", AuthConfig{WebConfigFile: mtls, Users: []string{"alertmanager"}}, ""},
		{"certificate CNs, certificates optional for scrapes", AuthConfig{WebConfigFile: mtlsIfGiven, Users: []string{"alertmanager"}}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = slog.New(slog.DiscardHandler)
			_, err := NewAuth(tt.cfg)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("NewAuth(%+v) = %v, want error containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

// TestNewAuthWarnsWithoutTLS: the credential in clear text is worth a
// warning at start-up, not a refusal (a node-local network may be trusted).
func TestNewAuthWarnsWithoutTLS(t *testing.T) {
	dir := t.TempDir()
	token := writeFile(t, dir, "token", "s3cret\n", 0o600)
	for _, tt := range []struct {
		name, config string
		warn         bool
	}{
		{"no web config", "", true},
		{"web config without TLS", "{}\n", true},
		{"TLS", tlsOnlyConfig, false},
		{"client certificates", mtlsConfig, false},
	} {
		var logs bytes.Buffer
		cfg := AuthConfig{TokenFile: token, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		if tt.config != "" {
			cfg.WebConfigFile = writeFile(t, dir, "web.yml", tt.config, 0o600)
		}
		a, err := NewAuth(cfg)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := strings.Contains(logs.String(), "level=WARN msg=\"remediation credentials travel in clear text"); got != tt.warn {
			t.Errorf("%s: warning logged = %v, want %v\n%s", tt.name, got, tt.warn, logs.String())
		}
		if a.ServesTLS() == tt.warn {
			t.Errorf("%s: ServesTLS() = %v", tt.name, a.ServesTLS())
		}
	}
}

type authCase struct {
	name   string
	req    func(r *http.Request)
	status int // 0: authorised
}

func runAuthCases(t *testing.T, a *Auth, cases []authCase) {
	t.Helper()
	for _, tt := range cases {
		r := httptest.NewRequest("POST", "/remediate", nil)
		if tt.req != nil {
			tt.req(r)
		}
		err := a.Authorize(r)
		var ae *AuthError
		switch {
		case tt.status == 0 && err != nil:
			t.Errorf("%s: Authorize = %v, want authorised", tt.name, err)
		case tt.status != 0 && (!errors.As(err, &ae) || ae.Status != tt.status):
			t.Errorf("%s: Authorize = %#v, want status %d", tt.name, err, tt.status)
		case ae != nil && ae.Status == http.StatusUnauthorized && ae.Challenge == "":
			t.Errorf("%s: 401 without a challenge", tt.name)
		}
	}
}

func basicAuth(user, password string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, password) }
}

// clientCert makes r look as if its TLS handshake verified a client
// certificate with this CN, or, unverified, only presented it.
func clientCert(cn string, verified bool) func(*http.Request) {
	return func(r *http.Request) {
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		r.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{cert}}
		if verified {
			r.TLS.VerifiedChains = [][]*x509.Certificate{{cert, {Subject: pkix.Name{CommonName: "test CA"}}}}
		}
	}
}

// TestAuthorizeBasicAuth: hole 4, the scrape user of the same web config
// may not remediate.
func TestAuthorizeBasicAuth(t *testing.T) {
	dir := t.TempDir()
	web := writeFile(t, dir, "web.yml", basicAuthConfig(t, "prom", "am"), 0o600)
	a, err := NewAuth(AuthConfig{WebConfigFile: web, Users: []string{"am"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runAuthCases(t, a, []authCase{
		{"remediation user", basicAuth("am", "am-pw"), 0},
		{"scrape user", basicAuth("prom", "prom-pw"), 403},
		{"remediation user, wrong password", basicAuth("am", "prom-pw"), 403},
		{"unknown user", basicAuth("nobody", "x"), 403},
		{"no credentials", nil, 403},
		{"a verified certificate with the user's name, no basic auth", clientCert("am", true), 403},
	})

	// The web config drops the scrape user and adds nobody: am still may.
	writeFile(t, dir, "web.yml", basicAuthConfig(t, "am"), 0o600)
	runAuthCases(t, a, []authCase{{"remediation user after an edit", basicAuth("am", "am-pw"), 0}})
	// It no longer authenticates anyone: nothing is authorised.
	writeFile(t, dir, "web.yml", "{}\n", 0o600)
	runAuthCases(t, a, []authCase{{"remediation user, authentication removed", basicAuth("am", "am-pw"), 403}})
	// It is broken: nothing is authorised.
	writeFile(t, dir, "web.yml", "basic_auth_users: [\n", 0o600)
	runAuthCases(t, a, []authCase{{"remediation user, broken web config", basicAuth("am", "am-pw"), 403}})
	os.Remove(web)
	runAuthCases(t, a, []authCase{{"remediation user, web config removed", basicAuth("am", "am-pw"), 403}})
}

// TestAuthorizeClientCertificates: hole 4 with mTLS, any certificate of
// the CA authenticates, only the listed CNs remediate.
func TestAuthorizeClientCertificates(t *testing.T) {
	dir := t.TempDir()
	web := writeFile(t, dir, "web.yml", mtlsConfig, 0o600)
	a, err := NewAuth(AuthConfig{WebConfigFile: web, Users: []string{"alertmanager"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runAuthCases(t, a, []authCase{
		{"alertmanager certificate", clientCert("alertmanager", true), 0},
		{"prometheus certificate", clientCert("prometheus", true), 403},
		{"alertmanager certificate, not verified", clientCert("alertmanager", false), 403},
		{"certificate without CN", clientCert("", true), 403},
		{"no TLS", nil, 403},
		{"basic auth with the CN as user, no basic_auth_users", basicAuth("alertmanager", "x"), 403},
	})
	// Client certificates no longer verified: the CN names nobody.
	writeFile(t, dir, "web.yml", strings.Replace(mtlsConfig, "RequireAndVerifyClientCert", "RequireAnyClientCert", 1), 0o600)
	runAuthCases(t, a, []authCase{{"alertmanager certificate, verification dropped", clientCert("alertmanager", true), 403}})
}

// TestAuthorizeBearerToken: the token guards the webhook alone, is
// compared by digest whatever its length, and is re-read when rotated.
func TestAuthorizeBearerToken(t *testing.T) {
	dir := t.TempDir()
	token := writeFile(t, dir, "token", "s3cret-token\n", 0o600)
	a, err := NewAuth(AuthConfig{TokenFile: token, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(h string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", h) }
	}
	runAuthCases(t, a, []authCase{
		{"token", bearer("Bearer s3cret-token"), 0},
		{"lower-case scheme", bearer("bearer s3cret-token"), 0},
		{"no Authorization", nil, 401},
		{"basic auth", basicAuth("am", "s3cret-token"), 401},
		{"scheme only", bearer("Bearer"), 401},
		{"wrong token", bearer("Bearer nope"), 403},
		{"prefix of the token", bearer("Bearer s3cret-toke"), 403},
		{"longer than the token", bearer("Bearer s3cret-token-and-more"), 403},
		{"much longer", bearer("Bearer " + strings.Repeat("s3cret-token", 500)), 403},
		{"empty token", bearer("Bearer "), 403},
	})

	writeFile(t, dir, "token", "rotated\n", 0o600)
	runAuthCases(t, a, []authCase{
		{"old token after rotation", bearer("Bearer s3cret-token"), 403},
		{"new token after rotation", bearer("Bearer rotated"), 0},
	})
	if err := os.Chmod(token, 0o644); err != nil {
		t.Fatal(err)
	}
	runAuthCases(t, a, []authCase{{"token, file world-readable", bearer("Bearer rotated"), 503}})
}
