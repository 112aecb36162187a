// Package validate checks the Kubernetes manifests in deploy/kubernetes
// offline, and generates the PrometheusRule there from alerts/.
//
// It is a module of its own so that the exporter's module, and its binary,
// never depend on Kubernetes: its tests decode every manifest, as written
// and as kustomize renders the base and the remediation overlay, strictly
// into the real Go types of Kubernetes (k8s.io/api) and prometheus-operator
// (an unknown or misspelt field is an error, as it is for the API server),
// then check what the exporter relies on: the flags the binary accepts, the
// host namespaces, the mounts, the capabilities and the probes. It never
// talks to a cluster; its package node runs the rendered pods on a real
// kubelet of the test's own (internal/kubelettest).
package validate
