package remediate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/kernel"
)

// Release: a leftover whose peer namespace only mounts hold (netns_empty)
// goes by removing those mounts and letting the kernel free the namespace,
// which takes its interfaces, both ends of each veth, with it. The kernel
// frees a namespace if and only if nothing else holds it: a process or
// thread in it, a descriptor open on it, a copy of the mount in another
// mount namespace. Whatever entered it at whatever moment keeps it, and
// its veth, alive: there is no window between a last look and the
// deletion, because nothing is deleted; the exporter only lets go.

// nsRelease is the release of one namespace: the targets whose peers are
// in it, and the mounts that pin it.
type nsRelease struct {
	inode   uint64
	targets []int
	pins    []string
	// fd holds the namespace open from the checks to the unmounts, so
	// that its nsid cannot pass to another namespace in between.
	fd int
}

// errNotReleasable marks a target the release cannot handle: with method
// auto it is deleted instead; with method release it is refused.
var errNotReleasable = errors.New("not releasable")

func notReleasable(format string, args ...any) removal {
	return removal{Outcome: OutcomeFailed, Method: MethodRelease, Err: fmt.Errorf("%w: "+format, append([]any{errNotReleasable}, args...)...)}
}

// release frees the namespaces of the targets ts[i], i in idx, all with a
// peer in a namespace no process was in: one thread in the host's mount
// namespace checks and unmounts every pin, then one wait sees the kernel
// free them (one cleanup batch for all). Each decided target gets its
// removal in res; a target left undecided needs the delete path.
func (rm *remover) release(ctx context.Context, ts []Target, idx []int, res []removal) {
	byInode := map[uint64]*nsRelease{}
	var order []*nsRelease
	for _, i := range idx {
		n := byInode[ts[i].Netns]
		if n == nil {
			n = &nsRelease{inode: ts[i].Netns, fd: -1}
			byInode[n.inode] = n
			order = append(order, n)
		}
		n.targets = append(n.targets, i)
	}
	var released []*nsRelease
	err := rm.enterHost(func() error {
		mounts, err := kernel.NsfsMountsIn("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		links, err := rm.dump()
		if err != nil {
			return err
		}
		for _, n := range order {
			if rm.prepareRelease(n, ts, res, mounts, links) && rm.unpinAll(n, ts, res) {
				released = append(released, n)
			}
		}
		return nil
	})
	for _, n := range order {
		if n.fd >= 0 {
			unix.Close(n.fd)
		}
	}
	if err != nil {
		for _, i := range idx {
			if res[i].Outcome != "" {
				continue
			}
			if errors.Is(err, errNoHostMounts) {
				res[i] = notReleasable("%v", err)
			} else {
				res[i] = removal{Outcome: OutcomeFailed, Method: MethodRelease, Err: fmt.Errorf("release the namespace of %s, nothing done: %w", ts[i].Device, err)}
			}
		}
		return
	}
	rm.removeMountPoints(rm.awaitRelease(ctx, ts, released, res, rm.vethsGone(ts)))
}

// removeMountPoints removes, in the host's mount namespace, the mount
// points of the namespaces the kernel freed.
func (rm *remover) removeMountPoints(freed []*nsRelease) {
	if len(freed) == 0 {
		return
	}
	_ = rm.enterHost(func() error {
		for _, n := range freed {
			for _, p := range n.pins {
				removeMountPoint(p)
			}
		}
		return nil
	})
}

// prepareRelease checks, in the host's mount namespace, that n may be
// released: its targets are still the veths approved, with their peers
// in n; every veth leading into n is one of them (releasing n removes
// them all); n holds no other interface; and every mount that pins n is
// in the runtimes' netns directories. It decides the targets that fail.
func (rm *remover) prepareRelease(n *nsRelease, ts []Target, res []removal, mounts []kernel.NsfsMount, links []kernel.Link) bool {
	byIndex := make(map[int]kernel.Link, len(links))
	for _, l := range links {
		byIndex[l.Index] = l
	}
	if !n.keepLive(ts, res, byIndex) {
		return false
	}
	if r, ok := rm.findPins(n, mounts); !ok {
		return n.decide(res, r)
	}
	nsid, r, ok := n.open(rm)
	if !ok {
		return n.decide(res, r)
	}
	peers, r, ok := n.checkVeths(ts, res, links, byIndex, nsid)
	if !ok {
		return n.decide(res, r)
	}
	if len(n.targets) == 0 {
		return false
	}
	if r, ok := rm.checkInterfaces(n, nsid, peers); !ok {
		return n.decide(res, r)
	}
	return true
}

// decide gives every target of n the removal r; it returns false, for
// prepareRelease.
func (n *nsRelease) decide(res []removal, r removal) bool {
	for _, i := range n.targets {
		res[i] = r
	}
	return false
}

// keepLive keeps the targets of n that are still the veths approved (the
// others are gone or changed), and reports whether any is.
func (n *nsRelease) keepLive(ts []Target, res []removal, byIndex map[int]kernel.Link) bool {
	var live []int
	for _, i := range n.targets {
		switch l, ok := byIndex[ts[i].Index]; {
		case !ok:
			res[i] = removal{Outcome: OutcomeGone, Method: MethodRelease}
		case l.Name != ts[i].Device || !l.Veth:
			res[i] = changed("ifindex %d is now %q, not veth %q: nothing done", ts[i].Index, l.Name, ts[i].Device)
		default:
			live = append(live, i)
		}
	}
	n.targets = live
	return len(live) > 0
}

// findPins collects the host's mounts of n, every one of them in the
// netns directories.
func (rm *remover) findPins(n *nsRelease, mounts []kernel.NsfsMount) (removal, bool) {
	for _, m := range mounts {
		if m.Inode != n.inode {
			continue
		}
		if !slices.Contains(rm.netnsDirs, filepath.Dir(m.Point)) {
			return notReleasable("namespace net:[%d] is also pinned at %s, outside the netns directories (%s)",
				n.inode, m.Point, strings.Join(rm.netnsDirs, ", ")), false
		}
		n.pins = append(n.pins, m.Point)
	}
	if len(n.pins) == 0 {
		return notReleasable("no mount in the host's mount namespace pins namespace net:[%d]: something else holds it", n.inode), false
	}
	return removal{}, true
}

// open opens n through its first pin, holding it until the unmounts, and
// returns the nsid the host knows it by.
func (n *nsRelease) open(rm *remover) (int, removal, bool) {
	fd, err := unix.Open(n.pins[0], unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, changed("open the namespace pinned at %s: %v: nothing done", n.pins[0], err), false
	}
	n.fd = fd
	if nsfsInode(fd) != n.inode {
		return 0, changed("%s no longer pins namespace net:[%d]: nothing done", n.pins[0], n.inode), false
	}
	nsid, err := rm.h.GetNetNsIdByFd(fd)
	if err != nil || nsid < 0 {
		return 0, changed("namespace net:[%d] has no id on the host (%v): nothing done", n.inode, err), false
	}
	return nsid, removal{}, true
}

// checkVeths checks that every host veth leading into n (nsid) is a
// target, and that each target's peer is in n; a target whose peer left
// is changed. It returns the peers' ifindexes in n.
func (n *nsRelease) checkVeths(ts []Target, res []removal, links []kernel.Link, byIndex map[int]kernel.Link, nsid int) ([]int, removal, bool) {
	var peers []int
	for _, l := range links {
		if !l.PeerElsewhere || l.PeerNetNSID != nsid {
			continue
		}
		if !slices.ContainsFunc(n.targets, func(i int) bool { return ts[i].Index == l.Index }) {
			return nil, notReleasable("namespace net:[%d] also holds the peer of %s, which was not approved: its release would remove that too",
				n.inode, l.Name), false
		}
		peers = append(peers, l.PeerIndex)
	}
	n.targets = slices.DeleteFunc(n.targets, func(i int) bool {
		if l := byIndex[ts[i].Index]; l.PeerNetNSID != nsid || !slices.Contains(peers, l.PeerIndex) {
			res[i] = changed("the peer of %s (ifindex %d) is no longer in namespace net:[%d]: nothing done", ts[i].Device, ts[i].Index, n.inode)
			return true
		}
		return false
	})
	return peers, removal{}, true
}

// checkInterfaces checks that n holds nothing but loopback and the peers.
func (rm *remover) checkInterfaces(n *nsRelease, nsid int, peers []int) (removal, bool) {
	inside, err := rm.dumpIn(nsid)
	if err != nil {
		return changed("cannot list the interfaces of namespace net:[%d], nothing done: %v", n.inode, err), false
	}
	var others []string
	for _, l := range inside {
		if l.Index != loopbackIndex && !(l.Veth && slices.Contains(peers, l.Index)) {
			others = append(others, l.Name)
		}
	}
	if len(others) > 0 {
		return changed("namespace net:[%d] holds other interfaces (%s): it may route for someone, nothing done",
			n.inode, strings.Join(others, ",")), false
	}
	return removal{}, true
}

// unpinAll removes n's pins. When not one could be removed, the targets
// are decided: the release is impossible. A release that removed some
// pins goes on to the wait, which names what still holds the namespace.
func (rm *remover) unpinAll(n *nsRelease, ts []Target, res []removal) bool {
	var unpinned int
	var errs []error
	for _, p := range n.pins {
		k, err := unpin(p, n.inode)
		unpinned += k
		if err != nil {
			errs = append(errs, err)
		}
	}
	if unpinned == 0 {
		for _, i := range n.targets {
			res[i] = notReleasable("no pin of namespace net:[%d] removed: %v", n.inode, errors.Join(errs...))
		}
		return false
	}
	return true
}

// Waiting for the kernel: it frees a namespace in a workqueue, usually
// within milliseconds, seconds on a loaded node. A namespace something
// still holds is told apart from one not freed yet by looking for its
// holders: first after releaseFirstLook, then at the end of the wait.
const (
	releaseFirstLook = 200 * time.Millisecond
	releasePoll      = 10 * time.Millisecond
	releasePollMax   = 100 * time.Millisecond
)

// awaitRelease waits, at most the release timeout, until the kernel has
// freed the released namespaces, and returns those it freed: freedNow
// tells, each time it is asked, which of the waiting namespaces are freed
// now (for a leftover, its veths are gone). The targets of a freed
// namespace are deleted; a target still there at the end is refused
// still_held, with what holds its namespace when that can be seen.
func (rm *remover) awaitRelease(ctx context.Context, ts []Target, released []*nsRelease, res []removal,
	freedNow func(waiting map[uint64]*nsRelease) []uint64) (freed []*nsRelease) {
	waiting := map[uint64]*nsRelease{}
	for _, n := range released {
		waiting[n.inode] = n
	}
	start := time.Now()
	deadline := start.Add(rm.releaseTimeout)
	firstLook := start.Add(min(releaseFirstLook, rm.releaseTimeout))
	looked := false
	for poll := releasePoll; len(waiting) > 0; poll = min(2*poll, releasePollMax) {
		for _, inode := range freedNow(waiting) {
			n := waiting[inode]
			for _, i := range n.targets {
				res[i] = removal{Outcome: OutcomeDeleted, Method: MethodRelease, Released: n.pins}
			}
			delete(waiting, inode)
			freed = append(freed, n)
		}
		now := time.Now()
		last := now.After(deadline) || ctx.Err() != nil
		if len(waiting) > 0 && (last || (!looked && now.After(firstLook))) {
			looked = true
			rm.stillHeld(waiting, ts, res, last, now.Sub(start))
		}
		if last {
			break
		}
		time.Sleep(min(poll, time.Until(deadline)+time.Millisecond))
	}
	return freed
}

// vethsGone is the freedNow of leftovers: the namespaces whose targets'
// veths are all gone from a fresh link dump.
func (rm *remover) vethsGone(ts []Target) func(waiting map[uint64]*nsRelease) []uint64 {
	return func(waiting map[uint64]*nsRelease) []uint64 {
		links, err := rm.dump()
		if err != nil {
			return nil
		}
		var freed []uint64
		for inode, n := range waiting {
			if !slices.ContainsFunc(n.targets, func(i int) bool { return listed(links, ts[i]) }) {
				freed = append(freed, inode)
			}
		}
		return freed
	}
}

// stillHeld decides the targets of the waiting namespaces that something
// visibly holds, or, on the last look, all of them.
func (rm *remover) stillHeld(waiting map[uint64]*nsRelease, ts []Target, res []removal, last bool, waited time.Duration) {
	inodes := make(map[uint64]bool, len(waiting))
	for inode := range waiting {
		inodes[inode] = true
	}
	holders := rm.holders(inodes)
	for inode, n := range waiting {
		hs := holders[inode]
		if len(hs) == 0 && !last {
			continue
		}
		why := "nothing visible holds it: the kernel has not freed it yet, or a holder this exporter cannot see keeps it " +
			"(a socket of it, a process of another PID namespace)"
		if len(hs) > 0 {
			why = "held by " + describeHolders(hs)
		}
		for _, i := range n.targets {
			whose := "of the peer of " + ts[i].Device
			if ts[i].Index == 0 {
				whose = "(leaked)"
			}
			res[i] = removal{Outcome: OutcomeHeld, Method: MethodRelease, Err: fmt.Errorf(
				"released %s; namespace net:[%d] %s is still alive %s later, %s: nothing else done",
				strings.Join(n.pins, ","), inode, whose, waited.Round(time.Millisecond), why)}
		}
		delete(waiting, inode)
	}
}

// describeHolders names at most five holders.
func describeHolders(hs []kernel.Holder) string {
	const most = 5
	s := make([]string, 0, most)
	for _, h := range hs[:min(len(hs), most)] {
		s = append(s, h.String())
	}
	out := strings.Join(s, "; ")
	if len(hs) > most {
		out += fmt.Sprintf(" (and %d more)", len(hs)-most)
	}
	return out
}
