package main

import (
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate"
	"github.com/veth-exporter/veth_exporter/web"
)

// webhookFlags are the serve command's remediation flags.
type webhookFlags struct {
	gates         gateFlags
	mode          string
	instanceLabel string
	instance      string
	tokenFile     string
	users         []string
}

// auditFollowInterval is how often serve reads the clean command's
// answers from the audit file.
const auditFollowInterval = 5 * time.Second

// remediationTimeout bounds one webhook request, well under
// Alertmanager's own timeout; the server's write timeout must exceed it.
const remediationTimeout = 8 * time.Second

func (f *webhookFlags) register(c *kingpin.CmdClause) {
	c.Flag("remediation.mode", "Alertmanager webhook POST /remediate: off (not mounted), dry-run (answers what it would delete) or enforce. "+
		"dry-run and enforce require authentication: --remediation.bearer-token-file, or --remediation.users verified by --web.config.file "+
		"(basic_auth_users or client certificates).").
		Default(string(remediate.ModeOff)).StringVar(&f.mode)
	c.Flag("remediation.instance-label", "Alert label naming the node an alert is for.").
		Default("instance").StringVar(&f.instanceLabel)
	c.Flag("remediation.instance", "Regexp (whole value) the instance label must match for this node (default: this host's name or the listen address, with or without its port).").
		StringVar(&f.instance)
	c.Flag("remediation.bearer-token-file", "File holding the bearer token Alertmanager must present on /remediate (scrapes need none); "+
		"readable by its owner only, re-read when it changes.").
		StringVar(&f.tokenFile)
	c.Flag("remediation.users", "Basic-auth user name or client-certificate subject CN (as verified by --web.config.file) allowed to call /remediate; "+
		"repeatable. Required when the web config authenticates clients and no bearer token guards the webhook: "+
		"every other credential, Prometheus's included, gets 403 there.").
		StringsVar(&f.users)
	f.gates.register(c)
}

// build returns the webhook handler's configuration, or nil when
// remediation is off.
func (f *webhookFlags) build(inv *inventory.Inventory, invFlags *inventoryFlags, webConfigFile string, listen []string, reg prometheus.Registerer, logger *slog.Logger) (*remediate.Remediator, *web.RemediateConfig, error) {
	mode := remediate.Mode(f.mode)
	switch mode {
	case remediate.ModeOff, remediate.ModeDryRun, remediate.ModeEnforce:
	default:
		return nil, nil, fmt.Errorf("--remediation.mode: %q is not off, dry-run or enforce", f.mode)
	}
	cfg, err := f.gates.config(mode, invFlags)
	if err != nil {
		return nil, nil, err
	}
	if limit := remediationTimeout * 3 / 4; mode != remediate.ModeOff && cfg.ReleaseTimeout > limit {
		return nil, nil, fmt.Errorf("--remediation.release-timeout: %v leaves a webhook request (up to %v, the inventory included) no time to answer; at most %v",
			cfg.ReleaseTimeout, remediationTimeout, limit)
	}
	// The metrics show even with remediation off: veth_remediation_capable
	// tells whether it could be turned on.
	metrics := remediate.NewMetrics(reg, remediate.CanAdminNetwork)
	// The clean command's answers, from the audit file they share.
	metrics.FollowAudit(cfg.AuditFile, auditFollowInterval)
	cfg.AuditBy = remediate.AuditByWebhook
	if mode == remediate.ModeOff {
		return nil, nil, nil
	}
	auth, err := remediate.NewAuth(remediate.AuthConfig{
		WebConfigFile: webConfigFile, Users: f.users, TokenFile: f.tokenFile, Logger: logger,
	})
	if err != nil {
		return nil, nil, err
	}
	instance, err := f.instancePattern(listen)
	if err != nil {
		return nil, nil, err
	}
	cfg.Instance = remediate.Instance{Label: f.instanceLabel, Pattern: instance}
	r := remediate.New(cfg, inv, metrics, logger)
	if mode == remediate.ModeEnforce && !remediate.CanAdminNetwork() {
		logger.Warn("remediation enforced but the exporter lacks CAP_NET_ADMIN: every deletion will be refused (no_permission)")
	}
	logger.Info("remediation webhook on", "mode", mode, "method", cfg.Method, "instance", instance.String(), "min_age", cfg.MinAge)
	return r, &web.RemediateConfig{
		Remediator: r, Auth: auth,
		BodyLimit: 1 << 20, Timeout: remediationTimeout,
	}, nil
}

// instancePattern is --remediation.instance, or this host's names and
// listen addresses.
func (f *webhookFlags) instancePattern(listen []string) (*regexp.Regexp, error) {
	if f.instance != "" {
		re, err := remediate.InstancePattern(f.instance)
		if err != nil {
			return nil, fmt.Errorf("--remediation.instance: %w", err)
		}
		return re, nil
	}
	host, _ := os.Hostname()
	re, err := remediate.DefaultInstancePattern(host, listen)
	if err != nil {
		return nil, fmt.Errorf("--remediation.instance is required: %w", err)
	}
	return re, nil
}
