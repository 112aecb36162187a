// Command prometheusrule writes deploy/kubernetes/base/prometheusrule.yaml from
// alerts/veth_exporter.rules.yml (`make kubernetes` runs it).
//
//	go run ./cmd/prometheusrule -rules ../../../alerts/veth_exporter.rules.yml -out ../base/prometheusrule.yaml
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/veth-exporter/veth_exporter/deploy/kubernetes/validate"
)

func main() {
	rulesPath := flag.String("rules", "../../../"+validate.RulesSource, "Prometheus rule file to read.")
	out := flag.String("out", "../base/prometheusrule.yaml", "PrometheusRule manifest to write.")
	flag.Parse()
	if err := run(*rulesPath, *out); err != nil {
		fmt.Fprintln(os.Stderr, "prometheusrule:", err)
		os.Exit(1)
	}
}

func run(rulesPath, out string) error {
	rules, err := os.ReadFile(rulesPath)
	if err != nil {
		return err
	}
	manifest, err := validate.PrometheusRule(rules)
	if err != nil {
		return err
	}
	return os.WriteFile(out, manifest, 0o644)
}
