package remediate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/kernel"
)

// Target is a veth every gate approved for deletion, as the fresh inventory
// saw it. Interface names are reused (a CNI that hashes pod names recreates
// the same name for a new pod) and so are ifindexes, so the cleanup acts on
// the ifindex and checks that it still names the same veth with its peer
// in the same namespace, holding no process the inventory did not see.
type Target struct {
	Device string
	Index  int
	// Netns is the inode of the peer's namespace; 0 when the peer is on
	// the host.
	Netns uint64
	// NetnsPaths open that namespace: its nsfs mounts and its processes'
	// ns/net links, as this process sees them.
	NetnsPaths []string
	// PIDs are the processes the inventory saw in the namespace (a stray
	// for owner_exited, none for netns_empty): any other one that turns
	// up at the last moment stops the deletion.
	PIDs []int
	// NetnsPeers are the ifindexes, in that namespace, of the peers of
	// every host veth leading into it: besides loopback the namespace may
	// hold nothing else, or it may route for someone.
	NetnsPeers []int
	// Releasable: only mounts held the namespace (netns_empty), so it
	// may be released rather than the veth deleted.
	Releasable bool
}

// targetOf returns the Target of an approved veth of snap.
func targetOf(snap *inventory.Snapshot, v *inventory.Veth, p inventory.Paths) Target {
	t := Target{Device: v.Name, Index: v.Index}
	if n := v.PeerNetns; n != nil {
		t.Releasable = v.Reason == inventory.ReasonNetnsEmpty && n.Empty()
		t.Netns = n.Inode
		t.PIDs = n.PIDs
		for i := range snap.Veths {
			if snap.Veths[i].PeerNetns == n {
				t.NetnsPeers = append(t.NetnsPeers, snap.Veths[i].PeerIndex)
			}
		}
		for _, m := range n.Mounts {
			t.NetnsPaths = append(t.NetnsPaths, filepath.Join(p.Rootfs, m))
		}
		for _, pid := range n.PIDs {
			t.NetnsPaths = append(t.NetnsPaths, filepath.Join(p.Procfs, strconv.Itoa(pid), "ns/net"))
		}
	}
	return t
}

// Outcome is what a cleanup did.
type Outcome string

// The outcomes of a removal.
const (
	// OutcomeDeleted: the veth was deleted and is verified gone.
	OutcomeDeleted Outcome = "deleted"
	// OutcomeGone: there was nothing to delete; someone else was first.
	OutcomeGone Outcome = "gone"
	// OutcomeChanged: the ifindex names another link now, the peer moved,
	// or a process entered the peer's namespace: nothing was deleted.
	OutcomeChanged Outcome = "changed"
	// OutcomeFailed: the kernel refused, or the link is still there.
	OutcomeFailed Outcome = "failed"
	// OutcomeHeld: the namespace's pins were released, and something
	// else still holds it alive, with the veth.
	OutcomeHeld Outcome = "held"
)

// removal is what became of one Target.
type removal struct {
	Outcome Outcome
	Err     error
	// Batch says how the veth went: "group" when it was deleted with the
	// others in one kernel transaction.
	Batch bool
	// Method is how the remover went about it; Released are the mounts
	// a release removed.
	Method   Method
	Released []string
}

// remover is the one place the exporter deletes interfaces, shared by the
// webhook and the clean command once every safety gate has passed.
type remover struct {
	h *netlink.Handle
	// method says which targets are released rather than deleted.
	method Method
	// occupants is the final re-check: one pass over every process and
	// thread, for exactly the namespaces about to lose their veth, which
	// also lists the processes and threads; newcomers lists them again
	// and looks only at those the listing does not hold.
	occupants func(inodes map[uint64]bool) (map[uint64][]int, kernel.Tasks, error)
	newcomers func(listed kernel.Tasks, inodes map[uint64]bool) (map[uint64][]int, error)
	// enterHost runs a function in the host's mount namespace; netnsDirs
	// are the only directories a release unmounts in; releaseTimeout
	// bounds the wait for the kernel to free released namespaces;
	// holders finds what keeps namespaces alive.
	enterHost      func(fn func() error) error
	netnsDirs      []string
	releaseTimeout time.Duration
	holders        func(inodes map[uint64]bool) map[uint64][]kernel.Holder
	// dump lists the host's links (kernel.DumpLinks), dumpIn
	// those of the namespace the host knows by an nsid.
	dump   func() ([]kernel.Link, error)
	dumpIn func(nsid int) ([]kernel.Link, error)
	// deleteGroup deletes every link of an interface group.
	deleteGroup func(group uint32) error
	// pickGroup draws candidate group numbers.
	pickGroup func() uint32
}

func newRemover(h *netlink.Handle, cfg Config) *remover {
	p := cfg.Paths
	return &remover{
		h:      h,
		method: cfg.Method,
		occupants: func(inodes map[uint64]bool) (map[uint64][]int, kernel.Tasks, error) {
			return kernel.Occupants(p.Procfs, inodes)
		},
		newcomers: func(listed kernel.Tasks, inodes map[uint64]bool) (map[uint64][]int, error) {
			return kernel.Newcomers(p.Procfs, listed, inodes)
		},
		enterHost:      func(fn func() error) error { return inHostMounts(p.Procfs, fn) },
		netnsDirs:      cfg.NetnsDirs,
		releaseTimeout: cfg.ReleaseTimeout,
		holders:        func(inodes map[uint64]bool) map[uint64][]kernel.Holder { return kernel.Holders(p.Procfs, inodes) },
		dump:           kernel.DumpLinks,
		dumpIn:         kernel.DumpLinksIn,
		deleteGroup:    deleteLinkGroup,
		pickGroup:      func() uint32 { return 1<<24 + rand.Uint32N(1<<30) },
	}
}

// remove deletes the targets: several at once as one interface group (one
// RTM_DELLINK, one unregister_netdevice_many, the RTNL lock taken once
// instead of once per veth), one by one when there is only one or when
// anything about the group surprises it.
//
// One by one, each deletion waits for the one before it (about 20 ms of
// kernel time each); once ctx ends the rest are left alone, failed with
// ctx's error.
func (rm *remover) remove(ctx context.Context, ts []Target) []removal {
	res := make([]removal, len(ts))
	if rm.method != MethodDelete {
		var releasable []int
		for i, t := range ts {
			if t.Releasable {
				releasable = append(releasable, i)
			}
		}
		if len(releasable) > 0 {
			rm.release(ctx, ts, releasable, res)
		}
	}
	var deleting []int
	for i, t := range ts {
		switch {
		case res[i].Outcome == OutcomeFailed && errors.Is(res[i].Err, errNotReleasable) && rm.method == MethodAuto:
			res[i] = removal{}
		case res[i].Outcome == "" && rm.method == MethodRelease && t.Netns != 0:
			res[i] = notReleasable("a process holds namespace net:[%d] of the peer of %s: method release removes only what mounts alone hold",
				t.Netns, t.Device)
		}
		if res[i].Outcome == "" {
			deleting = append(deleting, i)
		}
	}
	if len(deleting) > 1 {
		rm.removeGroup(ts, res)
	}
	for _, i := range deleting {
		if res[i].Outcome != "" {
			continue
		}
		if err := ctx.Err(); err != nil {
			res[i] = removal{Outcome: OutcomeFailed, Err: fmt.Errorf("%s not deleted: %w", ts[i].Device, err)}
			continue
		}
		res[i] = rm.removeOne(ts[i])
	}
	for _, i := range deleting {
		res[i].Method = MethodDelete
	}
	return res
}

// removeOne deletes one veth: it reads the link at t.Index again and
// touches it only if it is still the veth t.Device with its peer in the
// same namespace; re-checks that namespace's processes and threads; deletes
// by ifindex, never by name; and verifies it is gone. Deleting either end
// of a pair deletes both; a bridge port needs no nomaster first, the kernel
// unlinks it while unregistering.
func (rm *remover) removeOne(t Target) removal {
	link, err := rm.h.LinkByIndex(t.Index)
	if isNotFound(err) {
		return removal{Outcome: OutcomeGone}
	}
	if err != nil {
		return removal{Outcome: OutcomeFailed, Err: fmt.Errorf("read link %d (%s): %w", t.Index, t.Device, err)}
	}
	a := link.Attrs()
	if a.Name != t.Device || link.Type() != "veth" {
		return changed("ifindex %d is now %s %q, not veth %q: nothing done", t.Index, link.Type(), a.Name, t.Device)
	}
	pin, err := rm.pinPeer(t, a.NetNsID)
	if err != nil {
		return removal{Outcome: OutcomeChanged, Err: err}
	}
	defer pin.close()
	errs, listed := rm.recheck([]Target{t}, []peerPin{pin})
	if errs[0] != nil {
		return removal{Outcome: OutcomeChanged, Err: errs[0]}
	}
	// The peer may have moved while the processes were read: look once
	// more, as late as possible.
	link, err = rm.h.LinkByIndex(t.Index)
	switch {
	case isNotFound(err):
		return removal{Outcome: OutcomeGone}
	case err != nil:
		return removal{Outcome: OutcomeFailed, Err: fmt.Errorf("read link %d (%s): %w", t.Index, t.Device, err)}
	case link.Attrs().Name != t.Device || link.Type() != "veth" || !pin.holds(link.Attrs().NetNsID):
		return changed("%s (ifindex %d) changed during the final re-check: nothing done", t.Device, t.Index)
	}
	if err := rm.recheckNewcomers([]Target{t}, listed)[0]; err != nil {
		return removal{Outcome: OutcomeChanged, Err: err}
	}
	if err := rm.h.LinkDel(link); err != nil {
		if isNotFound(err) {
			return removal{Outcome: OutcomeGone}
		}
		return removal{Outcome: OutcomeFailed, Err: fmt.Errorf("delete %s (ifindex %d): %w", t.Device, t.Index, err)}
	}
	switch l, err := rm.h.LinkByIndex(t.Index); {
	case isNotFound(err):
		return removal{Outcome: OutcomeDeleted}
	case err != nil:
		return removal{Outcome: OutcomeFailed, Err: fmt.Errorf("verify %s (ifindex %d) is gone: %w", t.Device, t.Index, err)}
	case l.Attrs().Name != t.Device:
		// Gone, and its ifindex already handed to a new link.
		return removal{Outcome: OutcomeDeleted}
	default:
		return removal{Outcome: OutcomeFailed, Err: fmt.Errorf("%s (ifindex %d) is still there after its deletion", t.Device, t.Index)}
	}
}

func changed(format string, args ...any) removal {
	return removal{Outcome: OutcomeChanged, Err: fmt.Errorf(format, args...)}
}

// peerPin holds the peer's namespace open from the check to the deletion:
// a namespace held open cannot die, so its nsid cannot pass to another
// namespace in between.
type peerPin struct {
	fd int
	// nsid is the id the host knows the pinned namespace by; -1 for a
	// peer on the host.
	nsid int
}

// holds reports whether a link whose IFLA_LINK_NETNSID is linkNSID has its
// peer in the pinned namespace (or, for a pin of a host peer, on the host).
func (p peerPin) holds(linkNSID int) bool {
	if p.nsid < 0 {
		return linkNSID < 0
	}
	return linkNSID == p.nsid
}

func (p peerPin) close() {
	if p.fd > 0 {
		unix.Close(p.fd)
	}
}

// pinPeer opens t's peer namespace and checks that the link's peer is
// still in it: linkNSID is the IFLA_LINK_NETNSID the kernel reports for
// the link now (-1 when the peer is on the host). A peer moved to another
// namespace (a process can move eth0 into a live container) is a change.
func (rm *remover) pinPeer(t Target, linkNSID int) (peerPin, error) {
	if t.Netns == 0 {
		if linkNSID >= 0 {
			return peerPin{nsid: -1}, fmt.Errorf("the peer of %s (ifindex %d) left the host for namespace id %d: nothing done", t.Device, t.Index, linkNSID)
		}
		return peerPin{nsid: -1}, nil
	}
	for _, path := range t.NetnsPaths {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Ino != t.Netns {
			unix.Close(fd)
			continue
		}
		id, err := rm.h.GetNetNsIdByFd(fd)
		if err != nil || id != linkNSID || id < 0 {
			unix.Close(fd)
			return peerPin{}, fmt.Errorf("the peer of %s (ifindex %d) is no longer in namespace net:[%d]: nothing done", t.Device, t.Index, t.Netns)
		}
		return peerPin{fd: fd, nsid: id}, nil
	}
	return peerPin{}, fmt.Errorf("namespace net:[%d] of the peer of %s (ifindex %d) cannot be opened any more: nothing done", t.Netns, t.Device, t.Index)
}

// recheck is the last look before a deletion: one pass over every process
// and thread for exactly the namespaces of ts, a second listing of the
// processes and threads that looks at those the pass did not see (what
// started during it), and a list of each namespace's interfaces (pins[i]
// holds the namespace of ts[i]). A namespace that gained a process since
// the inventory (an `ip netns exec`, an nsenter) is in use again, and so
// is one that gained an interface (it may route for someone now); a pass
// that could not read every process proves nothing. It returns one error
// per target, nil for those that may go, and what the listings held, for
// one more listing right before the deletion ([remover.recheckNewcomers]).
//
// The listings narrow the window between the last look and the deletion;
// they cannot close it: a thread already listed may enter the namespace
// afterwards. Only a release has no window.
func (rm *remover) recheck(ts []Target, pins []peerPin) ([]error, kernel.Tasks) {
	errs := make([]error, len(ts))
	inodes := namespacesOfTargets(ts)
	if len(inodes) == 0 {
		return errs, nil
	}
	occ, listed, err := rm.occupants(inodes)
	if err == nil {
		var more map[uint64][]int
		if more, err = rm.newcomers(listed, inodes); err == nil {
			for inode, pids := range more {
				occ[inode] = append(occ[inode], pids...)
			}
		}
	}
	links := map[int][]kernel.Link{}
	for i, t := range ts {
		if t.Netns == 0 {
			continue
		}
		if err != nil {
			errs[i] = fmt.Errorf("final re-check of namespace net:[%d] of %s incomplete, nothing done: %w", t.Netns, t.Device, err)
			continue
		}
		if errs[i] = enteredSince(t, occ[t.Netns]); errs[i] != nil {
			continue
		}
		nsid := pins[i].nsid
		if _, ok := links[nsid]; !ok {
			l, err := rm.dumpIn(nsid)
			if err != nil {
				errs[i] = fmt.Errorf("cannot list the interfaces of namespace net:[%d] of %s, nothing done: %w", t.Netns, t.Device, err)
				continue
			}
			links[nsid] = l
		}
		var others []string
		for _, l := range links[nsid] {
			if l.Index != loopbackIndex && !(l.Veth && slices.Contains(t.NetnsPeers, l.Index)) {
				others = append(others, l.Name)
			}
		}
		if len(others) > 0 {
			errs[i] = fmt.Errorf("namespace net:[%d] of %s holds other interfaces (%s): it may route for someone, nothing done",
				t.Netns, t.Device, strings.Join(others, ","))
		}
	}
	return errs, listed
}

// recheckNewcomers lists the processes and threads once more, right
// before the deletion, and looks at those no earlier listing held.
func (rm *remover) recheckNewcomers(ts []Target, listed kernel.Tasks) []error {
	errs := make([]error, len(ts))
	inodes := namespacesOfTargets(ts)
	if len(inodes) == 0 || listed == nil {
		return errs
	}
	occ, err := rm.newcomers(listed, inodes)
	for i, t := range ts {
		switch {
		case t.Netns == 0:
		case err != nil:
			errs[i] = fmt.Errorf("last listing of the processes for namespace net:[%d] of %s incomplete, nothing done: %w", t.Netns, t.Device, err)
		default:
			errs[i] = enteredSince(t, occ[t.Netns])
		}
	}
	return errs
}

// namespacesOfTargets returns the peer namespaces of ts.
func namespacesOfTargets(ts []Target) map[uint64]bool {
	inodes := map[uint64]bool{}
	for _, t := range ts {
		if t.Netns != 0 {
			inodes[t.Netns] = true
		}
	}
	return inodes
}

// enteredSince says which of the processes in t's namespace the inventory
// did not see there.
func enteredSince(t Target, pids []int) error {
	var newcomers []string
	for _, pid := range pids {
		if !slices.Contains(t.PIDs, pid) && !slices.Contains(newcomers, strconv.Itoa(pid)) {
			newcomers = append(newcomers, strconv.Itoa(pid))
		}
	}
	if len(newcomers) == 0 {
		return nil
	}
	return fmt.Errorf("process %s entered namespace net:[%d] of %s since the inventory: in use, nothing done",
		strings.Join(newcomers, ","), t.Netns, t.Device)
}

// loopbackIndex is the ifindex of loopback in every namespace.
const loopbackIndex = 1

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
