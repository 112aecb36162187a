package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestWebConfigAuthenticates(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		config string
		want   bool
	}{
		{"basic_auth_users:\n  alertmanager: $2y$10$abcdefghijklmnopqrstuu\n", true},
		{"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n", true},
		// Without a client CA any certificate a public CA issued would do.
		{"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n", false},
		{"tls_server_config:\n  cert_file: a\n  key_file: b\n", false},
		{"tls_server_config:\n  client_auth_type: RequestClientCert\n", false},
		{"", false},
	} {
		path := filepath.Join(dir, "web.yml")
		if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := webConfigAuthenticates(path); err != nil || got != tt.want {
			t.Errorf("webConfigAuthenticates(%q) = %v, %v; want %v", tt.config, got, err, tt.want)
		}
	}
	if _, err := webConfigAuthenticates(filepath.Join(dir, "missing.yml")); err == nil {
		t.Error("a missing web config was accepted")
	}
}

// TestRemediateBasicAuth authenticates through exporter-toolkit's web
// config instead of a bearer token, and refuses once the config no longer
// requires authentication (the toolkit re-reads it at each request).
func TestRemediateBasicAuth(t *testing.T) {
	netnstest.Require(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(webConfig, []byte("basic_auth_users:\n  am: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &exporter{}
	port := freePort(t)
	cmd := exec.Command(exporterBinary(t), "--web.listen-address=127.0.0.1:"+port, "--web.config.file="+webConfig,
		"--inventory.trust-pid-namespace", "--state.path="+filepath.Join(t.TempDir(), "state.json"),
		"--remediation.mode=dry-run", "--remediation.instance=node1")
	e.log = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = e.log, e.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.cmd, e.url = cmd, "http://127.0.0.1:"+port
	t.Cleanup(func() { e.stop(t) })

	post := func(user, password string) int {
		body := payloadOf("4", alertSpec{device: "vnothere", instance: "node1", startsAt: time.Now().Add(-time.Hour)})
		req, _ := http.NewRequest("POST", e.url+"/remediate", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for post("am", "pw") != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("never answered 200 with basic auth:\n%s", e.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := post("", ""); got != 401 {
		t.Errorf("no credentials: %d, want 401", got)
	}
	if got := post("am", "wrong"); got != 401 {
		t.Errorf("wrong password: %d, want 401", got)
	}
	// Someone edits the web config and drops authentication.
	if err := os.WriteFile(webConfig, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := post("", ""); got != 403 {
		t.Errorf("after authentication was removed from the web config: %d, want 403", got)
	}
}
