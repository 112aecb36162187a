// Package monitortest runs the real Prometheus and Alertmanager of the
// end-to-end tests (Debian's prometheus and prometheus-alertmanager) and
// reads what they say: the alerts Prometheus evaluates, the alerts
// Alertmanager holds. Each is a child process of the test, on loopback,
// stopped by its PID when the test ends, its log shown if the test fails.
package monitortest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// Prometheus returns the path of Debian's prometheus, or skips t (fails
// it under VETH_EXPORTER_REQUIRE_PRIVILEGED=1).
func Prometheus(t testing.TB) string {
	t.Helper()
	return fixturesys.Binaries(t, "monitortest", "prometheus", "prometheus")[0]
}

// Promtool returns the path of promtool (Debian's prometheus).
func Promtool(t testing.TB) string {
	t.Helper()
	return fixturesys.Binaries(t, "monitortest", "prometheus", "promtool")[0]
}

// Alertmanager returns the path of Debian's Alertmanager (its binary is
// prometheus-alertmanager).
func Alertmanager(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	return fixturesys.Binaries(t, "monitortest", "prometheus-alertmanager", "prometheus-alertmanager")[0]
}

// Start starts the server at path with args, logging to dir/name.log,
// and waits up to 20 s until url/-/ready answers 200. The test's end
// stops it (SIGTERM, then SIGKILL after 10 s); a failed test shows the
// end of its log.
func Start(t testing.TB, dir, name, url, path string, args ...string) *fixturesys.Daemon {
	t.Helper()
	d := fixturesys.NewDaemon(name, filepath.Join(dir, name+".log"), nil)
	if err := d.Start(exec.Command(path, args...)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, d.LogTail(60))
		}
		if pid, _ := d.Running(); pid != 0 {
			if err := d.Stop(10 * time.Second); err != nil {
				t.Error(err)
			}
		}
	})
	err := d.WaitReady(20*time.Second, func() error {
		resp, err := http.Get(url + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s/-/ready: %s", url, resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// PrometheusConfig is a Prometheus configuration that scrapes, evaluates
// and alerts every second: the rules of rulesFile, alerts sent to the
// Alertmanager at amAddr, and one job, veth, scraping target; job holds
// more lines of the job (scheme, tls_config), indented by four spaces.
func PrometheusConfig(rulesFile, amAddr, target, job string) string {
	return fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
alerting:
  alertmanagers:
    - static_configs:
        - targets: [%q]
scrape_configs:
  - job_name: veth
%s    static_configs:
      - targets: [%q]
`, rulesFile, amAddr, job, target)
}

// Alert is an alert as Prometheus's /api/v1/alerts shows it.
type Alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// Alerts returns the alerts of the Prometheus at url, pending or firing.
func Alerts(url string) ([]Alert, error) {
	var body struct {
		Data struct {
			Alerts []Alert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(Body(url+"/api/v1/alerts")), &body); err != nil {
		return nil, err
	}
	return body.Data.Alerts, nil
}

// Find returns the first of the alerts named alertname whose labels
// include labels.
func Find(alerts []Alert, alertname string, labels map[string]string) (Alert, bool) {
	for _, a := range alerts {
		if a.Labels["alertname"] != alertname {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && a.Labels[k] == v
		}
		if match {
			return a, true
		}
	}
	return Alert{}, false
}

// Body is what GET url answers, or the error: for polls and failure
// messages.
func Body(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return b.String()
}
