package inventory

import (
	"os"
	"sort"
	"time"

	"github.com/veth-exporter/veth_exporter/kernel"
)

// accounted returns the namespace stages of a snapshot built from what
// the runtimes said alone, without reading a process, when that settles
// every verdict: each veth whose peer is in another namespace has it in
// a namespace where a runtime runs a container or a pod sandbox (which
// the runtime's claim makes owned, whatever the processes), and each
// namespace a mount holds is one of those too (a mount-held namespace
// that is no runtime's may be a leak, which only a pass over /proc
// proves). ok is false, and nothing is held open, when it does not.
//
// Those namespaces are opened and pinned before the link dump, as the
// scan pins what it finds: a pinned namespace keeps its nsid, so an nsid
// of the dump that is one of theirs names that very namespace. Their
// processes are not counted ([Namespace.Uncounted]); their owner is read
// from the cgroup of the process the runtime names, one process each.
func (inv *Inventory) accounted(runtimes []asked) (f found, ok bool) {
	var running []RunningNetns
	for _, a := range runtimes {
		if a.observation != nil {
			running = append(running, a.observation.Running()...)
		}
	}
	if len(running) == 0 {
		return found{}, false
	}
	start := time.Now()
	ns, err := pinRunning(inv.cfg.Paths, running)
	if err != nil || !ns.allRunning() {
		if ns != nil {
			ns.close()
		}
		return found{}, false
	}
	f.netnsTook = time.Since(start)
	start = time.Now()
	f.links, f.linksErr = kernel.DumpLinks()
	f.linksTook = time.Since(start)
	if f.linksErr != nil || !ns.holdsPeers(f.links) {
		// A failed dump is the scan's to retry and report.
		ns.close()
		return found{}, false
	}
	ns.partial = viewLimits(inv.cfg.Paths, inv.cfg.TrustPIDNamespace)
	start = time.Now()
	for _, r := range running {
		n := ns.byInode[r.Inode]
		if n == nil || n.Owner != nil || r.PID <= 0 {
			continue
		}
		// A lone process stands for the namespace: its owner is cached
		// as any namespace's, and it must be in the namespace now.
		n.Owner = resolveOwner(inv.cfg.Paths.Procfs, &Namespace{Inode: n.Inode, PIDs: []int{r.PID}}, inv.ownerCache())
	}
	f.cgroupsTook = time.Since(start)
	f.ns = ns
	return f, true
}

// pinRunning opens the namespaces runtimes run containers in, checks that
// each path still opens the namespace the runtime's answer named, looks
// up its nsid and keeps it open, then adds the namespaces that nsfs
// mounts hold. A namespace whose path no longer opens to it (its
// container stopped since) is left out: it is no longer accounted for.
func pinRunning(p Paths, running []RunningNetns) (*namespaces, error) {
	ns, err := newNamespaces(p)
	if err != nil {
		return nil, err
	}
	host := ns.host
	h, err := kernel.OpenNSIDs()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	for _, r := range running {
		if r.Inode == host || r.Path == "" || ns.byInode[r.Inode] != nil {
			continue
		}
		id, fd, err := h.Pin(r.Path, r.Inode)
		if err != nil {
			continue
		}
		ns.pins = append(ns.pins, fd)
		n := ns.get(r.Inode)
		n.PIDs, n.Uncounted = nil, true
		if id >= 0 {
			n.NSID = id
			ns.byNSID[id] = n
		}
	}
	if err := ns.addMounts(p, host); err != nil {
		ns.close()
		return nil, err
	}
	for _, n := range ns.byInode {
		sort.Strings(n.Mounts)
	}
	return ns, nil
}

// allRunning reports whether every namespace found is one a runtime runs
// a container in.
func (ns *namespaces) allRunning() bool {
	for _, n := range ns.byInode {
		if !n.Uncounted {
			return false
		}
	}
	return true
}

// holdsPeers reports whether the peer of every veth of links that is in
// another namespace with an nsid is in one of ns's.
func (ns *namespaces) holdsPeers(links []kernel.Link) bool {
	for _, l := range links {
		if l.Veth && l.PeerNetNSID >= 0 && ns.byNSID[l.PeerNetNSID] == nil {
			return false
		}
	}
	return true
}

// viewLimits says why a pass over procfs could miss processes that hold
// namespaces: not root, or not the host's PID namespace.
func viewLimits(p Paths, trustPIDNamespace bool) []string {
	var limits []string
	if os.Geteuid() != 0 {
		limits = append(limits, "not running as root: processes of other users may be hidden (hidepid) or unreadable; run as root for a full view")
	}
	if !trustPIDNamespace && !kernel.InitialPIDNamespace(p.Procfs) {
		limits = append(limits, p.Procfs+" is not the host's PID namespace (no kernel threads listed): processes outside it are not seen; "+
			"run with the host's PID namespace (docker run --pid=host, hostPID: true) or point --path.procfs at the host's /proc")
	}
	return limits
}
