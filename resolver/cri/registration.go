package cri

import (
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// Registration is the CRI resolver's, for the command's list of runtime
// resolvers: the first existing socket of containerd and cri-dockerd.
var Registration = inventory.Registration{
	Name:        Name,
	Help:        "Resolve owners through the Kubernetes CRI API (pod namespace, name and UID of each sandbox, ready or not).",
	AddressFlag: "endpoint",
	AddressHelp: "CRI runtime socket, unix:///path (default: the first existing of " + strings.Join(endpoints, ", ") + ").",
	Addresses:   endpoints,
	Timeout:     5 * time.Second,
	TimeoutHelp: "What one inventory may spend asking the CRI runtime; a runtime slower than that counts as down for that scrape.",
	NetnsDirs:   NetnsDirs,
	Pins:        Pins,
	Cgroups:     []inventory.CgroupNaming{Cgroups},
	New:         open,
}

// endpoints are the sockets of the CRI runtimes of [Registration], in
// the order its default endpoint is chosen: containerd, cri-dockerd.
var endpoints = []string{
	"unix:///run/containerd/containerd.sock",
	"unix:///var/run/cri-dockerd.sock",
}

// CRIORegistration is CRI-O's: a CRI resolver of its own, "crio", so that
// a node can run CRI-O beside another CRI runtime (containerd for a
// Docker, a migration) and each is asked.
var CRIORegistration = inventory.Registration{
	Name:        "crio",
	Help:        "Resolve owners through CRI-O's Kubernetes CRI API (pod namespace, name and UID of each sandbox, ready or not).",
	AddressFlag: "endpoint",
	AddressHelp: "CRI-O's socket, unix:///path.",
	Addresses:   []string{"unix:///run/crio/crio.sock"},
	Timeout:     5 * time.Second,
	TimeoutHelp: "What one inventory may spend asking CRI-O; a runtime slower than that counts as down for that scrape.",
	NetnsDirs:   NetnsDirs,
	Pins:        CRIOPins,
	Cgroups:     []inventory.CgroupNaming{CRIOCgroups},
	New:         open,
}

// open opens a CRI resolver for a registration.
func open(o inventory.ResolverOptions) (inventory.Resolver, error) {
	c, err := New(o.Address, o.Timeout, o.Logger)
	if err != nil {
		return nil, err
	}
	c.name = o.Name
	if o.Autodetected {
		// On because a socket exists: Docker's containerd has one and no
		// CRI plugin, which is no failure of a Docker node.
		c.QuietWithoutCRI()
	}
	return c, nil
}
