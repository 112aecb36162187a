package main

import (
	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/resolver/cri"
	"github.com/veth-exporter/veth_exporter/resolver/docker"
	"github.com/veth-exporter/veth_exporter/resolver/podman"
)

// runtimes are the runtime resolvers, each one line, in the order their
// claims are weighed: the first of equally strong claims wins. Adding a
// runtime is its package and its line here (see "Adding a runtime" in
// the README).
var runtimes = []inventory.Registration{
	// CRI first: where Docker runs the pods (cri-dockerd) both claim a
	// pod's namespace running, and only CRI knows the pod's name and
	// namespace. Everywhere else at most one of them claims it.
	cri.Registration,
	cri.CRIORegistration,
	docker.Registration,
	podman.Registration,
}
