package remediate

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate/cnidel"
)

// Leaked leases: addresses the host-local IPAM leased to sandboxes that
// no runtime lists any more, with no namespace left (README, Leaked
// addresses). A lease is released by the CNI DEL that never ran, from
// libcni's cache entry of the attachment (the plugins release the lease,
// portmap's chains and the rest their own way), or, without a cache
// entry, the way host-local releases one: its file removed under the
// network's lock, if it still names the same container. Only a lease an
// earlier observation recorded leaked, for the minimum age, in a fresh
// inventory whose every stage answered, is released; too many leaked at
// once is a runtime that forgot its sandboxes, and nothing is released.

// leakedLeaseReason is the reason a released lease is given.
const leakedLeaseReason = "leaked_lease"

// Methods of a lease's release.
const (
	// MethodCNIDel: the CNI DEL of its cached attachment ran.
	MethodCNIDel Method = "cni_del"
	// MethodReleaseLease: its lease file was removed as host-local does.
	MethodReleaseLease Method = "release_lease"
)

// ErrNoCNI: the exporter was not configured to run CNI plugins.
var ErrNoCNI = errors.New("no CNI plugin directory configured (--cni.bin-dir)")

// minLeasesForRatio is how many leases a node needs before the ratio
// guard applies to them.
const minLeasesForRatio = 5

// leaseName names a lease: <network>/<ip>.
func leaseName(a inventory.LeakedAddress) string {
	return a.Network + "/" + a.IP
}

// HandleLeases releases the leaked leases of a fresh inventory taken now
// that pass every gate, those of the addresses in ips (each an IP, or
// <network>/<IP>) or every one when ips is empty, and answers once for
// each, named <network>/<IP>; an address asked for that is not leaked
// answers not_orphaned.
func (r *Remediator) HandleLeases(ctx context.Context, ips []string) ([]Answer, error) {
	if r.cfg.CNI == nil {
		return nil, ErrNoCNI
	}
	done, err := r.takeTurn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	snap, err := r.inv.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	named := func(a inventory.LeakedAddress) bool {
		return len(ips) == 0 || slices.Contains(ips, a.IP) || slices.Contains(ips, leaseName(a))
	}
	var answers []Answer
	for _, ip := range ips {
		if !slices.ContainsFunc(snap.LeakedAddresses(), func(a inventory.LeakedAddress) bool { return ip == a.IP || ip == leaseName(a) }) {
			answers = append(answers, r.record(request{Device: ip}, Answer{Device: ip, Result: ResultRefused, Reason: ReasonNotOrphaned,
				Detail: "no leaked lease of that address (see veth_exporter inspect: ADDRESSES, LEAKED LEASES)"}))
		}
	}
	return append(answers, r.releaseLeakedLeases(ctx, snap, named)...), nil
}

// releaseLeakedLeases releases the leaked leases of snap for which
// which is true, through the gates, and answers once for each; the caller
// holds the turn.
func (r *Remediator) releaseLeakedLeases(ctx context.Context, snap *inventory.Snapshot, which func(inventory.LeakedAddress) bool) []Answer {
	all := snap.LeakedAddresses()
	slices.SortFunc(all, func(a, b inventory.LeakedAddress) int { return strings.Compare(leaseName(a), leaseName(b)) })
	var leaked []inventory.LeakedAddress
	for _, a := range all {
		if which(a) {
			leaked = append(leaked, a)
		}
	}
	reqs := make([]request, len(leaked))
	answers := make([]Answer, len(leaked))
	var approved []int
	now := r.now()
	tooMany := snap.Leases() >= minLeasesForRatio && float64(len(all))/float64(snap.Leases()) > r.cfg.MaxOrphanRatio
	for i, a := range leaked {
		reqs[i] = request{Device: leaseName(a)}
		reason, detail := r.leaseGates(snap, a, now, len(approved), tooMany, len(all))
		switch {
		case reason != "":
			answers[i] = r.record(reqs[i], Answer{Device: reqs[i].Device, Result: resultOf(reason), Reason: reason, Detail: detail})
		case r.cfg.Mode != ModeEnforce:
			answers[i] = r.record(reqs[i], Answer{Device: reqs[i].Device, Result: ResultWouldDelete, Reason: leakedLeaseReason, Method: leaseMethod(a)})
		default:
			approved = append(approved, i)
		}
	}
	r.releaseLeases(ctx, leaked, reqs, approved, answers)
	return answers
}

// LeaseAlert is the alert the webhook releases a range's leaked leases
// for (alerts/veth_exporter.rules.yml): its network and range labels name
// the range.
const LeaseAlert = "VethAddressRangeExhausting"

// decideLeases answers the pending lease alerts of reqs: each releases
// the leaked leases of its network and range that pass the gates, with one
// fresh inventory; the caller holds the turn. An alert's answer sums up
// its leases' (deleted when every one was, else the first other answer),
// each of which is recorded on its own.
func (r *Remediator) decideLeases(ctx context.Context, reqs []request, pending []int, answers []Answer) {
	if r.cfg.CNI == nil {
		for _, i := range pending {
			answers[i] = r.decline(reqs[i], ReasonNoPermission, ErrNoCNI.Error())
		}
		return
	}
	snap, err := r.inv.Snapshot(ctx)
	if err != nil {
		for _, i := range pending {
			answers[i] = r.decline(reqs[i], ReasonInventoryFailed, err.Error())
		}
		return
	}
	for _, i := range pending {
		q := reqs[i]
		prefix, err := netip.ParsePrefix(q.LeaseRange)
		if err != nil {
			answers[i] = r.decline(q, ReasonInvalidAlert, "range label: "+err.Error())
			continue
		}
		in := func(a inventory.LeakedAddress) bool {
			ip, err := netip.ParseAddr(a.IP)
			return err == nil && a.Network == q.LeaseNetwork && prefix.Contains(ip)
		}
		leases := r.releaseLeakedLeases(ctx, snap, in)
		answers[i] = summarize(q.Device, leases)
	}
}

// summarize is the answer of a lease alert: deleted when every leaked
// lease of its range was released, else the first answer that was not;
// not_orphaned when none is leaked.
func summarize(name string, leases []Answer) Answer {
	if len(leases) == 0 {
		return Answer{Device: name, Result: ResultRefused, Reason: ReasonNotOrphaned, Detail: "no leaked lease in that range"}
	}
	sum := Answer{Device: name, Result: leases[0].Result, Reason: leases[0].Reason, Method: leases[0].Method}
	var parts []string
	for _, a := range leases {
		parts = append(parts, a.Device+": "+string(a.Result))
		if sum.Result == ResultDeleted || sum.Result == ResultWouldDelete {
			if a.Result != sum.Result {
				sum.Result, sum.Reason, sum.Method = a.Result, a.Reason, a.Method
			}
		}
	}
	sum.Detail = strings.Join(parts, ", ")
	return sum
}

// leaseMethod is how a lease is released.
func leaseMethod(a inventory.LeakedAddress) Method {
	if a.CacheEntry {
		return MethodCNIDel
	}
	return MethodReleaseLease
}

// leaseGates are the gates of one leaked lease; approved is how many of
// the request's earlier ones passed; tooMany: more than the allowed share
// of the node's leases look leaked (leaked of them).
func (r *Remediator) leaseGates(snap *inventory.Snapshot, a inventory.LeakedAddress, now time.Time, approved int, tooMany bool, leaked int) (reason, detail string) {
	if reason, detail := viewComplete(snap, &r.cfg, "a lease it could not account for"); reason != "" {
		return reason, detail
	}
	if reason, detail := r.leakedLongEnough(snap, leaseName(a), a.Since, now); reason != "" {
		return reason, detail
	}
	if tooMany {
		return ReasonTooManyOrphans, fmt.Sprintf("%d of the node's %d leases look leaked, more than --remediation.max-orphan-ratio %v: "+
			"a runtime that forgot its sandboxes looks like this", leaked, snap.Leases(), r.cfg.MaxOrphanRatio)
	}
	return r.limits(now, approved, ", which the CNI plugins' DEL needs")
}

// releaseLeases writes the audit intents of the approved leases, then
// releases each: the CNI DEL of its cached attachment, else its lease
// file as host-local releases it.
func (r *Remediator) releaseLeases(ctx context.Context, leaked []inventory.LeakedAddress, reqs []request, approved []int, answers []Answer) {
	proceed := r.writeIntents(reqs, approved, func(i int) Answer {
		return Answer{Device: reqs[i].Device, Result: ResultDeleted, Reason: leakedLeaseReason, Method: leaseMethod(leaked[i])}
	}, answers)
	for _, i := range proceed {
		l := leaked[i]
		a := Answer{Device: reqs[i].Device, Method: leaseMethod(l)}
		var err error
		if l.CacheEntry {
			var rel cnidel.Released
			rel, err = r.cniDel(ctx, cnidel.Attachment{Network: l.Network, ContainerID: l.ContainerID, IfName: l.IfName})
			a.Detail = "CNI DEL of " + l.ContainerID + " ran; released " + strings.Join(rel.Leases, ",")
		} else {
			err = r.releaseLease(l.Dir, l.IP, l.ContainerID)
			a.Detail = "released " + l.Dir + "/" + l.IP
		}
		switch {
		case err == nil:
			r.deletions = append(r.deletions, r.now())
			r.metrics.lastDeletion(r.now())
			a.Result, a.Reason = ResultDeleted, leakedLeaseReason
		case errors.Is(err, errNoHostMounts):
			a.Result, a.Reason, a.Detail = ResultRefused, ReasonNotReleasable, err.Error()
		case errors.Is(err, cnidel.ErrNamespaceLeft):
			a.Result, a.Reason, a.Detail = ResultRefused, ReasonStillHeld, err.Error()
		case errors.Is(err, cnidel.ErrLeaseChanged), errors.Is(err, cnidel.ErrNoCacheEntry):
			a.Result, a.Reason, a.Detail = ResultRefused, ReasonChanged, err.Error()
		default:
			a.Result, a.Reason, a.Detail = ResultFailed, ReasonDelete, err.Error()
		}
		answers[i] = r.record(reqs[i], a)
	}
}
