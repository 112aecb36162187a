package validate

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	toolkitweb "github.com/prometheus/exporter-toolkit/web"
	yamlv2 "go.yaml.in/yaml/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// exporterFlags is what the exporter's binary accepts.
type exporterFlags struct {
	binary string
	// bools are its boolean flags (--[no-]name in --help).
	bools map[string]bool
	// envars maps each environment variable the exporter reads
	// (($VETH_EXPORTER_X) in --help) to its flag.
	envars map[string]string
}

var (
	buildOnce  sync.Once
	builtFlags *exporterFlags
	buildErr   error
)

// buildExporter builds the exporter from this repository, once per test
// binary, and reads its flags from --help.
func buildExporter(t *testing.T) *exporterFlags {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "veth_exporter-validate-")
		if err != nil {
			buildErr = err
			return
		}
		bin := filepath.Join(dir, "veth_exporter")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/veth_exporter")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/veth_exporter: %v\n%s", err, out)
			return
		}
		out, err := exec.Command(bin, "--help").Output()
		if err != nil {
			buildErr = fmt.Errorf("veth_exporter --help: %v", err)
			return
		}
		builtFlags = &exporterFlags{binary: bin, bools: map[string]bool{}, envars: map[string]string{}}
		for _, m := range boolFlagRE.FindAllStringSubmatch(string(out), -1) {
			builtFlags.bools[m[1]] = true
		}
		for _, m := range flagRE.FindAllStringSubmatch(string(out), -1) {
			if v := flagEnvar(m[1]); strings.Contains(string(out), "($"+v+")") {
				builtFlags.envars[v] = m[1]
			}
		}
		if len(builtFlags.bools) == 0 {
			buildErr = fmt.Errorf("veth_exporter --help lists no --[no-]flag:\n%s", out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtFlags
}

// TestMain removes the binary buildExporter built.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtFlags != nil {
		os.RemoveAll(filepath.Dir(builtFlags.binary))
	}
	os.Exit(code)
}

var (
	boolFlagRE = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--\[no-\]([a-z][a-z0-9._-]*)`)
	flagRE     = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--(?:\[no-\])?([a-z][a-z0-9._-]*)`)
)

// flagEnvar is the environment variable the exporter reads for a flag
// that has one (cmd/veth_exporter's flagEnvar; --help names it).
func flagEnvar(flag string) string {
	return "VETH_EXPORTER_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(flag))
}

// parseArgs splits a container's args into flags and values, and asks the
// binary whether it takes them: each arg must be --name=value, or --name /
// --no-name for a boolean (a value flag without "=" would take the next
// arg as its value). The container's VETH_EXPORTER_* variables are flags
// too: each must be one the exporter reads, with a plain value, and not
// given as an arg as well.
func (f *exporterFlags) parseArgs(args []string, env []corev1.EnvVar) (map[string]string, []error) {
	var errs []error
	values := map[string]string{}
	var environ []string
	for _, e := range env {
		if !strings.HasPrefix(e.Name, "VETH_EXPORTER_") {
			continue
		}
		name, ok := f.envars[e.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("env %s: not a variable the exporter reads", e.Name))
			continue
		case e.ValueFrom != nil:
			errs = append(errs, fmt.Errorf("env %s: want a plain value", e.Name))
			continue
		}
		values[name] = e.Value
		environ = append(environ, e.Name+"="+e.Value)
	}
	for _, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case !strings.HasPrefix(a, "--"):
			errs = append(errs, fmt.Errorf("arg %q: not a flag (the image's entrypoint is the exporter, its default command serve)", a))
			continue
		case !hasValue && f.bools[name]:
			value = "true"
		case !hasValue && f.bools[strings.TrimPrefix(name, "no-")]:
			name, value = strings.TrimPrefix(name, "no-"), "false"
		case !hasValue:
			errs = append(errs, fmt.Errorf("arg %q: not a boolean flag: write --%s=VALUE", a, name))
			continue
		}
		if _, dup := values[name]; dup {
			errs = append(errs, fmt.Errorf("arg %q: --%s given twice (as args, or as an arg and its VETH_EXPORTER_ variable)", a, name))
		}
		values[name] = value
	}
	// The binary parses every flag before it acts on --help, and refuses an
	// unknown one (or one of another command) with exit status 2.
	help := exec.Command(f.binary, append(slices.Clone(args), "--help")...)
	help.Env = append(os.Environ(), environ...)
	if out, err := help.CombinedOutput(); err != nil {
		msg := strings.TrimSpace(string(out))
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		errs = append(errs, fmt.Errorf("args %q: not a flag the exporter accepts: %v: %s", args, err, msg))
	}
	return values, errs
}

// pod is the DaemonSet's pod template, with the lookups the checks need.
type pod struct {
	spec      *corev1.PodSpec
	container *corev1.Container
	volumes   map[string]*corev1.Volume
	configMap map[string]*corev1.ConfigMap
}

// newPod is the pod of spec, with the ConfigMaps deployed beside it.
func newPod(spec *corev1.PodSpec, configMaps []*corev1.ConfigMap) *pod {
	p := &pod{spec: spec, container: &spec.Containers[0], volumes: map[string]*corev1.Volume{}, configMap: map[string]*corev1.ConfigMap{}}
	for i := range spec.Volumes {
		p.volumes[spec.Volumes[i].Name] = &spec.Volumes[i]
	}
	for _, cm := range configMaps {
		p.configMap[cm.Name] = cm
	}
	return p
}

// hostPathAt returns the host path behind a path in the container, and
// whether it is writable; "" when no hostPath volume is mounted there.
func (p *pod) hostPathAt(file string) (host string, writable bool) {
	m, v := p.mountOf(file)
	if m == nil || v.HostPath == nil {
		return "", false
	}
	rel, _ := filepath.Rel(m.MountPath, file)
	return path.Join(v.HostPath.Path, rel), !m.ReadOnly
}

// mountOf returns the deepest volume mount holding file, and its volume.
func (p *pod) mountOf(file string) (*corev1.VolumeMount, *corev1.Volume) {
	var best *corev1.VolumeMount
	for i := range p.container.VolumeMounts {
		m := &p.container.VolumeMounts[i]
		if (file == m.MountPath || strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")) &&
			(best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = m
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, p.volumes[best.Name]
}

// secretFile says whether file is a key of a Secret volume readable by its
// owner only, and the Secret's name.
func (p *pod) secretFile(file string) (secret string, err error) {
	m, v := p.mountOf(file)
	if m == nil || v == nil || v.Secret == nil {
		return "", fmt.Errorf("%s is in no Secret volume", file)
	}
	if filepath.Dir(file) != m.MountPath {
		return "", fmt.Errorf("%s is not a key at the top of the Secret volume %s (%s)", file, m.Name, m.MountPath)
	}
	mode := int32(0o644)
	if v.Secret.DefaultMode != nil {
		mode = *v.Secret.DefaultMode
	}
	if mode&0o077 != 0 {
		return "", fmt.Errorf("%s: Secret volume %s has mode %04o: the exporter refuses a file not readable by its owner only", file, m.Name, mode)
	}
	if p.spec.SecurityContext != nil && p.spec.SecurityContext.FSGroup != nil {
		return "", fmt.Errorf("%s: an fsGroup makes Secret files group-readable", file)
	}
	return v.Secret.SecretName, nil
}

// configFile returns the content of file when it is a key of a ConfigMap
// volume.
func (p *pod) configFile(file string) (string, error) {
	m, v := p.mountOf(file)
	if m == nil || v == nil || v.ConfigMap == nil {
		return "", fmt.Errorf("%s is in no ConfigMap volume", file)
	}
	cm := p.configMap[v.ConfigMap.Name]
	if cm == nil {
		return "", fmt.Errorf("%s: ConfigMap %s is not deployed", file, v.ConfigMap.Name)
	}
	content, ok := cm.Data[strings.TrimPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")]
	if !ok {
		return "", fmt.Errorf("%s: ConfigMap %s has no such key", file, cm.Name)
	}
	return content, nil
}

// one returns the only element of s, or an error naming what.
func one[T any](s []*T, what string) (*T, error) {
	if len(s) != 1 {
		return nil, fmt.Errorf("%d %s, want 1", len(s), what)
	}
	return s[0], nil
}

// checkRendered checks a rendered kustomization: what the exporter needs
// to see the node, what it must not be able to do, and how Prometheus
// finds it.
func checkRendered(r *rendered, v variant, flags *exporterFlags, rules []byte) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	ns, err := one(r.namespaces, "Namespaces")
	if err != nil {
		return []error{err}
	}
	if ns.Name != namespace {
		fail("Namespace %s, want %s", ns.Name, namespace)
	}
	// hostNetwork, hostPID and hostPath are refused below the privileged
	// Pod Security level.
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		fail("Namespace %s: pod-security.kubernetes.io/enforce = %q, want privileged", ns.Name, ns.Labels["pod-security.kubernetes.io/enforce"])
	}
	ds, err := one(r.daemonSets, "DaemonSets")
	if err != nil {
		return append(errs, err)
	}
	sa, err := one(r.serviceAccounts, "ServiceAccounts")
	if err != nil {
		return append(errs, err)
	}
	svc, err := one(r.services, "Services")
	if err != nil {
		return append(errs, err)
	}
	pm, err := one(r.podMonitors, "PodMonitors")
	if err != nil {
		return append(errs, err)
	}
	pr, err := one(r.prometheusRules, "PrometheusRules")
	if err != nil {
		return append(errs, err)
	}
	for _, o := range []struct{ kind, name, namespace string }{
		{"DaemonSet", ds.Name, ds.Namespace}, {"ServiceAccount", sa.Name, sa.Namespace},
		{"Service", svc.Name, svc.Namespace}, {"PodMonitor", pm.Name, pm.Namespace}, {"PrometheusRule", pr.Name, pr.Namespace},
	} {
		if o.namespace != namespace {
			fail("%s %s: namespace %q, want %s", o.kind, o.name, o.namespace, namespace)
		}
	}

	spec := &ds.Spec.Template.Spec
	podLabels := labels.Set(ds.Spec.Template.Labels)
	if sel := ds.Spec.Selector; sel == nil || !labels.SelectorFromSet(sel.MatchLabels).Matches(podLabels) || len(sel.MatchExpressions) > 0 {
		fail("DaemonSet: selector %v does not select its pods (%v)", sel, podLabels)
	}
	if spec.ServiceAccountName != sa.Name {
		fail("DaemonSet: serviceAccountName %q, want %s", spec.ServiceAccountName, sa.Name)
	}
	// No API access: no token in the pods.
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		fail("ServiceAccount: automountServiceAccountToken must be false")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		fail("DaemonSet: automountServiceAccountToken must be false")
	}
	if !spec.HostNetwork {
		fail("DaemonSet: hostNetwork must be true: the veths are in the host's network namespace")
	}
	if !spec.HostPID {
		fail("DaemonSet: hostPID must be true: without the host's processes every leftover is unknown / partial_view")
	}
	if spec.HostIPC {
		fail("DaemonSet: hostIPC is not needed")
	}
	tolerateAll := false
	for _, t := range spec.Tolerations {
		if t.Operator == corev1.TolerationOpExists && t.Key == "" && t.Effect == "" {
			tolerateAll = true
		}
	}
	if !tolerateAll {
		fail("DaemonSet: no toleration {operator: Exists} for every taint: nodes would go unwatched (%v)", spec.Tolerations)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) > 0 {
		return append(errs, fmt.Errorf("DaemonSet: %d containers and %d init containers, want the exporter alone", len(spec.Containers), len(spec.InitContainers)))
	}
	c := &spec.Containers[0]
	p := newPod(spec, r.configMaps)
	if c.Image == "" {
		fail("DaemonSet: no image")
	}
	errs = append(errs, checkSecurity(c, v)...)
	errs = append(errs, checkResources(c)...)
	errs = append(errs, checkMounts(p)...)

	values, flagErrs := flags.parseArgs(c.Args, c.Env)
	errs = append(errs, flagErrs...)
	flagErrs, tlsSecret := checkFlags(p, values, v)
	errs = append(errs, flagErrs...)

	// The port the exporter listens on, named as probes, Service and
	// PodMonitor name it.
	var metricsPort *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].ContainerPort == listenPort {
			metricsPort = &c.Ports[i]
		}
	}
	if metricsPort == nil || metricsPort.Name == "" {
		fail("DaemonSet: no named container port %d (the listen address)", listenPort)
		return errs
	}
	resolves := func(port intstr.IntOrString) bool {
		return port.IntValue() == listenPort || (port.Type == intstr.String && port.StrVal == metricsPort.Name)
	}
	tls := values["web.config.file"] != ""
	wantScheme := corev1.URISchemeHTTP
	if tls {
		wantScheme = corev1.URISchemeHTTPS
	}
	for _, probe := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"livenessProbe", "/-/healthy", c.LivenessProbe}, {"readinessProbe", "/-/ready", c.ReadinessProbe}} {
		switch g := probe.probe; {
		case g == nil || g.HTTPGet == nil:
			fail("DaemonSet: no %s httpGet", probe.name)
		case g.HTTPGet.Path != probe.path:
			fail("DaemonSet: %s path %q, want %s", probe.name, g.HTTPGet.Path, probe.path)
		case !resolves(g.HTTPGet.Port):
			fail("DaemonSet: %s port %s, want %d", probe.name, g.HTTPGet.Port.String(), listenPort)
		case g.HTTPGet.Scheme != wantScheme && (g.HTTPGet.Scheme != "" || tls):
			fail("DaemonSet: %s scheme %q, want %s", probe.name, g.HTTPGet.Scheme, wantScheme)
		}
	}

	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0 {
		fail("Service: selector %v does not select the exporter's pods (%v)", svc.Spec.Selector, podLabels)
	}
	if len(svc.Spec.Ports) != 1 || !resolves(svc.Spec.Ports[0].TargetPort) || svc.Spec.Ports[0].Port != listenPort {
		fail("Service: ports %v, want %d to the exporter's port", svc.Spec.Ports, listenPort)
	}

	errs = append(errs, checkPodMonitor(pm, podLabels, metricsPort.Name, tls, tlsSecret)...)

	// The rendered PrometheusRule is alerts/, whatever kustomize did to it.
	if manifest, err := PrometheusRule(rules); err != nil {
		fail("%v", err)
	} else {
		var want monitoringv1.PrometheusRule
		if err := unmarshalStrict(manifest, &want); err != nil {
			fail("%v", err)
		} else if !reflect.DeepEqual(pr.Spec, want.Spec) {
			fail("PrometheusRule: its rules differ from %s: run `make kubernetes`", RulesSource)
		}
	}
	return errs
}

func checkSecurity(c *corev1.Container, v variant) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	sc := c.SecurityContext
	if sc == nil {
		return []error{errors.New("DaemonSet: no securityContext")}
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 || (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) {
		fail("DaemonSet: must run as root (runAsUser 0): the host's /proc and namespace files are root's")
	}
	if sc.Privileged != nil && *sc.Privileged {
		fail("DaemonSet: privileged must not be true: the exporter needs named capabilities only")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail("DaemonSet: allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail("DaemonSet: readOnlyRootFilesystem must be true")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		fail("DaemonSet: capabilities must drop [ALL]")
	}
	var add []corev1.Capability
	if sc.Capabilities != nil {
		add = slices.Clone(sc.Capabilities.Add)
	}
	slices.Sort(add)
	want := slices.Clone(v.caps)
	slices.Sort(want)
	if !slices.Equal(add, want) {
		fail("DaemonSet: capabilities add %v, want exactly %v", add, want)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		fail("DaemonSet: seccompProfile must be RuntimeDefault (the exporter makes no unusual system call)")
	}
	if sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		fail("DaemonSet: appArmorProfile must be Unconfined: the runtime's default profile denies reading other processes' namespaces")
	}
	return errs
}

func checkResources(c *corev1.Container) []error {
	var errs []error
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[name]
		limit, okLimit := c.Resources.Limits[name]
		switch {
		case !okReq:
			errs = append(errs, fmt.Errorf("DaemonSet: no %s request", name))
		case !okLimit:
			errs = append(errs, fmt.Errorf("DaemonSet: no %s limit", name))
		case req.Cmp(limit) > 0:
			errs = append(errs, fmt.Errorf("DaemonSet: %s request %s exceeds its limit %s", name, req.String(), limit.String()))
		}
	}
	// README, Performance: 62 MB peak RSS at 10,000 veths.
	if limit, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && limit.Value() < 128<<20 {
		errs = append(errs, fmt.Errorf("DaemonSet: memory limit %s: a node with 10,000 veths needs 62 MB for one scrape", limit.String()))
	}
	return errs
}

// hostMounts are the host paths the exporter reads, where it must see
// them, and why.
var hostMounts = []struct{ host, container, why string }{
	{"/run", "/run", "nsfs mounts in /run/netns and /run/docker/netns at their host paths, and the runtimes' sockets"},
	{"/var/lib/cni", "/var/lib/cni", "the CNI result cache"},
	{"/etc/cni/net.d", "/etc/cni/net.d", "the CNI configuration"},
}

func checkMounts(p *pod) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, m := range p.container.VolumeMounts {
		v := p.volumes[m.Name]
		if v == nil {
			fail("DaemonSet: volumeMount %s: no such volume", m.Name)
			continue
		}
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
			fail("DaemonSet: volumeMount %s: Bidirectional propagation needs a privileged container; HostToContainer is enough to see the host's mounts", m.Name)
		}
		if v.HostPath != nil && !m.ReadOnly && v.HostPath.Path != stateHostPath {
			fail("DaemonSet: hostPath %s must be mounted read-only (only %s is written)", v.HostPath.Path, stateHostPath)
		}
	}
	for _, want := range hostMounts {
		host, _ := p.hostPathAt(want.container)
		if host != want.host {
			fail("DaemonSet: the host's %s must be mounted at %s (%s); %s is %q there", want.host, want.container, want.why, want.container, host)
		}
	}
	if m, _ := p.mountOf("/run/netns"); m == nil || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		fail("DaemonSet: the /run mount needs mountPropagation HostToContainer, or namespaces pinned after the pod started are not seen")
	}
	return errs
}

// checkFlags checks each flag's value against the pod: every path it
// names is mounted as the exporter needs it. A flag with no check here is
// an error, so that a new one gets one.
func checkFlags(p *pod, values map[string]string, v variant) (errs []error, tlsSecret string) {
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	env := map[string]*corev1.EnvVar{}
	for i := range p.container.Env {
		env[p.container.Env[i].Name] = &p.container.Env[i]
	}
	// Kubernetes expands $(NAME) in args from the container's env; an
	// undefined one stays as it is.
	refRE := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for name, value := range values {
		for _, m := range refRE.FindAllStringSubmatch(value, -1) {
			if env[m[1]] == nil {
				fail("--%s=%s: $(%s) is not in the container's env", name, value, m[1])
			}
		}
	}

	procfs := or(values["path.procfs"], "/proc")
	statePath := or(values["state.path"], "/var/lib/veth_exporter/state.json")
	for name, value := range values {
		switch name {
		case "path.procfs":
			// With hostPID the container's own /proc would do; any other
			// path must be the host's /proc.
			if host, _ := p.hostPathAt(value); host != "/proc" {
				fail("--path.procfs=%s: not the host's /proc (a hostPath mount of /proc)", value)
			}
		case "path.rootfs":
			if host, _ := p.hostPathAt(value); host != "/" {
				fail("--path.rootfs=%s: not the host's /", value)
			}
		case "docker.host":
			socket, ok := strings.CutPrefix(value, "unix://")
			if !ok {
				fail("--docker.host=%s: want the node's unix socket", value)
			} else if host, _ := p.hostPathAt(socket); host != socket {
				fail("--docker.host=%s: the image has no %s; the host's %s is not mounted there", value, socket, path.Dir(socket))
			}
		case "web.listen-address":
			if _, port, err := net.SplitHostPort(value); err != nil || port != strconv.Itoa(listenPort) {
				fail("--web.listen-address=%s: want port %d", value, listenPort)
			}
		case "web.config.file":
			content, err := p.configFile(value)
			if err != nil {
				fail("--web.config.file: %v", err)
				break
			}
			var webErrs []error
			webErrs, tlsSecret = checkWebConfig(p, content)
			errs = append(errs, webErrs...)
		case "remediation.mode":
			if !slices.Contains([]string{"off", "dry-run", "enforce"}, value) {
				fail("--remediation.mode=%s: not off, dry-run or enforce", value)
			}
		case "remediation.method":
			// The binary checks the value only when it runs, not
			// before --help.
			if !slices.Contains([]string{"auto", "release", "delete"}, value) {
				fail("--remediation.method=%s: not auto, release or delete", value)
			}
		case "remediation.bearer-token-file":
			if _, err := p.secretFile(value); err != nil {
				fail("--remediation.bearer-token-file: %v", err)
			}
		case "remediation.instance":
			errs = append(errs, checkInstance(value, env)...)
		case "remediation.audit-file":
			if host, writable := p.hostPathAt(value); !writable || path.Dir(host) != stateHostPath {
				fail("--remediation.audit-file=%s: want a file beside the state file, on the writable %s", value, stateHostPath)
			}
		case "state.path":
		default:
			fail("--%s=%s: the manifests use a flag this test does not know: it needs a check in checkFlags", name, value)
		}
	}
	if procfs == "/proc" && !p.spec.HostPID {
		fail("--path.procfs=/proc without hostPID: not the host's processes")
	}
	if host, writable := p.hostPathAt(filepath.Dir(statePath)); host != stateHostPath || !writable {
		fail("the state file %s: its directory must be the writable hostPath %s (it is %q, writable %v)", statePath, stateHostPath, host, writable)
	}

	mode := or(values["remediation.mode"], "off")
	switch {
	case v.remediation && mode != "enforce":
		fail("--remediation.mode=%s, want enforce", mode)
	case !v.remediation && mode != "off":
		fail("--remediation.mode=%s: the base deploys monitoring only", mode)
	case v.remediation && values["remediation.bearer-token-file"] == "":
		fail("remediation without --remediation.bearer-token-file")
	case v.remediation && values["web.config.file"] == "":
		fail("remediation without TLS (--web.config.file): the bearer token would cross the network in clear text")
	case v.remediation && values["remediation.instance"] == "":
		fail("remediation without --remediation.instance: the default (the node's name) is not the instance label the PodMonitor gives")
	}
	if mode != "off" {
		errs = append(errs, checkMethod(p, or(values["remediation.method"], "auto"))...)
	}
	return errs, tlsSecret
}

// checkMethod wants the capabilities and host namespaces the remediation
// method needs, and no more. A release (method release, or auto) enters
// the mount namespace of PID 1 of --path.procfs, which must be the host's
// init, on one thread: setns into a mount namespace needs SYS_ADMIN and
// SYS_CHROOT, the unmounts SYS_ADMIN. Method delete needs neither.
func checkMethod(p *pod, method string) []error {
	var add []corev1.Capability
	if sc := p.container.SecurityContext; sc != nil && sc.Capabilities != nil {
		add = sc.Capabilities.Add
	}
	var missing, needless []corev1.Capability
	for _, c := range []corev1.Capability{"SYS_ADMIN", "SYS_CHROOT"} {
		if slices.Contains(add, c) {
			needless = append(needless, c)
		} else {
			missing = append(missing, c)
		}
	}
	var errs []error
	switch method {
	case "auto", "release":
		if len(missing) > 0 {
			then := "every leftover is deleted instead: say --remediation.method=delete"
			if method == "release" {
				then = "every leftover is refused (not_releasable)"
			}
			errs = append(errs, fmt.Errorf("--remediation.method=%s without %v: the release cannot enter the host's mount namespace, %s", method, missing, then))
		}
		if !p.spec.HostPID {
			errs = append(errs, fmt.Errorf("--remediation.method=%s without hostPID: no leftover is ever orphaned (partial_view), and PID 1 of the container's own /proc, "+
				"whose mount namespace a release would enter, is not the host's init", method))
		}
	case "delete":
		if len(needless) > 0 {
			errs = append(errs, fmt.Errorf("--remediation.method=delete: %v not needed (only a release uses them)", needless))
		}
	}
	return errs
}

// checkInstance wants --remediation.instance to match this pod's scrape
// address and no other node's, once Kubernetes has put the pod's IP in.
func checkInstance(value string, env map[string]*corev1.EnvVar) []error {
	e := env["POD_IP"]
	if !strings.Contains(value, "$(POD_IP)") || e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		return []error{fmt.Errorf("--remediation.instance=%s: want the pod's address, $(POD_IP) from status.podIP (the address the PodMonitor scrapes)", value)}
	}
	var errs []error
	for _, c := range []struct {
		ip, self string
		others   []string
	}{
		{"10.0.0.1", "10.0.0.1:9750", []string{"10.0.0.11:9750", "10.0.0.1:9751", "10.0.0.1", "110.0.0.1:9750"}},
		{"fd00::1", "[fd00::1]:9750", []string{"[fd00::11]:9750", "[fd00::1]:9751", "fd00::1"}},
	} {
		re, err := regexp.Compile("^(?:" + strings.ReplaceAll(value, "$(POD_IP)", c.ip) + ")$")
		if err != nil {
			return []error{fmt.Errorf("--remediation.instance=%s: %w", value, err)}
		}
		if !re.MatchString(c.self) {
			errs = append(errs, fmt.Errorf("--remediation.instance=%s: with POD_IP %s it does not match the instance %s", value, c.ip, c.self))
		}
		for _, other := range c.others {
			if re.MatchString(other) {
				errs = append(errs, fmt.Errorf("--remediation.instance=%s: with POD_IP %s it matches %s too", value, c.ip, other))
			}
		}
	}
	return errs
}

// checkWebConfig wants TLS from files the pod mounts from one Secret, and
// returns that Secret's name.
func checkWebConfig(p *pod, content string) (errs []error, tlsSecret string) {
	var c toolkitweb.Config
	if err := yamlv2.UnmarshalStrict([]byte(content), &c); err != nil {
		return []error{fmt.Errorf("--web.config.file: %w", err)}, ""
	}
	for _, f := range []struct{ name, file string }{{"cert_file", c.TLSConfig.TLSCertPath}, {"key_file", c.TLSConfig.TLSKeyPath}} {
		if f.file == "" {
			errs = append(errs, fmt.Errorf("--web.config.file: no tls_server_config %s", f.name))
			continue
		}
		secret, err := p.secretFile(f.file)
		if err != nil {
			errs = append(errs, fmt.Errorf("--web.config.file: tls_server_config %s: %w", f.name, err))
		} else if tlsSecret != "" && secret != tlsSecret {
			errs = append(errs, fmt.Errorf("--web.config.file: certificate and key from two Secrets, %s and %s", tlsSecret, secret))
		}
		tlsSecret = secret
	}
	if len(c.Users) > 0 {
		errs = append(errs, errors.New("--web.config.file: basic_auth_users would make the kubelet's probes fail (401)"))
	}
	return errs, tlsSecret
}

func checkPodMonitor(pm *monitoringv1.PodMonitor, podLabels labels.Set, portName string, tls bool, tlsSecret string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(pm.Spec.Selector.MatchLabels) == 0 || !labels.SelectorFromSet(pm.Spec.Selector.MatchLabels).Matches(podLabels) {
		fail("PodMonitor: selector %v does not select the exporter's pods (%v)", pm.Spec.Selector.MatchLabels, podLabels)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		fail("PodMonitor: %d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
		return errs
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Port == nil || *ep.Port != portName {
		fail("PodMonitor: port %v, want the exporter's port %s", ep.Port, portName)
	}
	if ep.Path != "/metrics" {
		fail("PodMonitor: path %q, want /metrics", ep.Path)
	}
	// An observation older than --state.max-gap (5m) restarts every
	// orphan clock, and scrapes are the observations.
	if ep.Interval != "" {
		if d, err := time.ParseDuration(string(ep.Interval)); err != nil || d >= 5*time.Minute {
			fail("PodMonitor: interval %s: scrapes must come well within --state.max-gap (5m)", ep.Interval)
		}
	}
	scheme := strings.ToLower(ep.Scheme.String())
	switch {
	case tls && scheme != "https":
		fail("PodMonitor: scheme %q, want HTTPS: the exporter serves TLS", scheme)
	case !tls && scheme != "" && scheme != "http":
		fail("PodMonitor: scheme %q, want HTTP", scheme)
	case tls:
		tc := ep.TLSConfig
		if tc == nil || tc.ServerName == nil || *tc.ServerName == "" || tc.CA.Secret == nil {
			fail("PodMonitor: TLS needs tlsConfig.serverName (the certificate's name; the address is a node's) and a CA")
			break
		}
		// The CA is the one in the Secret the exporter's certificate
		// comes from.
		if tc.CA.Secret.Name != tlsSecret {
			fail("PodMonitor: CA from Secret %s, want %s (the exporter's certificate)", tc.CA.Secret.Name, tlsSecret)
		}
	}
	return errs
}

func or(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// goRun runs a command of this module with go run.
func goRun(t *testing.T, pkg string, args ...string) {
	t.Helper()
	out, err := exec.Command("go", append([]string{"run", pkg}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go run %s %q: %v\n%s", pkg, args, err, out)
	}
}
