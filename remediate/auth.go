package remediate

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	toolkit "github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
)

// The webhook's authentication policy. exporter-toolkit's web config
// (--web.config.file) guards every endpoint alike: with basic_auth_users or
// client certificates, Prometheus's scrape credential gets in as well as
// Alertmanager's. Who may delete must therefore be said apart from who may
// scrape: either the bearer token guards /remediate alone, or the
// remediation users (basic-auth user names or client-certificate subject
// CNs, both verified by exporter-toolkit) are the only callers allowed.

// AuthConfig says how the webhook authenticates its callers. The messages
// of [NewAuth] name the serve command's flags that set these fields.
type AuthConfig struct {
	// WebConfigFile is exporter-toolkit's web config
	// (--web.config.file); "" is none.
	WebConfigFile string
	// Users are the basic-auth user names and client-certificate
	// subject common names allowed to call the webhook
	// (--remediation.users).
	Users []string
	// TokenFile holds the bearer token the webhook requires
	// (--remediation.bearer-token-file); "" is none.
	TokenFile string
	Logger    *slog.Logger
}

// Auth decides whether a request may call the webhook. It is built once at
// start-up by [NewAuth], which refuses a configuration where a credential
// that can scrape could also delete; [Auth.Authorize] then re-reads the
// web config at each request, as exporter-toolkit does, and re-reads the
// token file when it changed.
type Auth struct {
	webConfigFile string
	users         map[string]bool
	token         *TokenFile
	logger        *slog.Logger
	tls           bool
}

// AuthError is why [Auth.Authorize] refused a request.
type AuthError struct {
	// Status is the HTTP status to answer: 401 (no credential), 403 (a
	// credential that may not remediate) or 503 (the credential cannot be
	// checked now: a broken token file).
	Status int
	// Challenge, with 401, is the WWW-Authenticate header to send.
	Challenge string
	Msg       string
}

func (e *AuthError) Error() string { return e.Msg }

// ReadWebConfig reads exporter-toolkit's web config the way the toolkit
// does: its own types, strict YAML (an unknown or misspelled key is an
// error, not a setting silently ignored), its defaults, and file paths
// relative to the config's directory.
func ReadWebConfig(path string) (*toolkit.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &toolkit.Config{
		TLSConfig:  toolkit.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13},
		HTTPConfig: toolkit.HTTPConfig{HTTP2: true},
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	return c, nil
}

// servesTLS reports whether the web config has the server serve TLS: a
// certificate (exporter-toolkit refuses to start with other TLS settings
// but no certificate).
func servesTLS(c *toolkit.Config) bool {
	return c.TLSConfig.TLSCertPath != "" || c.TLSConfig.TLSCert != ""
}

// verifiesClientCerts reports whether a client certificate that a client
// presents is verified against a client CA of the config's own: only then
// does its subject say who the client is.
func verifiesClientCerts(c *toolkit.Config) bool {
	switch c.TLSConfig.ClientAuth {
	case "RequireAndVerifyClientCert", "VerifyClientCertIfGiven":
	default:
		return false
	}
	return servesTLS(c) && (c.TLSConfig.ClientCAs != "" || c.TLSConfig.ClientCAsText != "")
}

// requiresClientCerts reports whether every client must present a
// certificate the config's client CA signed. Without a client CA of its
// own, any certificate a public CA issued would do.
func requiresClientCerts(c *toolkit.Config) bool {
	return c.TLSConfig.ClientAuth == "RequireAndVerifyClientCert" && verifiesClientCerts(c)
}

// WebConfigAuthenticates reports whether the web config makes every client
// authenticate: basic_auth_users, or client certificates that must verify
// against a client CA of its own.
func WebConfigAuthenticates(c *toolkit.Config) bool {
	return len(c.Users) > 0 || requiresClientCerts(c)
}

// NewAuth checks the configuration against the policy and returns the
// webhook's authentication, or an error naming the flag to fix:
//   - some credential is required: the bearer token, or remediation users
//     that the web config can identify;
//   - when the web config authenticates clients (basic auth, client
//     certificates) and the bearer token does not guard the webhook,
//     remediation users must be named, or the scrape credential could
//     delete;
//   - the bearer token and basic auth cannot both be used: both need the
//     one Authorization header;
//   - a remediation user must be one the web config can verify;
//   - the token file must be readable by its owner only.
//
// It logs a warning when the credential would travel without TLS.
func NewAuth(cfg AuthConfig) (*Auth, error) {
	a := &Auth{webConfigFile: cfg.WebConfigFile, logger: cfg.Logger}
	wc := &toolkit.Config{}
	if cfg.WebConfigFile != "" {
		var err error
		if wc, err = ReadWebConfig(cfg.WebConfigFile); err != nil {
			return nil, fmt.Errorf("--web.config.file: %w", err)
		}
	}
	if cfg.TokenFile != "" {
		var err error
		if a.token, err = OpenTokenFile(cfg.TokenFile, cfg.Logger); err != nil {
			return nil, fmt.Errorf("--remediation.bearer-token-file: %w", err)
		}
		if len(wc.Users) > 0 {
			return nil, errors.New("--remediation.bearer-token-file cannot be combined with basic_auth_users in --web.config.file: " +
				"both need the one Authorization header; use one of them")
		}
	}
	if len(cfg.Users) > 0 {
		a.users = map[string]bool{}
		for _, u := range cfg.Users {
			if u == "" {
				return nil, errors.New("--remediation.users: an empty user name")
			}
			a.users[u] = true
		}
		if len(wc.Users) == 0 && !verifiesClientCerts(wc) {
			return nil, errors.New("--remediation.users names basic-auth users or client-certificate CNs, but --web.config.file " +
				"has neither basic_auth_users nor verified client certificates (client_ca_file and client_auth_type RequireAndVerifyClientCert)")
		}
		if !verifiesClientCerts(wc) {
			for _, u := range cfg.Users {
				if _, ok := wc.Users[u]; !ok {
					return nil, fmt.Errorf("--remediation.users: %q is not in basic_auth_users of --web.config.file", u)
				}
			}
		}
	} else if a.token == nil {
		if WebConfigAuthenticates(wc) {
			return nil, errors.New("--remediation.users is required: basic_auth_users or client certificates in --web.config.file " +
				"let every client in, Prometheus's scrape credential too; name the users (or certificate CNs) that may remediate, " +
				"or guard the webhook with --remediation.bearer-token-file")
		}
		return nil, errors.New("remediation needs authentication: --remediation.users with basic_auth_users or client certificates " +
			"(with a client CA) in --web.config.file, or --remediation.bearer-token-file")
	}
	a.tls = servesTLS(wc)
	if !a.tls {
		cfg.Logger.Warn("remediation credentials travel in clear text: --web.config.file serves no TLS (tls_server_config cert_file, key_file); " +
			"anyone on the path can read them and delete interfaces")
	}
	cfg.Logger.Info("remediation authentication", "bearer_token", a.token != nil, "users", strings.Join(a.userList(), ","), "tls", a.tls)
	return a, nil
}

func (a *Auth) userList() []string {
	var l []string
	for u := range a.users {
		l = append(l, u)
	}
	sort.Strings(l)
	return l
}

// ServesTLS reports whether the web config served TLS at start-up.
func (a *Auth) ServesTLS() bool { return a.tls }

// Authorize returns nil if r may call the webhook, or an [*AuthError].
// exporter-toolkit has already authenticated r by the web config as it is
// now; Authorize decides whether that identity may remediate.
func (a *Auth) Authorize(r *http.Request) error {
	if a.token != nil {
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return &AuthError{Status: http.StatusUnauthorized, Challenge: `Bearer realm="veth_exporter remediation"`, Msg: "a bearer token is required"}
		}
		switch err := a.token.Check(strings.TrimSpace(token)); {
		case errors.Is(err, ErrTokenUnavailable):
			return &AuthError{Status: http.StatusServiceUnavailable, Msg: "remediation refused: " + err.Error()}
		case err != nil:
			return &AuthError{Status: http.StatusForbidden, Msg: err.Error()}
		}
	}
	if a.users == nil {
		return nil
	}
	wc, err := ReadWebConfig(a.webConfigFile)
	if err != nil {
		a.logger.Error("remediation refused: cannot read the web config", "err", err)
		return &AuthError{Status: http.StatusForbidden, Msg: "remediation refused: the web config cannot be read"}
	}
	if len(wc.Users) == 0 && !verifiesClientCerts(wc) {
		// The web config was edited since start-up and no longer
		// verifies who the client is: refuse rather than open up.
		return &AuthError{Status: http.StatusForbidden, Msg: "remediation refused: --web.config.file no longer authenticates clients"}
	}
	var who []string
	if user, pass, ok := r.BasicAuth(); ok && len(wc.Users) > 0 {
		// exporter-toolkit checked the password against the config as
		// it read it for this request; check it again against the
		// config as read here, so that an edit in between cannot let
		// an unverified name through. Only listed users get this far,
		// so the cost of bcrypt is paid by the webhook's own callers.
		if hash, listed := wc.Users[user]; listed && a.users[user] &&
			bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass)) == nil {
			return nil
		}
		who = append(who, "user "+user)
	}
	if cn, ok := verifiedCN(r); ok && verifiesClientCerts(wc) {
		if a.users[cn] {
			return nil
		}
		who = append(who, "certificate CN "+cn)
	}
	if len(who) == 0 {
		who = append(who, "anonymous")
	}
	a.logger.Warn("remediation refused: caller not in --remediation.users", "caller", strings.Join(who, ", "), "remote", r.RemoteAddr)
	return &AuthError{Status: http.StatusForbidden, Msg: "remediation refused: this credential may not remediate (--remediation.users)"}
}

// verifiedCN is the subject common name of the client certificate that
// the TLS handshake verified against the client CA. An unverified
// certificate (RequireAnyClientCert) names nobody.
func verifiedCN(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", false
	}
	cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
	return cn, cn != ""
}
