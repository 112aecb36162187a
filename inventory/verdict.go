package inventory

import (
	"fmt"
	"regexp"
	"strings"
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
// of a veth's peer.
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

// evidence is what a verdict may rest on besides the veth itself.
type evidence struct {
	infrastructure bool
	// partialView: some processes' namespaces could not be read.
	partialView bool
	runtime     RuntimeClaim
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
	case v.PeerNetns == nil:
		return Unknown, ReasonNetnsNotFound
	case e.runtime == RuntimeRunning:
		return Owned, ownedReason(v)
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
	case len(v.PeerNetns.PIDs) == 0 && len(v.PeerNetns.OtherLinks) > 0:
		// No process, but interfaces that may carry live traffic (a
		// router namespace): not a plain leftover.
		return Unknown, ReasonOtherLinks
	case len(v.PeerNetns.PIDs) == 0:
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
