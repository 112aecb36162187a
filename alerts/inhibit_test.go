package alerts

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/monitortest"
)

// TestFleetInhibitionHoldsBackRemediation runs the real Alertmanager
// (Debian 0.25) with the per-node example, its timings in seconds and
// node1's webhook pointed at a local receiver: a firing VethOrphaned for
// node1 is not delivered while VethOrphansFleetWide fires for its job,
// and is delivered once that alert resolves.
func TestFleetInhibitionHoldsBackRemediation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Alertmanager")
	}
	alertmanager := tool(t, "prometheus-alertmanager", "prometheus-alertmanager")
	var (
		mu    sync.Mutex
		calls []string
	)
	webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		defer mu.Unlock()
		for _, a := range body.Alerts {
			calls = append(calls, a.Labels["alertname"]+" "+a.Labels["device"])
		}
	}))
	defer webhook.Close()
	delivered := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), calls...)
	}

	dir := t.TempDir()
	config, err := os.ReadFile(amPerNodeConfig)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "token"), "t0ken\n")
	writeFile(t, filepath.Join(dir, "ca.pem"), selfSignedPEM(t))
	for old, repl := range map[string]string{
		"https://node1.example:9750/remediate":   webhook.URL + "/remediate",
		"/etc/alertmanager/veth-remediate.token": filepath.Join(dir, "token"),
		"/etc/alertmanager/veth-exporter-ca.pem": filepath.Join(dir, "ca.pem"),
		"group_wait: 16m":                        "group_wait: 1s",
		"group_interval: 5m":                     "group_interval: 1s",
		"repeat_interval: 30m":                   "repeat_interval: 1m",
		"group_wait: 30s":                        "group_wait: 1s",
	} {
		if !bytes.Contains(config, []byte(old)) {
			t.Fatalf("%s holds no %q", amPerNodeConfig, old)
		}
		config = bytes.ReplaceAll(config, []byte(old), []byte(repl))
	}
	configPath := filepath.Join(dir, "alertmanager.yml")
	writeFile(t, configPath, string(config))

	addr := "127.0.0.1:" + monitortest.FreePort(t)
	cmd := exec.Command(alertmanager, "--config.file="+configPath, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("Alertmanager's log:\n%s", log.String())
		}
	}()
	api := "http://" + addr + "/api/v2/alerts"
	waitUntil(t, 20*time.Second, "Alertmanager ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	now := time.Now()
	post := func(alertname string, labels map[string]string, endsAt time.Time) {
		t.Helper()
		labels["alertname"] = alertname
		labels["job"] = "veth_exporter"
		b, _ := json.Marshal([]map[string]any{{"labels": labels, "startsAt": now.Add(-time.Hour), "endsAt": endsAt}})
		resp, err := http.Post(api, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %s", api, resp.Status)
		}
	}
	// The fleet alert first, so the inhibition holds before VethOrphaned
	// arrives.
	post("VethOrphansFleetWide", map[string]string{"severity": "warning"}, now.Add(time.Hour))
	post("VethOrphaned", map[string]string{"instance": "node1.example:9750", "device": "vleak", "severity": "info"}, now.Add(time.Hour))

	// group_wait and group_interval are 1 s: 6 s is several flushes.
	time.Sleep(6 * time.Second)
	if got := delivered(); len(got) != 0 {
		t.Fatalf("while VethOrphansFleetWide fires, the webhook got %q, want nothing", got)
	}

	post("VethOrphansFleetWide", map[string]string{"severity": "warning"}, time.Now())
	waitUntil(t, 20*time.Second, "VethOrphaned delivered once the fleet alert resolved", func() bool {
		return len(delivered()) > 0
	})
	if got := delivered(); !strings.HasPrefix(got[0], "VethOrphaned vleak") {
		t.Errorf("the webhook got %q, want VethOrphaned vleak", got)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// selfSignedPEM is a CA certificate for the example's ca_file, which
// Alertmanager loads with its configuration.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
