package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/kubelettest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// capabilityBits are the capabilities the manifests name, by their
// Kubernetes names.
var capabilityBits = map[corev1.Capability]uint{
	"SYS_PTRACE": unix.CAP_SYS_PTRACE,
	"NET_ADMIN":  unix.CAP_NET_ADMIN,
	"SYS_ADMIN":  unix.CAP_SYS_ADMIN,
	"SYS_CHROOT": unix.CAP_SYS_CHROOT,
	"NET_RAW":    unix.CAP_NET_RAW,
}

// checkConfinement checks that the exporter's container runs as its
// manifest says: exactly the capabilities it adds (it drops ALL), no new
// privileges, a seccomp filter, a read-only root and a writable state
// volume.
func checkConfinement(t *testing.T, n *kubelettest.Node, pod *corev1.Pod, p *kubelettest.Pod) {
	t.Helper()
	c := pod.Spec.Containers[0]
	sc := c.SecurityContext
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("the manifest drops %v, the check below assumes ALL", sc.Capabilities.Drop)
	}
	var want uint64
	for _, name := range sc.Capabilities.Add {
		bit, ok := capabilityBits[name]
		if !ok {
			t.Fatalf("capability %s: add its bit to capabilityBits", name)
		}
		want |= 1 << bit
	}
	pid := n.ContainerPID(t, p.ContainerID(c.Name))
	st := procStatus(t, pid)
	if got := st["CapEff"]; got != fmt.Sprintf("%016x", want) {
		t.Errorf("CapEff of the exporter (%d) = %s, want %016x (%v)", pid, got, want, sc.Capabilities.Add)
	}
	if got := st["CapBnd"]; got != fmt.Sprintf("%016x", want) {
		t.Errorf("CapBnd of the exporter = %s, want %016x", got, want)
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation && st["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q with allowPrivilegeEscalation: false", st["NoNewPrivs"])
	}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault && st["Seccomp"] != "2" {
		t.Errorf("Seccomp = %q with the RuntimeDefault profile, want 2 (filter)", st["Seccomp"])
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		if opts, _ := mountOptions(t, pid, "/"); !slices.Contains(strings.Split(opts, ","), "ro") {
			t.Errorf("the exporter's root is mounted %q, want ro", opts)
		}
	}
	for _, m := range c.VolumeMounts {
		opts, ok := mountOptions(t, pid, m.MountPath)
		if !ok {
			t.Errorf("volume %s is not mounted at %s", m.Name, m.MountPath)
			continue
		}
		if ro := slices.Contains(strings.Split(opts, ","), "ro"); ro != m.ReadOnly {
			t.Errorf("volume %s at %s is mounted %q, want readOnly %v", m.Name, m.MountPath, opts, m.ReadOnly)
		}
	}
	if got := st["Uid"]; !strings.HasPrefix(got, "0\t") {
		t.Errorf("the exporter runs as uid %q, want 0 (runAsUser)", got)
	}
}

// TestExporterPod runs the DaemonSet's pod, as kustomize renders the base,
// on a real kubelet: it is Running and Ready, confined as the manifest
// says, every collector succeeds, the workload pods' veths are owned and
// named through CRI, and a pod started after the exporter, whose
// /run/netns/cni-* mount is made then, is seen with its mount (the
// HostToContainer /run).
func TestExporterPod(t *testing.T) {
	n := startNode(t, critest.Options{}, "bb-1", "bb-2")
	pod, manifest := exporterPod(t, "base", nil, true)
	n.WritePod(t, exporterFile, manifest)
	exp := n.WaitReady(t, pod.Namespace, pod.Name, podTimeout)
	checkConfinement(t, n, pod, exp)

	c := plainClient()
	sandboxes := map[string]*critest.Pod{}
	for _, name := range []string{"bb-1", "bb-2"} {
		sandboxes[name] = n.Sandbox(t, n.WaitReady(t, workload, name, podTimeout))
	}
	// A pod started now: its namespace is mounted after the exporter's
	// container was.
	n.WritePod(t, "bb-3", sleeper("bb-3"))
	sandboxes["bb-3"] = n.Sandbox(t, n.WaitReady(t, workload, "bb-3", podTimeout))

	m := c.waitMetrics(t, "every workload veth owned", podTimeout, func(m string) bool {
		v := verdicts(m)
		for _, sb := range sandboxes {
			if v[sb.Veth] != "owned/pod" {
				return false
			}
		}
		return true
	})
	for name, sb := range sandboxes {
		if !hasSeries(m, "veth_owner_info", `device="`+sb.Veth+`"`, `id="`+sb.ID+`"`, `kind="pod"`,
			`pod_name="`+kubelettest.StaticName(name)+`"`, `pod_namespace="`+workload+`"`, `pod_uid="`+sb.UID+`"`) {
			t.Errorf("%s's veth %s: no owner_info naming the pod\n%s", name, sb.Veth, interesting(m))
		}
	}
	collectors := 0
	for line := range strings.Lines(m) {
		if strings.HasPrefix(line, "veth_scrape_collector_success{") {
			collectors++
			if !strings.HasSuffix(strings.TrimSpace(line), " 1") {
				t.Errorf("collector failed: %s", strings.TrimSpace(line))
			}
		}
	}
	for _, want := range []string{"cri", "cni", "cgroup", "netns", "state"} {
		if v, ok := sample(m, `veth_scrape_collector_success{collector="`+want+`"}`); !ok || v != 1 {
			t.Errorf("collector %s: success %v (listed: %v), want 1", want, v, ok)
		}
	}
	if v, ok := sample(m, "veth_inventory_partial_view"); !ok || v != 0 {
		t.Errorf("veth_inventory_partial_view = %v (%v), want 0", v, ok)
	}
	body, err := c.get("/api/v1/veths")
	if err != nil {
		t.Fatal(err)
	}
	late := sandboxes["bb-3"]
	v := decodeVeths(t, "/api/v1/veths", body)[late.Veth]
	if v.PeerNetns == nil || !slices.Contains(v.PeerNetns.Mounts, "/run/netns/"+late.NetnsName) {
		t.Errorf("bb-3's veth %s: peer namespace %+v, want its mount /run/netns/%s, made after the exporter started", late.Veth, v.PeerNetns, late.NetnsName)
	}
}

// settleTime is the exporter's --inventory.settle-time: the default,
// which the manifests keep.
const settleTime = 30 * time.Second

// orphanWatch scrapes every 0.2 s until stopped and remembers every veth
// it ever saw orphaned.
type orphanWatch struct {
	mu       sync.Mutex
	orphans  map[string]string // device: its verdict
	settling map[string]bool   // seen unknown/settling: allowed, logged
	scrapes  int
	failures int
	stop     chan struct{}
	done     chan struct{}
}

func watchOrphans(c *client) *orphanWatch {
	w := &orphanWatch{orphans: map[string]string{}, settling: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			m, err := c.get("/metrics")
			w.mu.Lock()
			if err != nil {
				w.failures++
			} else {
				w.scrapes++
				for dev, v := range verdicts(m) {
					switch {
					case strings.HasPrefix(v, "orphaned/"):
						w.orphans[dev] = v
					case v == "unknown/settling":
						w.settling[dev] = true
					}
				}
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// end stops the watch and fails t if anything was seen orphaned, or if
// too few scrapes succeeded to say so.
func (w *orphanWatch) end(t *testing.T, during string) {
	t.Helper()
	close(w.stop)
	<-w.done
	if w.scrapes < 50 || w.failures > w.scrapes/20 {
		t.Errorf("%s: %d scrapes, %d failed: too few to watch", during, w.scrapes, w.failures)
	}
	if len(w.orphans) > 0 {
		t.Errorf("%s: seen orphaned: %v", during, w.orphans)
	}
	t.Logf("%s: %d scrapes, none orphaned; settling for a while: %v", during, w.scrapes, slices.Collect(maps.Keys(w.settling)))
}

// replaceExporter removes the exporter's pod and runs manifest instead,
// once the old one is gone (the two would share the host's port).
func replaceExporter(t *testing.T, n *kubelettest.Node, pod *corev1.Pod, manifest []byte) *kubelettest.Pod {
	t.Helper()
	name := pod.Spec.Containers[0].Name
	old := n.WaitReady(t, pod.Namespace, pod.Name, podTimeout).ContainerID(name)
	n.RemovePod(t, exporterFile)
	waitGone(t, n, pod.Namespace, pod.Name)
	n.WritePod(t, exporterFile, manifest)
	// The same manifest is the same static pod (its UID is the
	// manifest's hash): until the new container runs, the kubelet may
	// still report the old one's status.
	return n.WaitPod(t, pod.Namespace, pod.Name, podTimeout, func(p *kubelettest.Pod) bool {
		return p.Ready() && p.ContainerID(name) != old
	})
}

// TestPodLeftover makes a pod leftover the way nodes make them and follows
// it through exporter pods that come and go:
//   - while the kubelet replaces sandboxes normally (a pod deleted and
//     re-created, a container crash-looping), nothing is ever orphaned
//     (scraped every 0.2 s);
//   - a sandbox lost while the kubelet was down is orphaned/netns_empty
//     after the settle time, naming the pod, while the kubelet's new
//     sandbox for the same pod is owned;
//   - the state file survives the exporter pod's replacement: the new pod
//     calls it orphaned since the same moment, naming the pod;
//   - `kubectl exec … veth_exporter inspect` (CRI exec into the pod, with
//     no flag) gives the verdicts of /api/v1/veths;
//   - the manifest as shipped, on this node whose PID namespace is not a
//     machine's, calls the leftover unknown/partial_view: never orphaned
//     on a partial view.
func TestPodLeftover(t *testing.T) {
	n := startNode(t, critest.Options{}, "bb-1", "bb-2")
	pod, trusting := exporterPod(t, "base", nil, true)
	n.WritePod(t, exporterFile, trusting)
	n.WaitReady(t, pod.Namespace, pod.Name, podTimeout)
	c := plainClient()
	lost := n.Sandbox(t, n.WaitReady(t, workload, "bb-2", podTimeout))
	c.waitMetrics(t, "bb-2 owned", podTimeout, func(m string) bool { return verdicts(m)[lost.Veth] == "owned/pod" })

	// Normal replacements, longer than the settle time altogether.
	w := watchOrphans(c)
	before := n.Sandbox(t, n.WaitReady(t, workload, "bb-1", podTimeout))
	n.RemovePod(t, "bb-1")
	waitGone(t, n, workload, "bb-1")
	for deadline := time.Now().Add(30 * time.Second); netnstest.LinkExists(before.Veth); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("bb-1's veth %s outlived its pod's deletion by 30 s", before.Veth)
			break
		}
	}
	n.WritePod(t, "bb-1", sleeper("bb-1"))
	n.WaitReady(t, workload, "bb-1", podTimeout)
	n.WritePod(t, "crash", busybox("crash", "sh", "-c", "sleep 1; exit 1"))
	n.WaitPod(t, workload, "crash", 3*time.Minute, func(p *kubelettest.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 2
	})
	// Whatever looked orphaned for a moment would be called orphaned
	// after the settle time: watch past it.
	time.Sleep(settleTime + 5*time.Second)
	w.end(t, "a pod deleted and re-created, a container crash-looping")

	// The leftover.
	old := n.LosePod(t, n.WaitReady(t, workload, "bb-2", podTimeout))
	fresh := n.Sandbox(t, n.WaitPod(t, workload, "bb-2", podTimeout, func(p *kubelettest.Pod) bool {
		return p.Ready() && n.Sandbox(t, p).ID != old.ID
	}))
	if !netnstest.LinkExists(old.Veth) {
		t.Fatalf("the lost sandbox's veth %s is gone: no leftover to find", old.Veth)
	}
	m := c.waitMetrics(t, old.Veth+" orphaned", orphanTimeout, func(m string) bool {
		v := verdicts(m)
		return v[old.Veth] == "orphaned/netns_empty" && v[fresh.Veth] == "owned/pod"
	})
	lastOwner := []string{`device="` + old.Veth + `"`, `id="` + old.ID + `"`, `kind="pod"`,
		`pod_name="` + kubelettest.StaticName("bb-2") + `"`, `pod_namespace="` + workload + `"`}
	if !hasSeries(m, "veth_last_owner_info", lastOwner...) {
		t.Errorf("%s: no last_owner_info naming bb-2's lost sandbox %s\n%s", old.Veth, old.ID, interesting(m))
	}
	since, ok := sample(m, `veth_orphaned_since_timestamp_seconds{device="`+old.Veth+`"}`)
	if !ok {
		t.Fatalf("no orphaned_since for %s", old.Veth)
	}

	// A new exporter pod reads the state the old one wrote.
	exp := replaceExporter(t, n, pod, trusting)
	m = c.waitMetrics(t, "the new exporter pod's first inventory", podTimeout, func(m string) bool { return verdicts(m)[old.Veth] != "" })
	if v := verdicts(m)[old.Veth]; v != "orphaned/netns_empty" {
		t.Errorf("the new exporter pod calls %s %s at once, want orphaned/netns_empty (orphaned since the state says)", old.Veth, v)
	}
	if again, _ := sample(m, `veth_orphaned_since_timestamp_seconds{device="`+old.Veth+`"}`); again != since {
		t.Errorf("orphaned since %v in the new exporter pod, %v in the old: the state file did not survive", again, since)
	}
	if !hasSeries(m, "veth_last_owner_info", lastOwner...) {
		t.Errorf("the new exporter pod does not name bb-2 as %s's last owner\n%s", old.Veth, interesting(m))
	}

	// kubectl exec -n veth-exporter ds/veth-exporter -- veth_exporter inspect
	id := exp.ContainerID(pod.Spec.Containers[0].Name)
	stdout, stderr, code := n.Exec(t, id, "veth_exporter", "inspect", "--output=json")
	if code != 0 {
		t.Fatalf("inspect --output=json in the pod: exit %d\n%s", code, stderr)
	}
	body, err := c.get("/api/v1/veths")
	if err != nil {
		t.Fatal(err)
	}
	fromInspect, fromAPI := decodeVeths(t, "inspect", stdout), decodeVeths(t, "/api/v1/veths", body)
	if len(fromAPI) < 4 {
		t.Errorf("/api/v1/veths lists %d veths, want the 4 pods' and the leftover", len(fromAPI))
	}
	for dev, a := range fromAPI {
		if i := fromInspect[dev]; i.Verdict != a.Verdict || i.Reason != a.Reason {
			t.Errorf("%s: inspect in the pod says %s/%s, /api/v1/veths %s/%s", dev, i.Verdict, i.Reason, a.Verdict, a.Reason)
		}
	}
	if len(fromInspect) != len(fromAPI) {
		t.Errorf("inspect lists %d veths, /api/v1/veths %d", len(fromInspect), len(fromAPI))
	}
	stdout, stderr, code = n.Exec(t, id, "veth_exporter", "inspect")
	if code != 0 {
		t.Fatalf("inspect in the pod: exit %d\n%s", code, stderr)
	}
	for dev, a := range fromAPI {
		if !inspectLine(stdout, dev, a.Verdict, a.Reason) {
			t.Errorf("inspect's table has no line for %s saying %s %s:\n%s", dev, a.Verdict, a.Reason, stdout)
		}
	}

	// The manifest as shipped: this node's PID namespace is the test's.
	_, shipped := exporterPod(t, "base", nil, false)
	replaceExporter(t, n, pod, shipped)
	m = c.waitMetrics(t, "the shipped manifest's first inventory", podTimeout, func(m string) bool { return verdicts(m)[old.Veth] != "" })
	if v := verdicts(m)[old.Veth]; v != "unknown/partial_view" {
		t.Errorf("with the manifest as shipped, on a PID namespace not the machine's, %s is %s, want unknown/partial_view", old.Veth, v)
	}
	if v, _ := sample(m, "veth_inventory_partial_view"); v != 1 {
		t.Errorf("veth_inventory_partial_view = %v, want 1", v)
	}
}

// inspectLine reports whether inspect's table has a line for device that
// says verdict and reason.
func inspectLine(table, device, verdict, reason string) bool {
	for line := range strings.Lines(table) {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == device && slices.Contains(f, verdict) && slices.Contains(f, reason) {
			return true
		}
	}
	return false
}

// TestRemediationPod runs the remediation overlay's pod: confined as the
// overlay says (its capabilities added to the base's), serving HTTPS with
// the overlay's web config. A pod leftover made as in TestPodLeftover is
// removed through a real POST /remediate with the overlay's credential
// (its Secret's token), and every live pod keeps its veth.
//
// The test's changes to the overlay's pod, besides StaticPod's (the two
// Secrets and the ConfigMap become hostPath files: the token and a test
// CA's certificate for the overlay's server name, veth-exporter):
// VETH_EXPORTER_INVENTORY_TRUST_PID_NAMESPACE (see exporterPod),
// --remediation.min-age=6s instead of the default 15 minutes, and POD_IP
// set to the node's address (see startRemediationPod).
func TestRemediationPod(t *testing.T) {
	n := startNode(t, critest.Options{}, "bb-1", "bb-2")
	const minAge = 6 * time.Second
	rp := startRemediationPod(t, n, "--remediation.min-age="+minAge.String())
	c, instance, token := rp.client, rp.instance, rp.token
	if _, err := plainClient().get("/metrics"); err == nil {
		t.Error("the remediation pod answers plain HTTP")
	}

	live := n.Sandbox(t, n.WaitReady(t, workload, "bb-1", podTimeout))
	lostPod := n.WaitReady(t, workload, "bb-2", podTimeout)
	c.waitMetrics(t, "bb-2 owned", podTimeout, func(m string) bool { return verdicts(m)[n.Sandbox(t, lostPod).Veth] == "owned/pod" })
	old := n.LosePod(t, lostPod)
	fresh := n.Sandbox(t, n.WaitPod(t, workload, "bb-2", podTimeout, func(p *kubelettest.Pod) bool {
		return p.Ready() && n.Sandbox(t, p).ID != old.ID
	}))
	c.waitMetrics(t, old.Veth+" orphaned", orphanTimeout, func(m string) bool {
		return verdicts(m)[old.Veth] == "orphaned/netns_empty"
	})
	time.Sleep(minAge) // recorded orphaned for at least the min-age

	payload, err := json.Marshal(map[string]any{
		"version": "4", "status": "firing", "receiver": "veth-remediate", "groupKey": "{}:{}",
		"groupLabels": map[string]string{}, "commonLabels": map[string]string{}, "commonAnnotations": map[string]string{},
		"externalURL": "http://alertmanager",
		"alerts": []map[string]any{{
			"status": "firing",
			"labels": map[string]string{"alertname": "VethOrphaned", "device": old.Veth, "ifindex": strconv.Itoa(old.VethIndex),
				"instance": instance, "reason": "netns_empty"},
			"annotations": map[string]string{}, "startsAt": time.Now().Add(-time.Hour).Format(time.RFC3339Nano),
			"endsAt": "0001-01-01T00:00:00Z", "fingerprint": "kubelettest",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	post := func(bearer []byte) (int, string) {
		req, err := http.NewRequest(http.MethodPost, c.base+"/remediate", bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(bearer)))
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.String()
	}
	if code, body := post([]byte("not-the-token")); code != http.StatusForbidden {
		t.Errorf("POST /remediate with a wrong token: %d %s, want 403", code, body)
	}
	if !netnstest.LinkExists(old.Veth) {
		t.Fatalf("%s went on a request with the wrong token", old.Veth)
	}
	code, body := post(token)
	if code != http.StatusOK || !strings.Contains(body, `"deleted"`) {
		t.Fatalf("POST /remediate: %d %s, want 200 and %s deleted", code, body, old.Veth)
	}
	if netnstest.LinkExists(old.Veth) {
		t.Errorf("%s is still there after /remediate answered deleted", old.Veth)
	}
	if fixturesMounted(old.NetnsName) {
		t.Errorf("the leftover's namespace mount /run/netns/%s is still there", old.NetnsName)
	}
	for _, sb := range []*critest.Pod{live, fresh} {
		if !netnstest.LinkExists(sb.Veth) {
			t.Errorf("live pod %s's veth %s went too", sb.Name, sb.Veth)
		}
	}
	audit, err := os.ReadFile(filepath.Join("/var/lib/veth_exporter", "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(audit), `"result":"deleted"`) || !strings.Contains(string(audit), `"method":"release"`) ||
		!strings.Contains(string(audit), old.Veth) {
		t.Errorf("the audit file (the state volume) does not record %s released:\n%s", old.Veth, audit)
	}
}

// fixturesMounted reports whether /run/netns/name is still an entry.
func fixturesMounted(name string) bool {
	_, err := os.Lstat(filepath.Join("/run/netns", name))
	return err == nil
}

// remediationPod is the overlay's exporter running on a node.
type remediationPod struct {
	pod      *corev1.Pod
	client   *client // HTTPS, verifying the pod's certificate
	instance string  // the address Prometheus scrapes: the alerts' instance label
	token    []byte  // the webhook's bearer token
	ca       []byte  // the CA of the pod's certificate, for serverName
	dir      string  // holds token and ca as files
}

// serverName is the name the remediation overlay's certificate is for.
const serverName = "veth-exporter"

// startRemediationPod runs the remediation overlay's pod on n, with a
// certificate of a test CA for serverName and a random token, args
// appended to its container's, and waits until it is Ready and confined
// as its manifest says. POD_IP (the address --remediation.instance is
// made of) is set to the node's address, which a cluster's kubelet gives
// a host-network pod as status.podIP: a kubelet without an API server
// leaves status.podIP and status.hostIP empty (it takes them from its
// Node object; kubelet_pods.go, generateAPIPodStatus, "if kl.kubeClient
// != nil").
func startRemediationPod(t *testing.T, n *kubelettest.Node, args ...string) *remediationPod {
	t.Helper()
	cert, key, ca := fixturesys.TestCA(t, serverName)
	rp := &remediationPod{
		instance: kubelettest.NodeIP + ":9750", ca: ca, dir: t.TempDir(),
		token: []byte("kubelet-test-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "\n"),
	}
	secrets := map[string]map[string][]byte{
		"veth-exporter-remediate": {"token": rp.token},
		"veth-exporter-tls":       {"tls.crt": cert, "tls.key": key, "ca.crt": ca},
	}
	rp.pod, _ = exporterPod(t, "remediation", secrets, true, args...)
	podIP := 0
	for i, e := range rp.pod.Spec.Containers[0].Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP" {
			rp.pod.Spec.Containers[0].Env[i] = corev1.EnvVar{Name: e.Name, Value: kubelettest.NodeIP}
			podIP++
		}
	}
	if podIP != 1 {
		t.Fatalf("the overlay's pod takes status.podIP %d times, want once (POD_IP)", podIP)
	}
	manifest, err := Manifest(rp.pod)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"token": rp.token, "ca.crt": ca} {
		if err := os.WriteFile(filepath.Join(rp.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.WritePod(t, exporterFile, manifest)
	checkConfinement(t, n, rp.pod, n.WaitReady(t, rp.pod.Namespace, rp.pod.Name, podTimeout))
	rp.client = tlsClient(t, "https://"+rp.instance, ca, serverName)
	return rp
}
