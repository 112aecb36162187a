// Package cnidel finishes a CNI DEL that never ran: for an attachment a
// runtime lost (its sandbox gone, its namespace freed), it runs the DEL the
// runtime would have run, through libcni and the plugins' own binaries,
// from what libcni cached at ADD (the network configuration list, the CNI
// arguments, the interface, the namespace path), so that each plugin
// releases what it holds its own way: host-local its address lease,
// portmap its iptables chains, bandwidth its qdiscs. It also releases a
// host-local lease that has no cache entry, as host-local itself does.
//
// Running the plugins is the one exec the exporter does, and only here
// (.golangci.yml, depguard): a DEL runs only once no namespace is left
// for the attachment, so that no plugin ever touches a live one.
//
// Every path is a host path, and a Deleter is meant to run in the host's
// mount namespace (remediate enters it on a thread of its own): the
// plugins then run where the runtime ran them at ADD, with the host's
// binaries and libraries (portmap's iptables), its writable /var/lib/cni
// and its /run/netns, whatever the exporter's own mount namespace is (a
// FROM-scratch image, systemd's ProtectSystem=strict).
package cnidel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/kernel"
)

// Defaults of the plugins' directory and libcni's cache directory, host
// paths. Debian's containernetworking-plugins installs the plugins in
// /usr/lib/cni.
const (
	DefaultBinDir   = "/opt/cni/bin"
	DefaultCacheDir = "/var/lib/cni"
)

// ErrNamespaceLeft is returned for an attachment whose namespace path
// still pins a namespace: release the pins first.
var ErrNamespaceLeft = errors.New("its namespace is still there")

// ErrNoCacheEntry is returned for an attachment libcni has no cache
// entry of (already deleted, or never cached).
var ErrNoCacheEntry = errors.New("no libcni cache entry")

// Attachment identifies a CNI attachment, as a lease and a libcni cache
// entry record it.
type Attachment struct {
	Network, ContainerID, IfName string
}

func (a Attachment) String() string {
	return a.Network + "/" + a.ContainerID + "/" + a.IfName
}

// Deleter runs the DELs. Its paths are host paths.
type Deleter struct {
	// BinDirs are where the plugin binaries are (--cni.bin-dir).
	BinDirs []string
	// CacheDir is libcni's cache directory, which holds results/.
	CacheDir string
}

func (d *Deleter) config() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(d.BinDirs, d.CacheDir, nil)
}

// Released is what a DEL released, as verified after it.
type Released struct {
	// Leases are the host-local lease files the cached result named,
	// gone now.
	Leases []string
}

// Del runs the CNI DEL of the cached attachment a: libcni reads what it
// cached at ADD (the configuration list, the arguments, the namespace
// path), runs each plugin's DEL in reverse order and removes the cache
// entry. It refuses an attachment whose namespace path still pins a
// namespace (ErrNamespaceLeft), and one without a cache entry
// (ErrNoCacheEntry). After the DEL it verifies that the cache entry and
// every host-local lease of the cached result naming a.ContainerID are
// gone.
func (d *Deleter) Del(ctx context.Context, a Attachment) (Released, error) {
	c := d.config()
	att, err := cachedAttachment(c, a)
	if err != nil {
		return Released{}, err
	}
	if att.NetNS != "" && !strings.HasPrefix(att.NetNS, "/proc/") {
		if inode := kernel.NsfsInode(att.NetNS); inode != 0 {
			return Released{}, fmt.Errorf("CNI DEL of %s: %s pins net:[%d]: %w", a, att.NetNS, inode, ErrNamespaceLeft)
		}
	}
	list, err := libcni.ConfListFromBytes(att.Config)
	if err != nil {
		return Released{}, fmt.Errorf("CNI DEL of %s: cached configuration: %w", a, err)
	}
	leases, err := d.cachedLeases(list, a)
	if err != nil {
		return Released{}, fmt.Errorf("CNI DEL of %s: %w", a, err)
	}
	rt := &libcni.RuntimeConf{ContainerID: a.ContainerID, NetNS: att.NetNS, IfName: a.IfName, CapabilityArgs: att.CapabilityArgs}
	for _, kv := range att.CniArgs {
		rt.Args = append(rt.Args, [2]string{kv[0], kv[1]})
	}
	if err := c.DelNetworkList(ctx, list, rt); err != nil {
		return Released{}, fmt.Errorf("CNI DEL of %s: %w", a, err)
	}
	if _, err := cachedAttachment(c, a); !errors.Is(err, ErrNoCacheEntry) {
		return Released{}, fmt.Errorf("CNI DEL of %s ran, but its cache entry is still there (%v)", a, err)
	}
	var still []string
	for _, l := range leases {
		if owner, err := leaseOwner(l); err == nil && owner == a.ContainerID {
			still = append(still, l)
		}
	}
	if len(still) > 0 {
		return Released{}, fmt.Errorf("CNI DEL of %s ran, but its lease %s is still there", a, strings.Join(still, ", "))
	}
	return Released{Leases: leases}, nil
}

// cachedAttachment returns libcni's cache entry of a.
func cachedAttachment(c *libcni.CNIConfig, a Attachment) (*libcni.NetworkAttachment, error) {
	atts, err := c.GetCachedAttachments(a.ContainerID)
	if err != nil {
		return nil, fmt.Errorf("CNI DEL of %s: %w", a, err)
	}
	for _, att := range atts {
		if att.Network == a.Network && att.IfName == a.IfName && att.ContainerID == a.ContainerID {
			return att, nil
		}
	}
	return nil, fmt.Errorf("CNI DEL of %s: %w", a, ErrNoCacheEntry)
}

// cachedLeases returns the host-local lease files (host paths) of the
// addresses the cached result of a recorded, in the dataDir of the list's
// host-local plugin; none for a list without one.
func (d *Deleter) cachedLeases(list *libcni.NetworkConfigList, a Attachment) ([]string, error) {
	var dataDir string
	for _, p := range list.Plugins {
		var conf struct {
			IPAM struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		}
		if json.Unmarshal(p.Bytes, &conf) == nil && conf.IPAM.Type == "host-local" {
			dataDir = conf.IPAM.DataDir
			if dataDir == "" {
				dataDir = "/var/lib/cni/networks"
			}
			break
		}
	}
	if dataDir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(d.CacheDir, "results", a.Network+"-"+a.ContainerID+"-"+a.IfName))
	if err != nil {
		return nil, err
	}
	var entry struct {
		Result struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &entry); err != nil {
		return nil, fmt.Errorf("cache entry: %w", err)
	}
	var leases []string
	for _, ip := range entry.Result.IPs {
		if p, err := netip.ParsePrefix(ip.Address); err == nil {
			leases = append(leases, filepath.Join(dataDir, list.Name, p.Addr().String()))
		}
	}
	return leases, nil
}

// leaseOwner returns the container ID a lease file names.
func leaseOwner(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(id), nil
}

// ErrLeaseChanged is returned for a lease file that no longer names the
// container ID it was judged leaked for.
var ErrLeaseChanged = errors.New("the lease names another container now")

// ReleaseLease releases the host-local lease of ip in the network's lease
// directory dir (a host path) the way host-local does, for a leaked lease
// that has no libcni cache entry: under the directory's lock file (the
// one host-local takes for every allocation and release), it removes the
// file of ip if, and only if, it still names containerID. A lease already
// gone is no error.
func (d *Deleter) ReleaseLease(dir, ip, containerID string) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.String() != ip {
		return fmt.Errorf("release lease %q: not an address", ip)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("release lease %s in %s: lock file: %w", ip, dir, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("release lease %s in %s: lock: %w", ip, dir, err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN) //nolint:errcheck // closing unlocks too
	file := filepath.Join(dir, ip)
	owner, err := leaseOwner(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("release lease %s in %s: %w", ip, dir, err)
	case owner != containerID:
		return fmt.Errorf("release lease %s in %s (for %s): %w: %s", ip, dir, containerID, ErrLeaseChanged, owner)
	}
	if err := os.Remove(file); err != nil {
		return fmt.Errorf("release lease %s in %s: %w", ip, dir, err)
	}
	return nil
}
