package inventory

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/veth-exporter/veth_exporter/kernel"
	"golang.org/x/sys/unix"
)

// namespaces is the result of one pass over /proc and mountinfo: every
// network namespace other than the host's that a process or an nsfs mount
// holds, by inode and by nsid.
type namespaces struct {
	// host is the inode of the exporter's own namespace.
	host    uint64
	byInode map[uint64]*Namespace
	byNSID  map[int]*Namespace
	// mountPaths are the nsfs mount points as this process opens them,
	// which differ from Namespace.Mounts when --path.rootfs is set.
	mountPaths map[uint64][]string
	// partial says why the scan may have missed processes; empty when it
	// saw every process that can hold a namespace.
	partial []string
	// pins are open handles on every namespace whose nsid was looked up.
	// A namespace that is held open cannot die, so its nsid cannot be
	// given to a new namespace before the link dump that runs beside the
	// scan has finished: without them a new pod's veth could be matched to
	// the record of a leaked namespace deleted in between.
	pins []int
	// threadsRead says every thread of every process has been seen, not
	// only each process's own namespace.
	threadsRead bool
	// denied says the partial view already counts processes whose
	// namespace may not be read.
	denied bool
}

// close releases the pins once the snapshot no longer maps nsids.
func (ns *namespaces) close() {
	for _, fd := range ns.pins {
		unix.Close(fd)
	}
	ns.pins = nil
}

// scanNamespaces finds every network namespace held by a process or an nsfs
// mount, without entering any of them, and asks the kernel once per
// namespace for the nsid the host knows it by.
//
// It reads each process's namespace, not its threads' unless every
// thread is true or the process's leader has exited: a namespace that
// holds a process is not empty whatever its threads do. The threads are
// read later, by addThreads, only when some namespace could look empty
// or ownerless without them.
func scanNamespaces(p Paths, trustPIDNamespace, everyThread bool) (*namespaces, error) {
	ns, err := newNamespaces(p)
	if err != nil {
		return nil, err
	}
	host := ns.host
	ns.threadsRead = everyThread
	if err := ns.addProcesses(p.Procfs, host, everyThread); err != nil {
		return nil, err
	}
	ns.partial = append(ns.partial, viewLimits(p, trustPIDNamespace)...)
	if err := ns.addMounts(p, host); err != nil {
		return nil, err
	}
	for _, n := range ns.byInode {
		sort.Ints(n.PIDs)
		sort.Strings(n.Mounts)
	}
	if err := ns.lookupNSIDs(p, func(*Namespace) bool { return true }); err != nil {
		return nil, err
	}
	return ns, nil
}

// newNamespaces returns an empty set of the namespaces other than the
// exporter's own, which it identifies.
func newNamespaces(p Paths) (*namespaces, error) {
	host, err := kernel.HostNetnsInode(p.Procfs)
	if err != nil {
		return nil, err
	}
	return &namespaces{
		host:       host,
		byInode:    map[uint64]*Namespace{},
		byNSID:     map[int]*Namespace{},
		mountPaths: map[uint64][]string{},
	}, nil
}

// lookupNSIDs asks the kernel for the nsid of each namespace that want
// selects, over one netlink socket.
func (ns *namespaces) lookupNSIDs(p Paths, want func(*Namespace) bool) error {
	h, err := kernel.OpenNSIDs()
	if err != nil {
		return err
	}
	defer h.Close()
	for _, n := range ns.byInode {
		if !want(n) {
			continue
		}
		if id, fd, ok := ns.lookupNSID(h, p, n); ok {
			ns.pins = append(ns.pins, fd)
			if id >= 0 {
				n.NSID = id
				ns.byNSID[id] = n
			}
		}
	}
	return nil
}

// resolveOwners finds the owner of every namespace that has an nsid: only
// those can hold the peer of a host veth, since the kernel gives a
// namespace an id when a link crosses into it.
func (ns *namespaces) resolveOwners(procfs string, cache *ownerCache) {
	for _, n := range ns.byNSID {
		n.resolve(procfs, cache)
	}
}

// evict drops from cache the processes this scan did not find in any
// namespace: gone, or no longer where an owner is looked for.
func (ns *namespaces) evict(cache *ownerCache) {
	live := map[int]bool{}
	for _, n := range ns.byInode {
		for _, pid := range n.PIDs {
			live[pid] = true
		}
	}
	cache.keep(func(pid int) bool { return live[pid] })
}

// attach turns a link dump into veths linked to their peers' namespaces
// and those namespaces' owners.
//
// The scan pinned what it found before the dump ended, and no nsid was
// freed since the dump began (or the links were dumped again after the
// scan: see [Inventory.scan]), so an nsid of the dump that the scan knows
// names the namespace the scan found. One it
// does not know may belong to a namespace that got its first nsid from the
// dump itself (a veth created meanwhile), which lookupLate finds, or to a
// namespace the scan never saw (being destroyed, its last process just
// gone). The kernel frees such a namespace's nsid when it is cleaned up
// and hands the lowest free id to the next namespace that needs one: the
// late lookup can find the dump's nsid on another namespace than the one
// the dump meant. So the dump is not trusted after a late lookup: the
// links are dumped again by redump, when every scanned namespace is
// pinned with a fixed id, and the veths of that second dump are returned;
// an nsid it shows that no scanned namespace has stays unresolved
// (netns_not_found). All of this only when some nsid was missing.
//
// If the late lookup or the second dump fails, the veths of the first dump
// are returned, attached only where the scan knew the nsid, with the
// error.
func (ns *namespaces) attach(links []kernel.Link, lookupLate func() error, redump func() ([]kernel.Link, error)) ([]Veth, error) {
	veths := vethsFromLinks(links)
	if !ns.link(veths) {
		return veths, nil
	}
	if err := lookupLate(); err != nil {
		return veths, fmt.Errorf("look up late nsids: %w", err)
	}
	again, err := redump()
	if err != nil {
		return veths, err
	}
	veths = vethsFromLinks(again)
	ns.link(veths)
	return veths, nil
}

// link sets the peer namespace and owner of every veth whose peer nsid is
// known, and reports whether some peer nsid is not.
func (ns *namespaces) link(veths []Veth) (missing bool) {
	for i := range veths {
		v := &veths[i]
		if v.PeerNetNSID < 0 {
			continue
		}
		if n := ns.byNSID[v.PeerNetNSID]; n != nil {
			v.PeerNetns = n
			v.Owner = n.Owner
		} else {
			missing = true
		}
	}
	return missing
}

// lookupLate asks again for the nsids of the namespaces that had none when
// scanned, pins them, and finds the owners of those that have one now.
func (ns *namespaces) lookupLate(p Paths, cache *ownerCache) error {
	var fresh []*Namespace
	err := ns.lookupNSIDs(p, func(n *Namespace) bool {
		if n.NSID >= 0 {
			return false
		}
		fresh = append(fresh, n)
		return true
	})
	if err != nil {
		return err
	}
	for _, n := range fresh {
		if n.NSID >= 0 {
			n.resolve(p.Procfs, cache)
		}
	}
	return nil
}

// leaked returns the namespaces held only by mounts: no process in them
// and no veth leading into them.
func (ns *namespaces) leaked(veths []Veth) []*Namespace {
	peers := map[*Namespace]bool{}
	for i := range veths {
		if veths[i].PeerNetns != nil {
			peers[veths[i].PeerNetns] = true
		}
	}
	leaked := []*Namespace{}
	for _, n := range ns.byInode {
		if n.Empty() && len(n.Mounts) > 0 && !peers[n] {
			leaked = append(leaked, n)
		}
	}
	sort.Slice(leaked, func(i, j int) bool { return leaked[i].Mounts[0] < leaked[j].Mounts[0] })
	return leaked
}

func (ns *namespaces) get(inode uint64) *Namespace {
	n := ns.byInode[inode]
	if n == nil {
		n = &Namespace{Inode: inode, NSID: -1, PIDs: []int{}, Mounts: []string{}}
		ns.byInode[inode] = n
	}
	return n
}

func (ns *namespaces) addProcesses(procfs string, host uint64, threads bool) error {
	w, err := kernel.WalkProcesses(procfs, threads, func(pid int, inode uint64) {
		if inode != host {
			ns.get(inode).addPID(pid)
		}
	})
	if err != nil {
		return err
	}
	ns.addWalk(w)
	return nil
}

// addWalk records in the partial view what a walk could not see.
func (ns *namespaces) addWalk(w kernel.ProcessWalk) {
	if w.Denied > 0 && !ns.denied {
		ns.denied = true
		ns.partial = append(ns.partial, fmt.Sprintf(
			"cannot read the network namespace of %d processes outside the host namespace (permission denied; CAP_SYS_PTRACE missing, or a security module)", w.Denied))
	}
	if len(w.Failed) > 0 {
		ns.partial = append(ns.partial, w.FailedMessage())
	}
}

// needThreads reports whether the threads of every process must be read
// before the veths of links can be judged: some peer namespace was not
// found by the process pass (a thread alone may hold it), or holds no
// process of a container (a thread of one may be in it), or some
// namespace holds no process at all (a leaked namespace is only leaked if
// no thread is in it either).
func (ns *namespaces) needThreads(links []kernel.Link) bool {
	if ns.threadsRead {
		return false
	}
	for _, n := range ns.byInode {
		if len(n.PIDs) == 0 {
			return true
		}
	}
	for _, l := range links {
		if !l.Veth || l.PeerNetNSID < 0 {
			continue
		}
		n := ns.byNSID[l.PeerNetNSID]
		if n == nil || n.Owner == nil || n.Owner.Kind == OwnerProcess {
			return true
		}
	}
	return false
}

// addThreads reads the namespace of every thread of every process and
// adds the processes it finds to the namespaces their threads are in,
// new namespaces included (their nsids are looked up late, as for any
// namespace the scan did not pin). The owners of the namespaces that
// gained a process and have an nsid are resolved again. Threads that
// cannot be read make the view partial, never a namespace empty.
func (ns *namespaces) addThreads(p Paths, cache *ownerCache) error {
	if ns.threadsRead {
		return nil
	}
	ns.threadsRead = true
	known := map[*Namespace]map[int]bool{}
	w, err := kernel.WalkProcesses(p.Procfs, true, func(pid int, inode uint64) {
		if inode == ns.host {
			return
		}
		n := ns.get(inode)
		pids := known[n]
		if pids == nil {
			pids = make(map[int]bool, len(n.PIDs))
			for _, pid := range n.PIDs {
				pids[pid] = true
			}
			known[n] = pids
		}
		if !pids[pid] {
			pids[pid] = true
			n.PIDs = append(n.PIDs, pid)
		}
	})
	if err != nil {
		return err
	}
	ns.addWalk(w)
	for n, pids := range known {
		if len(pids) == len(n.PIDs) {
			continue
		}
		sort.Ints(n.PIDs)
		if n.NSID >= 0 {
			n.resolve(p.Procfs, cache)
		}
	}
	return nil
}

// addPID records pid once, whichever of its threads is in the namespace.
func (n *Namespace) addPID(pid int) {
	if len(n.PIDs) == 0 || n.PIDs[len(n.PIDs)-1] != pid {
		n.PIDs = append(n.PIDs, pid)
	}
}

// addMounts adds the namespaces that nsfs mounts hold, and their mounts.
func (ns *namespaces) addMounts(p Paths, host uint64) error {
	mounts, err := kernel.NsfsMounts(p.Procfs)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if m.Inode == host {
			continue
		}
		n := ns.get(m.Inode)
		n.Mounts = append(n.Mounts, p.hostPath(m.Point))
		ns.mountPaths[m.Inode] = append(ns.mountPaths[m.Inode], m.Point)
	}
	return nil
}

// lookupNSID asks the kernel for the nsid of n through the first handle that
// still opens to the same namespace: a process may exit and its PID be
// reused between the scan and the open, so the inode is checked again. It
// returns the open handle, which pins the namespace, for the caller to
// close.
func (ns *namespaces) lookupNSID(h *kernel.NSIDs, p Paths, n *Namespace) (id, fd int, ok bool) {
	paths := make([]string, 0, len(n.PIDs)+len(n.Mounts))
	for _, pid := range n.PIDs {
		paths = append(paths, filepath.Join(p.Procfs, strconv.Itoa(pid), "ns/net"))
	}
	paths = append(paths, ns.mountPaths[n.Inode]...)
	for _, path := range paths {
		id, fd, err := h.Pin(path, n.Inode)
		if err == nil {
			return id, fd, true
		}
	}
	// A namespace that only a thread holds opens through that thread.
	for _, pid := range n.PIDs {
		dir := filepath.Join(p.Procfs, strconv.Itoa(pid), "task")
		tids, err := kernel.ReadDirNames(dir)
		if err != nil {
			continue
		}
		for _, tid := range tids {
			id, fd, err := h.Pin(filepath.Join(dir, tid, "ns/net"), n.Inode)
			if err == nil {
				return id, fd, true
			}
		}
	}
	return -1, -1, false
}

// findOtherLinks lists, for each peer namespace no process is in, the
// interfaces it holds besides loopback and the peers of host veths, with
// one link dump per such namespace (IFLA_TARGET_NETNSID: it is not
// entered). A leaked pod namespace holds loopback and its eth0; one that
// holds more (a veth to a live container, a tunnel, a bridge) may route
// for others although no process lives in it. It returns warnings for the
// namespaces it could not list, which count as holding other links.
//
// Listing another namespace's links takes CAP_NET_ADMIN. An exporter that
// only monitors may lack it: then no namespace is listed and a namespace
// that routes for others reads netns_empty; remediation, which holds
// CAP_NET_ADMIN, lists the interfaces again right before deleting.
func (ns *namespaces) findOtherLinks(veths []Veth) []string {
	peers := map[*Namespace]map[int]bool{}
	for i := range veths {
		v := &veths[i]
		if n := v.PeerNetns; n != nil && n.Empty() && n.NSID >= 0 {
			if peers[n] == nil {
				peers[n] = map[int]bool{}
			}
			peers[n][v.PeerIndex] = true
		}
	}
	var warnings []string
	for n, allowed := range peers {
		links, err := kernel.DumpLinksIn(n.NSID)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return nil
		}
		if err != nil {
			n.OtherLinks = []string{"?"}
			warnings = append(warnings, fmt.Sprintf("cannot list the interfaces of namespace net:[%d]: %v", n.Inode, err))
			continue
		}
		for _, l := range links {
			if l.Index == loopbackIndex || (l.Veth && allowed[l.Index]) {
				continue
			}
			n.OtherLinks = append(n.OtherLinks, l.Name)
		}
		sort.Strings(n.OtherLinks)
	}
	return warnings
}

// loopbackIndex is the ifindex of loopback in every namespace.
const loopbackIndex = 1
