package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/dockertest"
	"github.com/veth-exporter/veth_exporter/internal/monitortest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// The Grafana dashboard against the real programs: Prometheus (Debian
// prometheus 2.42) scrapes the real exporter over a fixture with a veth of
// every verdict and orphan reason, Docker (real dockerd) and a CNI
// configuration known, a CRI runtime down, and remediation answering in
// dry-run mode; every panel of dashboards/veth-exporter.json must return
// at least one series, with the template variables as Grafana sets them.
// The dashboard is read as plain JSON: the exporter's module does not
// import the SDK that generates it (dashboards/gen).

const (
	dashboardFile = "../../dashboards/veth-exporter.json"

	// dashContainer owns dexited until its process exits; dashPodUID and
	// dashSandbox name the pod sandbox of dpod. They differ from the other
	// tests' IDs: the cgroup hierarchy of netnstest is shared by every
	// package under test.
	dashContainer = "da5bda5bda5bda5bda5bda5bda5bda5bda5bda5bda5bda5bda5bda5bda5bda5b"
	dashPodUID    = "da5b0000-1111-2222-3333-444444444444"
	dashSandbox   = "da5b5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c5a4db0c5a4d"
)

// dashboardVariables are the values Grafana gives the template variables
// with All selected; $__rate_interval is at least four scrape intervals,
// $__interval a query's step, at least one.
var dashboardVariables = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "5s",
	"$job", ".*",
	"$instance", ".*",
	"$master", ".*",
)

// dashboardPanel is a panel of the dashboard and its PromQL expressions.
type dashboardPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func dashboardPanels(t *testing.T) []dashboardPanel {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	// A query variable is label_values(selector, label): a panel of its
	// own here, whose series must carry the label.
	labelValues := regexp.MustCompile(`^label_values\((.+), (\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q)
			continue
		}
		p := dashboardPanel{Title: "variable $" + v.Name, Type: "variable"}
		p.Targets = append(p.Targets, struct {
			Expr string `json:"expr"`
		}{fmt.Sprintf("count by (%s) (%s)", m[2], m[1])})
		d.Panels = append(d.Panels, p)
	}
	var panels []dashboardPanel
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		t.Fatalf("%s has no panels", dashboardFile)
	}
	return panels
}

// TestDashboardQueries: every panel of the dashboard returns at least one
// series from a real Prometheus scraping the real exporter, and queries
// only metrics the exporter exposes.
func TestDashboardQueries(t *testing.T) {
	netnstest.Require(t)
	prometheus, promtool := monitortest.Prometheus(t), monitortest.Promtool(t)
	panels := dashboardPanels(t)
	dir := t.TempDir()

	// Owned: a Docker container on docker0 (veth_bridge_info), and a pod
	// sandbox by its cgroup on cni0.
	d := dockertest.Start(t)
	web := d.Run(t, "dash-web")
	webVeth := vethOf(t, d, web)
	netnstest.Bridge(t, "cni0")
	pod := netnstest.Holder(t, "/kubepods/besteffort/pod"+dashPodUID+"/"+dashSandbox)
	netnstest.Veth(t, "dpod", strconv.Itoa(pod), "cni0")
	// owner_exited: a container's namespace that a stray process keeps
	// once the container's own process is gone.
	container, stopContainer := netnstest.StoppableHolder(t, "/system.slice/docker-"+dashContainer+".scope")
	netnstest.Join(t, container)
	netnstest.Veth(t, "dexited", strconv.Itoa(container), "cni0")
	// netns_empty: a namespace only a mount holds, outside /run/netns (the
	// CRI runtime's directory: with the runtime down, it would be the
	// runtime's to decide, unknown).
	mountedNetns(t, dir, "dleak", "cni0")
	// unknown: a bare process owns the namespace.
	stray := netnstest.Holder(t, "")
	netnstest.Veth(t, "dstray", strconv.Itoa(stray), "cni0")
	// peer_on_host: both ends on the host.
	netnstest.HostPair(t, "dhostA", "dhostB")
	// A leaked namespace, no veth left in it.
	netnstest.NamedNetns(t, "dash-nothing")

	cniDir := filepath.Join(dir, "cni")
	if err := os.Mkdir(cniDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Its addresses come from host-local: two leases (unknown while the
	// CRI runtime does not answer).
	leases := filepath.Join(dir, "networks")
	writeConfig(t, filepath.Join(cniDir, "10-dash.conflist"),
		`{"cniVersion": "1.0.0", "name": "dashnet", "plugins": [{"type": "bridge", "bridge": "cni0", `+
			`"ipam": {"type": "host-local", "dataDir": "`+leases+`", "ranges": [[{"subnet": "10.79.0.0/28"}]]}}]}`)
	if err := os.MkdirAll(filepath.Join(leases, "dashnet"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{dashSandbox, "gone"} {
		writeConfig(t, filepath.Join(leases, "dashnet", fmt.Sprintf("10.79.0.%d", i+2)), id+"\r\neth0")
	}
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte(webhookToken), 0o600); err != nil {
		t.Fatal(err)
	}
	instance := "127.0.0.1:" + freePort(t)
	e := startExporter(t, "--web.listen-address="+instance,
		"--state.path="+filepath.Join(dir, "state.json"),
		"--docker.host="+d.Host,
		// A CRI runtime that does not answer: a resolver down.
		"--collector.cri", "--cri.endpoint=unix://"+filepath.Join(dir, "no-cri.sock"),
		"--cni.conf-dir="+cniDir,
		"--remediation.mode=dry-run", "--remediation.bearer-token-file="+token,
		"--remediation.instance=node1", "--remediation.min-age=0s", "--remediation.max-orphan-ratio=1")
	showOnFailure(t, "exporter", e.log)

	e.scrapeUntil(t, "dexited owned by its container", func(m string) bool {
		_, ok := sample(m, verdictSeries("dexited", "owned", "container"))
		return ok
	})
	stopContainer()
	want := map[string][2]string{
		webVeth:   {"owned", "container"},
		"dpod":    {"owned", "pod"},
		"dexited": {"orphaned", "owner_exited"},
		"dleak":   {"orphaned", "netns_empty"},
		"dhostA":  {"orphaned", "peer_on_host"},
		"dstray":  {"unknown", "no_known_owner"},
	}
	m := e.scrapeUntil(t, "every verdict of the fixture", func(m string) bool {
		for dev, v := range want {
			if _, ok := sample(m, verdictSeries(dev, v[0], v[1])); !ok {
				return false
			}
		}
		return true
	})
	wantSample(t, m, `veth_scrape_collector_success{collector="cri"}`, 0)
	wantSample(t, m, `veth_scrape_collector_success{collector="docker"}`, 1)

	// Remediation series: a dry-run deletion and a refusal.
	if result, reason := postAlert(t, e, "dleak", "dash-dleak"); result != "would_delete" {
		t.Errorf("dry-run alert for dleak: %s/%s, want would_delete", result, reason)
	}
	if result, reason := postAlert(t, e, "dpod", "dash-dpod"); result != "refused" {
		t.Errorf("alert for the owned dpod: %s/%s, want refused", result, reason)
	}

	// Every metric a panel queries is one the exporter exposes.
	m = e.scrape(t)
	metricName := regexp.MustCompile(`\bveth_[a-z_]+\b`)
	for _, p := range panels {
		for _, target := range p.Targets {
			for _, name := range metricName.FindAllString(target.Expr, -1) {
				if !strings.Contains(m, "\n# TYPE "+name+" ") {
					t.Errorf("panel %q queries %s, which the exporter does not expose", p.Title, name)
				}
			}
		}
	}

	promAddr := startDashboardPrometheus(t, prometheus, promtool, dir, instance)
	// Until every panel has a series: rates need two samples in the
	// window, so a few seconds after the first scrape.
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range panels {
		for {
			n, errs := panelSeries(promAddr, p)
			if len(errs) > 0 {
				t.Errorf("panel %q: %s", p.Title, strings.Join(errs, "; "))
				break
			}
			if n > 0 {
				t.Logf("panel %q: %d series", p.Title, n)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("panel %q: no series after 60s from %s", p.Title, exprsOf(p))
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// panelSeries is the number of series all of the panel's queries return
// from Prometheus at promAddr now, and the errors of those that fail.
func panelSeries(promAddr string, p dashboardPanel) (int, []string) {
	n := 0
	var errs []string
	for _, target := range p.Targets {
		expr := dashboardVariables.Replace(target.Expr)
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		var body struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || body.Status != "success" {
			errs = append(errs, fmt.Sprintf("%q: %s %v %s", expr, resp.Status, err, body.Error))
			continue
		}
		n += len(body.Data.Result)
	}
	return n, errs
}

func exprsOf(p dashboardPanel) string {
	var exprs []string
	for _, target := range p.Targets {
		exprs = append(exprs, dashboardVariables.Replace(target.Expr))
	}
	return strings.Join(exprs, " | ")
}

// mountedNetns makes the veth name on master whose peer is in a namespace
// held only by a bind mount in dir: its process is killed once the mount
// holds it.
func mountedNetns(t *testing.T, dir, name, master string) {
	t.Helper()
	pid := netnstest.Holder(t, "")
	netnstest.Veth(t, name, strconv.Itoa(pid), master)
	file := filepath.Join(dir, name+".netns")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", "/proc/"+strconv.Itoa(pid)+"/ns/net", file).CombinedOutput(); err != nil {
		t.Fatalf("bind-mount the namespace of %s: %v %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", file).Run() })
	// Our own child, killed by its PID; Holder's cleanup reaps it.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// startDashboardPrometheus starts Prometheus scraping the exporter at
// instance every second and returns its address once it is ready.
func startDashboardPrometheus(t *testing.T, prometheus, promtool, dir, instance string) string {
	t.Helper()
	config := filepath.Join(dir, "prometheus.yml")
	writeConfig(t, config, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: veth
    static_configs:
      - targets: [%q]
`, instance))
	if out, err := exec.Command(promtool, "check", "config", config).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	addr := "127.0.0.1:" + freePort(t)
	monitortest.Start(t, dir, "prometheus", "http://"+addr, prometheus,
		"--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "prometheus"),
		"--web.listen-address="+addr)
	return addr
}
