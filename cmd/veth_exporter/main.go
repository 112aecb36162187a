// Command veth_exporter inventories the host-side veth interfaces of a
// Docker or Kubernetes node, says who owns each and which are leftovers,
// and exposes it all to Prometheus.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"

	"github.com/veth-exporter/veth_exporter/inventory"
)

const name = "veth_exporter"

// inventoryFlags are the flags every command that takes an inventory shares.
type inventoryFlags struct {
	paths          inventory.Paths
	trustPIDNS     bool
	statePath      string
	maxGap         time.Duration
	infrastructure []string
	docker         bool
	dockerSet      bool // --[no-]collector.docker was given
	dockerHost     string
	dockerTimeout  time.Duration

	cri         bool
	criSet      bool // --[no-]collector.cri was given
	criEndpoint string
	criTimeout  time.Duration

	podman        bool
	podmanSet     bool // --[no-]collector.podman was given
	podmanHost    string
	podmanTimeout time.Duration

	cniConfDir  string
	cniCacheDir string
}

func (f *inventoryFlags) register(app *kingpin.Application) {
	app.Flag("path.procfs", "procfs mountpoint (the host's /proc when running in a container).").
		Default("/proc").StringVar(&f.paths.Procfs)
	app.Flag("path.sysfs", "sysfs mountpoint (the host's /sys when running in a container).").
		Default("/sys").StringVar(&f.paths.Sysfs)
	app.Flag("path.rootfs", "rootfs mountpoint; nsfs mount paths are shown relative to it.").
		Default("/").StringVar(&f.paths.Rootfs)
	app.Flag("inventory.trust-pid-namespace", "Trust that --path.procfs lists every process that can hold a network namespace "+
		"although it is not the host's PID namespace (a node that is itself a container, such as a kind node). "+
		"Without it such a view is partial and no veth is called orphaned.").
		BoolVar(&f.trustPIDNS)
	app.Flag("state.path", "State file remembering first-seen, orphaned-since and last owner of each veth across restarts.").
		Default("/var/lib/veth_exporter/state.json").StringVar(&f.statePath)
	app.Flag("state.max-gap", "After a gap this long between two observations (the exporter stopped, or nobody scraped), "+
		"orphan clocks restart at the next observation; clean refuses a state file not refreshed within it.").
		Default(inventory.DefaultMaxGap.String()).DurationVar(&f.maxGap)
	app.Flag("collector.docker", "Resolve owners through the Docker Engine API (container names, exited containers, Docker networks). "+
		"On by default when Docker's socket exists at start-up; --no-collector.docker turns it off.").
		IsSetByUser(&f.dockerSet).BoolVar(&f.docker)
	dockerHost := os.Getenv("DOCKER_HOST")
	if dockerHost == "" {
		dockerHost = "unix:///var/run/docker.sock"
	}
	app.Flag("docker.host", "Docker Engine API address, unix:///path or tcp://host:port (default: $DOCKER_HOST, else Docker's socket).").
		Default(dockerHost).StringVar(&f.dockerHost)
	app.Flag("docker.timeout", "What one inventory may spend asking Docker; a daemon slower than that counts as down for that scrape.").
		Default("5s").DurationVar(&f.dockerTimeout)
	app.Flag("collector.cri", "Resolve owners through the Kubernetes CRI API (pod namespace, name and UID of each sandbox, ready or not). "+
		"On by default when the CRI socket exists at start-up; --no-collector.cri turns it off.").
		IsSetByUser(&f.criSet).BoolVar(&f.cri)
	app.Flag("cri.endpoint", "CRI runtime socket, unix:///path (default: the first existing of "+strings.Join(criEndpoints, ", ")+").").
		Default(defaultCRIEndpoint()).StringVar(&f.criEndpoint)
	app.Flag("collector.podman", "Resolve owners through Podman's REST API (container and pod names, exited and crashed containers, Podman networks). "+
		"Needs the API service (podman.socket, or `podman system service`); never runs podman. "+
		"On by default when the service's socket exists at start-up; --no-collector.podman turns it off.").
		IsSetByUser(&f.podmanSet).BoolVar(&f.podman)
	app.Flag("podman.host", "Podman REST API address, unix:///path or tcp://host:port.").
		Default(inventory.DefaultPodmanHost).StringVar(&f.podmanHost)
	app.Flag("podman.timeout", "What one inventory may spend asking Podman; a service slower than that counts as down for that scrape.").
		Default("5s").DurationVar(&f.podmanTimeout)
	app.Flag("cri.timeout", "What one inventory may spend asking the CRI runtime; a runtime slower than that counts as down for that scrape.").
		Default("5s").DurationVar(&f.criTimeout)
	app.Flag("cni.conf-dir", "CNI configuration directory (read under --path.rootfs): the node's CNI is its first configuration by file name, "+
		"as libcni picks it; veth_cni_info says which and whether its node agent runs. \"\" turns detection off.").
		Default(inventory.DefaultCNIConfDir).StringVar(&f.cniConfDir)
	app.Flag("cni.cache-dir", "libcni result cache (read under --path.rootfs): names the pod of a leftover the exporter never saw owned, "+
		"and counts attachments whose CNI DEL never ran (veth_cni_stale_attachments). \"\" turns it off.").
		Default(inventory.DefaultCNICacheDir).StringVar(&f.cniCacheDir)
	app.Flag("inventory.infrastructure-device",
		"Regexp (whole name) of veths that live on the host by design and are never orphaned; repeatable, added to the defaults ("+
			strings.Join(inventory.DefaultInfrastructurePatterns, ", ")+").").
		StringsVar(&f.infrastructure)
}

// open builds the inventory these flags describe. A read-only state is
// loaded but never written. The runtime resolvers it returns are the
// caller's to Start and Close.
func (f *inventoryFlags) open(readOnlyState bool, settle time.Duration, logger *slog.Logger) (*inventory.Inventory, []inventory.Resolver, error) {
	if f.maxGap <= 0 {
		return nil, nil, fmt.Errorf("--state.max-gap must be positive, not %s", f.maxGap)
	}
	infra, err := inventory.NewInfrastructure(append(append([]string{}, inventory.DefaultInfrastructurePatterns...), f.infrastructure...))
	if err != nil {
		return nil, nil, err
	}
	resolvers, err := f.resolvers(logger)
	if err != nil {
		return nil, nil, err
	}
	return inventory.New(inventory.Config{
		Paths:             f.paths,
		TrustPIDNamespace: f.trustPIDNS,
		SettleTime:        settle,
		Infrastructure:    infra,
		Resolvers:         resolvers,
		CNI:               f.cni(),
		State:             inventory.OpenState(f.statePath, inventory.StateOptions{ReadOnly: readOnlyState, MaxGap: f.maxGap, Logger: logger}),
		Logger:            logger,
	}), resolvers, nil
}

// cni returns the reader of the CNI's files, nil when both are off.
func (f *inventoryFlags) cni() *inventory.CNI {
	if f.cniConfDir == "" && f.cniCacheDir == "" {
		return nil
	}
	return inventory.NewCNI(f.cniConfDir, f.cniCacheDir)
}

// resolvers returns the runtime resolvers these flags turn on, in the
// order their claims are weighed: the first of equally strong claims wins.
func (f *inventoryFlags) resolvers(logger *slog.Logger) ([]inventory.Resolver, error) {
	var resolvers []inventory.Resolver
	// CRI first: where Docker runs the pods (cri-dockerd) both claim a
	// pod's namespace running, and only CRI knows the pod's name and
	// namespace. Everywhere else at most one of them claims it.
	cri, err := f.openCRI(logger)
	if err != nil {
		return nil, err
	}
	if cri != nil {
		resolvers = append(resolvers, cri)
	}
	docker, err := f.openDocker(logger)
	if err != nil {
		return nil, err
	}
	if docker != nil {
		resolvers = append(resolvers, docker)
	}
	podman, err := f.openPodman(logger)
	if err != nil {
		return nil, err
	}
	if podman != nil {
		resolvers = append(resolvers, podman)
	}
	return resolvers, nil
}

// openPodman returns the Podman resolver: on when forced, off when
// refused, and otherwise on when the service's socket exists now.
func (f *inventoryFlags) openPodman(logger *slog.Logger) (*inventory.Podman, error) {
	if !resolverOn(f.podman, f.podmanSet, f.podmanHost) {
		logger.Debug("Podman resolver off", "host", f.podmanHost)
		return nil, nil
	}
	logger.Info("Podman resolver on", "host", f.podmanHost)
	pm, err := inventory.NewPodman(f.podmanHost, f.podmanTimeout, logger)
	if err != nil {
		return nil, fmt.Errorf("--podman.host: %w", err)
	}
	return pm, nil
}

// criEndpoints are the sockets of the CRI runtimes, in the order the
// default --cri.endpoint is chosen: containerd, CRI-O, cri-dockerd.
var criEndpoints = []string{
	"unix:///run/containerd/containerd.sock",
	"unix:///run/crio/crio.sock",
	"unix:///var/run/cri-dockerd.sock",
}

// defaultCRIEndpoint is the first of criEndpoints whose socket exists,
// else the first.
func defaultCRIEndpoint() string {
	for _, e := range criEndpoints {
		if _, err := os.Stat(strings.TrimPrefix(e, "unix://")); err == nil {
			return e
		}
	}
	return criEndpoints[0]
}

// openCRI returns the CRI resolver: on when forced, off when refused, and
// otherwise on when the endpoint's socket exists now. A node without a CRI
// runtime is not an error.
func (f *inventoryFlags) openCRI(logger *slog.Logger) (*inventory.CRI, error) {
	if !resolverOn(f.cri, f.criSet, f.criEndpoint) {
		logger.Debug("CRI resolver off", "endpoint", f.criEndpoint)
		return nil, nil
	}
	logger.Info("CRI resolver on", "endpoint", f.criEndpoint)
	c, err := inventory.NewCRI(f.criEndpoint, f.criTimeout, logger)
	if err != nil {
		return nil, fmt.Errorf("--cri.endpoint: %w", err)
	}
	if !f.criSet {
		// On because a socket exists: Docker's containerd has one and no
		// CRI plugin, which is no failure of a Docker node.
		c.QuietWithoutCRI()
	}
	return c, nil
}

// openDocker returns the Docker resolver: on when forced, off when
// refused, and otherwise on when Docker's socket exists now. A host
// without Docker is not an error.
func (f *inventoryFlags) openDocker(logger *slog.Logger) (*inventory.Docker, error) {
	if !resolverOn(f.docker, f.dockerSet, f.dockerHost) {
		logger.Debug("Docker resolver off", "host", f.dockerHost)
		return nil, nil
	}
	logger.Info("Docker resolver on", "host", f.dockerHost)
	d, err := inventory.NewDocker(f.dockerHost, f.dockerTimeout, logger)
	if err != nil {
		return nil, fmt.Errorf("--docker.host: %w", err)
	}
	return d, nil
}

// resolverOn says whether a runtime resolver runs: as its flag says when
// the flag was given, otherwise when address is a unix socket that exists
// at start-up.
func resolverOn(flag, set bool, address string) bool {
	if set {
		return flag
	}
	socket, ok := strings.CutPrefix(address, "unix://")
	if !ok {
		return false
	}
	_, err := os.Stat(socket)
	return err == nil
}

func compileOptional(flag, expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	return re, nil
}

func main() {
	app := kingpin.New(name, "Prometheus exporter for host-side veth interfaces: who owns each, and which are leftovers.")
	app.Version(version.Print(name))
	app.HelpFlag.Short('h')
	app.UsageWriter(os.Stdout)
	// Show every command's flags in --help: most runs use the default
	// command, whose flags would otherwise hide behind `serve --help`.
	app.UsageTemplate(kingpin.LongHelpTemplate)

	var inv inventoryFlags
	inv.register(app)
	logConfig := &promslog.Config{}
	promslogflag.AddFlags(app, logConfig)

	serve := newServeCommand(app, &inv)
	inspect := newInspectCommand(app, &inv)
	clean := newCleanCommand(app, &inv)

	cmd, err := app.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v (see --help)\n", name, err)
		os.Exit(2)
	}
	logger := promslog.New(logConfig)
	switch cmd {
	case inspect.cmd.FullCommand():
		os.Exit(inspect.run(logger))
	case clean.cmd.FullCommand():
		os.Exit(clean.run(logger))
	default:
		os.Exit(serve.run(logger))
	}
}
