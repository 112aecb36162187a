package inventory

import (
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/veth-exporter/veth_exporter/kernel"
)

// ownerCache remembers the container or pod a process runs in, by PID and
// start time (a reused PID is a new process with another start time), so
// that a process's cgroup is read once and not on every scrape.
//
// It holds only positive answers. A runtime forks a process and moves it
// into the container's cgroup a moment later: a cached "no container"
// would keep calling that process a plain one, and a live container's
// veth could then look owner_exited. A cached container owner can at
// worst keep a veth owned, the safe side. A process's namespace is never
// cached: a process can setns at any moment, and a cached "not in N"
// would prove a false emptiness.
//
// It also remembers, per namespace, the process whose container owns it:
// while that process (same PID, same start time) is among the processes
// the scan found in the namespace, the namespace keeps its owner, at the
// cost of one read of that process's stat instead of one per process in
// the namespace. The owner was the container of the oldest process when
// first resolved; a process that joins later is younger, except one that
// enters with setns, which does not take the namespace over.
type ownerCache struct {
	// cgroups are the runtimes' namings of their cgroups.
	cgroups []CgroupNaming
	// off: nothing is cached (the code before the shortcuts of busy
	// nodes, for the benchmark that compares with it).
	off bool

	mu      sync.Mutex
	byPID   map[int]cachedOwner
	byNetns map[uint64]netnsOwner
}

type cachedOwner struct {
	start uint64
	owner CgroupOwner
}

// netnsOwner is the container owner of a namespace and its process.
type netnsOwner struct {
	pid   int
	start uint64
	owner Owner
	guest bool
}

func newOwnerCache(cgroups []CgroupNaming) *ownerCache {
	return &ownerCache{cgroups: cgroups, byPID: map[int]cachedOwner{}, byNetns: map[uint64]netnsOwner{}}
}

// parseCgroup reads a process's cgroup file with the runtimes' namings.
func (c *ownerCache) parseCgroup(data string) CgroupOwner {
	if c == nil || c.off {
		return ParseCgroup(data, nil)
	}
	return ParseCgroup(data, c.cgroups)
}

// namespaceOwner returns the container owner cached for n when its
// process is still one of n's (the scan found it there) and has the same
// start time: the same process, so still in the container's cgroup.
func (c *ownerCache) namespaceOwner(procfs string, n *Namespace) (o *Owner, guest, ok bool) {
	if c == nil || c.off {
		return nil, false, false
	}
	c.mu.Lock()
	e, ok := c.byNetns[n.Inode]
	c.mu.Unlock()
	if !ok {
		return nil, false, false
	}
	if _, found := slices.BinarySearch(n.PIDs, e.pid); !found {
		return nil, false, false
	}
	start, ok := kernel.ProcessStartTime(procfs + "/" + strconv.Itoa(e.pid))
	if !ok || start != e.start {
		return nil, false, false
	}
	owner := e.owner
	return &owner, e.guest, true
}

// putNamespace caches the container owner of n, the process it was found
// by, and whether it is a guest there.
func (c *ownerCache) putNamespace(n *Namespace, pid int, start uint64, o *Owner, guest bool) {
	if c == nil || c.off {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byNetns[n.Inode] = netnsOwner{pid: pid, start: start, owner: *o, guest: guest}
}

// get returns the cached owner of the process pid that started at start.
func (c *ownerCache) get(pid int, start uint64) (CgroupOwner, bool) {
	if c == nil || c.off {
		return CgroupOwner{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byPID[pid]
	if !ok || e.start != start {
		return CgroupOwner{}, false
	}
	return e.owner, true
}

// put caches o for pid when it names a container or a pod.
func (c *ownerCache) put(pid int, start uint64, o CgroupOwner) {
	if c == nil || c.off || o.owner() == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byPID[pid] = cachedOwner{start: start, owner: o}
}

// keep evicts the processes that live is false for (those gone since)
// and the namespaces whose owner's process is one of them.
func (c *ownerCache) keep(live func(pid int) bool) {
	if c == nil || c.off {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for pid := range c.byPID {
		if !live(pid) {
			delete(c.byPID, pid)
		}
	}
	for inode, e := range c.byNetns {
		if !live(e.pid) {
			delete(c.byNetns, inode)
		}
	}
}

// len returns the number of cached processes, for tests.
func (c *ownerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byPID)
}

// resolveOwner decides who owns a namespace from the cgroups of the
// processes in it. The container of the oldest process wins: in a pod that
// is the sandbox (pause), for `--network container:X` the first container.
// Processes outside any container make the owner a plain process, which is
// never evidence that a veth is in use by a workload. cache may be nil.
func resolveOwner(procfs string, n *Namespace, cache *ownerCache) *Owner {
	o, _ := resolveOwnerGuest(procfs, n, cache)
	return o
}

// resolve sets n's owner, and whether that owner is a guest in n (see
// [Namespace.Guest]).
func (n *Namespace) resolve(procfs string, cache *ownerCache) {
	n.Owner, n.Guest = resolveOwnerGuest(procfs, n, cache)
}

// resolveOwnerGuest is resolveOwner, and reports whether a process in no
// container started before every process of the owning container: the
// namespace was that process's before the container joined it.
func resolveOwnerGuest(procfs string, n *Namespace, cache *ownerCache) (*Owner, bool) {
	if o, guest, ok := cache.namespaceOwner(procfs, n); ok {
		return o, guest
	}
	var (
		best      *Owner
		bestPID   int
		bestStart uint64
		oldest    *Owner
		oldStart  uint64
	)
	for _, pid := range n.PIDs {
		dir := procfs + "/" + strconv.Itoa(pid)
		start, ok := kernel.ProcessStartTime(dir)
		if !ok {
			continue // exited during the scan
		}
		c, cached := cache.get(pid, start)
		if !cached {
			cg, err := os.ReadFile(dir + "/cgroup")
			if err != nil {
				continue // exited
			}
			c = cache.parseCgroup(string(cg))
		}
		// A cached process ran before this scan and still runs (same PID,
		// same start time), so it is the process the scan just found in
		// n: only one read now needs checking, since its PID may have gone
		// to another process, elsewhere, after the scan.
		if !cached && !kernel.InNamespace(dir, n.Inode) {
			// Exited, or exited and its PID reused by a process elsewhere
			// since the scan: its cgroup says nothing about n.
			continue
		}
		if !cached {
			cache.put(pid, start, c)
		}
		if o := c.owner(); o != nil {
			if best == nil || start < bestStart {
				best = o
				bestPID, bestStart = pid, start
			}
			continue
		}
		if oldest == nil || start < oldStart {
			oldest = &Owner{Kind: OwnerProcess, ID: strconv.Itoa(pid), Name: kernel.ProcessName(dir)}
			oldStart = start
		}
	}
	if best != nil {
		guest := oldest != nil && oldStart < bestStart
		cache.putNamespace(n, bestPID, bestStart, best, guest)
		return best, guest
	}
	return oldest, false
}
