package inventory

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultInfrastructurePatterns name veth pairs that live on the host by
// design and are never leftovers: Cilium's host pair and Weave Net's
// bridge/datapath pair.
var DefaultInfrastructurePatterns = []string{
	`cilium_host`, `cilium_net`,
	`vethwe-bridge`, `vethwe-datapath`,
}

// Infrastructure matches device names of infrastructure pairs.
type Infrastructure struct {
	re *regexp.Regexp
}

// NewInfrastructure compiles patterns (each an RE2 regexp matched against
// the whole device name) into one matcher.
func NewInfrastructure(patterns []string) (*Infrastructure, error) {
	if len(patterns) == 0 {
		return &Infrastructure{}, nil
	}
	for _, p := range patterns {
		if _, err := regexp.Compile(p); err != nil {
			return nil, fmt.Errorf("infrastructure device pattern %q: %w", p, err)
		}
	}
	re, err := regexp.Compile("^(?:" + strings.Join(patterns, ")$|^(?:") + ")$")
	if err != nil {
		return nil, err
	}
	return &Infrastructure{re: re}, nil
}

// Matches reports whether the veth or, for a pair on the host, its peer is
// an infrastructure device.
func (i *Infrastructure) Matches(v *Veth) bool {
	if i == nil || i.re == nil {
		return false
	}
	return i.re.MatchString(v.Name) || (v.PeerOnHost && i.re.MatchString(v.PeerName))
}

// RuntimeClaim is what a container runtime's API says about the namespace
// of a veth's peer. Of several resolvers' claims about one namespace the
// strongest wins: running, then exited, then down, then silent. A
// runtime that runs something in the namespace knows more than one that
// only remembers it, and one that remembers it knows more than one that
// cannot be asked: a namespace another runtime answers for is not
// waiting for the one that is down.
type RuntimeClaim int

// The runtime claims.
const (
	// RuntimeSilent: no runtime resolver knows this namespace (or none runs).
	RuntimeSilent RuntimeClaim = iota
	// RuntimeRunning: a running container or sandbox uses the namespace.
	RuntimeRunning
	// RuntimeExited: the runtime's record of the namespace's container says
	// it exited.
	RuntimeExited
	// RuntimeDown: the namespace is the runtime's (its mount directory, its
	// cgroups, its last owner), but the runtime cannot be asked.
	RuntimeDown
)

func (c RuntimeClaim) String() string {
	switch c {
	case RuntimeSilent:
		return "silent"
	case RuntimeRunning:
		return "running"
	case RuntimeExited:
		return "exited"
	case RuntimeDown:
		return "down"
	}
	return "RuntimeClaim(" + strconv.Itoa(int(c)) + ")"
}

// strength orders claims for [weigh]; the declaration order of the
// constants is not their strength.
func (c RuntimeClaim) strength() int {
	switch c {
	case RuntimeRunning:
		return 3
	case RuntimeExited:
		return 2
	case RuntimeDown:
		return 1
	}
	return 0
}

// Claim is what one runtime resolver says about a veth's peer namespace,
// with what it knows of the namespace's owners.
type Claim struct {
	State RuntimeClaim
	// Owner is who runs in the namespace, for [RuntimeRunning]: it
	// replaces the owner the cgroups named (or names one where no
	// process of the owner has been seen yet).
	Owner *Owner
	// Containers are the running containers that share the namespace,
	// its owner (the sandbox) first, for [RuntimeRunning].
	Containers []string
	// LastOwner is the runtime's record of the owner that exited, for
	// [RuntimeExited], and LastOwnerSeen when it last ran: they name the
	// last owner of a leftover the exporter never saw owned.
	LastOwner     *Owner
	LastOwnerSeen time.Time
}

// weigh combines the claims of several resolvers about v's peer
// namespace: the strongest wins, the first of equal ones (resolvers are
// asked in the order of [Config.Resolvers]), and what it knows of the
// owners is written into v. A remembered last owner is kept: the
// history saw it, the runtime's record only fills in for a history that
// has none. It returns the winning claim, silent when there is none.
func weigh(v *Veth, claims []Claim) RuntimeClaim {
	var best Claim
	for _, c := range claims {
		if c.State.strength() > best.State.strength() {
			best = c
		}
	}
	switch best.State {
	case RuntimeRunning:
		if best.Owner != nil {
			v.Owner = best.Owner
		}
		if best.Containers != nil && v.PeerNetns != nil {
			v.PeerNetns.Containers = best.Containers
		}
	case RuntimeExited:
		if v.LastOwner == nil && best.LastOwner != nil {
			v.LastOwner, v.LastOwnerSeen = best.LastOwner, best.LastOwnerSeen
		}
	}
	return best.State
}

// Judge weighs the claims of runtimes about v's peer namespace, writes
// what the winner knows of the owners into v, and returns the verdict v
// gets from them on a full view of a node without infrastructure pairs:
// how a resolver's claims end in verdicts, for its tests.
func Judge(v *Veth, claims []Claim) (Verdict, Reason) {
	return decide(v, evidence{runtime: weigh(v, claims)})
}

// evidence is what a verdict may rest on besides the veth itself.
type evidence struct {
	infrastructure bool
	// partialView: some processes' namespaces could not be read.
	partialView bool
	runtime     RuntimeClaim
	// unasked: the peer namespace is pinned where a runtime whose
	// resolver is off pins its namespaces.
	unasked bool
}

// decide returns the verdict of v from its peer namespace, its current and
// its last known owner, and what a runtime says. The order matters: a veth
// is orphaned only when nothing that could own it was missed, and every
// doubt ends in unknown.
func decide(v *Veth, e evidence) (Verdict, Reason) {
	containerProcess := v.Owner != nil && v.Owner.Kind != OwnerProcess
	switch {
	case e.infrastructure:
		return Owned, ReasonInfrastructure
	case v.PeerOnHost:
		return Orphaned, ReasonPeerOnHost
	case v.PeerNetns == nil && e.partialView:
		// Not found where the exporter could not look: a process it may
		// not read holds it, most likely (an exporter without root).
		return Unknown, ReasonPartialView
	case v.PeerNetns == nil:
		return Unknown, ReasonNetnsNotFound
	case e.runtime == RuntimeRunning:
		return Owned, ownedReason(v)
	case v.PeerNetns.Uncounted:
		// Counted only where a runtime runs a container: without that
		// claim, no process evidence was gathered to decide on.
		return Unknown, ReasonPartialView
	case e.runtime == RuntimeExited && len(v.PeerNetns.PIDs) > 0 && !e.partialView:
		// The runtime says its container is gone, yet something (a
		// zombie, a stray nsenter) keeps the namespace alive.
		return Orphaned, ReasonOwnerExited
	case containerProcess:
		return Owned, ownedReason(v)
	case e.partialView:
		// A process of a live container may be among those not read.
		return Unknown, ReasonPartialView
	case e.runtime == RuntimeDown:
		// A crashed runtime leaves its namespaces looking empty until it
		// restarts and cleans them up: only the runtime can tell.
		return Unknown, ReasonResolverDown
	case e.unasked:
		// The same namespace, its runtime not asked at all: looking empty
		// proves as little as while it is down.
		return Unknown, ReasonResolverOff
	case v.PeerNetns.Empty() && len(v.PeerNetns.OtherLinks) > 0:
		// No process, but interfaces that may carry live traffic (a
		// router namespace): not a plain leftover.
		return Unknown, ReasonOtherLinks
	case v.PeerNetns.Empty():
		return Orphaned, ReasonNetnsEmpty
	case v.LastOwner != nil && v.LastOwner.Kind != OwnerProcess:
		// The container or pod that owned this namespace has no process
		// left in it, but something else still holds it alive.
		return Orphaned, ReasonOwnerExited
	default:
		return Unknown, ReasonNoKnownOwner
	}
}

func ownedReason(v *Veth) Reason {
	if v.Owner != nil && v.Owner.Kind == OwnerPod {
		return ReasonPod
	}
	return ReasonContainer
}
