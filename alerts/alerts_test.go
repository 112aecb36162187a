// Package alerts holds no Go code: it is the home of veth_exporter's
// Prometheus alerting rules (veth_exporter.rules.yml) and of their promtool
// unit tests (tests/*.yml). These tests run promtool and amtool over them and
// over the Alertmanager examples in deploy/alertmanager, so that `go test ./...`
// checks them like the code. They never touch the network or the system.
package alerts

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"go.yaml.in/yaml/v2"

	"github.com/veth-exporter/veth_exporter/internal/rulestest"
)

const (
	rulesFile = "veth_exporter.rules.yml"
	testsDir  = "tests"
	amConfig  = "../deploy/alertmanager/alertmanager.yml"
	readme    = "../README.md"

	// amPerNodeConfig is the example for Alertmanagers before 0.31: one
	// route and receiver per node.
	amPerNodeConfig = "../deploy/alertmanager/alertmanager-per-node.yml"

	// runbookBase is where every runbook_url points: a section of the README.
	runbookBase = "https://github.com/veth-exporter/veth_exporter#"

	// amURLTemplate is the templated webhook URL of the Alertmanager example
	// (Alertmanager 0.31 and later); literalURL replaces it for older amtools.
	amURLTemplate = "{{ .GroupLabels.instance }}"
	literalURL    = "node1.example:9750"

	envRequire = "VETH_EXPORTER_REQUIRE_PRIVILEGED"
)

// ruleFile is the part of a Prometheus rule file these tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// unitTestFile is the part of a promtool unit test file these tests read.
type unitTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// tool returns the path of an installed command, or skips the test (fails
// it in CI, where VETH_EXPORTER_REQUIRE_PRIVILEGED=1).
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(envRequire) == "1" {
			t.Fatalf("%s not installed (Debian package %s)", name, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return path
}

func promtool(t *testing.T) string { return tool(t, "promtool", "prometheus") }

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// readYAML decodes the fields of path that v names; promtool and amtool
// check the rest.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func alertRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readYAML(t, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				rules = append(rules, r)
			}
		}
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no alerting rules", rulesFile)
	}
	return rules
}

// testFileFor is the promtool test file of an alert: VethOrphaned is
// tests/veth_orphaned.yml.
func testFileFor(alert string) string {
	var b strings.Builder
	for i, r := range alert {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return filepath.Join(testsDir, b.String()+".yml")
}

func testFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testsDir, "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool test files in %s (%v)", testsDir, err)
	}
	return files
}

func TestPromtoolCheckRules(t *testing.T) {
	out, err := run(t, promtool(t), "check", "rules", rulesFile)
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
}

func TestPromtoolTestRules(t *testing.T) {
	out, err := run(t, promtool(t), append([]string{"test", "rules"}, testFiles(t)...)...)
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestEveryAlertIsTested wants, for each alert, a test file of its own that
// sees it fire and sees it not fire, and no test of an alert that is gone.
func TestEveryAlertIsTested(t *testing.T) {
	alerts := map[string]bool{}
	for _, r := range alertRules(t) {
		alerts[r.Alert] = true
		var f unitTestFile
		path := testFileFor(r.Alert)
		readYAML(t, path, &f)
		if !slices.Contains(f.RuleFiles, "../"+rulesFile) {
			t.Errorf("%s: rule_files = %q, want ../%s", path, f.RuleFiles, rulesFile)
		}
		var fires, silent int
		for _, tc := range f.Tests {
			for _, at := range tc.AlertRuleTest {
				if at.Alertname != r.Alert {
					continue
				}
				if len(at.ExpAlerts) > 0 {
					fires++
				} else {
					silent++
				}
			}
		}
		if fires == 0 || silent == 0 {
			t.Errorf("%s: %d checks that %s fires and %d that it does not, want some of each", path, fires, r.Alert, silent)
		}
	}
	for _, path := range testFiles(t) {
		var f unitTestFile
		readYAML(t, path, &f)
		for _, tc := range f.Tests {
			for _, at := range tc.AlertRuleTest {
				if !alerts[at.Alertname] {
					t.Errorf("%s: test %q checks alert %q, which %s does not define", path, tc.Name, at.Alertname, rulesFile)
				}
			}
		}
	}
}

// TestRuleConventions checks the monitoring-mixin conventions: a severity,
// a summary, a templated description naming the node (or the job, for an
// alert about a whole fleet), and a runbook in the README.
func TestRuleConventions(t *testing.T) {
	for _, r := range alertRules(t) {
		switch r.Labels["severity"] {
		case "info", "warning", "critical":
		default:
			t.Errorf("%s: severity = %q, want info, warning or critical", r.Alert, r.Labels["severity"])
		}
		if r.Annotations["summary"] == "" || strings.Contains(r.Annotations["summary"], "{{") {
			t.Errorf("%s: summary = %q, want a fixed sentence", r.Alert, r.Annotations["summary"])
		}
		if d := r.Annotations["description"]; !strings.Contains(d, "$labels.instance") && !strings.Contains(d, "$labels.job") {
			t.Errorf("%s: description = %q, want one naming the node ($labels.instance) or the fleet ($labels.job)", r.Alert, d)
		}
		if want := runbookBase + "runbook-" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url = %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
		}
	}
}

// TestRunbooksInREADME wants every runbook_url's anchor in the README: a
// heading such as "### Runbook: VethOrphaned" (GitHub makes it
// #runbook-vethorphaned) or an explicit id.
func TestRunbooksInREADME(t *testing.T) {
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	anchors := readmeAnchors(string(b))
	for _, r := range alertRules(t) {
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBase)
		if !ok {
			continue // TestRuleConventions reports it
		}
		if !anchors[anchor] {
			t.Errorf("%s: runbook_url %s: README.md has no #%s (add a heading \"Runbook: %s\")", r.Alert, r.Annotations["runbook_url"], anchor, r.Alert)
		}
	}
}

func TestReadmeAnchors(t *testing.T) {
	md := "# veth_exporter\n## Limits\n### Runbook: VethOrphaned\n" +
		"```sh\n# not a heading\n```\n## Limits ##\n<a id=\"runbook-x\"></a>\n#not-a-heading\n"
	got := readmeAnchors(md)
	for _, want := range []string{"veth_exporter", "limits", "limits-1", "runbook-vethorphaned", "runbook-x"} {
		if !got[want] {
			t.Errorf("readmeAnchors(%q) has no %q: %v", md, want, got)
		}
	}
	for _, unwanted := range []string{"not-a-heading", "-not-a-heading"} {
		if got[unwanted] {
			t.Errorf("readmeAnchors(%q) has %q", md, unwanted)
		}
	}
}

var (
	headingRE  = regexp.MustCompile(`(?m)^#{1,6}[ \t]+(.+?)[ \t#]*$`)
	explicitRE = regexp.MustCompile(`(?:id|name)="([^"]+)"`)
	fenceRE    = regexp.MustCompile("(?ms)^```.*?^```")
)

// readmeAnchors returns the anchors GitHub gives a Markdown file: one per
// heading (lower case, punctuation dropped, spaces to hyphens, "-1", "-2"…
// for repeats) and the explicit id and name attributes of HTML tags.
func readmeAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	md = fenceRE.ReplaceAllString(md, "")
	seen := map[string]int{}
	for _, m := range headingRE.FindAllStringSubmatch(md, -1) {
		var b strings.Builder
		for _, r := range strings.ToLower(m[1]) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			anchors[a+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[a] = true
		}
		seen[a]++
	}
	for _, m := range explicitRE.FindAllStringSubmatch(md, -1) {
		anchors[m[1]] = true
	}
	return anchors
}

// TestRuleTestsCatchMistakes breaks each rule in ways that matter (a
// shorter or longer `for`, a threshold moved by one step, a join that
// ignores the node, a label dropped, a stage added or left out) and wants
// the promtool tests of that alert to fail on every such copy. Each broken
// copy is first checked to be a valid rule file, so the failure comes from
// the unit tests, not from a syntax error.
func TestRuleTestsCatchMistakes(t *testing.T) {
	pt := promtool(t)
	if testing.Short() {
		t.Skip("-short: about 25 promtool runs")
	}
	original, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	mutants := []struct {
		alert, old, new string
	}{
		{"VethOrphaned", "for: 15m", "for: 14m"},
		{"VethOrphaned", "for: 15m", "for: 16m"},
		{"VethOrphaned", "veth_orphaned == 1", "veth_orphaned >= 0"},
		{"VethOrphaned", "on (instance, job, device) group_left (ifindex, master)", "on (device) group_left (ifindex, master)"},
		{"VethOrphaned", "group_left (ifindex, master)", "group_left (master)"},
		{"VethOrphaned", "group_left (reason)", "group_left ()"},
		{"VethOrphaned", `veth_verdict_info{verdict="orphaned"}`, `veth_verdict_info`},
		{"VethOrphansAccumulating", "> 20", "> 19"},
		{"VethOrphansAccumulating", "> 20", "> 21"},
		{"VethOrphansAccumulating", "for: 30m", "for: 29m"},
		{"VethOrphansAccumulating", "for: 30m", "for: 31m"},
		{"VethOrphansAccumulating", "sum without (master, verdict)", "sum"},
		{"VethOrphansAccumulating", `verdict="orphaned"`, `verdict=~"orphaned|unknown"`},
		{"VethExporterResolverDown", "< 0.9", "< 0.95"},
		{"VethExporterResolverDown", "< 0.9", "< 0.85"},
		{"VethExporterResolverDown", "for: 15m", "for: 14m"},
		{"VethExporterResolverDown", "avg_over_time(", "min_over_time("},
		{"VethExporterResolverDown", `"cgroup|state|cni"`, `"state|cni"`},
		{"VethExporterResolverDown", `"cgroup|state|cni"`, `"cgroup|cni"`},
		{"VethExporterResolverDown", `"cgroup|state|cni"`, `"cgroup|state"`},
		{"VethExporterResolverDown", `"cgroup|state|cni"`, `"cgroup|state|cni|links"`},
		{"VethExporterResolverDown", `"cgroup|state|cni"`, `"cgroup|state|cni|netns"`},
		{"VethExporterResolverDown", `"cgroup|state|cni"`, `"cgroup|state|cni|docker"`},
		{"VethExporterResolverDown", `"cgroup|state|cni"`, `"cgroup|state|cni|cri"`},
		{"VethExporterResolverDown", `"cgroup|state|cni"`, `"cgroup|state|cni|podman"`},
		{"VethExporterResolverDown", `collector!~"cgroup|state|cni"`, `collector=~"links|netns|docker|cri|podman"`},
		{"VethExporterPartialView", "> 0.1", "> 0.15"},
		{"VethExporterPartialView", "> 0.1", "> 0.05"},
		{"VethExporterPartialView", "for: 15m", "for: 14m"},
		{"VethExporterPartialView", "for: 15m", "for: 16m"},
		{"VethExporterPartialView", "avg_over_time(", "min_over_time("},
		{"VethExporterPartialView", "avg_over_time(", "max_over_time("},
		{"VethOrphansFleetWide", ") > 0.25", ") > 0.4"},
		{"VethOrphansFleetWide", ") > 0.25", ") >= 0.25"},
		{"VethOrphansFleetWide", ") >= 3", ") >= 4"},
		{"VethOrphansFleetWide", ") >= 3", ") >= 2"},
		{"VethOrphansFleetWide", "keep_firing_for: 1h", "keep_firing_for: 30m"},
		{"VethRemediationFailing", "[15m]) > 0", "[10m]) > 0"},
		{"VethRemediationFailing", "offset 15m", "offset 10m"},
		{"VethRemediationFailing", `increase(veth_remediation_actions_total{result="failed"}`, `increase(veth_remediation_actions_total{result=~"failed|refused"}`},
		{"VethRemediationFailing", "\n          or\n", "\n          and\n"},
		{"VethRemediationOtherNode", "for: 15m", "for: 14m"},
		{"VethRemediationOtherNode", "for: 15m", "for: 16m"},
		{"VethRemediationOtherNode", "[1h])) > 0\n            unless", "[30m])) > 0\n            unless"},
		{"VethRemediationOtherNode", `{result!="skipped"}`, `{}`},
		{"VethRemediationOtherNode", `sum without (result, method) (increase(veth_remediation_actions_total{result!="skipped"}[1h])) > 0`, `sum without (result, method) (increase(veth_remediation_actions_total{result="deleted"}[1h])) > 0`},
		{"VethRemediationOtherNode", "\n            unless\n", "\n            and\n"},
		{"VethRemediationOtherNode", "sum without (reason)", "sum"},
		{"VethAddressRangeExhausting", "for: 5m", "for: 4m"},
		{"VethAddressRangeExhausting", "for: 5m", "for: 6m"},
		{"VethAddressRangeExhausting", "< 0.1 *", "< 0.2 *"},
		{"VethAddressRangeExhausting", "< 0.1 *", "< 0.05 *"},
		{"VethAddressRangeExhausting", `{state="leaked"}) > 0`, `{state="leaked"}) >= 0`},
		{"VethAddressRangeExhausting", "sum without (state) (veth_cni_ipam_addresses)", `sum without (state) (veth_cni_ipam_addresses{state!="unknown"})`},
		{"VethAddressRangeExhausting", "and on (instance, job, network, range)", "and on (network, range)"},
	}
	// The copy, untouched, must pass: otherwise every mutant would fail for
	// a reason of its own (a path, a layout) and prove nothing.
	t.Run("unchanged", func(t *testing.T) {
		dir := layout(t, string(original))
		args := []string{"test", "rules"}
		for _, path := range testFiles(t) {
			args = append(args, filepath.Join(dir, path))
		}
		if out, err := run(t, pt, args...); err != nil {
			t.Fatalf("promtool test rules on the copy in %s: %v\n%s", dir, err, out)
		}
	})
	for _, m := range mutants {
		t.Run(m.alert+"/"+m.old+"->"+m.new, func(t *testing.T) {
			t.Parallel()
			broken, err := rulestest.Rewrite(string(original), m.alert, m.old, m.new)
			if err != nil {
				t.Fatal(err)
			}
			dir := layout(t, broken)
			if out, err := run(t, pt, "check", "rules", filepath.Join(dir, rulesFile)); err != nil {
				t.Fatalf("the broken copy is not a valid rule file, so it proves nothing: %v\n%s", err, out)
			}
			out, err := run(t, pt, "test", "rules", filepath.Join(dir, testFileFor(m.alert)))
			if err == nil {
				t.Errorf("%s passes with %s in %s changed to %s:\n%s", testFileFor(m.alert), m.old, m.alert, m.new, out)
			}
		})
	}
}

// layout writes rules and a copy of the test files into a temporary
// directory, laid out as here: the tests name ../veth_exporter.rules.yml, so
// they read that copy.
func layout(t *testing.T, rules string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, rulesFile), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, testsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, path := range testFiles(t) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// amExample is the part of an Alertmanager example these tests read.
type amExample struct {
	Route        amRoute         `yaml:"route"`
	Receivers    []amReceiver    `yaml:"receivers"`
	InhibitRules []amInhibitRule `yaml:"inhibit_rules"`
}

type amInhibitRule struct {
	SourceMatchers []string `yaml:"source_matchers"`
	TargetMatchers []string `yaml:"target_matchers"`
	Equal          []string `yaml:"equal"`
}

type amReceiver struct {
	Name           string `yaml:"name"`
	WebhookConfigs []struct {
		URL          string `yaml:"url"`
		SendResolved *bool  `yaml:"send_resolved"`
		MaxAlerts    int    `yaml:"max_alerts"`
		HTTPConfig   struct {
			Authorization *struct {
				Type            string `yaml:"type"`
				CredentialsFile string `yaml:"credentials_file"`
			} `yaml:"authorization"`
			BasicAuth *struct {
				Username     string `yaml:"username"`
				PasswordFile string `yaml:"password_file"`
			} `yaml:"basic_auth"`
			TLSConfig struct {
				CAFile string `yaml:"ca_file"`
			} `yaml:"tls_config"`
		} `yaml:"http_config"`
	} `yaml:"webhook_configs"`
}

type amRoute struct {
	Receiver       string    `yaml:"receiver"`
	Matchers       []string  `yaml:"matchers"`
	GroupBy        []string  `yaml:"group_by"`
	GroupWait      string    `yaml:"group_wait"`
	GroupInterval  string    `yaml:"group_interval"`
	RepeatInterval string    `yaml:"repeat_interval"`
	Routes         []amRoute `yaml:"routes"`
}

// amExamples are the Alertmanager examples: one webhook URL templated
// from the alert's instance (Alertmanager 0.31 and later), and one route
// and receiver per node with a literal URL each (older ones).
var amExamples = []struct {
	path      string
	templated bool
}{
	{amConfig, true},
	{amPerNodeConfig, false},
}

// instanceMatcherRE is a route's matcher on the instance label.
var instanceMatcherRE = regexp.MustCompile(`^instance\s*(=~|!~|!=|=)\s*"?([^"]*)"?$`)

// vethOrphanedRoutes returns the routes that send VethOrphaned somewhere.
func vethOrphanedRoutes(c *amExample) []amRoute {
	var routes []amRoute
	for _, r := range c.Route.Routes {
		if slices.Contains(r.Matchers, "alertname = VethOrphaned") {
			routes = append(routes, r)
		}
	}
	return routes
}

// checkAlertmanagerExample returns what the webhook would miss in an
// Alertmanager example: VethOrphaned routed to it one device at a time,
// each node's alerts to that node's exporter (the templated URL, or a
// route matching exactly one instance whose receiver's URL is that
// instance), resolved alerts never sent, a cap on alerts per request,
// authentication, TLS, and VethOrphaned held back while
// VethOrphansFleetWide fires for its job.
func checkAlertmanagerExample(config []byte, templated bool) []string {
	var c amExample
	if err := yaml.Unmarshal(config, &c); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	routes := vethOrphanedRoutes(&c)
	switch {
	case len(routes) == 0:
		return []string{"no route matching alertname = VethOrphaned"}
	case templated && len(routes) != 1:
		fail("%d VethOrphaned routes, want the one with the templated URL", len(routes))
	}
	// The lease alert, where it is routed (the templated example): to the
	// same receiver, one range at a time, held until the webhook takes it.
	for _, r := range c.Route.Routes {
		if !slices.Contains(r.Matchers, "alertname = VethAddressRangeExhausting") {
			continue
		}
		if !templated {
			fail("a VethAddressRangeExhausting route in the per-node example: each would need its node's instance matcher")
		}
		if !slices.Equal(r.GroupBy, []string{"instance", "network", "range"}) {
			fail("VethAddressRangeExhausting route: group_by = %q, want [instance network range]", r.GroupBy)
		}
		if len(routes) > 0 && (r.Receiver != routes[0].Receiver || r.GroupWait != routes[0].GroupWait) {
			fail("VethAddressRangeExhausting route: receiver %s, group_wait %s; want VethOrphaned's (%s, %s)",
				r.Receiver, r.GroupWait, routes[0].Receiver, routes[0].GroupWait)
		}
	}
	if !slices.ContainsFunc(c.InhibitRules, func(r amInhibitRule) bool {
		return slices.Equal(r.SourceMatchers, []string{"alertname = VethOrphansFleetWide"}) &&
			slices.Equal(r.TargetMatchers, []string{"alertname = VethOrphaned"}) && slices.Equal(r.Equal, []string{"job"})
	}) {
		fail("no inhibit rule holding back VethOrphaned (equal: [job]) while VethOrphansFleetWide fires")
	}
	receivers := map[string]amReceiver{}
	for _, rc := range c.Receivers {
		receivers[rc.Name] = rc
	}
	instances := map[string]bool{}
	for i, route := range routes {
		name := fmt.Sprintf("VethOrphaned route %d (receiver %s)", i+1, route.Receiver)
		if !slices.Equal(route.GroupBy, []string{"instance", "device"}) {
			fail("%s: group_by = %q, want [instance device]", name, route.GroupBy)
		}
		// The credential must not cross the network in clear text.
		wantURL := "https://" + amURLTemplate + "/remediate"
		if !templated {
			var instance []string
			for _, m := range route.Matchers {
				if sm := instanceMatcherRE.FindStringSubmatch(m); sm != nil {
					instance = sm
				} else if strings.HasPrefix(m, "instance") {
					fail("%s: matcher %q: want instance = \"host:port\"", name, m)
				}
			}
			switch {
			case instance == nil || instance[1] != "=" || instance[2] == "":
				fail("%s: matchers %q: want exactly one node, instance = \"host:port\"", name, route.Matchers)
				continue
			case instances[instance[2]]:
				fail("%s: a second route for instance %s: it never matches", name, instance[2])
			}
			instances[instance[2]] = true
			wantURL = "https://" + instance[2] + "/remediate"
		}
		rc, ok := receivers[route.Receiver]
		if !ok {
			fail("%s: no receiver %q", name, route.Receiver)
			continue
		}
		if len(rc.WebhookConfigs) != 1 {
			fail("receiver %s: %d webhook_configs, want 1", rc.Name, len(rc.WebhookConfigs))
			continue
		}
		w := rc.WebhookConfigs[0]
		if w.URL != wantURL {
			fail("receiver %s: url = %q, want %q", rc.Name, w.URL, wantURL)
		}
		if w.HTTPConfig.TLSConfig.CAFile == "" {
			fail("receiver %s: no tls_config.ca_file to verify the exporters' certificates", rc.Name)
		}
		if w.SendResolved == nil || *w.SendResolved {
			fail("receiver %s: send_resolved must be false", rc.Name)
		}
		if w.MaxAlerts <= 0 {
			fail("receiver %s: max_alerts = %d, want a limit", rc.Name, w.MaxAlerts)
		}
		if a := w.HTTPConfig.Authorization; (a == nil || a.CredentialsFile == "") && w.HTTPConfig.BasicAuth == nil {
			fail("receiver %s: no authorization credentials_file nor basic_auth", rc.Name)
		}
	}
	return problems
}

// TestAlertmanagerExample checks both Alertmanager examples.
func TestAlertmanagerExample(t *testing.T) {
	for _, ex := range amExamples {
		b, err := os.ReadFile(ex.path)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range checkAlertmanagerExample(b, ex.templated) {
			t.Errorf("%s: %s", ex.path, p)
		}
	}
}

// TestAlertmanagerExamplesAgree wants the per-node example to route and
// deliver exactly as the templated one, node by node.
func TestAlertmanagerExamplesAgree(t *testing.T) {
	var templated, perNode amExample
	readYAML(t, amConfig, &templated)
	readYAML(t, amPerNodeConfig, &perNode)
	want := vethOrphanedRoutes(&templated)
	if len(want) != 1 {
		t.Fatalf("%s: %d VethOrphaned routes, want 1", amConfig, len(want))
	}
	routes := vethOrphanedRoutes(&perNode)
	if len(routes) < 2 {
		t.Errorf("%s: %d VethOrphaned routes, want one per node for at least two", amPerNodeConfig, len(routes))
	}
	receiverOf := func(c *amExample, name string) amReceiver {
		for _, rc := range c.Receivers {
			if rc.Name == name {
				return rc
			}
		}
		return amReceiver{}
	}
	wantReceiver := receiverOf(&templated, want[0].Receiver)
	for _, r := range routes {
		if r.GroupWait != want[0].GroupWait || r.GroupInterval != want[0].GroupInterval || r.RepeatInterval != want[0].RepeatInterval {
			t.Errorf("%s: route to %s: group_wait/group_interval/repeat_interval %s/%s/%s, want %s/%s/%s as in %s", amPerNodeConfig, r.Receiver,
				r.GroupWait, r.GroupInterval, r.RepeatInterval, want[0].GroupWait, want[0].GroupInterval, want[0].RepeatInterval, amConfig)
		}
		rc := receiverOf(&perNode, r.Receiver)
		if len(rc.WebhookConfigs) != 1 || len(wantReceiver.WebhookConfigs) != 1 {
			continue // TestAlertmanagerExample reports it
		}
		got, w := rc.WebhookConfigs[0], wantReceiver.WebhookConfigs[0]
		got.URL, w.URL = "", ""
		if !reflect.DeepEqual(got, w) {
			t.Errorf("%s: receiver %s: %+v, want the settings of %s: %+v", amPerNodeConfig, rc.Name, got, amConfig, w)
		}
	}
}

// TestAlertmanagerExampleCatchesMistakes breaks each example in ways that
// would send an alert to the wrong node, in clear text, or in bulk, and
// wants checkAlertmanagerExample to say so.
func TestAlertmanagerExampleCatchesMistakes(t *testing.T) {
	mutants := []struct {
		path, old, new string
	}{
		{amConfig, "url: 'https://{{ .GroupLabels.instance }}/remediate'", "url: 'http://{{ .GroupLabels.instance }}/remediate'"},
		{amConfig, "url: 'https://{{ .GroupLabels.instance }}/remediate'", "url: 'https://node1.example:9750/remediate'"},
		{amConfig, "      group_by: [instance, device]", "      group_by: [instance]"},
		{amConfig, "        send_resolved: false", "        send_resolved: true"},
		{amConfig, "            ca_file: /etc/alertmanager/veth-exporter-ca.pem", ""},
		{amConfig, "      - alertname = VethOrphansFleetWide", "      - alertname = VethOrphansAccumulating"},
		{amConfig, "    equal: [job]", "    equal: [instance]"},
		{amConfig, "      group_by: [instance, network, range]", "      group_by: [instance]"},
		{amConfig, "        - alertname = VethAddressRangeExhausting\n      group_by: [instance, network, range]\n      group_wait: 16m",
			"        - alertname = VethAddressRangeExhausting\n      group_by: [instance, network, range]\n      group_wait: 30s"},
		{amPerNodeConfig, "      - alertname = VethOrphansFleetWide", "      - alertname = VethOrphansAccumulating"},
		{amPerNodeConfig, "url: https://node2.example:9750/remediate", "url: https://node1.example:9750/remediate"},
		{amPerNodeConfig, "url: https://node2.example:9750/remediate", "url: http://node2.example:9750/remediate"},
		{amPerNodeConfig, "url: https://node2.example:9750/remediate", "url: 'https://{{ .GroupLabels.instance }}/remediate'"},
		{amPerNodeConfig, "        - instance = \"node2.example:9750\"\n", ""},
		{amPerNodeConfig, "instance = \"node2.example:9750\"", "instance =~ \"node2.*\""},
		{amPerNodeConfig, "instance = \"node2.example:9750\"", "instance = \"node1.example:9750\""},
		{amPerNodeConfig, "    - receiver: veth-remediate-node2", "    - receiver: veth-remediate-node3"},
		{amPerNodeConfig, "remediate\n        send_resolved: false\n        max_alerts: 50\n        http_config:\n          authorization:\n            type: Bearer\n            credentials_file: /etc/alertmanager/veth-remediate.token\n          tls_config:\n            ca_file: /etc/alertmanager/veth-exporter-ca.pem\n",
			"remediate\n        send_resolved: false\n        max_alerts: 50\n"},
	}
	for _, m := range mutants {
		old, _, _ := strings.Cut(strings.TrimSpace(m.old), "\n")
		t.Run(filepath.Base(m.path)+"/"+old, func(t *testing.T) {
			b, err := os.ReadFile(m.path)
			if err != nil {
				t.Fatal(err)
			}
			if n := bytes.Count(b, []byte(m.old)); n < 1 {
				t.Fatalf("%s holds no %q", m.path, m.old)
			}
			// The last occurrence: node2's part of the per-node example.
			i := bytes.LastIndex(b, []byte(m.old))
			broken := append(append(append([]byte{}, b[:i]...), m.new...), b[i+len(m.old):]...)
			// Still an Alertmanager configuration: the check, not the
			// parser, must refuse it.
			var c amExample
			if err := yaml.Unmarshal(broken, &c); err != nil {
				t.Fatalf("the broken copy does not parse, so it proves nothing: %v", err)
			}
			templated := m.path == amConfig
			if problems := checkAlertmanagerExample(broken, templated); len(problems) == 0 {
				t.Errorf("%s with %q changed to %q passes", m.path, m.old, m.new)
			}
		})
	}
}

// TestAmtoolCheckConfig validates the Alertmanager example with amtool. An
// amtool older than 0.31 rejects the templated URL: then a copy with a
// literal URL is checked instead, which covers everything else.
func TestAmtoolCheckConfig(t *testing.T) {
	amtool := tool(t, "amtool", "prometheus-alertmanager")
	config, err := os.ReadFile(amConfig)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(config, []byte(amURLTemplate)) {
		t.Fatalf("%s: no %s in the webhook URL", amConfig, amURLTemplate)
	}
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe.yml")
	if err := os.WriteFile(probe, []byte(`route: {receiver: r}
receivers: [{name: r, webhook_configs: [{url: 'http://`+amURLTemplate+`/x'}]}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	path := amConfig
	if out, err := run(t, amtool, "check-config", probe); err != nil {
		t.Logf("amtool takes no templated webhook URL (Alertmanager < 0.31): checking a copy with http://%s/remediate\n%s", literalURL, out)
		path = filepath.Join(dir, "alertmanager.yml")
		if err := os.WriteFile(path, bytes.ReplaceAll(config, []byte(amURLTemplate), []byte(literalURL)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := run(t, amtool, "check-config", path); err != nil {
		t.Fatalf("amtool check-config %s: %v\n%s", path, err, out)
	}
}

// TestAmtoolCheckConfigPerNode validates the per-node example with amtool
// as it is: it is for the Alertmanagers that template no URL, so any
// amtool must take it.
func TestAmtoolCheckConfigPerNode(t *testing.T) {
	amtool := tool(t, "amtool", "prometheus-alertmanager")
	config, err := os.ReadFile(amPerNodeConfig)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(config, []byte("{{")) {
		t.Errorf("%s: a template, which Alertmanager before 0.31 does not expand in a webhook URL", amPerNodeConfig)
	}
	if out, err := run(t, amtool, "check-config", amPerNodeConfig); err != nil {
		t.Fatalf("amtool check-config %s: %v\n%s", amPerNodeConfig, err, out)
	}
}
