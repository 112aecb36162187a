package docker

import (
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// Registration is the Docker resolver's, for the command's list of
// runtime resolvers.
var Registration = inventory.Registration{
	Name:        Name,
	Help:        "Resolve owners through the Docker Engine API (container names, exited containers, Docker networks).",
	AddressFlag: "host",
	AddressHelp: "Docker Engine API address, unix:///path or tcp://host:port (default: $DOCKER_HOST, else Docker's socket).",
	Addresses:   []string{"unix:///var/run/docker.sock"},
	AddressEnv:  "DOCKER_HOST",
	Timeout:     5 * time.Second,
	TimeoutHelp: "What one inventory may spend asking Docker; a daemon slower than that counts as down for that scrape.",
	NetnsDirs:   NetnsDirs,
	Pins:        Pins,
	Cgroups:     []inventory.CgroupNaming{Cgroups},
	New: func(o inventory.ResolverOptions) (inventory.Resolver, error) {
		d, err := New(o.Address, o.Timeout, o.Logger)
		if err != nil {
			return nil, err
		}
		d.name = o.Name
		return d, nil
	},
}
