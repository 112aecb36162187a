package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	toolkitweb "github.com/prometheus/exporter-toolkit/web"
	yamlv2 "go.yaml.in/yaml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/kustomize/api/krusty"
	kustomizetypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	// manifestsDir is deploy/kubernetes, seen from this package.
	manifestsDir = ".."
	// repoRoot is the repository's root, seen from this package.
	repoRoot = "../../.."

	namespace = "veth-exporter"
	// stateHostPath is the only host path the exporter may write.
	stateHostPath = "/var/lib/veth_exporter"
	listenPort    = 9750
)

// variant is one kustomization of deploy/kubernetes and what its
// DaemonSet must be.
type variant struct {
	dir string // relative to deploy/kubernetes
	// caps are exactly the capabilities the container adds.
	caps []corev1.Capability
	// remediation: the webhook is on (enforce), over TLS.
	remediation bool
}

var variants = []variant{
	{dir: ".", caps: []corev1.Capability{"SYS_PTRACE"}},
	{dir: "remediation", caps: []corev1.Capability{"SYS_PTRACE", "NET_ADMIN", "SYS_ADMIN", "SYS_CHROOT", "NET_RAW"}, remediation: true},
}

// kinds are the types each manifest is decoded into, by group, version
// and kind; a manifest of any other kind is an error.
var kinds = map[schema.GroupVersionKind]func() any{
	corev1.SchemeGroupVersion.WithKind("Namespace"):            func() any { return &corev1.Namespace{} },
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"):       func() any { return &corev1.ServiceAccount{} },
	corev1.SchemeGroupVersion.WithKind("Service"):              func() any { return &corev1.Service{} },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):            func() any { return &corev1.ConfigMap{} },
	appsv1.SchemeGroupVersion.WithKind("DaemonSet"):            func() any { return &appsv1.DaemonSet{} },
	monitoringv1.SchemeGroupVersion.WithKind("PodMonitor"):     func() any { return &monitoringv1.PodMonitor{} },
	monitoringv1.SchemeGroupVersion.WithKind("ServiceMonitor"): func() any { return &monitoringv1.ServiceMonitor{} },
	monitoringv1.SchemeGroupVersion.WithKind("PrometheusRule"): func() any { return &monitoringv1.PrometheusRule{} },
	{Group: "kustomize.config.k8s.io", Version: "v1beta1", Kind: "Kustomization"}: func() any {
		return &kustomizetypes.Kustomization{}
	},
}

// decodeManifest decodes one YAML document strictly into the type of its
// kind: an unknown or duplicate field is an error, as the API server
// (with kubectl's field validation) would say.
func decodeManifest(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	newObject, ok := kinds[tm.GroupVersionKind()]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a kind this deployment uses", tm.APIVersion, tm.Kind)
	}
	obj := newObject()
	if err := unmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// patchOp is one operation of a JSON 6902 patch.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	From  string          `json:"from,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
}

// checkSourceFiles decodes every YAML file of the tree strictly: the
// manifests and kustomizations by kind, JSON 6902 patches as such, the
// exporter's web config as exporter-toolkit reads it.
func checkSourceFiles(dir string) []error {
	var errs []error
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "validate" {
			return filepath.SkipDir
		}
		if d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return nil
		}
		n++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if err := checkSourceFile(rel, b); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", rel, err))
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if n == 0 {
		errs = append(errs, fmt.Errorf("%s: no YAML files", dir))
	}
	return errs
}

func checkSourceFile(name string, b []byte) error {
	if filepath.Base(name) == "web.yml" {
		var c toolkitweb.Config
		return yamlv2.UnmarshalStrict(b, &c)
	}
	var top any
	if err := yaml.Unmarshal(b, &top); err != nil {
		return err
	}
	if _, ok := top.([]any); ok {
		var ops []patchOp
		if err := unmarshalStrict(b, &ops); err != nil {
			return fmt.Errorf("JSON 6902 patch: %w", err)
		}
		for _, op := range ops {
			switch op.Op {
			case "add", "replace", "test":
				if op.Value == nil {
					return fmt.Errorf("JSON 6902 patch: %s %s without a value", op.Op, op.Path)
				}
			case "remove", "move", "copy":
			default:
				return fmt.Errorf("JSON 6902 patch: op %q", op.Op)
			}
			if !strings.HasPrefix(op.Path, "/") {
				return fmt.Errorf("JSON 6902 patch: path %q", op.Path)
			}
		}
		return nil
	}
	for _, doc := range splitDocuments(b) {
		if _, err := decodeManifest(doc); err != nil {
			return err
		}
	}
	return nil
}

// splitDocuments splits a YAML stream at its "---" lines.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	for line := range bytes.Lines(b) {
		if string(bytes.TrimRight(line, " \r\n")) == "---" {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	docs = append(docs, cur.Bytes())
	return slices.DeleteFunc(docs, func(d []byte) bool {
		var v any
		return yaml.Unmarshal(d, &v) == nil && v == nil
	})
}

// rendered is what `kubectl apply -k` would send, decoded.
type rendered struct {
	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	daemonSets      []*appsv1.DaemonSet
	podMonitors     []*monitoringv1.PodMonitor
	serviceMonitors []*monitoringv1.ServiceMonitor
	prometheusRules []*monitoringv1.PrometheusRule
}

// render builds a kustomization as kubectl does and decodes each resource
// strictly.
func render(dir string) (*rendered, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	r := &rendered{}
	for _, res := range m.Resources() {
		b, err := res.AsYAML()
		if err != nil {
			return nil, err
		}
		if err := r.add(b); err != nil {
			return nil, fmt.Errorf("kustomize build %s: %s: %w", dir, res.CurId(), err)
		}
	}
	return r, nil
}

// add decodes doc strictly and adds it to r.
func (r *rendered) add(doc []byte) error {
	obj, err := decodeManifest(doc)
	if err != nil {
		return err
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		r.namespaces = append(r.namespaces, o)
	case *corev1.ServiceAccount:
		r.serviceAccounts = append(r.serviceAccounts, o)
	case *corev1.Service:
		r.services = append(r.services, o)
	case *corev1.ConfigMap:
		r.configMaps = append(r.configMaps, o)
	case *appsv1.DaemonSet:
		r.daemonSets = append(r.daemonSets, o)
	case *monitoringv1.PodMonitor:
		r.podMonitors = append(r.podMonitors, o)
	case *monitoringv1.ServiceMonitor:
		r.serviceMonitors = append(r.serviceMonitors, o)
	case *monitoringv1.PrometheusRule:
		r.prometheusRules = append(r.prometheusRules, o)
	default:
		return fmt.Errorf("%T is not a resource to deploy", o)
	}
	return nil
}

// validateTree is every check of a copy of deploy/kubernetes in dir:
// strict decoding of each file, the kustomizations of vs rendered and
// decoded, what the exporter needs of them, and the PrometheusRule against
// rules.
func validateTree(dir string, vs []variant, flags *exporterFlags, rules []byte) []error {
	errs := checkSourceFiles(dir)
	for _, v := range vs {
		r, err := render(filepath.Join(dir, v.dir))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, err := range checkRendered(r, v, flags, rules) {
			errs = append(errs, fmt.Errorf("%s: %w", v.dir, err))
		}
	}
	return errs
}

// TestManifests validates deploy/kubernetes as committed.
func TestManifests(t *testing.T) {
	for _, err := range validateTree(manifestsDir, variants, buildExporter(t), readRules(t)) {
		t.Error(err)
	}
}

// TestMethodDeleteAlternative makes the change remediation/daemonset-patch.yaml
// documents for clusters that refuse SYS_ADMIN (method delete, the
// SYS_ADMIN, SYS_CHROOT and NET_RAW ops removed) and wants it to pass every check,
// with NET_ADMIN and SYS_PTRACE alone.
func TestMethodDeleteAlternative(t *testing.T) {
	dir := copyTree(t, manifestsDir)
	const capOp = "- op: add\n  path: /spec/template/spec/containers/0/securityContext/capabilities/add/-\n  value: "
	edit(t, dir, "remediation/daemonset-patch.yaml",
		"  value: --remediation.method=auto\n", "  value: --remediation.method=delete\n",
		capOp+"SYS_ADMIN\n", "",
		capOp+"SYS_CHROOT\n", "",
		capOp+"NET_RAW\n", "")
	vs := []variant{{dir: "remediation", caps: []corev1.Capability{"SYS_PTRACE", "NET_ADMIN"}, remediation: true}}
	for _, err := range validateTree(dir, vs, buildExporter(t), readRules(t)) {
		t.Error(err)
	}
}

// edit replaces, in file under dir, each old string (which must occur
// exactly once) by its new one: pairs of arguments.
func edit(t *testing.T, dir, file string, oldNew ...string) {
	t.Helper()
	path := filepath.Join(dir, file)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(oldNew); i += 2 {
		if n := bytes.Count(b, []byte(oldNew[i])); n != 1 {
			t.Fatalf("%s holds %q %d times, want once", file, oldNew[i], n)
		}
		b = bytes.Replace(b, []byte(oldNew[i]), []byte(oldNew[i+1]), 1)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestManifestsCatchMistakes breaks a copy of deploy/kubernetes in ways
// that matter and wants each copy refused. The copy, untouched, must pass
// first, so that each refusal comes from the change alone.
func TestManifestsCatchMistakes(t *testing.T) {
	flags := buildExporter(t)
	rules := readRules(t)
	mutants := []struct {
		file, old, new string
		// want is part of the error expected.
		want string
	}{
		// Strict decoding: a misspelt or misplaced field.
		{"base/daemonset.yaml", "hostPID: true", "hostPid: true", "unknown field"},
		{"base/daemonset.yaml", "              readOnly: true\n            # nsfs", "              readonly: true\n            # nsfs", "unknown field"},
		{"base/daemonset.yaml", "      tolerations:", "      toleration:", "unknown field"},
		{"base/daemonset.yaml", "              memory: 192Mi", "              memory: 192 MiB", "quantities must match"},
		{"base/podmonitor.yaml", "  podMetricsEndpoints:", "  podMetricEndpoints:", "unknown field"},
		{"base/service.yaml", "  clusterIP: None", "  clusterIp: None", "unknown field"},
		{"base/serviceaccount.yaml", "automountServiceAccountToken: false", "automountServiceAccountToken: false\nautomountServiceAccountToken: true", "already"},
		{"base/kustomization.yaml", "resources:", "resource:", "unknown field"},
		{"remediation/daemonset-patch.yaml", "      defaultMode: 0400\n- op: add\n  path: /spec/template/spec/volumes/-\n  value:\n    name: tls",
			"      defaultMode: 0400\n- op: ad\n  path: /spec/template/spec/volumes/-\n  value:\n    name: tls", "op \"ad\""},
		{"remediation/web.yml", "tls_server_config:", "tls_config:", "not found in type"},
		{"base/kustomization.yaml", "  - podmonitor.yaml\n", "  - podmonitor.yaml\n  - podmonitors.yaml\n", "podmonitors.yaml"},

		// The pod: host namespaces, privileges, tolerations.
		{"base/daemonset.yaml", "hostPID: true", "hostPID: false", "hostPID"},
		{"base/daemonset.yaml", "hostNetwork: true", "hostNetwork: false", "hostNetwork"},
		{"base/daemonset.yaml", "        - operator: Exists", "        - operator: Exists\n          key: node-role.kubernetes.io/control-plane", "toleration"},
		{"base/daemonset.yaml", "add: [SYS_PTRACE]", "add: [SYS_PTRACE, NET_ADMIN]", "capabilities"},
		{"base/daemonset.yaml", "add: [SYS_PTRACE]", "add: [SYS_PTRACE, SYS_ADMIN]", "capabilities"},
		{"base/daemonset.yaml", "drop: [ALL]", "drop: [NET_RAW]", "drop"},
		{"base/daemonset.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"base/daemonset.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation"},
		{"base/daemonset.yaml", "privileged: false", "privileged: true", "privileged"},
		{"base/daemonset.yaml", "runAsUser: 0", "runAsUser: 65534", "root"},
		{"base/daemonset.yaml", "      automountServiceAccountToken: false", "      automountServiceAccountToken: true", "automountServiceAccountToken"},
		{"base/serviceaccount.yaml", "automountServiceAccountToken: false", "automountServiceAccountToken: true", "automountServiceAccountToken"},
		{"base/namespace.yaml", "pod-security.kubernetes.io/enforce: privileged", "pod-security.kubernetes.io/enforce: baseline", "pod-security"},
		{"base/daemonset.yaml", "              cpu: 500m", "              cpu: 5m", "exceeds its limit"},
		{"base/daemonset.yaml", "          limits:\n              cpu: 500m\n", "          limits:\n", "limit"},
		{"base/daemonset.yaml", "type: RuntimeDefault", "type: Unconfined", "seccomp"},

		// Mounts.
		{"base/daemonset.yaml", "              mountPropagation: HostToContainer", "", "HostToContainer"},
		{"base/daemonset.yaml", "mountPropagation: HostToContainer", "mountPropagation: Bidirectional", "HostToContainer"},
		{"base/daemonset.yaml", "              mountPath: /var/lib/cni\n              readOnly: true", "              mountPath: /var/lib/cni", "read-only"},
		{"base/daemonset.yaml", "            path: /etc/cni/net.d", "            path: /etc/cni", "/etc/cni/net.d"},
		{"base/daemonset.yaml", "              mountPath: /run\n", "              mountPath: /host/run\n", "/run"},
		{"base/daemonset.yaml", "              mountPath: /var/lib/veth_exporter", "              mountPath: /var/lib/veth_exporter\n              readOnly: true", "writable"},
		{"base/daemonset.yaml", "            path: /var/lib/veth_exporter", "            path: /var/lib/veth-exporter", "state"},

		// Flags: the binary must accept each, and the paths must exist.
		{"base/daemonset.yaml", "value: /host/proc", "value: /proc/host", "--path.procfs"},
		{"base/daemonset.yaml", "--web.listen-address=:9750", "--web.listen-address :9750", "--web.listen-address"},
		{"base/daemonset.yaml", "--web.listen-address=:9750", "--web.listen-address=:9750\n            - --path.procfs=/host/proc", "given twice"},
		{"base/daemonset.yaml", "name: VETH_EXPORTER_DOCKER_HOST", "name: VETH_EXPORTER_DOCKER_HOSTS", "not a variable the exporter reads"},
		{"base/daemonset.yaml", "value: unix:///run/docker.sock", "value: unix:///var/run/docker.sock", "--docker.host"},
		{"base/daemonset.yaml", "- --web.listen-address=:9750", "- --web.listen-address=:9100", "9750"},
		{"base/daemonset.yaml", "- --web.listen-address=:9750", "- --dry-run", "not a flag"},
		{"base/daemonset.yaml", "- --web.listen-address=:9750", "- --no-collector.veth.per-device", "needs a check"},
		{"remediation/daemonset-patch.yaml", "--remediation.mode=enforce", "--remediation.mode=enforced", "--remediation.mode"},
		{"remediation/daemonset-patch.yaml", "--remediation.bearer-token-file=/etc/veth_exporter/remediate/token", "--remediation.bearer-token-file=/etc/veth_exporter/token", "--remediation.bearer-token-file"},
		{"remediation/daemonset-patch.yaml", "      defaultMode: 0400\n- op: add\n  path: /spec/template/spec/volumes/-\n  value:\n    name: tls",
			"      defaultMode: 0440\n- op: add\n  path: /spec/template/spec/volumes/-\n  value:\n    name: tls", "owner only"},
		{"remediation/daemonset-patch.yaml", `--remediation.instance=\[?$(POD_IP)\]?:9750`, `--remediation.instance=$(NODE_IP):9750`, "NODE_IP"},
		{"remediation/daemonset-patch.yaml", `--remediation.instance=\[?$(POD_IP)\]?:9750`, `--remediation.instance=$(POD_IP)`, "instance"},
		{"remediation/daemonset-patch.yaml", "fieldPath: status.podIP", "fieldPath: status.hostIPs", "POD_IP"},
		{"remediation/daemonset-patch.yaml", "--remediation.audit-file=/var/lib/veth_exporter/audit.jsonl", "--remediation.audit-file=/var/log/veth_exporter.audit", "--remediation.audit-file"},
		{"remediation/daemonset-patch.yaml", "--web.config.file=/etc/veth_exporter/web/web.yml", "--web.config.file=/etc/veth_exporter/web/web.yaml", "--web.config.file"},
		{"remediation/web.yml", "/etc/veth_exporter/tls/tls.key", "/etc/veth_exporter/tls.key", "key_file"},
		{"remediation/daemonset-patch.yaml", "  value: NET_ADMIN", "  value: SYS_ADMIN", "capabilities"},
		// The flag is gone: the release is the default method.
		{"remediation/daemonset-patch.yaml", "  value: --remediation.audit-file=/var/lib/veth_exporter/audit.jsonl",
			"  value: --remediation.audit-file=/var/lib/veth_exporter/audit.jsonl\n- op: add\n  path: /spec/template/spec/containers/0/args/-\n  value: --remediation.release-netns",
			"unknown long flag '--remediation.release-netns'"},

		// The remediation method and what it needs.
		{"remediation/daemonset-patch.yaml", "--remediation.method=auto", "--remediation.method=releas", "not auto, release or delete"},
		{"remediation/daemonset-patch.yaml", "- op: add\n  path: /spec/template/spec/containers/0/securityContext/capabilities/add/-\n  value: SYS_ADMIN\n", "",
			"--remediation.method=auto without [SYS_ADMIN]"},
		{"remediation/daemonset-patch.yaml", "- op: add\n  path: /spec/template/spec/containers/0/securityContext/capabilities/add/-\n  value: SYS_CHROOT\n", "",
			"--remediation.method=auto without [SYS_CHROOT]"},
		{"remediation/daemonset-patch.yaml", "--remediation.method=auto", "--remediation.method=delete", "--remediation.method=delete: [SYS_ADMIN SYS_CHROOT] not needed"},
		{"remediation/daemonset-patch.yaml", "  value: SYS_CHROOT\n", "  value: SYS_CHROOT\n- op: replace\n  path: /spec/template/spec/hostPID\n  value: false\n",
			"--remediation.method=auto without hostPID"},
		{"base/daemonset.yaml", "type: Unconfined", "type: RuntimeDefault", "appArmorProfile"},

		// Probes, ports and who finds the pods.
		{"base/daemonset.yaml", "path: /-/healthy", "path: /healthz", "/-/healthy"},
		{"base/daemonset.yaml", "path: /-/ready", "path: /-/healthy", "/-/ready"},
		{"base/daemonset.yaml", "              port: metrics\n            periodSeconds: 10", "              port: 9100\n            periodSeconds: 10", "9750"},
		{"base/daemonset.yaml", "containerPort: 9750", "containerPort: 9100", "9750"},
		{"remediation/daemonset-patch.yaml", "  path: /spec/template/spec/containers/0/readinessProbe/httpGet/scheme\n  value: HTTPS",
			"  path: /spec/template/spec/containers/0/readinessProbe/httpGet/scheme\n  value: HTTP", "scheme"},
		{"base/podmonitor.yaml", "    - port: metrics", "    - port: http-metrics", "port"},
		{"base/podmonitor.yaml", "      path: /metrics", "      path: /", "/metrics"},
		{"base/podmonitor.yaml", "      interval: 30s", "      interval: 10m", "max-gap"},
		{"remediation/podmonitor-patch.yaml", "  value: HTTPS", "  value: HTTP", "scheme"},
		{"remediation/podmonitor-patch.yaml", "        name: veth-exporter-tls", "        name: veth-exporter-certs", "veth-exporter-tls"},
		{"base/service.yaml", "    app.kubernetes.io/name: veth-exporter\n  ports:", "    app.kubernetes.io/name: veth_exporter\n  ports:", "selector"},
		{"base/kustomization.yaml", "namespace: veth-exporter", "namespace: monitoring", "namespace"},

		// The PrometheusRule carries alerts/ exactly.
		{"base/prometheusrule.yaml", "for: 30m", "for: 5m", "make kubernetes"},
		{"base/prometheusrule.yaml", "  groups:", "  groups:\n    - name: extra\n      rules: []", "make kubernetes"},
	}

	original := copyTree(t, manifestsDir)
	t.Run("unchanged", func(t *testing.T) {
		for _, err := range validateTree(original, variants, flags, rules) {
			t.Error(err)
		}
	})
	for _, m := range mutants {
		t.Run(m.file+"/"+firstLine(m.old)+"->"+firstLine(m.new), func(t *testing.T) {
			t.Parallel()
			dir := copyTree(t, manifestsDir)
			edit(t, dir, m.file, m.old, m.new)
			errs := validateTree(dir, variants, flags, rules)
			if len(errs) == 0 {
				t.Fatalf("a copy with %q in %s changed to %q passes every check", m.old, m.file, m.new)
			}
			msg := errors.Join(errs...).Error()
			if !strings.Contains(msg, m.want) {
				t.Errorf("a copy with %q in %s changed to %q is refused, but not for %q:\n%s", m.old, m.file, m.new, m.want, msg)
			}
		})
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + "…"
	}
	return s
}

// copyTree copies deploy/kubernetes, without this module, into a new
// temporary directory.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			if d.Name() == "validate" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func readRules(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, RulesSource))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
