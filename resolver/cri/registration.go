package cri

import (
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// Registration is the CRI resolver's, for the command's list of runtime
// resolvers: the first existing socket of containerd, CRI-O and
// cri-dockerd.
var Registration = inventory.Registration{
	Name:        Name,
	Help:        "Resolve owners through the Kubernetes CRI API (pod namespace, name and UID of each sandbox, ready or not).",
	AddressFlag: "endpoint",
	AddressHelp: "CRI runtime socket, unix:///path (default: the first existing of " + strings.Join(endpoints, ", ") + ").",
	Addresses:   endpoints,
	Timeout:     5 * time.Second,
	TimeoutHelp: "What one inventory may spend asking the CRI runtime; a runtime slower than that counts as down for that scrape.",
	NetnsDirs:   NetnsDirs,
	Cgroups:     []inventory.CgroupNaming{Cgroups, CRIOCgroups},
	New:         open,
}

// endpoints are the sockets of the CRI runtimes, in the order the default
// endpoint is chosen: containerd, CRI-O, cri-dockerd.
var endpoints = []string{
	"unix:///run/containerd/containerd.sock",
	"unix:///run/crio/crio.sock",
	"unix:///var/run/cri-dockerd.sock",
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
