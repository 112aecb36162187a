package validate

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// committedRule is the generated PrometheusRule, as committed.
const committedRule = manifestsDir + "/base/prometheusrule.yaml"

// checkDrift says whether committed is what `make kubernetes` generates
// from rules.
func checkDrift(rules, committed []byte) error {
	want, err := PrometheusRule(rules)
	if err != nil {
		return err
	}
	if !bytes.Equal(committed, want) {
		return errDrift
	}
	return nil
}

type driftError struct{}

func (driftError) Error() string {
	return "deploy/kubernetes/base/prometheusrule.yaml differs from what " + RulesSource + " generates: run `make kubernetes`"
}

var errDrift error = driftError{}

// TestPrometheusRuleUpToDate fails when alerts/ changed and the
// PrometheusRule was not generated again.
func TestPrometheusRuleUpToDate(t *testing.T) {
	committed, err := os.ReadFile(committedRule)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkDrift(readRules(t), committed); err != nil {
		t.Fatal(err)
	}
}

// TestPrometheusRuleDrift wants checkDrift to notice a rule changed on
// either side, and PrometheusRule to refuse a rule file the operator's
// types cannot carry.
func TestPrometheusRuleDrift(t *testing.T) {
	rules := readRules(t)
	committed, err := os.ReadFile(committedRule)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name            string
		rules, manifest []byte
		want            string
	}{
		{"alert threshold changed in alerts/", replaceOnce(t, rules, "> 20", "> 25"), committed, "make kubernetes"},
		{"alert renamed in alerts/", replaceOnce(t, rules, "alert: VethOrphansAccumulating", "alert: VethOrphansPilingUp"), committed, "make kubernetes"},
		{"comment changed in the manifest", rules, replaceOnce(t, committed, "# One alert per orphaned veth.", "# An alert per orphaned veth."), "make kubernetes"},
		{"unknown rule field in alerts/", replaceOnce(t, rules, "        for: 30m", "        for: 30m\n        fore: 30m"), committed, "unknown field"},
		{"second document in alerts/", append(append([]byte{}, rules...), "---\ngroups: []\n"...), committed, "single YAML document"},
		{"no groups in alerts/", []byte("groups: []\n"), committed, "no rule groups"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkDrift(c.rules, c.manifest)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("checkDrift = %v, want an error saying %q", err, c.want)
			}
		})
	}
}

// TestGenerator runs the generator's command on a copy.
func TestGenerator(t *testing.T) {
	out := filepath.Join(t.TempDir(), "prometheusrule.yaml")
	if err := os.WriteFile(out, []byte("stale\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	goRun(t, "./cmd/prometheusrule", "-rules", filepath.Join(repoRoot, RulesSource), "-out", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkDrift(readRules(t), got); err != nil {
		t.Errorf("the generator's output: %v", err)
	}
}

func replaceOnce(t *testing.T, b []byte, old, repl string) []byte {
	t.Helper()
	if n := bytes.Count(b, []byte(old)); n != 1 {
		t.Fatalf("%q occurs %d times, want once", old, n)
	}
	return bytes.Replace(b, []byte(old), []byte(repl), 1)
}
