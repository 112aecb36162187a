// Package cni reads, for each snapshot, what the node's CNI keeps beside
// the runtimes: which CNI the node runs (its configuration directory, as
// libcni picks it) and whether its node agent runs, and the libcni result
// cache, which names the pod of a leftover nobody else remembers and
// counts the attachments whose CNI DEL never ran. It is an
// [inventory.Annotator]: it never changes a verdict, and never writes.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/kernel"
	"golang.org/x/sys/unix"
)

// CNI awareness: which CNI the node runs, read from its configuration
// directory as libcni picks it, and whether the CNI's node agent runs; with
// the libcni result cache (cni_cache.go) it is the CNI's part of a
// snapshot. Routed CNIs (Calico's cali*, Cilium's lxc*, AWS VPC's eni*)
// attach no bridge: nothing here or in the verdicts depends on a master.

// Name is the CNI's stage in [inventory.Snapshot.Steps]:
// veth_scrape_collector_*{collector="cni"}.
const Name = "cni"

// Step implements [inventory.Annotator].
func (c *Reader) Step() string { return Name }

// Defaults of the CNI's directories, host paths read under [inventory.Paths].Rootfs.
const (
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultCacheDir = "/var/lib/cni/results"
)

// racyWindow: a directory or file whose mtime is this close to when it
// was read may change again within the same timestamp tick (the kernel's
// file times are coarse), unseen: it is read again next time.
const racyWindow = time.Second

// Reader reads the node's CNI configuration and libcni result cache for each
// snapshot, re-reading a directory only when its mtime changed. It is safe
// for concurrent use.
type Reader struct {
	confDir  string
	cacheDir string

	mu    sync.Mutex
	conf  confCache
	agent agentCache
	cache resultCache
	// ipam and leases: the host-local networks and their lease
	// directories as last read (leases.go).
	ipam   confSet
	leases map[string]*leaseDir
}

// New returns the CNI's reader of confDir (configurations, "" for no
// detection) and cacheDir (libcni results, "" for none), host paths.
func New(confDir, cacheDir string) *Reader {
	return &Reader{confDir: confDir, cacheDir: cacheDir}
}

// Network is the node's CNI network: the first configuration in the
// configuration directory by file name, as libcni (the kubelet's runtime)
// picks it.
type Network struct {
	// File is the configuration's host path.
	File string `json:"file"`
	// Name is the network's name in it.
	Name string `json:"name"`
	// Type is the CNI the first plugin names (calico, cilium, flannel,
	// bridge, aws-vpc, weave, kube-router, …): the plugin's type itself
	// when it is none the exporter knows.
	Type string `json:"type"`
	// Plugins are the plugin types of the chain, in order.
	Plugins []string `json:"plugins"`
	// Agents are the command names of the CNI's node agent; empty for a
	// CNI without one (bridge) or one the exporter does not know.
	Agents []string `json:"agents,omitempty"`
	// Known: the exporter knows Type, so Agents says whether it has an
	// agent at all.
	Known bool `json:"known"`
	// DaemonRunning: a process of one of Agents runs (AgentPID).
	DaemonRunning bool `json:"daemon_running"`
	AgentPID      int  `json:"agent_pid,omitempty"`
}

// View is the CNI's record in a [inventory.Snapshot].
type View struct {
	// Network is the node's CNI; nil when the configuration directory
	// holds none (a Docker node) or detection is off.
	Network *Network `json:"network,omitempty"`
	// CacheRead: the libcni result cache was read: it is configured,
	// exists and is readable.
	CacheRead bool `json:"cache_read"`
	// CacheEntries counts the libcni cache entries read.
	CacheEntries int `json:"cache_entries"`
	// Stale are the attachments of a CNI DEL that never ran (see
	// [Attachment] and helpCNIStale).
	Stale []Attachment `json:"stale_attachments,omitempty"`
	// IPAM are the networks whose addresses host-local hands out, with
	// their ranges and leases (leases.go).
	IPAM []*IPAMNetwork `json:"ipam_networks,omitempty"`
}

// AgentDown reports whether the node's CNI has a node agent and none of
// its processes runs: a restarting agent cleans up its own interfaces,
// and remediation leaves them to it.
// It implements [inventory.NodeAgent].
func (v *View) AgentDown() (agent string, down bool) {
	if v == nil || v.Network == nil || len(v.Network.Agents) == 0 || v.Network.DaemonRunning {
		return "", false
	}
	return fmt.Sprintf("the CNI %s (%s)", v.Network.Type, strings.Join(v.Network.Agents, ", ")), true
}

// daemonRunning is the daemon_running label: "n/a" for a CNI without an
// agent, "" when the exporter does not know the CNI.
func (n *Network) daemonRunning() string {
	switch {
	case !n.Known:
		return ""
	case len(n.Agents) == 0:
		return "n/a"
	}
	return strconv.FormatBool(n.DaemonRunning)
}

// Help texts of the CNI's families; the names and labels are a contract
// with dashboards and alerts.
const (
	helpCNIInfo = "The node's CNI: the first configuration in --cni.conf-dir by file name, as libcni picks it; " +
		"daemon_running says whether its node agent runs (n/a: the CNI has none; empty: a CNI the exporter does not know)."
	helpCNIStale = "libcni cache entries whose host veth still exists while no runtime resolver claims its namespace running " +
		"and no container or pod process is in it: a CNI DEL that never ran. Without a CRI resolver only the processes' cgroups " +
		"say whether the pod still runs; a namespace whose runtime cannot be asked is not counted."
)

// Help texts of the IPAM families (leases.go).
const (
	helpIPAMSize      = "Addresses the host-local IPAM hands out in each range of a network of --cni.conf-dir (the gateway excluded)."
	helpIPAMAddresses = "Addresses host-local has leased in each range, by state: live (a runtime lists the sandbox, or a namespace " +
		"of it is still there), leaked (no runtime lists it and no namespace is left, for the settle time: a CNI DEL that never ran), " +
		"unknown (not proved: a resolver that lists sandboxes is down or none is on, a partial view, or settling)."
)

// Families implements [inventory.RuntimeView]: the CNI's info and its stale
// attachments.
func (v *View) Families(*inventory.Snapshot) []inventory.Family {
	var families []inventory.Family
	if n := v.Network; n != nil {
		families = append(families, inventory.Family{Name: "veth_cni_info", Help: helpCNIInfo, Series: []inventory.Series{{Value: 1,
			Labels: []inventory.Label{{Name: "daemon_running", Value: n.daemonRunning()}, {Name: "name", Value: n.Name}, {Name: "type", Value: n.Type}}}}})
	}
	if v.CacheRead {
		families = append(families, inventory.Family{Name: "veth_cni_stale_attachments", Help: helpCNIStale,
			Series: []inventory.Series{{Value: float64(len(v.Stale))}}})
	}
	return append(families, v.ipamFamilies()...)
}

// ipamFamilies are the address ranges' sizes and their leases by state.
func (v *View) ipamFamilies() []inventory.Family {
	if len(v.IPAM) == 0 {
		return nil
	}
	size := inventory.Family{Name: "veth_cni_ipam_range_size", Help: helpIPAMSize}
	addresses := inventory.Family{Name: "veth_cni_ipam_addresses", Help: helpIPAMAddresses}
	for _, n := range v.IPAM {
		for _, r := range n.Ranges {
			labels := []inventory.Label{{Name: "network", Value: n.Name}, {Name: "range", Value: r.Subnet}}
			size.Series = append(size.Series, inventory.Series{Labels: labels, Value: r.Size})
			for _, st := range []struct {
				state LeaseState
				n     int
			}{{LeaseLive, r.Live}, {LeaseLeaked, r.Leaked}, {LeaseUnknown, r.Unknown}} {
				addresses.Series = append(addresses.Series, inventory.Series{Value: float64(st.n),
					Labels: append(slices.Clone(labels), inventory.Label{Name: "state", Value: string(st.state)})})
			}
		}
	}
	return []inventory.Family{size, addresses}
}

// cniTypes maps the first plugin's type to the CNI it is and the command
// names of that CNI's node agent (none: the CNI has no agent).
var cniTypes = map[string]struct {
	name   string
	agents []string
}{
	"calico":              {"calico", []string{"calico-node", "calico-felix", "bird", "bird6"}},
	"cilium-cni":          {"cilium", []string{"cilium-agent"}},
	"flannel":             {"flannel", []string{"flanneld"}},
	"aws-cni":             {"aws-vpc", []string{"aws-k8s-agent"}},
	"weave-net":           {"weave", []string{"weaver"}},
	"antrea":              {"antrea", []string{"antrea-agent"}},
	"ovn-k8s-cni-overlay": {"ovn-kubernetes", []string{"ovnkube"}},
	"bridge":              {"bridge", nil},
	"ptp":                 {"ptp", nil},
	"macvlan":             {"macvlan", nil},
	"ipvlan":              {"ipvlan", nil},
}

// cniConfFile is what detection reads of a configuration file: a
// .conflist's plugins, or a single .conf/.json plugin.
type cniConfFile struct {
	Name    string          `json:"name"`
	Type    string          `json:"type"`
	Bridge  string          `json:"bridge"`
	Plugins []cniConfPlugin `json:"plugins"`
}

type cniConfPlugin struct {
	Type   string `json:"type"`
	Bridge string `json:"bridge"`
}

// parseCNIConf returns the network a configuration file describes, nil
// for a .conf or .json without a type, which libcni skips.
func parseCNIConf(file string, b []byte) (*Network, error) {
	var c cniConfFile
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", file, err)
	}
	if !strings.HasSuffix(file, ".conflist") {
		if c.Type == "" {
			return nil, nil
		}
		c.Plugins = []cniConfPlugin{{Type: c.Type, Bridge: c.Bridge}}
	}
	if len(c.Plugins) == 0 {
		return nil, nil
	}
	n := &Network{File: file, Name: c.Name}
	for _, p := range c.Plugins {
		n.Plugins = append(n.Plugins, p.Type)
	}
	first := c.Plugins[0]
	n.Type = first.Type
	if t, ok := cniTypes[first.Type]; ok {
		n.Type, n.Agents, n.Known = t.name, t.agents, true
	}
	switch {
	case first.Type == "bridge" && first.Bridge == "kube-bridge":
		// kube-router configures the bridge plugin on its own bridge.
		n.Type, n.Agents = "kube-router", []string{"kube-router"}
	case first.Type == "ptp" && c.Name == "kindnet":
		n.Type, n.Agents = "kindnet", []string{"kindnetd"}
	}
	return n, nil
}

// confCache is the last configuration read, valid while neither the
// directory nor the chosen file changed.
type confCache struct {
	read                bool
	readAt              time.Time
	dirMtime, fileMtime time.Time
	fileSize            int64
	network             *Network
	err                 error
}

// network returns the node's CNI network, reading the configuration
// directory again only when it or the chosen file changed. A missing
// directory is no CNI, not an error.
func (c *Reader) network(rootfs string) (*Network, error) {
	if c.confDir == "" {
		return nil, nil
	}
	dir := filepath.Join(rootfs, c.confDir)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		c.conf = confCache{}
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("CNI configuration directory %s: %w", c.confDir, err)
	}
	dirMtime := time.Unix(st.Mtim.Unix())
	if cc := &c.conf; cc.read && cc.dirMtime.Equal(dirMtime) && cc.readAt.Sub(dirMtime) > racyWindow {
		if cc.network == nil {
			return nil, cc.err
		}
		var fst unix.Stat_t
		if unix.Stat(filepath.Join(rootfs, cc.network.File), &fst) == nil && time.Unix(fst.Mtim.Unix()).Equal(cc.fileMtime) &&
			fst.Size == cc.fileSize && cc.readAt.Sub(cc.fileMtime) > racyWindow {
			n := *cc.network
			return &n, nil
		}
	}
	c.conf = confCache{read: true, readAt: time.Now(), dirMtime: dirMtime}
	c.conf.network, c.conf.fileMtime, c.conf.fileSize, c.conf.err = readCNIConfDir(rootfs, c.confDir)
	if c.conf.network == nil {
		return nil, c.conf.err
	}
	n := *c.conf.network
	return &n, c.conf.err
}

// readCNIConfDir picks the first configuration by file name among
// .conf, .conflist and .json, as libcni's ConfFiles and the runtimes do,
// skipping those libcni skips.
func readCNIConfDir(rootfs, confDir string) (*Network, time.Time, int64, error) {
	entries, err := os.ReadDir(filepath.Join(rootfs, confDir))
	if err != nil {
		return nil, time.Time{}, 0, fmt.Errorf("CNI configuration directory %s: %w", confDir, err)
	}
	// ReadDir sorts by file name, as libcni's callers do.
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".conf" && ext != ".conflist" && ext != ".json") {
			continue
		}
		file := filepath.Join(confDir, e.Name())
		path := filepath.Join(rootfs, file)
		info, err := os.Stat(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, time.Time{}, 0, err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, time.Time{}, 0, fmt.Errorf("CNI configuration %s: %w", file, err)
		}
		n, err := parseCNIConf(file, b)
		if err != nil || n != nil {
			return n, info.ModTime(), info.Size(), err
		}
	}
	return nil, time.Time{}, 0, nil
}

// agentCache remembers the agent process last found, so that a snapshot
// reads one comm file while the agent runs and scans /proc only when it
// does not.
type agentCache struct {
	pid   int
	start uint64
}

// agentRunning looks for a process whose command name is one of agents
// in procfs, without exec: the one found last time first.
func (c *Reader) agentRunning(procfs string, agents []string) (int, bool) {
	if a := c.agent; a.pid > 0 {
		dir := procfs + "/" + strconv.Itoa(a.pid)
		if start, ok := kernel.ProcessStartTime(dir); ok && start == a.start && slices.Contains(agents, kernel.ProcessName(dir)) {
			return a.pid, true
		}
	}
	c.agent = agentCache{}
	names, err := kernel.ReadDirNames(procfs)
	if err != nil {
		return 0, false
	}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		dir := procfs + "/" + name
		if !slices.Contains(agents, kernel.ProcessName(dir)) {
			continue
		}
		if start, ok := kernel.ProcessStartTime(dir); ok {
			c.agent = agentCache{pid: pid, start: start}
			return pid, true
		}
	}
	return 0, false
}
