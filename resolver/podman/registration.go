package podman

import (
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// Registration is the Podman resolver's, for the command's list of
// runtime resolvers.
var Registration = inventory.Registration{
	Name: Name,
	Help: "Resolve owners through Podman's REST API (container and pod names, exited and crashed containers, Podman networks). " +
		"Needs the API service (podman.socket, or `podman system service`); never runs podman.",
	AddressFlag: "host",
	AddressHelp: "Podman REST API address, unix:///path or tcp://host:port.",
	Addresses:   []string{DefaultHost},
	Timeout:     5 * time.Second,
	TimeoutHelp: "What one inventory may spend asking Podman; a service slower than that counts as down for that scrape.",
	NetnsDirs:   NetnsDirs,
	Pins:        Pins,
	Cgroups:     []inventory.CgroupNaming{Cgroups},
	New: func(o inventory.ResolverOptions) (inventory.Resolver, error) {
		pm, err := New(o.Address, o.Timeout, o.Logger)
		if err != nil {
			return nil, err
		}
		pm.name = o.Name
		return pm, nil
	},
}
