package inventory

import (
	"log/slog"
	"time"
)

// Registration describes a runtime resolver to the command that wires it:
// its flags, its defaults, where its runtime pins namespaces, how it
// names cgroups, and how to open it. Each resolver package declares its
// own; the command keeps the one list of them and turns each into
// --[no-]collector.<Name>, --<Name>.<AddressFlag> and --<Name>.timeout.
// Several registrations of one resolver package (a second CRI runtime's
// socket) are several instances, each with its name.
type Registration struct {
	// Name names the instance: its flags, its step in [Snapshot.Steps]
	// (veth_scrape_collector_*{collector="<Name>"}), its key in a
	// snapshot's JSON and its veth_<Name>_api_requests_total.
	Name string
	// Help says what the resolver adds, for --collector.<Name>.
	Help string
	// AddressFlag names the address flag, "host" or "endpoint";
	// AddressHelp says what it takes.
	AddressFlag, AddressHelp string
	// Addresses are the default addresses: the first whose unix socket
	// exists at start-up, else the first.
	Addresses []string
	// AddressEnv names an environment variable that, when set, is the
	// default address instead (DOCKER_HOST).
	AddressEnv string
	// Timeout is the default of --<Name>.timeout; TimeoutHelp says what
	// it bounds.
	Timeout     time.Duration
	TimeoutHelp string
	// NetnsDirs are where the runtime pins its sandboxes' namespaces, as
	// mountinfo shows them: a leftover's pin there is the runtime's, which
	// remediation may release.
	NetnsDirs []string
	// Cgroups are how the runtime names its containers' cgroups, read
	// whether or not the resolver runs.
	Cgroups []CgroupNaming
	// New opens the resolver; it must not contact the runtime.
	New func(ResolverOptions) (Resolver, error)
}

// ResolverOptions are what the command passes to [Registration.New].
type ResolverOptions struct {
	// Name is the registration's.
	Name    string
	Address string
	Timeout time.Duration
	Logger  *slog.Logger
	// Autodetected: the resolver runs because its socket exists, not
	// because a flag asked for it.
	Autodetected bool
}
