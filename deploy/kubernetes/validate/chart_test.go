package validate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/deploy/kubernetes/validate/node"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// chartDir is charts/veth-exporter, seen from this package.
const chartDir = repoRoot + "/charts/veth-exporter"

// release is the release name the tests install the chart as: the
// chart's name, so that its objects are named as the kustomize ones.
const release = "veth-exporter"

// chartVariant is a set of values and the kustomization whose pod it
// must give.
type chartVariant struct {
	name   string
	values map[string]any
	v      variant
}

var chartVariants = []chartVariant{
	{"defaults", nil, variants[0]},
	{"remediation", map[string]any{"remediation": map[string]any{"enabled": true}}, variants[1]},
}

// renderChart renders the chart as `helm install --dry-run` does for a
// release in namespace, with values over the chart's, the values checked
// against values.schema.json, and decodes each object strictly.
func renderChart(values map[string]any) (*rendered, error) {
	docs, err := node.ChartManifests(chartDir, release, namespace, values)
	if err != nil {
		return nil, err
	}
	r := &rendered{}
	for _, doc := range docs {
		if err := r.add(doc); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// withNamespace adds the namespace NOTES.txt asks for: the release's,
// labelled for Pod Security Admission's privileged level.
func (r *rendered) withNamespace() *rendered {
	r.namespaces = append(r.namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: namespace, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"},
	}})
	return r
}

// TestChartLint: `helm lint` finds nothing to warn about, with the
// defaults and with remediation on.
func TestChartLint(t *testing.T) {
	for _, cv := range chartVariants {
		l := lint.RunAll(chartDir, cv.values, namespace)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("%s: helm lint: %s", cv.name, m)
			}
		}
	}
}

// TestChart renders the chart with its defaults and with remediation on,
// decodes every object strictly into the Kubernetes and prometheus-operator
// types, runs every check the kustomizations pass (flags the exporter
// accepts, capabilities, mounts, TLS, the PodMonitor, the rules), and
// wants the DaemonSet's pod spec equal to the matching kustomization's:
// the chart cannot drift from deploy/kubernetes. The names that differ by
// nature are made equal first: the image (the chart's tag is its
// appVersion) and the web ConfigMap (kustomize adds a hash).
func TestChart(t *testing.T) {
	flags, rules := buildExporter(t), readRules(t)
	for _, cv := range chartVariants {
		t.Run(cv.name, func(t *testing.T) {
			r, err := renderChart(cv.values)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range checkRendered(r.withNamespace(), cv.v, flags, rules) {
				t.Error(err)
			}
			k, err := render(filepath.Join(manifestsDir, cv.v.dir))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.daemonSets) != 1 || len(k.daemonSets) != 1 {
				t.Fatalf("%d DaemonSets from the chart, %d from the kustomization: want one each", len(r.daemonSets), len(k.daemonSets))
			}
			chart, kust := r.daemonSets[0].Spec.Template.Spec.DeepCopy(), k.daemonSets[0].Spec.Template.Spec.DeepCopy()
			if want := "veth-exporter:0.1.0"; chart.Containers[0].Image != want {
				t.Errorf("the chart's image %q, want %q (repository:appVersion)", chart.Containers[0].Image, want)
			}
			chart.Containers[0].Image = kust.Containers[0].Image
			for _, spec := range []*corev1.PodSpec{chart, kust} {
				for i := range spec.Volumes {
					if cm := spec.Volumes[i].ConfigMap; cm != nil {
						cm.Name = "web-config"
					}
				}
			}
			if d := cmp.Diff(kust, chart); d != "" {
				t.Errorf("the chart's pod spec differs from deploy/kubernetes/%s's (-kustomize +chart):\n%s", cv.v.dir, d)
			}
			if len(r.serviceMonitors) != 0 {
				t.Errorf("a ServiceMonitor by default")
			}
		})
	}
}

// TestChartOptions: each value that is no default renders as it says.
func TestChartOptions(t *testing.T) {
	r, err := renderChart(map[string]any{
		"image":             map[string]any{"repository": "registry.example/veth-exporter", "tag": "v9"},
		"priorityClassName": "system-node-critical",
		"nodeSelector":      map[string]any{"kubernetes.io/os": "linux"},
		"statePath":         "/var/lib/veth",
		"extraArgs":         []any{"--inventory.settle-time=1m"},
		"podMonitor":        map[string]any{"enabled": false},
		"serviceMonitor":    map[string]any{"enabled": true, "labels": map[string]any{"release": "kps"}},
		"prometheusRule":    map[string]any{"labels": map[string]any{"release": "kps"}},
		"remediation": map[string]any{"enabled": true, "mode": "dry-run", "method": "delete",
			"tokenSecret": map[string]any{"name": "tok", "key": "bearer"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	spec := &r.daemonSets[0].Spec.Template.Spec
	p := newPod(spec, r.configMaps)
	c := p.container
	host, writable := p.hostPathAt("/var/lib/veth_exporter/state.json")
	for _, check := range []struct {
		ok   bool
		what string
	}{
		{c.Image == "registry.example/veth-exporter:v9", "image " + c.Image},
		{spec.PriorityClassName == "system-node-critical", "priorityClassName " + spec.PriorityClassName},
		{spec.NodeSelector["kubernetes.io/os"] == "linux", fmt.Sprint("nodeSelector ", spec.NodeSelector)},
		{host == "/var/lib/veth/state.json" && writable, "state file on the host at " + host},
		{slices.Contains(c.Args, "--inventory.settle-time=1m"), fmt.Sprint("args ", c.Args)},
		{slices.Contains(c.Args, "--remediation.method=delete"), fmt.Sprint("args ", c.Args)},
		{slices.Contains(c.Args, "--remediation.mode=dry-run"), fmt.Sprint("args ", c.Args)},
		{fmt.Sprint(c.SecurityContext.Capabilities.Add) == "[SYS_PTRACE NET_ADMIN]", fmt.Sprint("method delete adds ", c.SecurityContext.Capabilities.Add)},
		{len(r.podMonitors) == 0 && len(r.serviceMonitors) == 1 && r.serviceMonitors[0].Labels["release"] == "kps", "a ServiceMonitor labelled release=kps instead of the PodMonitor"},
		{len(r.prometheusRules) == 1 && r.prometheusRules[0].Labels["release"] == "kps", "the PrometheusRule labelled release=kps"},
	} {
		if !check.ok {
			t.Errorf("not as the values say: %s", check.what)
		}
	}
	if file, err := p.secretFile("/etc/veth_exporter/remediate/token"); err != nil || file != "tok" {
		t.Errorf("the token file: Secret %q (%v), want tok (key bearer)", file, err)
	}
	for _, err := range checkMethod(p, "delete") {
		t.Error(err)
	}
}

// TestChartRefusesBadValues: values.schema.json and the templates refuse
// what would deploy something broken, naming it.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tt := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"a misspelt key", map[string]any{"remediaton": map[string]any{"enabled": true}}, "remediaton"},
		{"an unknown method", map[string]any{"remediation": map[string]any{"method": "remove"}}, "method"},
		{"an unknown mode", map[string]any{"remediation": map[string]any{"mode": "on"}}, "mode"},
		{"an argument that is no flag", map[string]any{"extraArgs": []any{"settle=1m"}}, "extraArgs"},
		{"a relative state path", map[string]any{"statePath": "var/lib"}, "statePath"},
		{"a port out of range", map[string]any{"port": 70000}, "port"},
		{"a ServiceMonitor without the Service", map[string]any{"service": map[string]any{"enabled": false}, "serviceMonitor": map[string]any{"enabled": true}}, "needs service.enabled"},
	} {
		if _, err := renderChart(tt.values); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
}

// TestChartFiles: the chart's copies of the alert rules and of the
// remediation web configuration are the repository's (`make helm` copies
// them), and its version and appVersion are the VERSION file's.
func TestChartFiles(t *testing.T) {
	for copy, source := range map[string]string{
		"files/veth_exporter.rules.yml": "alerts/veth_exporter.rules.yml",
		"files/web.yml":                 "deploy/kubernetes/remediation/web.yml",
	} {
		a, errA := os.ReadFile(filepath.Join(chartDir, copy))
		b, errB := os.ReadFile(filepath.Join(repoRoot, source))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("charts/veth-exporter/%s differs from %s (%v, %v): run `make helm`", copy, source, errA, errB)
		}
	}
	version, err := os.ReadFile(filepath.Join(repoRoot, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if v := strings.TrimSpace(string(version)); meta.Version != v || meta.AppVersion != v {
		t.Errorf("Chart.yaml: version %s, appVersion %s; want VERSION's %s", meta.Version, meta.AppVersion, v)
	}
}
