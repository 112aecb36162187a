package node

import (
	"path/filepath"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/critest"
)

// TestChartPod runs the Helm chart's pod, as `helm install` renders it
// with its defaults (monitoring only), on the node: it is Ready, confined
// as rendered, every collector succeeds and a workload pod's veth is
// owned. The test's changes: the image tag of the node's image (the one
// the kustomizations name, built from the Dockerfile) instead of the
// chart's appVersion, and VETH_EXPORTER_INVENTORY_TRUST_PID_NAMESPACE (see
// exporterPod).
func TestChartPod(t *testing.T) {
	n := startNode(t, critest.Options{}, "bb-1")
	r, err := RenderChart(filepath.Join(repoRoot, "charts/veth-exporter"), "veth-exporter", "veth-exporter",
		map[string]any{"image": map[string]any{"repository": "veth-exporter", "tag": "local"}})
	if err != nil {
		t.Fatal(err)
	}
	pod, manifest := renderedPod(t, r, nil, true)
	n.WritePod(t, exporterFile, manifest)
	checkConfinement(t, n, pod, n.WaitReady(t, pod.Namespace, pod.Name, podTimeout))
	bb := n.Sandbox(t, n.WaitReady(t, workload, "bb-1", podTimeout))
	m := plainClient().waitMetrics(t, "bb-1's veth owned", podTimeout, func(m string) bool { return verdicts(m)[bb.Veth] == "owned/pod" })
	for _, c := range []string{"cri", "cni", "cgroup", "netns", "state"} {
		if v, ok := sample(m, `veth_scrape_collector_success{collector="`+c+`"}`); !ok || v != 1 {
			t.Errorf("collector %s: success %v (listed: %v), want 1", c, v, ok)
		}
	}
}
