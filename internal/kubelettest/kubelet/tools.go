//go:build tools

// Package kubelet pins the kubelet that internal/kubelettest runs: nothing
// imports this file without the tools tag, and `go mod tidy` (which sees every
// tag) keeps k8s.io/kubernetes required because of it. Never delete it.
package kubelet

import _ "k8s.io/kubernetes/cmd/kubelet"
