package remediate

import (
	"errors"
	"net"
	"regexp"
	"strings"
)

// Instance says which alerts are for this node: Alertmanager routes each
// alert to the exporter named by one of its labels (normally instance, the
// scrape address), and an alert whose label names another node must never
// delete anything here, even if a device of the same name exists.
type Instance struct {
	// Label is the alert label naming the node.
	Label string
	// Pattern must match the label's whole value (see [InstancePattern]).
	Pattern *regexp.Regexp
}

// Matches reports whether an alert with these labels is for this node. An
// alert without the label is for no node.
func (i Instance) Matches(labels map[string]string) bool {
	v, ok := labels[i.Label]
	return ok && i.Pattern != nil && i.Pattern.MatchString(v)
}

// InstancePattern compiles expr so that it matches a whole label value
// only: "node1" must not take "node10" or "xnode1" for this node. An error
// shows expr as given.
func InstancePattern(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, err
	}
	return regexp.Compile("^(?:" + expr + ")$")
}

// ErrNoHostName is returned by [DefaultInstancePattern] when nothing names
// this node: the operator must say which instance label is this node's.
var ErrNoHostName = errors.New("this host's name is unknown and no listen address names it")

// DefaultInstancePattern matches this node's names as Prometheus would
// write them in the instance label: the host name, its first label (the
// short name), and every listen address's host, each with or without one of
// the listen ports (an IPv6 address in brackets when a port follows).
// Loopback and unspecified addresses are left out: every node has them, so
// naming them would take other nodes' alerts for this one.
func DefaultInstancePattern(hostname string, listen []string) (*regexp.Regexp, error) {
	var names, v6, ports []string
	if hostname != "" {
		names = append(names, regexp.QuoteMeta(hostname))
		if short, _, ok := strings.Cut(hostname, "."); ok && short != "" {
			names = append(names, regexp.QuoteMeta(short))
		}
	}
	for _, a := range listen {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ports = append(ports, regexp.QuoteMeta(port))
		ip := net.ParseIP(host)
		switch {
		case host == "" || host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified()):
		case ip != nil && ip.To4() == nil:
			v6 = append(v6, regexp.QuoteMeta(host))
		default:
			names = append(names, regexp.QuoteMeta(host))
		}
	}
	if len(names) == 0 && len(v6) == 0 {
		return nil, ErrNoHostName
	}
	port := ""
	if len(ports) > 0 {
		port = "(?::(?:" + strings.Join(ports, "|") + "))?"
	}
	var alts []string
	if len(names) > 0 {
		alts = append(alts, "(?:"+strings.Join(names, "|")+")"+port)
	}
	if len(v6) > 0 {
		alts = append(alts, `\[(?:`+strings.Join(v6, "|")+`)\]`+port, "(?:"+strings.Join(v6, "|")+")")
	}
	return regexp.Compile("^(?:" + strings.Join(alts, "|") + ")$")
}
