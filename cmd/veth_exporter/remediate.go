package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v2"

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
}

func (f *webhookFlags) register(c *kingpin.CmdClause) {
	c.Flag("remediation.mode", "Alertmanager webhook POST /remediate: off (not mounted), dry-run (answers what it would delete) or enforce. "+
		"dry-run and enforce require authentication: --web.config.file with basic_auth_users or client certificates, or --remediation.bearer-token-file.").
		Default(string(remediate.ModeOff)).StringVar(&f.mode)
	c.Flag("remediation.instance-label", "Alert label naming the node an alert is for.").
		Default("instance").StringVar(&f.instanceLabel)
	c.Flag("remediation.instance", "Regexp (whole value) the instance label must match for this node (default: this host's name or the listen address, with or without its port).").
		StringVar(&f.instance)
	c.Flag("remediation.bearer-token-file", "File holding the bearer token Alertmanager must present.").
		StringVar(&f.tokenFile)
	f.gates.register(c)
}

// build returns the webhook handler, or nil when remediation is off.
func (f *webhookFlags) build(inv *inventory.Inventory, rootfs, webConfigFile string, listen []string, reg prometheus.Registerer, logger *slog.Logger) (*remediate.Remediator, *web.RemediateConfig, error) {
	mode := remediate.Mode(f.mode)
	switch mode {
	case remediate.ModeOff, remediate.ModeDryRun, remediate.ModeEnforce:
	default:
		return nil, nil, fmt.Errorf("--remediation.mode: %q is not off, dry-run or enforce", f.mode)
	}
	cfg, err := f.gates.config(mode, rootfs)
	if err != nil {
		return nil, nil, err
	}
	var token []byte
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--remediation.bearer-token-file: %w", err)
		}
		if token = bytes.TrimSpace(b); len(token) == 0 {
			return nil, nil, fmt.Errorf("--remediation.bearer-token-file: %s is empty", f.tokenFile)
		}
	}
	// The metrics show even with remediation off: veth_remediation_capable
	// tells whether it could be turned on.
	metrics := remediate.NewMetrics(reg, remediate.CanAdminNetwork)
	if mode == remediate.ModeOff {
		return nil, nil, nil
	}
	authed, err := webConfigAuthenticates(webConfigFile)
	if err != nil {
		return nil, nil, err
	}
	if !authed && token == nil {
		return nil, nil, errors.New("--remediation.mode=" + f.mode + " needs authentication: basic_auth_users or client certificates (with a client CA) in --web.config.file, or --remediation.bearer-token-file")
	}
	if token != nil && webConfigBasicAuth(webConfigFile) {
		// Both would need the one Authorization header.
		return nil, nil, errors.New("--remediation.bearer-token-file cannot be combined with basic_auth_users in --web.config.file: use one of them")
	}
	var stillAuthed func() bool
	if token == nil {
		stillAuthed = func() bool { ok, err := webConfigAuthenticates(webConfigFile); return err == nil && ok }
	}
	instance, err := f.instanceRegexp(listen)
	if err != nil {
		return nil, nil, err
	}
	r := remediate.New(cfg, inv, metrics, logger)
	if mode == remediate.ModeEnforce && !remediate.CanAdminNetwork() {
		logger.Warn("remediation enforced but the exporter lacks CAP_NET_ADMIN: every deletion will be refused (no_permission)")
	}
	logger.Info("remediation webhook on", "mode", mode, "instance", instance.String(), "min_age", cfg.MinAge)
	return r, &web.RemediateConfig{
		Remediator: r, BearerToken: token, Authenticated: stillAuthed, InstanceLabel: f.instanceLabel, Instance: instance,
		BodyLimit: 1 << 20, Timeout: 8 * time.Second,
	}, nil
}

// instanceRegexp is --remediation.instance, or this host's names and
// listen addresses, each with or without the port.
func (f *webhookFlags) instanceRegexp(listen []string) (*regexp.Regexp, error) {
	if f.instance != "" {
		return compileOptional("remediation.instance", f.instance)
	}
	var hosts, ports []string
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, regexp.QuoteMeta(h))
		if short, _, ok := strings.Cut(h, "."); ok {
			hosts = append(hosts, regexp.QuoteMeta(short))
		}
	}
	for _, a := range listen {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ports = append(ports, regexp.QuoteMeta(port))
		// Every node shares loopback and unspecified addresses: naming
		// them would take other nodes' alerts for this one.
		if ip := net.ParseIP(host); host != "" && host != "localhost" && (ip == nil || !(ip.IsLoopback() || ip.IsUnspecified())) {
			hosts = append(hosts, regexp.QuoteMeta(host))
		}
	}
	if len(hosts) == 0 {
		return nil, errors.New("--remediation.instance is required: this host's name is unknown")
	}
	expr := "(?:" + strings.Join(hosts, "|") + ")"
	if len(ports) > 0 {
		expr += "(?::(?:" + strings.Join(ports, "|") + "))?"
	}
	return regexp.Compile("^" + expr + "$")
}

// webConfigAuthenticates reports whether the exporter-toolkit web config
// makes clients authenticate: basic_auth_users, or client certificates
// that must verify.
func webConfigAuthenticates(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("--web.config.file: %w", err)
	}
	var c struct {
		BasicAuthUsers  map[string]string `yaml:"basic_auth_users"`
		TLSServerConfig struct {
			ClientAuth   string `yaml:"client_auth_type"`
			ClientCAFile string `yaml:"client_ca_file"`
			ClientCA     string `yaml:"client_ca"`
		} `yaml:"tls_server_config"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return false, fmt.Errorf("--web.config.file: %w", err)
	}
	mtls := c.TLSServerConfig.ClientAuth == "RequireAndVerifyClientCert" && (c.TLSServerConfig.ClientCAFile != "" || c.TLSServerConfig.ClientCA != "")
	return len(c.BasicAuthUsers) > 0 || mtls, nil
}

// webConfigBasicAuth reports whether the web config has basic_auth_users.
func webConfigBasicAuth(path string) bool {
	if path == "" {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var c struct {
		BasicAuthUsers map[string]string `yaml:"basic_auth_users"`
	}
	return yaml.Unmarshal(b, &c) == nil && len(c.BasicAuthUsers) > 0
}
