package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/kernel"
	"golang.org/x/sys/unix"
)

// The libcni result cache: for every attachment a CNI ADD made, libcni
// (run by containerd, CRI-O, cnitool) writes <network>-<container>-<ifname>
// under /var/lib/cni/results and removes it on CNI DEL. An entry names the
// sandbox (containerId), the pod (cniArgs K8S_POD_*), the namespace (netns,
// or the sandbox of the container-side interface: containerd 1.6's libcni
// records no top-level netns) and the host veth (result.interfaces). It
// names the pod of a leftover the exporter never saw owned, and an entry
// whose veth outlived its pod is a CNI DEL that never ran.
//
// Names are reused (Calico's cali<hash> comes back for a new pod of the
// same name), so an entry is evidence about a veth only when its
// namespace path still pins the veth's peer namespace, or, that path
// gone, when the host veth's name and both ends' MAC addresses as
// recorded match the pair the kernel has now.

// cniCacheEntry is what the exporter reads of one libcni cache entry.
type cniCacheEntry struct {
	file        string
	containerID string
	ifName      string
	network     string
	// netns is the namespace path as the runtime gave it.
	netns string
	args  map[string]string
	// host are the interfaces without a sandbox (the host veth, a
	// bridge); container is the interface ifName in the sandbox.
	host      []cniInterface
	container *cniInterface
}

type cniInterface struct {
	Name    string `json:"name"`
	Mac     string `json:"mac"`
	Sandbox string `json:"sandbox"`
}

// parseCNICacheEntry decodes a libcni cache entry (kind cniCacheV1).
func parseCNICacheEntry(file string, b []byte) (*cniCacheEntry, error) {
	var raw struct {
		ContainerID string     `json:"containerId"`
		IfName      string     `json:"ifName"`
		NetworkName string     `json:"networkName"`
		Netns       string     `json:"netns"`
		CNIArgs     [][]string `json:"cniArgs"`
		Result      struct {
			Interfaces []cniInterface `json:"interfaces"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("libcni cache entry %s: %w", file, err)
	}
	if raw.ContainerID == "" {
		return nil, fmt.Errorf("libcni cache entry %s: no containerId", file)
	}
	e := &cniCacheEntry{file: file, containerID: raw.ContainerID, ifName: raw.IfName, network: raw.NetworkName,
		netns: raw.Netns, args: map[string]string{}}
	for _, kv := range raw.CNIArgs {
		if len(kv) == 2 {
			e.args[kv[0]] = kv[1]
		}
	}
	for i := range raw.Result.Interfaces {
		iface := raw.Result.Interfaces[i]
		switch {
		case iface.Sandbox == "":
			e.host = append(e.host, iface)
		case iface.Name == e.ifName && e.container == nil:
			e.container = &iface
		}
	}
	if e.netns == "" && e.container != nil {
		e.netns = e.container.Sandbox
	}
	return e, nil
}

// owner is the pod (or, without Kubernetes arguments, the container)
// the entry's sandbox belonged to.
func (e *cniCacheEntry) owner() *inventory.Owner {
	name, ns, uid := e.args["K8S_POD_NAME"], e.args["K8S_POD_NAMESPACE"], e.args["K8S_POD_UID"]
	if name == "" && uid == "" {
		return &inventory.Owner{Kind: inventory.OwnerContainer, ID: e.containerID}
	}
	return &inventory.Owner{Kind: inventory.OwnerPod, ID: e.containerID, Name: name, PodNamespace: ns, PodName: name, PodUID: uid}
}

// hostInterface returns the recorded host interface of that name.
func (e *cniCacheEntry) hostInterface(name string) *cniInterface {
	for i := range e.host {
		if e.host[i].Name == name {
			return &e.host[i]
		}
	}
	return nil
}

// Attachment is a libcni cache entry whose host veth still exists
// while nothing runs in its namespace any more: a CNI DEL that never ran.
type Attachment struct {
	// File is the entry's file name in the cache directory.
	File         string `json:"file"`
	ContainerID  string `json:"container_id"`
	Network      string `json:"network"`
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	PodUID       string `json:"pod_uid,omitempty"`
	Device       string `json:"device"`
	Ifindex      int    `json:"ifindex"`
}

// resultCache is the cache directory as last read: parsed entries by file
// name, re-read only when the directory's mtime changed.
type resultCache struct {
	read     bool
	readAt   time.Time
	dirMtime time.Time
	// retry: an entry could not be parsed (libcni writes in place, so a
	// read can see it half-written): list the directory again next time.
	retry   bool
	files   map[string]cachedEntry
	entries []*cniCacheEntry
}

type cachedEntry struct {
	mtime time.Time
	size  int64
	entry *cniCacheEntry
}

// entries returns the cache directory's entries, listing it again only
// when its mtime changed, and parsing only the files that changed; exists
// is false when there is no such directory (no libcni on this node).
func (c *Reader) entries(rootfs string) (entries []*cniCacheEntry, exists bool, err error) {
	dir := filepath.Join(rootfs, c.cacheDir)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		c.cache = resultCache{}
		if errors.Is(err, unix.ENOENT) {
			return nil, false, nil
		}
		return nil, true, fmt.Errorf("libcni cache directory %s: %w", c.cacheDir, err)
	}
	mtime := time.Unix(st.Mtim.Unix())
	rc := &c.cache
	if rc.read && !rc.retry && rc.dirMtime.Equal(mtime) && rc.readAt.Sub(mtime) > racyWindow {
		return rc.entries, true, nil
	}
	list, err := os.ReadDir(dir)
	if err != nil {
		c.cache = resultCache{}
		return nil, true, fmt.Errorf("libcni cache directory %s: %w", c.cacheDir, err)
	}
	next := resultCache{read: true, readAt: time.Now(), dirMtime: mtime, files: make(map[string]cachedEntry, len(list))}
	for _, de := range list {
		if !de.Type().IsRegular() {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		name := de.Name()
		if old, ok := rc.files[name]; ok && old.mtime.Equal(info.ModTime()) && old.size == info.Size() && next.readAt.Sub(old.mtime) > racyWindow {
			next.files[name] = old
			next.entries = append(next.entries, old.entry)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			next.retry = true
			continue
		}
		e, err := parseCNICacheEntry(name, b)
		if err != nil {
			next.retry = true
			continue
		}
		next.files[name] = cachedEntry{mtime: info.ModTime(), size: info.Size(), entry: e}
		next.entries = append(next.entries, e)
	}
	*rc = next
	return rc.entries, true, nil
}

// cniObservation is what the CNI's files said for one snapshot.
type cniObservation struct {
	view *View
	// byInode are the entries whose namespace path pins a namespace now.
	byInode map[uint64][]*cniCacheEntry
	// byHost are the entries whose namespace path pins nothing (or is a
	// /proc path, whose PID may be another process's by now), by
	// recorded host interface name.
	byHost map[string][]*cniCacheEntry
	// byAttachment are all entries by network, container ID and
	// interface, and pinned those whose namespace path pins a namespace.
	byAttachment map[attachmentKey]*cniCacheEntry
	pinned       map[*cniCacheEntry]bool
}

// attachmentKey identifies a CNI attachment: what a lease and a libcni
// cache entry both record.
type attachmentKey struct{ network, containerID, ifName string }

// Annotate implements [inventory.Annotator]: it reads the CNI's
// configuration, agent and result cache for one snapshot and resolves
// each cache entry's namespace path.
func (c *Reader) Annotate(p inventory.Paths) (inventory.Annotation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := &cniObservation{view: &View{}, byInode: map[uint64][]*cniCacheEntry{}, byHost: map[string][]*cniCacheEntry{},
		byAttachment: map[attachmentKey]*cniCacheEntry{}, pinned: map[*cniCacheEntry]bool{}}
	var errs []error
	n, err := c.network(p.Rootfs)
	errs = append(errs, err)
	if n != nil {
		if len(n.Agents) > 0 {
			n.AgentPID, n.DaemonRunning = c.agentRunning(p.Procfs, n.Agents)
		}
		o.view.Network = n
	}
	o.view.IPAM, err = c.ipamNetworks(p.Rootfs)
	errs = append(errs, err)
	if c.cacheDir == "" {
		return o, errors.Join(errs...)
	}
	entries, exists, err := c.entries(p.Rootfs)
	if err != nil || !exists {
		return o, errors.Join(append(errs, err)...)
	}
	o.view.CacheRead, o.view.CacheEntries = true, len(entries)
	for _, e := range entries {
		o.byAttachment[attachmentKey{e.network, e.containerID, e.ifName}] = e
		if inode := netnsInodeAt(p.Rootfs, e.netns); inode != 0 {
			o.byInode[inode] = append(o.byInode[inode], e)
			o.pinned[e] = true
			continue
		}
		for _, h := range e.host {
			o.byHost[h.Name] = append(o.byHost[h.Name], e)
		}
	}
	return o, errors.Join(errs...)
}

// netnsInodeAt returns the inode of the namespace the nsfs mount at path
// (a host path, opened under rootfs) pins, 0 when it pins none now. A
// /proc/PID/ns/net path is never trusted: the PID may be reused.
func netnsInodeAt(rootfs, path string) uint64 {
	if path == "" || strings.HasPrefix(path, "/proc/") {
		return 0
	}
	return kernel.NsfsInode(filepath.Join(rootfs, inventory.HostRunPath(path)))
}

// Annotate implements [inventory.Annotation]: the cache's part in v's record, once the runtimes' claims
// were weighed and the verdict given: an entry that applies to v names
// its last owner when the history and the runtimes name none, and counts
// as stale when no runtime claims the namespace running, no container or
// pod process is in it, and no runtime that might know is down. The cache
// never changes a verdict: an entry is there for live pods too, and a
// live pod whose processes' cgroups the exporter does not recognise must
// not turn into owner_exited for it.
func (o *cniObservation) Annotate(v *inventory.Veth, claim inventory.RuntimeClaim) {
	e := o.entryFor(v)
	if e == nil {
		return
	}
	if e.hostInterface(v.Name) != nil {
		v.CNIAttachment = &inventory.CNIAttachment{Network: e.network, ContainerID: e.containerID, IfName: e.ifName}
	}
	if v.LastOwner == nil {
		v.LastOwner = e.owner()
	}
	running := claim == inventory.RuntimeRunning || (v.Owner != nil && v.Owner.Kind != inventory.OwnerProcess)
	if e.hostInterface(v.Name) != nil && !running && claim != inventory.RuntimeDown {
		owner := e.owner()
		o.view.Stale = append(o.view.Stale, Attachment{File: e.file, ContainerID: e.containerID, Network: e.network,
			PodNamespace: owner.PodNamespace, PodName: owner.PodName, PodUID: owner.PodUID, Device: v.Name, Ifindex: v.Index})
	}
}

// entryFor returns the cache entry that applies to v, nil when none is
// proved to: the one whose namespace path pins v's peer namespace (of
// several, the one recording v as its host interface), else one whose
// path pins nothing and whose recorded pair matches v's (see
// [cniObservation.samePair]). Entries about one namespace that name
// different sandboxes prove nothing.
func (o *cniObservation) entryFor(v *inventory.Veth) *cniCacheEntry {
	if v.PeerNetns != nil {
		if es := o.byInode[v.PeerNetns.Inode]; len(es) > 0 {
			best := es[0]
			for _, e := range es {
				if e.containerID != best.containerID {
					return nil
				}
				if e.hostInterface(v.Name) != nil {
					best = e
				}
			}
			return best
		}
	}
	for _, e := range o.byHost[v.Name] {
		if samePair(v, e) {
			return e
		}
	}
	return nil
}

// samePair reports whether the pair e recorded is v's: a host interface
// of v's name whose recorded MAC (if any) is v's, and a container-side
// interface, whose MAC must be recorded, that is v's peer: the link at
// v's peer index in the peer namespace has the entry's ifName and that
// MAC. Reading another namespace's link takes CAP_NET_ADMIN: without it
// nothing is proved.
func samePair(v *inventory.Veth, e *cniCacheEntry) bool {
	h := e.hostInterface(v.Name)
	if h == nil || e.container == nil || e.container.Mac == "" || v.PeerOnHost || v.PeerNetNSID < 0 {
		return false
	}
	if h.Mac != "" {
		name, mac, err := kernel.LinkAddress(-1, v.Index)
		if err != nil || name != v.Name || !sameMAC(mac, h.Mac) {
			return false
		}
	}
	name, mac, err := kernel.LinkAddress(v.PeerNetNSID, v.PeerIndex)
	return err == nil && name == e.ifName && sameMAC(mac, e.container.Mac)
}

func sameMAC(have net.HardwareAddr, recorded string) bool {
	want, err := net.ParseMAC(recorded)
	return err == nil && len(have) > 0 && bytes.Equal(have, want)
}

// View implements [inventory.Annotation]: the CNI's record, its stale
// attachments ordered once every veth was annotated; a namespace with
// several host veths of one entry counts it once.
func (o *cniObservation) View() inventory.RuntimeView {
	slices.SortFunc(o.view.Stale, func(a, b Attachment) int { return strings.Compare(a.File, b.File) })
	o.view.Stale = slices.CompactFunc(o.view.Stale, func(a, b Attachment) bool { return a.File == b.File })
	return o.view
}
