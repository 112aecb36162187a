package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// Who may call the webhook, against the real binary: the credential
// Prometheus scrapes with must not delete (basic auth, client
// certificates), the bearer token is re-read when rotated and refused when
// others can read it, and the credential in clear text is warned about.

// alertBody is a firing alert for node1 about a device that does not
// exist: a dry run answers 200 and changes nothing.
func alertBody() []byte {
	return payloadOf("4", alertSpec{device: "vnothere", instance: "node1", startsAt: time.Now().Add(-time.Hour)})
}

func withBearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

// logShows waits up to 2 s for the exporter's log to show text: the log
// comes through a pipe, and may arrive after the response.
func logShows(e *exporter, text string) bool {
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(e.log.String(), text) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestRemediateBasicAuth is hole 4 with basic auth: prom scrapes, only am
// remediates; authentication removed from the web config refuses all.
func TestRemediateBasicAuth(t *testing.T) {
	netnstest.Require(t)
	webConfig := filepath.Join(t.TempDir(), "web.yml")
	writeSecret(t, webConfig, basicAuthUsers(t, "prom", "am"), 0o600)

	code, out := exitOf(t, "--web.config.file="+webConfig, "--remediation.mode=enforce", "--remediation.instance=node1")
	if code != 2 || !strings.Contains(out, "--remediation.users is required") {
		t.Errorf("basic auth without --remediation.users: exit %d, want 2 and a message naming --remediation.users\n%s", code, out)
	}
	code, out = exitOf(t, "--web.config.file="+webConfig, "--remediation.mode=dry-run", "--remediation.instance=node1", "--remediation.users=alertmanager")
	if code != 2 || !strings.Contains(out, `\"alertmanager\" is not in basic_auth_users`) {
		t.Errorf("--remediation.users naming no basic-auth user: exit %d, want 2 and a message naming the user\n%s", code, out)
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	writeSecret(t, tokenFile, "s3cret\n", 0o600)
	code, out = exitOf(t, "--web.config.file="+webConfig, "--remediation.mode=dry-run", "--remediation.instance=node1", "--remediation.bearer-token-file="+tokenFile)
	if code != 2 || !strings.Contains(out, "cannot be combined with basic_auth_users") {
		t.Errorf("bearer token and basic auth: exit %d, want 2 and a message naming both\n%s", code, out)
	}

	client := http.DefaultClient
	prom, am := withBasicAuth("prom", "prom-pw"), withBasicAuth("am", "am-pw")
	e := startAuthExporter(t, client, "http", prom, "--web.config.file="+webConfig, "--remediation.users=am")
	for _, tt := range []struct {
		name, method, path string
		auth               func(*http.Request)
		want               int
	}{
		{"prom scrapes", "GET", "/metrics", prom, 200},
		{"prom remediates", "POST", "/remediate", prom, 403},
		{"am remediates", "POST", "/remediate", am, 200},
		{"am scrapes", "GET", "/metrics", am, 200},
		{"no credentials", "POST", "/remediate", nil, 401},
		{"am, wrong password", "POST", "/remediate", withBasicAuth("am", "prom-pw"), 401},
		{"unknown user", "POST", "/remediate", withBasicAuth("alertmanager", "am-pw"), 401},
	} {
		var body []byte
		if tt.method == "POST" {
			body = alertBody()
		}
		if got, text := request(t, client, tt.method, e.url+tt.path, body, tt.auth); got != tt.want {
			t.Errorf("%s: %s %s = %d %q, want %d", tt.name, tt.method, tt.path, got, text, tt.want)
		}
	}
	if !logShows(e, "remediation credentials travel in clear text") {
		t.Errorf("remediation over plain HTTP: no warning at start-up\n%s", e.log)
	}

	// Someone edits the web config and drops authentication.
	writeSecret(t, webConfig, "{}\n", 0o600)
	if got, text := request(t, client, "POST", e.url+"/remediate", alertBody(), nil); got != 403 {
		t.Errorf("after authentication was removed from the web config: %d %q, want 403", got, text)
	}
	if got, text := request(t, client, "POST", e.url+"/remediate", alertBody(), am); got != 403 {
		t.Errorf("am, after authentication was removed from the web config: %d %q, want 403", got, text)
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1 and client
// certificates, written as PEM files in dir.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPool *x509.CertPool
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	var err error
	if p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "veth_exporter test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(p.ca)
	p.write(t, "ca.pem", "CERTIFICATE", der)
	p.serial = 1
	return p
}

func (p *testPKI) write(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes name.pem and name.key, a certificate for cn signed by the
// CA, and returns it for a TLS client or server.
func (p *testPKI) issue(t *testing.T, name, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	p.write(t, name+".pem", "CERTIFICATE", der)
	p.write(t, name+".key", "EC PRIVATE KEY", keyDER)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// client is an HTTPS client trusting the CA, presenting cert if given.
func (p *testPKI) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: p.caPool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

// TestRemediateClientCertificates is hole 4 with mTLS: every certificate
// of the CA scrapes, only the alertmanager CN remediates.
func TestRemediateClientCertificates(t *testing.T) {
	netnstest.Require(t)
	pki := newTestPKI(t)
	pki.issue(t, "server", "127.0.0.1", true)
	promCert := pki.issue(t, "prometheus", "prometheus", false)
	amCert := pki.issue(t, "alertmanager", "alertmanager", false)
	webConfig := filepath.Join(pki.dir, "web.yml")
	writeSecret(t, webConfig, "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"+
		"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n", 0o600)

	code, out := exitOf(t, "--web.config.file="+webConfig, "--remediation.mode=dry-run", "--remediation.instance=node1")
	if code != 2 || !strings.Contains(out, "--remediation.users is required") {
		t.Errorf("client certificates without --remediation.users: exit %d, want 2 and a message naming --remediation.users\n%s", code, out)
	}

	prom, am := pki.client(&promCert), pki.client(&amCert)
	e := startAuthExporter(t, prom, "https", nil, "--web.config.file="+webConfig, "--remediation.users=alertmanager")
	for _, tt := range []struct {
		name, method, path string
		client             *http.Client
		want               int
	}{
		{"prometheus scrapes", "GET", "/metrics", prom, 200},
		{"prometheus remediates", "POST", "/remediate", prom, 403},
		{"alertmanager remediates", "POST", "/remediate", am, 200},
		// No certificate: the handshake fails (status 0).
		{"no certificate", "POST", "/remediate", pki.client(nil), 0},
	} {
		var body []byte
		if tt.method == "POST" {
			body = alertBody()
		}
		if got, text := request(t, tt.client, tt.method, e.url+tt.path, body, nil); got != tt.want {
			t.Errorf("%s: %s %s = %d %q, want %d", tt.name, tt.method, tt.path, got, text, tt.want)
		}
	}
	if strings.Contains(e.log.String(), "clear text") {
		t.Errorf("a warning about clear text although TLS is served:\n%s", e.log)
	}
}

// TestTokenRotation is hole 10: the bearer token guards the webhook alone,
// is re-read when the file changes, fails closed when the file becomes
// readable by others, and is compared whatever the length presented.
func TestTokenRotation(t *testing.T) {
	netnstest.Require(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeSecret(t, tokenFile, "first-token\n", 0o600)
	client := http.DefaultClient
	e := startAuthExporter(t, client, "http", nil, "--remediation.bearer-token-file="+tokenFile)
	post := func(token string) int {
		code, _ := request(t, client, "POST", e.url+"/remediate", alertBody(), withBearer(token))
		return code
	}
	if got, _ := request(t, client, "GET", e.url+"/metrics", nil, nil); got != 200 {
		t.Errorf("scrape without the token: %d, want 200 (the token guards /remediate only)", got)
	}
	if got := post("first-token"); got != 200 {
		t.Errorf("first token: %d, want 200", got)
	}
	for _, wrong := range []string{"first-toke", "first-token-", "f", "x", strings.Repeat("first-token", 300), "FIRST-TOKEN"} {
		if got := post(wrong); got != 403 {
			t.Errorf("token %.20q (%d bytes): %d, want 403", wrong, len(wrong), got)
		}
	}

	// Rotated in place, as `echo new > file` does.
	writeSecret(t, tokenFile, "second-token-longer\n", 0o600)
	if got := post("first-token"); got != 403 {
		t.Errorf("old token after rotation: %d, want 403", got)
	}
	if got := post("second-token-longer"); got != 200 {
		t.Errorf("new token after rotation: %d, want 200", got)
	}

	// Made world-readable: nothing is authorised until it is fixed.
	if err := os.Chmod(tokenFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := post("second-token-longer"); got == 200 {
		t.Errorf("token file world-readable: %d, want a refusal", got)
	}
	if !logShows(e, "bearer token file unusable") {
		t.Errorf("token file world-readable: no error logged\n%s", e.log)
	}
	if err := os.Chmod(tokenFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := post("second-token-longer"); got != 200 {
		t.Errorf("token file fixed: %d, want 200", got)
	}
}

// TestTokenFileReadableByOthers: a token others can read is refused at
// start-up.
func TestTokenFileReadableByOthers(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeSecret(t, tokenFile, "s3cret\n", 0o644)
	code, out := exitOf(t, "--remediation.mode=dry-run", "--remediation.instance=node1", "--remediation.bearer-token-file="+tokenFile)
	if code != 2 || !strings.Contains(out, "--remediation.bearer-token-file") || !strings.Contains(out, "accessible by group or others") {
		t.Errorf("world-readable token file: exit %d, want 2 and a message naming --remediation.bearer-token-file\n%s", code, out)
	}
}
