package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	committed = "../veth-exporter.json"
	rules     = "../../alerts/veth_exporter.rules.yml"
)

// TestCommittedDashboard fails while dashboards/veth-exporter.json is not
// what this generator writes: edit dashboard.go, then `make dashboards`.
func TestCommittedDashboard(t *testing.T) {
	want, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the generated dashboard: run `make dashboards` and commit it", committed)
	}
}

// grafanaVariables are the values Grafana gives the template variables:
// All of $job, $instance and $master is .*, and $__rate_interval and
// $__interval (a query's step) durations.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "15s",
	"$job", ".*",
	"$instance", ".*",
	"$master", ".*",
)

// expression is one PromQL expression of the dashboard or the rules.
type expression struct{ where, expr string }

// dashboardExpressions are the expressions of every panel's targets and
// of the query variables, as Grafana would send them.
func dashboardExpressions(t *testing.T) []expression {
	t.Helper()
	b, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var exprs []expression
	for _, p := range d.Panels {
		for _, target := range p.Targets {
			exprs = append(exprs, expression{"panel " + p.Title, grafanaVariables.Replace(target.Expr)})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		s, _ := v.Query.(string)
		// label_values(selector, label) is Grafana's, not PromQL: its
		// selector is.
		sel, ok := strings.CutPrefix(s, "label_values(")
		i := strings.LastIndex(sel, ",")
		if !ok || i < 0 {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, s)
			continue
		}
		exprs = append(exprs, expression{"variable " + v.Name, grafanaVariables.Replace(sel[:i])})
	}
	if len(exprs) < 15 {
		t.Fatalf("%d expressions in %s, want every panel's", len(exprs), committed)
	}
	return exprs
}

// TestExpressionsParse: every PromQL expression of the dashboard and of
// the alert rules parses with the Prometheus parser.
func TestExpressionsParse(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(rules, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", rules, err)
	}
	exprs := dashboardExpressions(t)
	if groups != nil {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				exprs = append(exprs, expression{"rule " + r.Alert + r.Record, r.Expr})
			}
		}
	}
	for _, e := range exprs {
		if _, err := p.ParseExpr(e.expr); err != nil {
			t.Errorf("%s: %q: %v", e.where, e.expr, err)
		} else {
			t.Logf("parses: %s", e.where)
		}
	}
}

// TestMixinConventions: the monitoring-mixin habits the dashboard keeps.
func TestMixinConventions(t *testing.T) {
	b, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr       string `json:"expr"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
			FieldConfig struct {
				Defaults struct {
					Unit string `json:"unit"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Links []struct {
			URL string `json:"url"`
		} `json:"links"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	variables := map[string]string{}
	for _, v := range d.Templating.List {
		variables[v.Name] = v.Type
	}
	for name, typ := range map[string]string{"datasource": "datasource", "job": "query", "instance": "query", "master": "query"} {
		if variables[name] != typ {
			t.Errorf("variable $%s is %q, want a %s variable", name, variables[name], typ)
		}
	}
	if len(d.Links) == 0 || !strings.HasPrefix(d.Links[0].URL, "https://github.com/veth-exporter/veth_exporter#runbook-") {
		t.Errorf("dashboard links %v, want one to the README's runbooks", d.Links)
	}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource uid %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("panel %q has no unit", p.Title)
		}
		for _, target := range p.Targets {
			if target.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: target datasource uid %q, want ${datasource}", p.Title, target.Datasource.UID)
			}
			if strings.Contains(target.Expr, "[") && !strings.Contains(target.Expr, "[$__rate_interval]") {
				t.Errorf("panel %q: %q has a range that is not $__rate_interval", p.Title, target.Expr)
			}
			for _, v := range []string{`job=~"$job"`, `instance=~"$instance"`} {
				if !strings.Contains(target.Expr, v) {
					t.Errorf("panel %q: %q does not select %s", p.Title, target.Expr, v)
				}
			}
		}
	}
}
