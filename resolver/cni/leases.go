package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"golang.org/x/sys/unix"
)

// The host-local IPAM plugin's leases: for each address it hands out, a
// file named after the address in <dataDir>/<network> (dataDir defaults
// to /var/lib/cni/networks) holding the container ID and the interface
// name ("<id>\r\n<ifname>"), removed by its CNI DEL. A sandbox lost
// without its DEL keeps its address forever: enough of them and every new
// pod fails with "no IP addresses available in range set". Every network
// of the configuration directory whose chain uses host-local is read, not
// only the one libcni picks first: Podman's CNI networks keep their leases
// the same way.

// DefaultLeaseDir is host-local's default dataDir.
const DefaultLeaseDir = "/var/lib/cni/networks"

// LeaseState is what a lease is.
type LeaseState string

// The lease states.
const (
	// LeaseLive: a runtime lists its sandbox, or a namespace of it is
	// still there (a pinned leftover's, which remediation releases first).
	LeaseLive LeaseState = "live"
	// LeaseLeaked: no runtime lists its sandbox, no namespace is left for
	// it, and it has been so for the settle time: a CNI DEL that never ran.
	LeaseLeaked LeaseState = "leaked"
	// LeaseUnknown: not proved either way (Reason says why).
	LeaseUnknown LeaseState = "unknown"
)

// LeaseStates are the states, in the order of the metrics.
var LeaseStates = []LeaseState{LeaseLive, LeaseLeaked, LeaseUnknown}

// IPAMNetwork is a network of the configuration directory whose
// addresses host-local hands out.
type IPAMNetwork struct {
	Name string `json:"name"`
	// File is the configuration's host path.
	File string `json:"file"`
	// Dir is the leases' directory, <dataDir>/<name>, a host path.
	Dir    string   `json:"dir"`
	Ranges []*Range `json:"ranges"`
	Leases []*Lease `json:"leases"`
	// Error says why the leases could not be read.
	Error string `json:"error,omitempty"`
}

// Range is one address range of a network, as host-local allocates in it.
type Range struct {
	// Subnet names the range, as the configuration writes it.
	Subnet string `json:"subnet"`
	// Start and End are the first and last address handed out.
	Start string `json:"range_start"`
	End   string `json:"range_end"`
	// Gateway is never handed out.
	Gateway string `json:"gateway,omitempty"`
	// Size is how many addresses it hands out (the gateway excluded).
	Size float64 `json:"size"`
	// Live, Leaked and Unknown count its leases by state.
	Live    int `json:"live"`
	Leaked  int `json:"leaked"`
	Unknown int `json:"unknown"`

	prefix              netip.Prefix
	start, end, gateway netip.Addr
}

// Lease is one address host-local handed out.
type Lease struct {
	IP          string `json:"ip"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname,omitempty"`
	// Range is the subnet of its range, "" for an address in none (the
	// configuration changed since).
	Range string     `json:"range"`
	State LeaseState `json:"state"`
	// Reason says why: listed or namespace_left (live), no_sandbox
	// (leaked), resolver_down, no_resolver, partial_view or settling
	// (unknown); Detail names the resolvers.
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
	// LeakedSince is since when it has looked leaked (settling included).
	LeakedSince time.Time `json:"leaked_since,omitzero"`
	// PodNamespace and PodName name the pod, from its libcni cache entry.
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	// CacheEntry is its libcni cache entry's file name, "" for none.
	CacheEntry string `json:"cache_entry,omitempty"`
}

// ipamConf is what the lease reader needs of a network's configuration.
type ipamConf struct {
	name, file, dir string
	ranges          []*Range
}

// parseIPAMConf returns the host-local IPAM of a configuration file, nil
// when its chain has none.
func parseIPAMConf(file string, b []byte) (*ipamConf, error) {
	type ipam struct {
		Type       string `json:"type"`
		DataDir    string `json:"dataDir"`
		Subnet     string `json:"subnet"`
		RangeStart string `json:"rangeStart"`
		RangeEnd   string `json:"rangeEnd"`
		Gateway    string `json:"gateway"`
		Ranges     [][]struct {
			Subnet     string `json:"subnet"`
			RangeStart string `json:"rangeStart"`
			RangeEnd   string `json:"rangeEnd"`
			Gateway    string `json:"gateway"`
		} `json:"ranges"`
	}
	var c struct {
		Name    string `json:"name"`
		IPAM    *ipam  `json:"ipam"`
		Plugins []struct {
			IPAM *ipam `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", file, err)
	}
	var found *ipam
	if c.IPAM != nil && c.IPAM.Type == "host-local" {
		found = c.IPAM
	}
	for _, p := range c.Plugins {
		if found == nil && p.IPAM != nil && p.IPAM.Type == "host-local" {
			found = p.IPAM
		}
	}
	if found == nil || c.Name == "" {
		return nil, nil
	}
	dataDir := found.DataDir
	if dataDir == "" {
		dataDir = DefaultLeaseDir
	}
	ic := &ipamConf{name: c.Name, file: file, dir: filepath.Join(dataDir, c.Name)}
	add := func(subnet, start, end, gw string) error {
		r, err := newRange(subnet, start, end, gw)
		if err != nil {
			return fmt.Errorf("CNI configuration %s: %w", file, err)
		}
		ic.ranges = append(ic.ranges, r)
		return nil
	}
	if found.Subnet != "" {
		if err := add(found.Subnet, found.RangeStart, found.RangeEnd, found.Gateway); err != nil {
			return nil, err
		}
	}
	for _, set := range found.Ranges {
		for _, r := range set {
			if err := add(r.Subnet, r.RangeStart, r.RangeEnd, r.Gateway); err != nil {
				return nil, err
			}
		}
	}
	return ic, nil
}

// newRange returns the range host-local allocates from: by default from
// the subnet's second address to its last (IPv4: the one before the
// broadcast address), skipping the gateway (by default the second
// address).
func newRange(subnet, start, end, gateway string) (*Range, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return nil, fmt.Errorf("range subnet %q: %w", subnet, err)
	}
	p = p.Masked()
	r := &Range{Subnet: subnet, prefix: p}
	parse := func(s string, def netip.Addr) (netip.Addr, error) {
		if s == "" {
			return def, nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !p.Contains(a) {
			return netip.Addr{}, fmt.Errorf("range %s: %q is not an address in it", subnet, s)
		}
		return a, nil
	}
	if r.start, err = parse(start, p.Addr().Next()); err != nil {
		return nil, err
	}
	if r.end, err = parse(end, lastAddr(p)); err != nil {
		return nil, err
	}
	if r.gateway, err = parse(gateway, p.Addr().Next()); err != nil {
		return nil, err
	}
	if r.end.Less(r.start) {
		return nil, fmt.Errorf("range %s: end %s before start %s", subnet, r.end, r.start)
	}
	r.Start, r.End, r.Gateway = r.start.String(), r.end.String(), r.gateway.String()
	size := new(big.Int).Sub(new(big.Int).SetBytes(r.end.AsSlice()), new(big.Int).SetBytes(r.start.AsSlice()))
	size.Add(size, big.NewInt(1))
	if r.contains(r.gateway) {
		size.Sub(size, big.NewInt(1))
	}
	r.Size, _ = new(big.Float).SetInt(size).Float64()
	return r, nil
}

// lastAddr is the last address host-local hands out in p by default: the
// last of the subnet, before the broadcast address for IPv4.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			if i*8+bit >= bits {
				b[i] |= 0x80 >> bit
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	if a.Is4() {
		a = a.Prev()
	}
	return a
}

// contains reports whether a is in [start, end].
func (r *Range) contains(a netip.Addr) bool {
	return a.BitLen() == r.start.BitLen() && !a.Less(r.start) && !r.end.Less(a)
}

// leaseDir is a lease directory as last read.
type leaseDir struct {
	readAt, mtime time.Time
	leases        []*Lease
}

// confSet is the configuration directory's host-local networks as last
// read, valid while neither the directory nor a file in it changed.
type confSet struct {
	readAt, dirMtime time.Time
	files            map[string]time.Time // host path: mtime
	confs            []*ipamConf
	err              error
}

// ipamConfs returns the host-local networks of the configuration
// directory, reading it again only when it or one of its files changed.
func (c *Reader) ipamConfs(rootfs string) ([]*ipamConf, error) {
	if c.confDir == "" {
		return nil, nil
	}
	dir := filepath.Join(rootfs, c.confDir)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		c.ipam = confSet{}
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("CNI configuration directory %s: %w", c.confDir, err)
	}
	mtime := time.Unix(st.Mtim.Unix())
	if cs := &c.ipam; cs.files != nil && cs.dirMtime.Equal(mtime) && cs.readAt.Sub(mtime) > racyWindow && unchanged(cs.files, cs.readAt) {
		return cs.confs, cs.err
	}
	next := confSet{readAt: time.Now(), dirMtime: mtime, files: map[string]time.Time{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.ipam = confSet{}
		return nil, fmt.Errorf("CNI configuration directory %s: %w", c.confDir, err)
	}
	var errs []error
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".conf" && ext != ".conflist" && ext != ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		info, err := os.Stat(path)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next.files[path] = info.ModTime()
		ic, err := parseIPAMConf(filepath.Join(c.confDir, e.Name()), b)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ic != nil && !slices.ContainsFunc(next.confs, func(o *ipamConf) bool { return o.name == ic.name }):
			// Two files of one network name: libcni's users take the
			// first by file name.
			next.confs = append(next.confs, ic)
		}
	}
	next.err = errors.Join(errs...)
	c.ipam = next
	return next.confs, next.err
}

// unchanged reports whether every file still has the mtime recorded, old
// enough not to hide a change within the same tick.
func unchanged(files map[string]time.Time, readAt time.Time) bool {
	for path, mtime := range files {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil || !time.Unix(st.Mtim.Unix()).Equal(mtime) || readAt.Sub(mtime) <= racyWindow {
			return false
		}
	}
	return true
}

// readLeases returns the leases of a network's directory (a host path
// under rootfs), reading it again only when its mtime changed: host-local
// creates and removes a file per address, and never rewrites one. A
// missing directory holds no lease.
func (c *Reader) readLeases(rootfs, dir string) ([]*Lease, error) {
	path := filepath.Join(rootfs, dir)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		delete(c.leases, dir)
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("lease directory %s: %w", dir, err)
	}
	mtime := time.Unix(st.Mtim.Unix())
	if ld, ok := c.leases[dir]; ok && ld.mtime.Equal(mtime) && ld.readAt.Sub(mtime) > racyWindow {
		return ld.leases, nil
	}
	readAt := time.Now()
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("lease directory %s: %w", dir, err)
	}
	var leases []*Lease
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // lock, last_reserved_ip.N
		}
		b, err := os.ReadFile(filepath.Join(path, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("lease %s/%s: %w", dir, e.Name(), err)
		}
		id, ifname, _ := strings.Cut(string(b), "\n")
		leases = append(leases, &Lease{IP: ip.String(), ContainerID: strings.TrimSpace(id), IfName: strings.TrimSpace(ifname)})
	}
	if c.leases == nil {
		c.leases = map[string]*leaseDir{}
	}
	c.leases[dir] = &leaseDir{readAt: readAt, mtime: mtime, leases: leases}
	return leases, nil
}

// ipamNetworks returns this snapshot's copy of the host-local networks
// and their leases, not yet judged.
func (c *Reader) ipamNetworks(rootfs string) ([]*IPAMNetwork, error) {
	confs, err := c.ipamConfs(rootfs)
	errs := []error{err}
	var networks []*IPAMNetwork
	for _, ic := range confs {
		n := &IPAMNetwork{Name: ic.name, File: ic.file, Dir: ic.dir}
		for _, r := range ic.ranges {
			copied := *r
			n.Ranges = append(n.Ranges, &copied)
		}
		leases, err := c.readLeases(rootfs, ic.dir)
		if err != nil {
			n.Error = err.Error()
			errs = append(errs, err)
		}
		for _, l := range leases {
			copied := *l
			n.Leases = append(n.Leases, &copied)
		}
		networks = append(networks, n)
	}
	return networks, errors.Join(errs...)
}

// Finish implements [inventory.Finisher]: each lease's state. A lease is
// live while a runtime lists its sandbox or a namespace of it is still
// there (its libcni cache entry's path pins one, or a namespace of the
// snapshot was last its sandbox's: a pinned leftover, which is released
// before its lease is); leaked once neither holds, every runtime that
// lists sandboxes answered, and that has been so for the settle time;
// unknown otherwise.
func (o *cniObservation) Finish(f *inventory.Finish) {
	for _, n := range o.view.IPAM {
		for _, l := range n.Leases {
			o.judgeLease(f, n, l)
			if r := n.rangeOf(l.IP); r != nil {
				l.Range = r.Subnet
				switch l.State {
				case LeaseLive:
					r.Live++
				case LeaseLeaked:
					r.Leaked++
				default:
					r.Unknown++
				}
			}
		}
	}
}

// judgeLease gives l its state.
func (o *cniObservation) judgeLease(f *inventory.Finish, n *IPAMNetwork, l *Lease) {
	e := o.byAttachment[attachmentKey{n.Name, l.ContainerID, l.IfName}]
	if e != nil {
		owner := e.owner()
		l.CacheEntry, l.PodNamespace, l.PodName = e.file, owner.PodNamespace, owner.PodName
	}
	listing, why := f.Lists(l.ContainerID)
	switch {
	case listing == inventory.Listed:
		l.State, l.Reason = LeaseLive, "listed"
	case e != nil && o.pinned[e], f.HasNamespace(l.ContainerID):
		l.State, l.Reason = LeaseLive, "namespace_left"
	case listing == inventory.ListerDown:
		l.State, l.Reason, l.Detail = LeaseUnknown, "resolver_down", why
	case listing == inventory.NoLister:
		l.State, l.Reason, l.Detail = LeaseUnknown, "no_resolver", why
	case f.PartialView:
		l.State, l.Reason = LeaseUnknown, "partial_view"
	default:
		l.LeakedSince = f.Since(n.Name + "/" + l.IP + "/" + l.ContainerID)
		if l.LeakedSince.IsZero() || f.Now.Sub(l.LeakedSince) < f.Settle {
			l.State, l.Reason = LeaseUnknown, "settling"
			return
		}
		l.State, l.Reason = LeaseLeaked, "no_sandbox"
	}
}

// rangeOf returns the range that hands out ip, nil for none.
func (n *IPAMNetwork) rangeOf(ip string) *Range {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil
	}
	for _, r := range n.Ranges {
		if r.contains(a) {
			return r
		}
	}
	return nil
}

// LeakedAddresses implements [inventory.AddressLeaks].
func (v *View) LeakedAddresses() []inventory.LeakedAddress {
	var leaked []inventory.LeakedAddress
	for _, n := range v.IPAM {
		for _, l := range n.Leases {
			if l.State != LeaseLeaked {
				continue
			}
			a := inventory.LeakedAddress{Network: n.Name, IP: l.IP, ContainerID: l.ContainerID, IfName: l.IfName, Dir: n.Dir,
				CacheEntry: l.CacheEntry != "", Since: l.LeakedSince}
			if l.PodName != "" {
				a.Owner = &inventory.Owner{Kind: inventory.OwnerPod, ID: l.ContainerID, Name: l.PodName, PodNamespace: l.PodNamespace, PodName: l.PodName}
			}
			leaked = append(leaked, a)
		}
	}
	return leaked
}

// Leases implements [inventory.AddressLeaks].
func (v *View) Leases() int {
	n := 0
	for _, net := range v.IPAM {
		n += len(net.Leases)
	}
	return n
}

var _ inventory.AddressLeaks = (*View)(nil)
