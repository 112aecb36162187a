package inventory

import (
	"strings"
	"time"
)

// Lister is an [Observation] that can say whether its runtime lists a
// pod sandbox or a container by ID, whatever its state: what a CNI lease
// names is the runtime's while the runtime lists it.
type Lister interface {
	// Answered reports whether the runtime answered for this snapshot:
	// while it did not, Lists says nothing.
	Answered() bool
	// Lists reports whether the runtime lists id.
	Lists(id string) bool
}

// Finisher is an [Annotation] that has more to judge once every veth of
// the snapshot was: what the node keeps about sandboxes beside their veths
// (the CNI's address leases). It is told what the runtimes list and what
// the snapshot's namespaces belonged to, and keeps its clocks in the
// history.
type Finisher interface {
	Finish(f *Finish)
}

// Listing is what the runtimes say of an ID.
type Listing int

// The answers of [Finish.Lists].
const (
	// Unlisted: every runtime that lists sandboxes answered, and none
	// lists it.
	Unlisted Listing = iota
	// Listed: a runtime lists it.
	Listed
	// ListerDown: a runtime that might list it did not answer.
	ListerDown
	// NoLister: no resolver that lists sandboxes is on.
	NoLister
)

// Finish is what a [Finisher] is told of the snapshot. Its methods are
// valid during Finish only.
type Finish struct {
	// Now is the snapshot's time; Settle the settle time, which a
	// condition must have held before it is a verdict.
	Now    time.Time
	Settle time.Duration
	// PartialView: the snapshot could not see every process (see
	// [Snapshot.PartialView]).
	PartialView bool

	listers []Lister
	// down names the listing runtimes that did not answer.
	down []string
	// owners are the IDs of the containers and sandboxes the snapshot's
	// namespaces belong to, or last belonged to.
	owners map[string]bool
	clock  func(key string) time.Time
}

// Lists says whether a runtime lists the sandbox or container id, and
// when it cannot say, why ("cri is down", "no resolver that lists
// sandboxes is on").
func (f *Finish) Lists(id string) (Listing, string) {
	for _, l := range f.listers {
		if l.Answered() && l.Lists(id) {
			return Listed, ""
		}
	}
	switch {
	case len(f.down) > 0:
		return ListerDown, strings.Join(f.down, ", ") + " did not answer"
	case len(f.listers) == 0:
		return NoLister, "no resolver that lists sandboxes is on (cri, crio, podman)"
	}
	return Unlisted, ""
}

// HasNamespace reports whether a namespace of the snapshot (a veth's
// peer, a leaked one) belongs or last belonged to the sandbox or
// container id: its network is not gone yet.
func (f *Finish) HasNamespace(id string) bool {
	return f.owners[id]
}

// Since returns since when the condition key (a lease's) has held: the
// first snapshot that asked, of an unbroken run that asked each time;
// zero when a read-only history never recorded it. A condition not asked
// for in a snapshot has ended.
func (f *Finish) Since(key string) time.Time {
	return f.clock(key)
}

// finish tells every annotation that is a [Finisher] what it needs.
func (inv *Inventory) finish(s *Snapshot, runtimes []asked, annotations []annotation, history *observing) {
	f := &Finish{Now: s.Taken, Settle: inv.cfg.SettleTime, PartialView: s.PartialView, owners: map[string]bool{}}
	for _, a := range runtimes {
		l, ok := a.observation.(Lister)
		if !ok {
			continue
		}
		f.listers = append(f.listers, l)
		if !l.Answered() {
			f.down = append(f.down, a.resolver.Step())
		}
	}
	note := func(o *Owner) {
		if o != nil && o.ID != "" {
			f.owners[o.ID] = true
		}
	}
	for i := range s.Veths {
		if v := &s.Veths[i]; v.PeerNetns != nil {
			note(v.Owner)
			note(v.LastOwner)
			note(v.PeerNetns.Owner)
			note(v.PeerNetns.LastOwner)
		}
	}
	for _, n := range s.LeakedNetns {
		note(n.LastOwner)
	}
	for _, a := range annotations {
		fin, ok := a.annotation.(Finisher)
		if !ok {
			continue
		}
		step := a.annotator.Step()
		history.finish(step)
		f.clock = func(key string) time.Time { return history.since(step, key) }
		fin.Finish(f)
	}
}

// LeakedAddress is an address a network handed out to a sandbox that is
// gone: a CNI DEL that never ran (see [AddressLeaks]).
type LeakedAddress struct {
	Network, IP, ContainerID string
	// IfName is the interface the address was for.
	IfName string
	// Dir is the network's lease directory (a host path).
	Dir string
	// CacheEntry: libcni cached the attachment, so its DEL can be run.
	CacheEntry bool
	// Owner is the pod or container it was for, when known.
	Owner *Owner
	// Since is since when it has looked leaked.
	Since time.Time
}

// AddressLeaks is a [RuntimeView] that knows of leaked addresses (the CNI
// annotator's host-local leases), for the readers that list leftovers.
type AddressLeaks interface {
	LeakedAddresses() []LeakedAddress
	// Leases counts every lease it knows of, whatever its state.
	Leases() int
}

// LeakedAddresses returns the leaked addresses every view of the snapshot
// knows of.
func (s *Snapshot) LeakedAddresses() []LeakedAddress {
	var all []LeakedAddress
	for _, v := range s.Views {
		if l, ok := v.View.(AddressLeaks); ok {
			all = append(all, l.LeakedAddresses()...)
		}
	}
	return all
}

// Leases counts the leases every view of the snapshot knows of.
func (s *Snapshot) Leases() int {
	n := 0
	for _, v := range s.Views {
		if l, ok := v.View.(AddressLeaks); ok {
			n += l.Leases()
		}
	}
	return n
}
