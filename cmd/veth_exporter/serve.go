package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	toolkit "github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/veth-exporter/veth_exporter/collector"
	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate"
	"github.com/veth-exporter/veth_exporter/web"
)

type serveCommand struct {
	cmd           *kingpin.CmdClause
	inv           *inventoryFlags
	web           *toolkit.FlagConfig
	telemetryPath string
	maxRequests   int
	perDevice     bool
	include       string
	exclude       string
	settle        time.Duration
	observe       time.Duration
	observeSet    bool
	timeouts      serverTimeouts
	remediation   webhookFlags
}

// serverTimeouts bound how long a connection may hold the exporter: a
// client that sends slowly, reads slowly or keeps an idle connection open
// would otherwise hold a goroutine and a file descriptor for ever, and
// enough of them starve scrapes and the webhook of file descriptors. A cap
// on connections is no remedy: idle clients would fill it.
type serverTimeouts struct {
	readHeader, read, write, idle time.Duration
}

func (t *serverTimeouts) register(c *kingpin.CmdClause) {
	c.Flag("web.read-header-timeout", "Time a client has to send a request's headers.").
		Default("10s").DurationVar(&t.readHeader)
	c.Flag("web.read-timeout", "Time a client has to send a whole request, body included.").
		Default("30s").DurationVar(&t.read)
	c.Flag("web.write-timeout", "Time from the end of a request's headers to the end of its response: the longest scrape "+
		"(and a remediation request, which gives up after "+remediationTimeout.String()+") must fit in it.").
		Default("1m").DurationVar(&t.write)
	c.Flag("web.idle-timeout", "How long a keep-alive connection may wait idle for its next request before the exporter closes it.").
		Default("1m").DurationVar(&t.idle)
}

func (t *serverTimeouts) check(remediation bool) error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"web.read-header-timeout", t.readHeader}, {"web.read-timeout", t.read}, {"web.write-timeout", t.write}, {"web.idle-timeout", t.idle}} {
		if d.v <= 0 {
			return fmt.Errorf("--%s: %v is not a positive duration", d.flag, d.v)
		}
	}
	if remediation && t.write <= remediationTimeout {
		return fmt.Errorf("--web.write-timeout: %v leaves a remediation request (up to %v) no time to answer", t.write, remediationTimeout)
	}
	return nil
}

func newServeCommand(app *kingpin.Application, inv *inventoryFlags) *serveCommand {
	c := &serveCommand{inv: inv}
	c.cmd = app.Command("serve", "Serve metrics for Prometheus (the default command: its flags work without naming it).").Default()
	c.web = kingpinflag.AddFlags(c.cmd, ":9750")
	c.cmd.Flag("web.telemetry-path", "Path under which to expose metrics.").
		Default("/metrics").StringVar(&c.telemetryPath)
	c.cmd.Flag("web.max-requests", "Maximum number of parallel scrape requests; 0 disables the limit.").
		Default("10").IntVar(&c.maxRequests)
	c.cmd.Flag("collector.veth.per-device", "Expose the per-veth series (veth_info, veth_verdict_info, …); with --no-collector.veth.per-device only the counts by master and verdict.").
		Default("true").BoolVar(&c.perDevice)
	settleTimeFlag(c.cmd, "", &c.settle)
	c.cmd.Flag("inventory.observe-interval", "Take an inventory this often even when nobody scrapes, so that the state file (first-seen and "+
		"orphaned-since times, what clean proves its removals with) stays fresh on a node without Prometheus; 0: only scrapes and the webhook observe. "+
		"Must be shorter than --state.max-gap; by default a quarter of it when that is less than 1m.").
		Default("1m").IsSetByUser(&c.observeSet).DurationVar(&c.observe)
	c.timeouts.register(c.cmd)
	c.remediation.register(c.cmd)
	c.cmd.Flag("collector.veth.device-include", "Regexp (whole name) of devices whose per-veth series are exposed.").
		StringVar(&c.include)
	c.cmd.Flag("collector.veth.device-exclude", "Regexp (whole name) of devices whose per-veth series are not exposed.").
		StringVar(&c.exclude)
	return c
}

func (c *serveCommand) run(logger *slog.Logger) int {
	include, exclude, err := c.checkFlags()
	if err != nil {
		logger.Error("invalid flag", "err", fmt.Errorf("%w%s", err, environmentNote()))
		return 2
	}
	inv, resolvers, err := c.inv.open(false, c.settle, logger)
	if err != nil {
		logger.Error("invalid flag", "err", err)
		return 2
	}
	for _, r := range resolvers {
		r.Start()
		defer r.Close()
	}
	logger.Info("Starting "+name, "version", version.Info())
	logger.Info("Build context", "build_context", version.BuildContext())
	// The handler checks the remediation flags: a bad one must end the
	// process before the first inventory writes the state file.
	var ready atomic.Bool
	handler, code := c.handler(inv, include, exclude, ready.Load, logger)
	if handler == nil {
		return code
	}
	firstInventory(inv, &ready, logger)
	go observe(inv, c.observe, logger)
	server := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: c.timeouts.readHeader,
		ReadTimeout:       c.timeouts.read,
		WriteTimeout:      c.timeouts.write,
		IdleTimeout:       c.timeouts.idle,
	}
	if err := toolkit.ListenAndServe(server, c.web, logger); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Error("server failed", "err", err)
		return 1
	}
	return 0
}

// checkFlags checks the flags only serve has, and compiles the device
// patterns of the per-veth series.
func (c *serveCommand) checkFlags() (include, exclude *regexp.Regexp, err error) {
	if include, err = compileOptional("collector.veth.device-include", c.include); err != nil {
		return nil, nil, err
	}
	if exclude, err = compileOptional("collector.veth.device-exclude", c.exclude); err != nil {
		return nil, nil, err
	}
	if err := c.timeouts.check(remediate.Mode(c.remediation.mode) != remediate.ModeOff); err != nil {
		return nil, nil, err
	}
	if !c.observeSet && c.inv.maxGap > 0 {
		c.observe = min(c.observe, c.inv.maxGap/4)
	}
	if c.observe < 0 || (c.observe > 0 && c.observe >= c.inv.maxGap) {
		return nil, nil, fmt.Errorf("--inventory.observe-interval: %s is not in [0, --state.max-gap %s): the state file would go stale between observations",
			c.observe, c.inv.maxGap)
	}
	return include, exclude, nil
}

// observe takes an inventory every interval, as a scrape would (a scrape
// in flight shares its build), so that the history and its state file are
// refreshed on a node nobody scrapes. It runs until the process ends.
func observe(inv *inventory.Inventory, interval time.Duration, logger *slog.Logger) {
	if interval <= 0 {
		return
	}
	for range time.Tick(interval) {
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		if _, err := inv.Snapshot(ctx); err != nil {
			logger.Warn("observation failed", "err", err)
		}
		cancel()
	}
}

// firstInventory takes the first snapshot in the background and sets
// ready when it is done, which /-/ready reports. It records first-seen
// times at start-up rather than at the first scrape, and tells the
// operator at once what the exporter can and cannot see.
func firstInventory(inv *inventory.Inventory, ready *atomic.Bool, logger *slog.Logger) {
	go func() {
		snap, err := inv.Snapshot(context.Background())
		if err != nil {
			logger.Error("first inventory failed", "err", err)
		} else {
			logSummary(logger, snap)
		}
		ready.Store(true)
	}()
}

// handler builds the exporter's HTTP handler: the registry with the
// collectors, the remediation webhook when it is on, and the router. It
// returns nil and the exit code when the flags or the handler are wrong.
func (c *serveCommand) handler(inv *inventory.Inventory, include, exclude *regexp.Regexp, ready func() bool, logger *slog.Logger) (http.Handler, int) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		versioncollector.NewCollector(name),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	veths := collector.New(inv, collector.Config{
		PerDevice:     c.perDevice,
		DeviceInclude: include,
		DeviceExclude: exclude,
	}, logger)
	_, webhook, err := c.remediation.build(inv, c.inv, *c.web.WebConfigFile, *c.web.WebListenAddresses, reg, logger)
	if err != nil {
		logger.Error("invalid remediation flags", "err", err)
		return nil, 2
	}
	var remediateHandler http.Handler
	var clean *web.CleanAdvice
	if webhook != nil {
		remediateHandler = web.NewRemediateHandler(*webhook)
		if clean, err = c.cleanAdvice(); err != nil {
			logger.Error("invalid remediation flags", "err", err)
			return nil, 2
		}
	}
	handler, err := web.NewRouter(web.Config{
		Remediate:     remediateHandler,
		Inventory:     inv,
		Clean:         clean,
		Sysfs:         c.inv.paths.Sysfs,
		TelemetryPath: c.telemetryPath,
		Gatherer:      collector.Gatherers{reg, veths},
		Registerer:    reg,
		MaxRequests:   c.maxRequests,
		Ready:         ready,
		Version:       version.Info(),
		Logger:        logger,
	})
	if err != nil {
		logger.Error("cannot build HTTP handler", "err", err)
		return nil, 1
	}
	return handler, 0
}

func logSummary(logger *slog.Logger, snap *inventory.Snapshot) {
	counts := map[inventory.Verdict]int{}
	for i := range snap.Veths {
		counts[snap.Veths[i].Verdict]++
	}
	logger.Info("inventory taken", "veths", len(snap.Veths), "owned", counts[inventory.Owned],
		"orphaned", counts[inventory.Orphaned], "unknown", counts[inventory.Unknown])
	for _, w := range snap.Warnings {
		logger.Warn("partial view", "warning", w)
	}
}

// cleanAdvice tells /veths which orphans `veth_exporter clean` removes
// under this exporter's gates, and the flags its command needs where
// clean's defaults differ from them.
func (c *serveCommand) cleanAdvice() (*web.CleanAdvice, error) {
	g := &c.remediation.gates
	gates, err := g.config(remediate.ModeDryRun, c.inv)
	if err != nil {
		return nil, err
	}
	// clean's defaults are those of its flags, read from a parse of none.
	var def gateFlags
	app := kingpin.New(name, "")
	def.registerFor(app, false)
	if _, err := app.Parse(nil); err != nil {
		return nil, err
	}
	defaults, err := def.config(remediate.ModeDryRun, c.inv)
	if err != nil {
		return nil, err
	}
	var flags []string
	if c.inv.statePath != defaultStatePath {
		flags = append(flags, "--state.path="+c.inv.statePath)
	}
	for _, f := range []struct{ name, value, def string }{
		{"remediation.min-age", g.minAge.String(), def.minAge.String()},
		{"remediation.max-orphan-ratio", fmt.Sprint(g.maxOrphanRatio), fmt.Sprint(def.maxOrphanRatio)},
		{"remediation.method", g.method, def.method},
		{"remediation.audit-file", g.auditFile, def.auditFile},
	} {
		if f.value != f.def {
			flags = append(flags, "--"+f.name+"="+f.value)
		}
	}
	return &web.CleanAdvice{
		Reasons: gates.Reasons, MasterInclude: gates.MasterInclude, MasterIncludeFlag: g.masterInclude,
		DeviceExclude: gates.DeviceExclude, MinAge: gates.MinAge,
		DefaultReasons: defaults.Reasons, DefaultMasterInclude: defaults.MasterInclude,
		Flags: flags,
	}, nil
}
