package remediate

import (
	"fmt"
	"slices"

	"github.com/veth-exporter/veth_exporter/kernel"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// removeGroup deletes the targets as one interface group, in steps: pick
// a group no link uses; tag exactly the targets' ifindexes; verify the
// group holds exactly them (ifindex, name, a veth); pin each peer's
// namespace; re-check those namespaces' occupants; look a last time (the
// group still exactly them, each peer still in its pinned namespace);
// delete the group in one RTM_DELLINK; verify each is gone. Targets it
// decided get their removal in res; on any surprise it restores the
// groups it changed and leaves the undecided targets to the one-by-one
// path.
func (rm *remover) removeGroup(ts []Target, res []removal) {
	refs, err := rm.dump()
	if err != nil {
		return
	}
	group, ok := rm.unusedGroup(refs)
	if !ok {
		return
	}
	g := &groupDeletion{rm: rm, ts: ts, res: res, group: group, restore: map[int]uint32{}, pins: map[int]peerPin{}}
	defer g.releasePins()
	if !g.tag(refs) || len(g.tagged) == 0 {
		return
	}
	members, ok := rm.groupMembers(group, ts, g.tagged)
	if !ok {
		g.fallBack()
		return
	}
	g.pinPeers(members)
	g.recheckOccupants()
	if len(g.tagged) == 0 {
		return
	}
	if !g.lastLook() {
		g.fallBack()
		return
	}
	if g.recheckNewcomers() && !g.lastLook() {
		g.fallBack()
		return
	}
	if len(g.tagged) > 0 {
		g.deleteAndVerify()
	}
}

// groupDeletion is one attempt at deleting targets as an interface group.
type groupDeletion struct {
	rm    *remover
	ts    []Target
	res   []removal
	group uint32
	// tagged are the indexes into ts of the targets in the group now;
	// restore holds the group each had before.
	tagged  []int
	restore map[int]uint32
	// pins hold the peers' namespaces open, by index into ts.
	pins map[int]peerPin
	// before is the dump the group was chosen from, by ifindex.
	before map[int]kernel.Link
	// listed are the processes and threads the final re-check listed.
	listed kernel.Tasks
}

// tag puts into the group only what the dump refs shows as the very veth
// approved; a target gone or changed is decided on the spot. It returns
// false, having untagged everything, when a tag fails.
func (g *groupDeletion) tag(refs []kernel.Link) bool {
	byIndex := make(map[int]kernel.Link, len(refs))
	for _, l := range refs {
		byIndex[l.Index] = l
	}
	g.before = byIndex
	for i, t := range g.ts {
		if g.res[i].Outcome != "" {
			continue // decided already (released)
		}
		l, ok := byIndex[t.Index]
		switch {
		case !ok:
			g.res[i] = removal{Outcome: OutcomeGone}
			continue
		case l.Name != t.Device || !l.Veth:
			g.res[i] = changed("ifindex %d is now %q, not veth %q: nothing done", t.Index, l.Name, t.Device)
			continue
		}
		g.restore[i] = l.Group
		if err := g.rm.h.LinkSetGroup(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: t.Index}}, int(g.group)); err != nil {
			if isNotFound(err) {
				g.res[i] = removal{Outcome: OutcomeGone}
				continue
			}
			g.fallBack()
			return false
		}
		g.tagged = append(g.tagged, i)
	}
	return true
}

// untag gives target i its group back. A failed untag leaves the veth in
// the group: the last look before the deletion then finds a member not in
// tagged and falls back to one by one, so it is never deleted with the
// group.
func (g *groupDeletion) untag(i int) {
	_ = g.rm.h.LinkSetGroup(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: g.ts[i].Index}}, int(g.restore[i]))
	g.tagged = slices.DeleteFunc(g.tagged, func(j int) bool { return j == i })
}

// fallBack untags every target still tagged, for the one-by-one path,
// and gives every other link found in the group its own group back: a
// stranger that joined it (a reused ifindex tagged in a target's stead,
// or a link someone else put there) had the group of the dump the group
// was chosen from, or, new since, the kernel's default group 0. No link
// used the group when it was chosen, so none belongs in it.
func (g *groupDeletion) fallBack() {
	for _, i := range slices.Clone(g.tagged) {
		g.untag(i)
	}
	refs, err := g.rm.dump()
	if err != nil {
		return
	}
	for _, l := range refs {
		if l.Group != g.group {
			continue
		}
		var group uint32
		if was, ok := g.before[l.Index]; ok && was.Name == l.Name {
			group = was.Group
		}
		_ = g.rm.h.LinkSetGroup(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}, int(group))
	}
}

// pinPeers opens each tagged target's peer namespace, checking that the
// peer of the group member is still in it; a target whose peer is not is
// untagged and changed.
func (g *groupDeletion) pinPeers(members map[int]kernel.Link) {
	for _, i := range slices.Clone(g.tagged) {
		pin, err := g.rm.pinPeer(g.ts[i], members[g.ts[i].Index].PeerNetNSID)
		if err != nil {
			g.untag(i)
			g.res[i] = removal{Outcome: OutcomeChanged, Err: err}
			continue
		}
		g.pins[i] = pin
	}
}

func (g *groupDeletion) releasePins() {
	for _, p := range g.pins {
		p.close()
	}
}

// recheckOccupants is the final re-check of the tagged targets'
// namespaces; a target whose namespace is in use again is untagged and
// changed.
func (g *groupDeletion) recheckOccupants() {
	order := slices.Clone(g.tagged)
	checked := make([]Target, len(order))
	checkedPins := make([]peerPin, len(order))
	for k, i := range order {
		checked[k], checkedPins[k] = g.ts[i], g.pins[i]
	}
	errs, listed := g.rm.recheck(checked, checkedPins)
	g.listed = listed
	for k, err := range errs {
		if err != nil {
			i := order[k]
			g.untag(i)
			g.res[i] = removal{Outcome: OutcomeChanged, Err: err}
		}
	}
}

// recheckNewcomers lists the processes and threads once more, right
// before the deletion; a target whose namespace a newcomer is in is
// untagged and changed. It reports whether any was.
func (g *groupDeletion) recheckNewcomers() bool {
	order := slices.Clone(g.tagged)
	checked := make([]Target, len(order))
	for k, i := range order {
		checked[k] = g.ts[i]
	}
	untagged := false
	for k, err := range g.rm.recheckNewcomers(checked, g.listed) {
		if err != nil {
			i := order[k]
			g.untag(i)
			g.res[i] = removal{Outcome: OutcomeChanged, Err: err}
			untagged = true
		}
	}
	return untagged
}

// lastLook is the last look before the deletion: the group holds exactly
// the targets still tagged, each with its peer in the namespace pinned for
// it (a peer may have moved while the processes were read).
func (g *groupDeletion) lastLook() bool {
	members, ok := g.rm.groupMembers(g.group, g.ts, g.tagged)
	return ok && !slices.ContainsFunc(g.tagged, func(i int) bool { return !g.pins[i].holds(members[g.ts[i].Index].PeerNetNSID) })
}

// deleteAndVerify deletes the group and verifies from a fresh dump that
// each tagged target is gone.
func (g *groupDeletion) deleteAndVerify() {
	delErr := g.rm.deleteGroup(g.group)
	after, err := g.rm.dump()
	if delErr != nil {
		g.lostAnswer(after, err)
		return
	}
	for _, i := range g.tagged {
		t := g.ts[i]
		switch {
		case err != nil:
			g.res[i] = removal{Outcome: OutcomeFailed, Err: fmt.Errorf("verify %s (ifindex %d) is gone: %w", t.Device, t.Index, err)}
		case listed(after, t):
			g.res[i] = removal{Outcome: OutcomeFailed, Err: fmt.Errorf("%s (ifindex %d) is still there after its group's deletion", t.Device, t.Index)}
		default:
			g.res[i] = removal{Outcome: OutcomeDeleted, Batch: true}
		}
	}
}

// lostAnswer classifies the targets after a group deletion that returned
// an error: the kernel may have acted and its answer been lost. What is
// gone from the dump after (dumpErr nil) went with the group; the rest
// goes one by one.
func (g *groupDeletion) lostAnswer(after []kernel.Link, dumpErr error) {
	if dumpErr != nil {
		g.fallBack()
		return
	}
	for _, i := range slices.Clone(g.tagged) {
		if !listed(after, g.ts[i]) {
			g.res[i] = removal{Outcome: OutcomeDeleted, Batch: true}
			g.tagged = slices.DeleteFunc(g.tagged, func(j int) bool { return j == i })
		}
	}
	g.fallBack()
}

// listed reports whether the dump refs still has t's link: its ifindex
// with its name.
func listed(refs []kernel.Link, t Target) bool {
	return slices.ContainsFunc(refs, func(l kernel.Link) bool { return l.Index == t.Index && l.Name == t.Device })
}

// unusedGroup picks an interface group number that no link has.
func (rm *remover) unusedGroup(refs []kernel.Link) (uint32, bool) {
	used := map[uint32]bool{0: true}
	for _, l := range refs {
		used[l.Group] = true
	}
	for range 16 {
		if g := rm.pickGroup(); !used[g] {
			return g, true
		}
	}
	return 0, false
}

// groupMembers dumps the links and returns those of group, by ifindex,
// if they are exactly the tagged targets, each still the named veth.
func (rm *remover) groupMembers(group uint32, ts []Target, tagged []int) (map[int]kernel.Link, bool) {
	refs, err := rm.dump()
	if err != nil {
		return nil, false
	}
	members := map[int]kernel.Link{}
	for _, l := range refs {
		if l.Group == group {
			members[l.Index] = l
		}
	}
	if len(members) != len(tagged) {
		return nil, false
	}
	for _, i := range tagged {
		l, ok := members[ts[i].Index]
		if !ok || l.Name != ts[i].Device || !l.Veth {
			return nil, false
		}
	}
	return members, true
}

// deleteLinkGroup deletes every link of the interface group in one
// RTM_DELLINK (`ip link del group G`): the kernel unregisters them, and
// the veths' peers, in one unregister_netdevice_many.
func deleteLinkGroup(group uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("delete interface group %d: %w", group, err)
	}
	return nil
}
