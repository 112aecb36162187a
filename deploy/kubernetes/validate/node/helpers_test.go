package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/kubelettest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// repoRoot is the repository, from this package's directory.
const repoRoot = "../../../.."

const (
	// exporterFile is the exporter's static pod manifest file name.
	exporterFile = "veth-exporter"
	// workload is the namespace of the busybox pods.
	workload = "workload"
	// metricsURL is the exporter pod's endpoint: it runs in the node's
	// network namespace, the test's.
	metricsURL = "http://127.0.0.1:9750"
	// podTimeout bounds a pod's start (images are local; the kubelet
	// takes a few seconds).
	podTimeout = 2 * time.Minute
	// orphanTimeout bounds the wait for an orphan verdict: the default
	// settle time (30 s) and the kubelet's restart after a lost sandbox.
	orphanTimeout = 2 * time.Minute
)

func TestMain(m *testing.M) {
	netnstest.Main(m)
}

var (
	buildOnce  sync.Once
	contextDir string
	buildErr   error
)

// imageContext builds the exporter with `make build` (a static binary),
// once per test binary, into a directory that is the Dockerfile's build
// context.
func imageContext(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		contextDir, buildErr = os.MkdirTemp("", "veth_exporter-node-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("make", "-C", repoRoot, "build", "BINARY="+filepath.Join(contextDir, "veth_exporter"))
		// No network in the private namespaces: the module cache has
		// what the build needs.
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("make build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return contextDir
}

// startNode starts a kubelet (its containerd's pod network as opts says)
// with the busybox image and the exporter's, built by the Dockerfile from
// `make build`, tagged as the rendered DaemonSet names it, and a [sleeper]
// pod of each of sleepers.
func startNode(t *testing.T, opts critest.Options, sleepers ...string) *kubelettest.Node {
	t.Helper()
	netnstest.Require(t)
	ctx := imageContext(t)
	r, err := Render(filepath.Join(repoRoot, "deploy/kubernetes/base"))
	if err != nil {
		t.Fatal(err)
	}
	n := kubelettest.StartWith(t, opts)
	n.ImportBusybox(t)
	n.ImportDockerfile(t, filepath.Join(repoRoot, "Dockerfile"), ctx, imageRef(r.DaemonSet.Spec.Template.Spec.Containers[0].Image))
	for _, name := range sleepers {
		n.WritePod(t, name, sleeper(name))
	}
	return n
}

// sleeper is a workload pod that sleeps.
func sleeper(name string) []byte {
	return busybox(name, "sleep", "1000000")
}

// imageRef is the reference the kubelet and CRI give an image name: a
// name without a registry is Docker Hub's library, without a tag :latest.
func imageRef(image string) string {
	name, tag := image, "latest"
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		name, tag = image[:i], image[i+1:]
	}
	if !strings.Contains(name, "/") {
		name = "docker.io/library/" + name
	}
	return name + ":" + tag
}

// exporterPod renders the kustomization dir (relative to deploy/kubernetes)
// and converts its DaemonSet into a static pod (StaticPod). The test's own
// changes, each said here: trust adds VETH_EXPORTER_INVENTORY_TRUST_PID_NAMESPACE
// (this node's PID namespace is the test's, not a machine's: without it
// the exporter rightly calls its view partial), and args are appended to
// the container's.
func exporterPod(t *testing.T, dir string, secrets map[string]map[string][]byte, trust bool, args ...string) (*corev1.Pod, []byte) {
	t.Helper()
	r, err := Render(filepath.Join(repoRoot, "deploy/kubernetes", dir))
	if err != nil {
		t.Fatal(err)
	}
	return renderedPod(t, r, secrets, trust, args...)
}

// renderedPod is exporterPod for a render of the kustomizations' or of
// the Helm chart's.
func renderedPod(t *testing.T, r *Rendered, secrets map[string]map[string][]byte, trust bool, args ...string) (*corev1.Pod, []byte) {
	t.Helper()
	pod, err := StaticPod(r, secrets, filepath.Join(t.TempDir(), "volumes"))
	if err != nil {
		t.Fatal(err)
	}
	c := &pod.Spec.Containers[0]
	if trust {
		c.Env = append(c.Env, corev1.EnvVar{Name: "VETH_EXPORTER_INVENTORY_TRUST_PID_NAMESPACE", Value: "true"})
	}
	c.Args = append(c.Args, args...)
	b, err := Manifest(pod)
	if err != nil {
		t.Fatal(err)
	}
	return pod, b
}

// busybox is a static pod manifest of a workload pod running command.
func busybox(name string, command ...string) []byte {
	grace := int64(2)
	pod := corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "main", Image: kubelettest.BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: command,
			}},
		},
	}
	pod.Name, pod.Namespace = name, workload
	b, err := yaml.Marshal(pod)
	if err != nil {
		panic(err)
	}
	return b
}

// waitGone waits until the kubelet no longer lists the static pod.
func waitGone(t *testing.T, n *kubelettest.Node, namespace, name string) {
	t.Helper()
	deadline := time.Now().Add(podTimeout)
	for {
		pods, err := n.Pods()
		found := false
		for _, p := range pods {
			found = found || p.Metadata.Namespace == namespace && p.Metadata.Name == kubelettest.StaticName(name)
		}
		if err == nil && !found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s/%s still listed after %v (%v)\nkubelet log:\n%s", namespace, name, podTimeout, err, n.KubeletLog(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// client reads the exporter: plain HTTP, or HTTPS verified against a CA
// for the overlay's server name.
type client struct {
	base string
	http *http.Client
}

func plainClient() *client {
	return &client{base: metricsURL, http: &http.Client{Timeout: 10 * time.Second}}
}

// get returns the body of GET path, or an error.
func (c *client) get(path string) (string, error) {
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b), nil
}

// waitMetrics scrapes until cond holds, and returns that scrape.
func (c *client) waitMetrics(t *testing.T, what string, timeout time.Duration, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m, err := c.get("/metrics")
		if err == nil && cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v (%v); last scrape:\n%s", what, timeout, err, interesting(m))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// interesting is the part of a scrape that says what each veth is.
func interesting(m string) string {
	var lines []string
	for line := range strings.Lines(m) {
		for _, p := range []string{"veth_verdict_info", "veth_owner_info", "veth_last_owner_info", "veth_scrape_collector_success", "veth_inventory_partial_view"} {
			if strings.HasPrefix(line, p) {
				lines = append(lines, strings.TrimSpace(line))
			}
		}
	}
	return strings.Join(lines, "\n")
}

var verdictRE = regexp.MustCompile(`(?m)^veth_verdict_info\{device="([^"]+)",reason="([^"]+)",verdict="([^"]+)"\} 1$`)

// verdicts returns "verdict/reason" of each veth in a scrape.
func verdicts(m string) map[string]string {
	v := map[string]string{}
	for _, s := range verdictRE.FindAllStringSubmatch(m, -1) {
		v[s[1]] = s[3] + "/" + s[2]
	}
	return v
}

// sample returns the value of the series (its whole name and labels as
// exposed) in a scrape.
func sample(m, series string) (float64, bool) {
	for line := range strings.Lines(m) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// hasSeries reports whether a scrape has a series of family with all of
// labels (name="value" pairs) and value 1.
func hasSeries(m, family string, labels ...string) bool {
	for line := range strings.Lines(m) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, family+"{") || !strings.HasSuffix(line, "} 1") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && (strings.Contains(line, "{"+l+",") || strings.Contains(line, ","+l+",") || strings.Contains(line, ","+l+"}") || strings.Contains(line, "{"+l+"}"))
		}
		if all {
			return true
		}
	}
	return false
}

// apiVeth is a veth of GET /api/v1/veths and `inspect --output=json`.
type apiVeth struct {
	Device    string `json:"device"`
	Verdict   string `json:"verdict"`
	Reason    string `json:"reason"`
	PeerNetns *struct {
		Mounts []string `json:"mounts"`
	} `json:"peer_netns"`
}

// decodeVeths decodes the veths of an inventory's JSON.
func decodeVeths(t *testing.T, what, body string) map[string]apiVeth {
	t.Helper()
	var snap struct {
		Veths []apiVeth `json:"veths"`
	}
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, body)
	}
	veths := map[string]apiVeth{}
	for _, v := range snap.Veths {
		veths[v.Device] = v
	}
	return veths
}

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// mountOptions returns the options of the mount at point in the mount
// namespace of pid ("ro,nosuid,…"), and whether there is one.
func mountOptions(t *testing.T, pid int, point string) (string, bool) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	opts, found := "", false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == point {
			opts, found = f[5], true // the last one mounted there is the one seen
		}
	}
	return opts, found
}

// tlsClient reads the exporter at base over HTTPS, verifying its
// certificate against ca for serverName.
func tlsClient(t *testing.T, base string, ca []byte, serverName string) *client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("bad CA PEM")
	}
	return &client{base: base, http: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12},
	}}}
}
