package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate"
	"github.com/veth-exporter/veth_exporter/remediate/cnidel"
)

// gateFlags are the safety gates shared by the webhook and the clean
// command.
type gateFlags struct {
	minAge         time.Duration
	minAgeSet      bool
	reasons        []string
	masterInclude  string
	deviceExclude  string
	maxPerRequest  int
	maxPerHour     int
	maxOrphanRatio float64
	auditFile      string
	method         string
	releaseTimeout time.Duration
}

type flagGroup interface {
	Flag(name, help string) *kingpin.FlagClause
}

func (g *gateFlags) register(c flagGroup) { g.registerFor(c, true) }

// registerFor registers the gates' flags; forAlerts says whether they
// guard the webhook (alerts) or the clean command.
func (g *gateFlags) registerFor(c flagGroup, forAlerts bool) {
	minAge := "An orphan is removed only when its alert has fired, and the exporter has seen it orphaned, at least this long."
	if !forAlerts {
		minAge = "An orphan is removed only when the exporter's state file has recorded it orphaned at least this long."
	}
	c.Flag("remediation.min-age", minAge).Default("15m").IsSetByUser(&g.minAgeSet).DurationVar(&g.minAge)
	c.Flag("remediation.reasons", "Orphan reasons remediation may act on, comma-separated or repeated ("+strings.Trim(fmt.Sprint(inventory.OrphanReasons), "[]")+").").
		Default(string(inventory.ReasonNetnsEmpty)).StringsVar(&g.reasons)
	c.Flag("remediation.master-include", "Regexp (whole name) the master bridge of a veth must match to be removed; \"\" is no master. "+
		"Routed CNIs (Calico cali*, Cilium lxc*, AWS VPC eni*) give their veths none: add an empty alternative to opt them in ('docker0|…|').").
		Default(`docker0|br-[0-9a-f]{12}|cni0|cbr0`).StringVar(&g.masterInclude)
	c.Flag("remediation.device-exclude", "Regexp (whole name) of veths never removed.").
		StringVar(&g.deviceExclude)
	c.Flag("remediation.max-per-request", "At most this many deletions per webhook request or clean run.").
		Default("10").IntVar(&g.maxPerRequest)
	c.Flag("remediation.max-per-hour", "At most this many deletions per hour.").
		Default("60").IntVar(&g.maxPerHour)
	c.Flag("remediation.max-orphan-ratio", "Delete nothing while more than this share of the node's veths look orphaned: that is a resolver failure, not a leak.").
		Default("0.5").Float64Var(&g.maxOrphanRatio)
	c.Flag("remediation.audit-file", "Append one JSON line per remediation decision to this file.").
		StringVar(&g.auditFile)
	c.Flag("remediation.method", "How a leftover goes. release: unmount the mounts that pin its namespace (only under "+
		strings.Join(netnsDirs(), ", ")+", in the host's mount namespace: needs CAP_SYS_ADMIN and CAP_SYS_CHROOT) and let the kernel free it, "+
		"with its veths, if and only if nothing else holds it; anything else a process holds is refused. "+
		"delete: delete the veth after a last look at the namespace's processes, a window it narrows and cannot close. "+
		"auto: release where it can, delete elsewhere. A pair left on the host is deleted by every method.").
		Default(string(remediate.MethodAuto)).StringVar(&g.method)
	c.Flag("remediation.release-timeout", "How long a release waits for the kernel to free a namespace before answering still_held "+
		"(the webhook's: at most 6s).").
		Default("4s").DurationVar(&g.releaseTimeout)
}

// config returns the gates' settings; inv says where the host's
// filesystems are, how fresh the exporter's history must be and, once
// opened, which runtime resolvers are on.
func (g *gateFlags) config(mode remediate.Mode, inv *inventoryFlags) (remediate.Config, error) {
	cfg := remediate.Config{
		Mode: mode, MinAge: g.minAge, MaxPerRequest: g.maxPerRequest, MaxPerHour: g.maxPerHour,
		MaxOrphanRatio: g.maxOrphanRatio, AuditFile: g.auditFile,
		Method: remediate.Method(g.method), ReleaseTimeout: g.releaseTimeout, NetnsDirs: netnsDirs(),
		Paths: inv.paths, MaxStateGap: inv.maxGap, Resolvers: inv.opened,
	}
	if inv.cniCacheDir != "" {
		// libcni's cache directory holds results/.
		cfg.CNI = &cnidel.Deleter{BinDirs: inv.cniBinDirs, CacheDir: filepath.Dir(inv.cniCacheDir)}
	}
	var err error
	if cfg.Reasons, err = remediate.ParseReasons(g.reasons); err != nil {
		return cfg, fmt.Errorf("--remediation.reasons: %w", err)
	}
	if cfg.MasterInclude, err = wholeName("remediation.master-include", g.masterInclude); err != nil {
		return cfg, err
	}
	if cfg.DeviceExclude, err = compileOptional("remediation.device-exclude", g.deviceExclude); err != nil {
		return cfg, err
	}
	if !slices.Contains(remediate.Methods, remediate.Method(g.method)) {
		return cfg, fmt.Errorf("--remediation.method: %q is not auto, release or delete", g.method)
	}
	if g.minAge < 0 {
		return cfg, fmt.Errorf("--remediation.min-age: %v is negative", g.minAge)
	}
	if g.maxPerRequest < 0 || g.maxPerHour < 0 {
		return cfg, fmt.Errorf("--remediation.max-per-request and --remediation.max-per-hour must not be negative, not %d and %d", g.maxPerRequest, g.maxPerHour)
	}
	if g.releaseTimeout <= 0 {
		return cfg, fmt.Errorf("--remediation.release-timeout: %v is not positive", g.releaseTimeout)
	}
	if g.maxOrphanRatio <= 0 || g.maxOrphanRatio > 1 {
		return cfg, fmt.Errorf("--remediation.max-orphan-ratio: %v is not in (0, 1]", g.maxOrphanRatio)
	}
	return cfg, nil
}
