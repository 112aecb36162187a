package inventory

import (
	"log/slog"
	"path"
	"regexp"
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
	// Pins are the nsfs mounts by which the runtime's namespaces are known
	// whether or not its resolver runs: while it does not, a namespace
	// pinned there is the runtime's to decide (resolver_off).
	Pins []NetnsPin
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

// UUIDPattern matches a UUID as runtimes write it in the names of their
// namespace pins (lower-case hex, 8-4-4-4-12), for [NetnsPin.Name].
const UUIDPattern = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`

// NetnsPin is how a runtime pins its namespaces with nsfs mounts: in Dir,
// as mountinfo shows it (/run, not /var/run), under the base names Name
// matches (anchor it: ^…$), or under any name when Name is nil. A
// directory that only the runtime uses (Docker's /run/docker/netns) needs
// no Name. One it shares with `ip netns` and other runtimes (/run/netns)
// does: there the runtime's naming is the only sign that a pin is its
// (containerd's cni-<uuid>, Podman's netns-<uuid>), and a pin no runtime's
// naming matches is nobody's to decide but the evidence's.
type NetnsPin struct {
	Dir  string
	Name *regexp.Regexp
}

// Pins reports whether the nsfs mount at mount is one of p's.
func (p NetnsPin) Pins(mount string) bool {
	return path.Dir(mount) == p.Dir && (p.Name == nil || p.Name.MatchString(path.Base(mount)))
}

// RuntimeSetup is one registered runtime resolver as the command set it
// up: whether it runs, why, and where its runtime pins namespaces.
type RuntimeSetup struct {
	// Name is the registration's.
	Name string `json:"name"`
	// Enabled: the resolver runs, as one of [Config.Resolvers]. Whether
	// its runtime answers is its step's success.
	Enabled bool `json:"enabled"`
	// Why says why the resolver is on or off, for people: "socket missing
	// at /var/run/docker.sock", "off by --no-collector.docker".
	Why string `json:"why"`
	// Pins are the registration's.
	Pins []NetnsPin `json:"-"`
}
