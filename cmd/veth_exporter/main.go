// Command veth_exporter inventories the host-side veth interfaces of a
// Docker or Kubernetes node, says who owns each and which are leftovers,
// and exposes it all to Prometheus.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate/cnidel"
	"github.com/veth-exporter/veth_exporter/resolver/cni"
)

const name = "veth_exporter"

// defaultStatePath is --state.path's default: /veths leaves it out of the
// clean commands it shows.
const defaultStatePath = "/var/lib/veth_exporter/state.json"

// inventoryFlags are the flags every command that takes an inventory shares.
type inventoryFlags struct {
	paths          inventory.Paths
	trustPIDNS     bool
	statePath      string
	maxGap         time.Duration
	infrastructure []string
	// runtimes are the flags of each registered runtime resolver, in the
	// order of [runtimes].
	runtimes []runtimeFlags

	cniConfDir  string
	cniCacheDir string
	cniBinDirs  []string

	// opened names the runtime resolvers that open turned on.
	opened []string
}

// runtimeFlags are the flags of one registered runtime resolver.
type runtimeFlags struct {
	reg     inventory.Registration
	on      bool
	set     bool // --[no-]collector.<name> was given
	address string
	timeout time.Duration
}

// nodeFlag registers a global flag that says how this exporter sees its
// node (where /proc, the runtimes' sockets and the state file are). Each
// can also come from the environment, VETH_EXPORTER_<FLAG> (see
// [flagEnvar]): a container sets them there once, and every command run
// in it, `kubectl exec … veth_exporter inspect` included, sees the node as
// the serving process does without repeating a flag. A flag on the command
// line wins over its variable.
func nodeFlag(app *kingpin.Application, name, help string) *kingpin.FlagClause {
	nodeEnvars = append(nodeEnvars, flagEnvar(name))
	return app.Flag(name, help).Envar(flagEnvar(name))
}

// nodeEnvars are the variables of the node flags registered so far.
var nodeEnvars []string

// flagEnvar is the environment variable of a node flag:
// --path.procfs is VETH_EXPORTER_PATH_PROCFS.
func flagEnvar(flag string) string {
	return "VETH_EXPORTER_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(flag))
}

func (f *inventoryFlags) register(app *kingpin.Application) {
	nodeFlag(app, "path.procfs", "procfs mountpoint (the host's /proc when running in a container).").
		Default("/proc").StringVar(&f.paths.Procfs)
	nodeFlag(app, "path.sysfs", "sysfs mountpoint (the host's /sys when running in a container).").
		Default("/sys").StringVar(&f.paths.Sysfs)
	nodeFlag(app, "path.rootfs", "rootfs mountpoint; nsfs mount paths are shown relative to it.").
		Default("/").StringVar(&f.paths.Rootfs)
	nodeFlag(app, "inventory.trust-pid-namespace", "Trust that --path.procfs lists every process that can hold a network namespace "+
		"although it is not the host's PID namespace (a node that is itself a container, such as a kind node). "+
		"Without it such a view is partial and no veth is called orphaned.").
		BoolVar(&f.trustPIDNS)
	nodeFlag(app, "state.path", "State file remembering first-seen, orphaned-since and last owner of each veth across restarts.").
		Default(defaultStatePath).StringVar(&f.statePath)
	nodeFlag(app, "state.max-gap", "After a gap this long between two observations (the exporter stopped, or nobody scraped), "+
		"orphan clocks restart at the next observation; clean refuses a state file not refreshed within it.").
		Default(inventory.DefaultMaxGap.String()).DurationVar(&f.maxGap)
	f.runtimes = make([]runtimeFlags, len(runtimes))
	for i, reg := range runtimes {
		f.runtimes[i].register(app, reg)
	}
	nodeFlag(app, "cni.conf-dir", "CNI configuration directory (read under --path.rootfs): the node's CNI is its first configuration by file name, "+
		"as libcni picks it; veth_cni_info says which and whether its node agent runs. \"\" turns detection off.").
		Default(cni.DefaultConfDir).StringVar(&f.cniConfDir)
	nodeFlag(app, "cni.cache-dir", "libcni result cache (read under --path.rootfs): names the pod of a leftover the exporter never saw owned, "+
		"and counts attachments whose CNI DEL never ran (veth_cni_stale_attachments). \"\" turns it off.").
		Default(cni.DefaultCacheDir).StringVar(&f.cniCacheDir)
	nodeFlag(app, "cni.bin-dir", "Where the CNI plugins' binaries are (read under --path.rootfs), for the CNI DEL that remediation runs for a leaked "+
		"address lease (Debian's containernetworking-plugins: /usr/lib/cni); repeatable.").
		Default(cnidel.DefaultBinDir).StringsVar(&f.cniBinDirs)
	nodeFlag(app, "inventory.infrastructure-device",
		"Regexp (whole name) of veths that live on the host by design and are never orphaned; repeatable, added to the defaults ("+
			strings.Join(inventory.DefaultInfrastructurePatterns, ", ")+").").
		StringsVar(&f.infrastructure)
}

// register adds the flags of the runtime resolver reg: --[no-]collector.<name>
// with the one default-on rule, --<name>.<address flag> and --<name>.timeout.
func (r *runtimeFlags) register(app *kingpin.Application, reg inventory.Registration) {
	r.reg = reg
	nodeFlag(app, "collector."+reg.Name, reg.Help+" "+
		"On by default when its socket exists at start-up; --no-collector."+reg.Name+" turns it off.").
		IsSetByUser(&r.set).BoolVar(&r.on)
	nodeFlag(app, reg.Name+"."+reg.AddressFlag, reg.AddressHelp).Default(defaultAddress(reg)).StringVar(&r.address)
	nodeFlag(app, reg.Name+".timeout", reg.TimeoutHelp).Default(reg.Timeout.String()).DurationVar(&r.timeout)
}

// settleTimeFlag registers --inventory.settle-time on a command that
// gives verdicts over time (serve) or acts on them (clean), with more
// help for that command.
func settleTimeFlag(c *kingpin.CmdClause, more string, d *time.Duration) {
	c.Flag("inventory.settle-time", "How long a veth must look orphaned before it is called orphaned; until then it is unknown, reason settling. "+
		"Runtimes build and tear down container networks in steps that each look like a leftover for a moment."+more).
		Default("30s").DurationVar(d)
}

// defaultAddress is reg's default address: its environment variable's
// value when set, else the first of its addresses whose socket exists,
// else the first.
func defaultAddress(reg inventory.Registration) string {
	if reg.AddressEnv != "" {
		if v := os.Getenv(reg.AddressEnv); v != "" {
			return v
		}
	}
	for _, a := range reg.Addresses {
		if socketExists(a) {
			return a
		}
	}
	if len(reg.Addresses) == 0 {
		return ""
	}
	return reg.Addresses[0]
}

// open builds the inventory these flags describe, and records which
// runtime resolvers it turned on (for the gates' config). A read-only
// state is loaded but never written. The runtime resolvers it returns are the
// caller's to Start and Close.
func (f *inventoryFlags) open(readOnlyState bool, settle time.Duration, logger *slog.Logger) (*inventory.Inventory, []inventory.Resolver, error) {
	inv, resolvers, err := f.openFlags(readOnlyState, settle, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("%w%s", err, environmentNote())
	}
	return inv, resolvers, nil
}

// environmentNote says which node flags came from the environment, for an
// error about a value the operator may not see on the command line.
func environmentNote() string {
	var set []string
	for _, v := range nodeEnvars {
		if value, ok := os.LookupEnv(v); ok && !slices.Contains(set, v+"="+value) {
			set = append(set, v+"="+value)
		}
	}
	if len(set) == 0 {
		return ""
	}
	return " (set in the environment: " + strings.Join(set, " ") + ")"
}

func (f *inventoryFlags) openFlags(readOnlyState bool, settle time.Duration, logger *slog.Logger) (*inventory.Inventory, []inventory.Resolver, error) {
	if f.maxGap <= 0 {
		return nil, nil, fmt.Errorf("--state.max-gap must be positive, not %s", f.maxGap)
	}
	if settle < 0 {
		return nil, nil, fmt.Errorf("--inventory.settle-time must not be negative, not %s", settle)
	}
	for _, r := range f.runtimes {
		if r.timeout <= 0 {
			return nil, nil, fmt.Errorf("--%s.timeout must be positive, not %s", r.reg.Name, r.timeout)
		}
	}
	infra, err := inventory.NewInfrastructure(append(append([]string{}, inventory.DefaultInfrastructurePatterns...), f.infrastructure...))
	if err != nil {
		return nil, nil, err
	}
	// serve (the one that writes the state) says at INFO which resolvers
	// run and why; inspect and clean answer on their output, and say it at
	// DEBUG.
	level := slog.LevelDebug
	if !readOnlyState {
		level = slog.LevelInfo
	}
	resolvers, setups, err := f.resolvers(logger, level)
	if err != nil {
		return nil, nil, err
	}
	f.opened = nil
	for _, r := range resolvers {
		f.opened = append(f.opened, r.Step())
	}
	var cgroups []inventory.CgroupNaming
	for _, reg := range runtimes {
		cgroups = append(cgroups, reg.Cgroups...)
	}
	return inventory.New(inventory.Config{
		Paths:             f.paths,
		TrustPIDNamespace: f.trustPIDNS,
		SettleTime:        settle,
		Infrastructure:    infra,
		Resolvers:         resolvers,
		Runtimes:          setups,
		Annotators:        f.annotators(),
		Cgroups:           cgroups,
		State:             inventory.OpenState(f.statePath, inventory.StateOptions{ReadOnly: readOnlyState, MaxGap: f.maxGap, Logger: logger}),
		Logger:            logger,
	}), resolvers, nil
}

// annotators returns the reader of the CNI's files, none when both are off.
func (f *inventoryFlags) annotators() []inventory.Annotator {
	if f.cniConfDir == "" && f.cniCacheDir == "" {
		return nil
	}
	return []inventory.Annotator{cni.New(f.cniConfDir, f.cniCacheDir)}
}

// resolvers returns the runtime resolvers these flags turn on, in the
// order of [runtimes] (the first of equally strong claims wins), and the
// setup of every registered one, on or off.
func (f *inventoryFlags) resolvers(logger *slog.Logger, level slog.Level) ([]inventory.Resolver, []inventory.RuntimeSetup, error) {
	var resolvers []inventory.Resolver
	setups := make([]inventory.RuntimeSetup, 0, len(f.runtimes))
	for i := range f.runtimes {
		r, setup, err := f.runtimes[i].open(logger, level)
		if err != nil {
			return nil, nil, err
		}
		if r != nil {
			resolvers = append(resolvers, r)
		}
		setups = append(setups, setup)
	}
	return resolvers, setups, nil
}

// open returns the runtime resolver and its setup: on when forced, off
// when refused, and otherwise on when its address is a unix socket that
// exists now. A node without the runtime is not an error, but it is said
// at level, with why: while a resolver is off, the namespaces pinned where
// its runtime pins them are unknown (resolver_off).
func (r *runtimeFlags) open(logger *slog.Logger, level slog.Level) (inventory.Resolver, inventory.RuntimeSetup, error) {
	name, addrFlag := r.reg.Name, r.reg.Name+"."+r.reg.AddressFlag
	setup := inventory.RuntimeSetup{Name: name, Pins: r.reg.Pins}
	on := r.on
	by := "--collector." + name
	if !on {
		by = "--no-collector." + name
	}
	if env := flagEnvar("collector." + name); !r.set && os.Getenv(env) != "" {
		// kingpin counts only the command line as set by the user.
		r.set, by = true, "$"+env
	}
	switch {
	case r.set && !on:
		setup.Why = "off by " + by
	case r.set:
		setup.Why = "on by " + by
	case socketExists(r.address):
		on, setup.Why = true, "on: its socket exists"
	default:
		setup.Why = "off: no socket at " + r.address + " (--" + addrFlag + " says where; --collector." + name + " forces it on)"
	}
	if !on {
		logger.Log(context.Background(), level, "resolver off", "resolver", name, "why", setup.Why)
		return nil, setup, nil
	}
	setup.Enabled = true
	if err := reachable(r.address); err != nil {
		// Not an error: the runtime may start later, and until it
		// answers its namespaces are unknown (resolver_down).
		logger.Log(context.Background(), level, "resolver on, runtime not answering", "resolver", name, r.reg.AddressFlag, r.address, "why", setup.Why, "err", err)
	} else {
		logger.Log(context.Background(), level, "resolver on", "resolver", name, r.reg.AddressFlag, r.address, "why", setup.Why)
	}
	res, err := r.reg.New(inventory.ResolverOptions{Name: name, Address: r.address, Timeout: r.timeout, Logger: logger, Autodetected: !r.set})
	if err != nil {
		return nil, setup, fmt.Errorf("--%s: %w", addrFlag, err)
	}
	return res, setup, nil
}

// reachable connects to a unix:// or tcp:// address and hangs up at
// once: whether anything listens there now (a socket file whose daemon
// crashed refuses). Other schemes are not tried.
func reachable(address string) error {
	network, addr, ok := strings.Cut(address, "://")
	if !ok || (network != "unix" && network != "tcp") {
		return nil
	}
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// socketExists reports whether address is a unix socket address whose
// path exists.
func socketExists(address string) bool {
	socket, ok := strings.CutPrefix(address, "unix://")
	if !ok {
		return false
	}
	_, err := os.Stat(socket)
	return err == nil
}

// netnsDirs are where runtimes and `ip netns` pin namespaces: the only
// places remediation may release a leftover's pin.
func netnsDirs() []string {
	dirs := []string{"/run/netns"}
	for _, reg := range runtimes {
		for _, d := range reg.NetnsDirs {
			if !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

// compileOptional is [wholeName] of a flag whose "" means none.
func compileOptional(flag, expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	return wholeName(flag, expr)
}

// wholeName compiles the regexp of the flag to match whole names; an
// error shows the pattern as the operator wrote it.
func wholeName(flag, expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	return regexp.Compile("^(?:" + expr + ")$")
}

func main() {
	fillVersion()
	app := kingpin.New(name, "Prometheus exporter for host-side veth interfaces: who owns each, and which are leftovers.")
	app.Version(version.Print(name))
	app.HelpFlag.Short('h')
	app.UsageWriter(os.Stdout)
	setUsage(app)

	var inv inventoryFlags
	inv.register(app)
	logConfig := &promslog.Config{}
	promslogflag.AddFlags(app, logConfig)

	serve := newServeCommand(app, &inv)
	inspect := newInspectCommand(app, &inv)
	clean := newCleanCommand(app, &inv)

	cmd, err := app.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v%s (see --help)\n", name, err, environmentNote())
		os.Exit(2)
	}
	if cmd == inspect.cmd.FullCommand() && len(flagsGiven(app, os.Args[1:], "log.level")) == 0 {
		// inspect's output is the answer: start-up chatter stays out of it
		// unless asked for; warnings still show.
		_ = logConfig.Level.Set("warn")
	}
	logger := promslog.New(logConfig)
	serve.remediation.given = flagsGiven(app, os.Args[1:], "remediation.")
	switch cmd {
	case inspect.cmd.FullCommand():
		os.Exit(inspect.run(logger))
	case clean.cmd.FullCommand():
		os.Exit(clean.run(logger))
	default:
		os.Exit(serve.run(logger))
	}
}

// flagsGiven returns the flags named on the command line whose name starts
// with prefix, as "--name", in the order given (each once).
func flagsGiven(app *kingpin.Application, args []string, prefix string) []string {
	ctx, err := app.ParseContext(args)
	if err != nil {
		return nil
	}
	var given []string
	for _, e := range ctx.Elements {
		f, ok := e.Clause.(*kingpin.FlagClause)
		if !ok {
			continue
		}
		if n := "--" + f.Model().Name; strings.HasPrefix(n, "--"+prefix) && !slices.Contains(given, n) {
			given = append(given, n)
		}
	}
	return given
}
