package node

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/kubelettest"
	"github.com/veth-exporter/veth_exporter/internal/monitortest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/internal/rulestest"
)

const (
	// exhaustSubnet is a /28: host-local leases 13 of its addresses
	// (.2 to .14; .1 is the bridge's gateway).
	exhaustSubnet = "10.89.7.0/28"
	exhaustSize   = 13
	// webHostPort is the hostPort of the web pod: portmap's DNAT chain.
	webHostPort = 18080
	// alertFor replaces VethAddressRangeExhausting's `for: 5m`.
	alertFor = 8 * time.Second
)

// TestAddressExhaustion is a pod network running out of addresses, as
// users of k3s and flannel report it, and its recovery through the whole
// chain. Seven pods run on a /28 (13 addresses), one of them with a
// hostPort. A node restart (kubelettest.Reboot) loses six sandboxes
// without their CNI DEL: their namespaces and veths go, their leases,
// libcni cache entries and portmap chains stay. The kubelet runs six new
// sandboxes, which take the last six addresses, and an eighth pod fails
// with host-local's "no IP addresses available in range set".
//
// The exporter pod (the remediation overlay, its DEL run in the host's
// mount namespace from a FROM-scratch image with a read-only /var/lib/cni)
// calls the six leases leaked; VethAddressRangeExhausting fires in a real
// Prometheus; Alertmanager sends it to /remediate over HTTPS with the
// overlay's token; the exporter runs each lost attachment's CNI DEL: the
// leases, the cache entries and the lost web sandbox's portmap rules go.
// The kubelet's next retry starts the eighth pod by itself. Every live
// pod keeps its lease, cache entry, veth and rules; the pod that starts
// while the request runs may take an address just released, and keeps it.
//
// The node's iptables is iptables-legacy, as on many nodes whose
// kube-proxy runs in iptables mode: portmap's ADD and the DEL both use it,
// and it needs the overlay's NET_RAW (iptables-nft, Debian 12's default,
// needs NET_ADMIN alone).
//
// The test's changes besides TestRemediationPod's: --inventory.settle-time=2s
// and the alert's `for` shortened, and --cni.bin-dir=/usr/lib/cni (Debian's
// plugins, which containerd runs here too).
func TestAddressExhaustion(t *testing.T) {
	sleepers := []string{"bb-1", "bb-2", "bb-3", "bb-4", "bb-5", "bb-6"}
	n := startNode(t, critest.Options{Subnet: exhaustSubnet, PortMap: true, LegacyIptables: true}, sleepers...)
	n.WritePod(t, "web", hostPortPod("web", webHostPort))
	const minAge = 6 * time.Second
	rp := startRemediationPod(t, n, "--remediation.min-age="+minAge.String(), "--inventory.settle-time=2s", "--cni.bin-dir=/usr/lib/cni")
	running := map[string]*kubelettest.Pod{}
	for _, name := range append([]string{"web"}, sleepers...) {
		running[name] = n.WaitReady(t, workload, name, podTimeout)
	}
	rp.client.waitMetrics(t, "seven live leases of 13", podTimeout, addressCounts(exhaustSize, 7, 0))
	web := n.Sandbox(t, running["web"])
	if !strings.Contains(natRules(t), web.ID) {
		t.Fatalf("portmap made no rule for web's hostPort:\n%s", natRules(t))
	}
	promAddr, amAddr := startRemediationChain(t, rp)
	begin := time.Now()
	since := func() time.Duration { return time.Since(begin).Round(100 * time.Millisecond) }

	// A node restart loses six sandboxes; the kubelet runs six new ones.
	lostNames := append([]string{"web"}, sleepers[:5]...)
	var lostPods []*kubelettest.Pod
	for _, name := range lostNames {
		lostPods = append(lostPods, running[name])
	}
	lost := n.Reboot(t, lostPods...)
	lostLeases := map[string]string{} // container ID: address
	for id, ip := range leaseFiles(t) {
		for _, sb := range lost {
			if sb.ID == id {
				lostLeases[id] = ip
			}
		}
	}
	if len(lostLeases) != len(lost) {
		t.Fatalf("leases of the lost sandboxes after the restart: %v, want one each of %d", lostLeases, len(lost))
	}
	for i, name := range lostNames {
		n.WaitPod(t, workload, name, podTimeout, func(p *kubelettest.Pod) bool {
			return p.Ready() && n.Sandbox(t, p).ID != lost[i].ID
		})
	}
	if got := len(leaseFiles(t)); got != exhaustSize {
		t.Fatalf("%d leases after the restart, want all %d: %v", got, exhaustSize, leaseFiles(t))
	}

	// The next pod cannot get an address.
	n.WritePod(t, "bb-new", sleeper("bb-new"))
	const noAddress = "no IP addresses available in range set"
	for deadline := time.Now().Add(podTimeout); !strings.Contains(n.KubeletLog(400), noAddress); {
		if time.Now().After(deadline) {
			t.Fatalf("the kubelet never reported %q for bb-new:\n%s", noAddress, n.KubeletLog(60))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%v: the restart leaked %d leases; bb-new: %q", since(), len(lostLeases), noAddress)
	rp.client.waitMetrics(t, "six leaked leases", orphanTimeout, addressCounts(exhaustSize, 7, 6))
	t.Logf("%v: the exporter reports them leaked", since())

	// The alert fires, Alertmanager calls /remediate, the DELs run.
	rangeLabels := map[string]string{"network": critest.NetworkName, "range": exhaustSubnet, "instance": rp.instance}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		alerts, _ := monitortest.Alerts("http://" + promAddr)
		if a, ok := monitortest.Find(alerts, "VethAddressRangeExhausting", rangeLabels); ok && a.State == "firing" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VethAddressRangeExhausting never fired for %v\nPrometheus: %s", rangeLabels, monitortest.Body("http://"+promAddr+"/api/v1/alerts"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%v: VethAddressRangeExhausting fires", since())
	released := func() bool {
		files := leaseFiles(t)
		for id := range lostLeases {
			if _, ok := files[id]; ok || fileExists(cacheEntry(id)) {
				return false
			}
		}
		return !strings.Contains(natRules(t), web.ID)
	}
	for !released() {
		if time.Now().After(deadline) {
			t.Fatalf("the lost sandboxes' leases, cache entries or portmap rules are still there\nleases: %v\nrules:\n%s\nAlertmanager: %s\naudit:\n%s",
				leaseFiles(t), natRules(t), monitortest.Body("http://"+amAddr+"/api/v2/alerts"), auditText(t))
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Logf("%v: leases, cache entries and portmap rules released", since())

	// The kubelet starts the waiting pod by itself, and everything live
	// kept what it had.
	n.WaitReady(t, workload, "bb-new", podTimeout)
	t.Logf("%v: bb-new is Ready", since())
	files := leaseFiles(t)
	rules := natRules(t)
	for _, name := range append([]string{"web", "bb-new"}, sleepers...) {
		sb := n.Sandbox(t, n.WaitReady(t, workload, name, podTimeout))
		if _, ok := files[sb.ID]; !ok || !fileExists(cacheEntry(sb.ID)) || !netnstest.LinkExists(sb.Veth) {
			t.Errorf("live pod %s (sandbox %.12s): lease %v, cache entry %v, veth %v; want all three", name, sb.ID, ok, fileExists(cacheEntry(sb.ID)), netnstest.LinkExists(sb.Veth))
		}
		if name == "web" && !strings.Contains(rules, sb.ID) {
			t.Errorf("the live web pod's portmap rules went:\n%s", rules)
		}
	}
	deleted := 0
	for _, line := range strings.Split(strings.TrimSpace(auditText(t)), "\n") {
		var r struct{ Phase, Result, Reason, Method, Device string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if r.Phase == "result" && r.Result == "deleted" {
			deleted++
			if r.Method != "cni_del" || r.Reason != "leaked_lease" {
				t.Errorf("audit: %s, want only leaked leases released by their CNI DEL", line)
			}
		}
	}
	if deleted != len(lost) {
		t.Errorf("%d releases in the audit file, want %d:\n%s", deleted, len(lost), auditText(t))
	}
}

// hostPortPod is a sleeper pod whose container publishes port 80 on the
// node's hostPort.
func hostPortPod(name string, hostPort int32) []byte {
	var pod corev1.Pod
	if err := yaml.Unmarshal(sleeper(name), &pod); err != nil {
		panic(err)
	}
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: hostPort, Protocol: corev1.ProtocolTCP}}
	b, err := yaml.Marshal(pod)
	if err != nil {
		panic(err)
	}
	return b
}

// addressCounts holds for a scrape with the pod network's range of size
// addresses, live and leaked of them so.
func addressCounts(size, live, leaked float64) func(string) bool {
	return func(m string) bool {
		series := func(family, state string) string {
			s := fmt.Sprintf(`%s{network=%q,range=%q`, family, critest.NetworkName, exhaustSubnet)
			if state != "" {
				s += fmt.Sprintf(`,state=%q`, state)
			}
			return s + "}"
		}
		r, _ := sample(m, series("veth_cni_ipam_range_size", ""))
		l, _ := sample(m, series("veth_cni_ipam_addresses", "live"))
		k, _ := sample(m, series("veth_cni_ipam_addresses", "leaked"))
		return r == size && l == live && k == leaked
	}
}

// leaseFiles returns host-local's leases of the pod network: address by
// container ID.
func leaseFiles(t *testing.T) map[string]string {
	t.Helper()
	dir := filepath.Join("/var/lib/cni/networks", critest.NetworkName)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	leases := map[string]string{}
	for _, e := range entries {
		if net.ParseIP(e.Name()) == nil {
			continue // lock, last_reserved_ip.0
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // released meanwhile
		}
		id, _, _ := strings.Cut(string(b), "\n")
		leases[strings.TrimSpace(id)] = e.Name()
	}
	return leases
}

// cacheEntry is libcni's cache entry of a sandbox's eth0.
func cacheEntry(id string) string {
	return filepath.Join(critest.CNICacheDir, critest.NetworkName+"-"+id+"-eth0")
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// natRules is the nat table of the node's (the test's) network namespace,
// where portmap's rules name the container ID they are for.
func natRules(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save -t nat: %v\n%s", err, out)
	}
	return string(out)
}

// auditText is the exporter's audit file, in its state volume.
func auditText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/var/lib/veth_exporter/audit.jsonl")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// startRemediationChain starts Alertmanager, routing
// VethAddressRangeExhausting to the exporter pod's /remediate over HTTPS
// with its token, and Prometheus, scraping the pod over HTTPS and
// evaluating the shipped rules with that alert's `for` shortened to
// alertFor, every second. It returns their addresses.
func startRemediationChain(t *testing.T, rp *remediationPod) (promAddr, amAddr string) {
	t.Helper()
	dir := t.TempDir()
	shipped, err := os.ReadFile(filepath.Join(repoRoot, "alerts/veth_exporter.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := rulestest.Rewrite(string(shipped), "VethAddressRangeExhausting", "for: 5m", "for: "+alertFor.String())
	if err != nil {
		t.Fatal(err)
	}
	amAddr, promAddr = "127.0.0.1:"+monitortest.FreePort(t), "127.0.0.1:"+monitortest.FreePort(t)
	ca, token := filepath.Join(rp.dir, "ca.crt"), filepath.Join(rp.dir, "token")
	files := map[string]string{
		"rules.yml": rules,
		"alertmanager.yml": fmt.Sprintf(`route:
  receiver: default
  group_by: [alertname, instance]
  routes:
    - receiver: veth-remediate
      matchers:
        - alertname = VethAddressRangeExhausting
      group_by: [instance, network, range]
      group_wait: 1s
      group_interval: 1s
      repeat_interval: 2s
receivers:
  - name: default
  - name: veth-remediate
    webhook_configs:
      - url: https://%s/remediate
        send_resolved: false
        http_config:
          authorization:
            type: Bearer
            credentials_file: %q
          tls_config:
            ca_file: %q
            server_name: %s
`, rp.instance, token, ca, serverName),
		"prometheus.yml": monitortest.PrometheusConfig(filepath.Join(dir, "rules.yml"), amAddr, rp.instance, fmt.Sprintf(`    scheme: https
    tls_config:
      ca_file: %q
      server_name: %s
`, ca, serverName)),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(monitortest.Promtool(t), "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	monitortest.Start(t, dir, "alertmanager", "http://"+amAddr, monitortest.Alertmanager(t),
		"--config.file="+filepath.Join(dir, "alertmanager.yml"), "--storage.path="+filepath.Join(dir, "alertmanager"),
		"--web.listen-address="+amAddr, "--cluster.listen-address=")
	monitortest.Start(t, dir, "prometheus", "http://"+promAddr, monitortest.Prometheus(t),
		"--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "prometheus"),
		"--web.listen-address="+promAddr)
	return promAddr, amAddr
}
