package remediate

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// The safety gates. Each is a function that returns the reason it stops a
// request and a detail for a human, or an empty reason to let it through.
// Each entry point has its ordered list of request gates; every request
// then meets the history gate and the veth gates, in order, whoever asked.
// The first gate that stops a request answers it, so the order decides
// which reason a request that fails several gates gets.
//
// Before any gate, a request too large to be an alert of ours is refused
// (invalid_alert; invalid_device for a name a human gave: see oversized),
// and a re-sent alert gets the answer it
// got before, if that answer holds for every re-send (see final).

// A requestGate looks at a request alone, before the inventory is taken.
type requestGate func(q request, now time.Time, cfg *Config) (reason, detail string)

// alertGates are the request gates of an Alertmanager alert, in order.
var alertGates = []requestGate{
	alertFiring,
	deviceNameValid,
	ifindexLabelValid,
	alertForThisNode,
	alertNotFromTheFuture,
	alertOldEnough,
}

// leaseAlertGates are the request gates of a lease alert: the alert's,
// with its network and range labels instead of a device.
var leaseAlertGates = []requestGate{
	alertFiring,
	leaseLabelsValid,
	alertForThisNode,
	alertNotFromTheFuture,
	alertOldEnough,
}

// leaseLabelsValid: a lease alert names a network (a name libcni would
// accept as a file name part) and a range (a CIDR prefix).
func leaseLabelsValid(q request, _ time.Time, _ *Config) (reason, detail string) {
	if q.LeaseNetwork == "" || strings.ContainsAny(q.LeaseNetwork, "/ \t\n") || q.LeaseNetwork == "." || q.LeaseNetwork == ".." {
		return ReasonInvalidAlert, fmt.Sprintf("%s alert: network label %q is not a CNI network name", LeaseAlert, q.LeaseNetwork)
	}
	if _, err := netip.ParsePrefix(q.LeaseRange); err != nil {
		return ReasonInvalidAlert, fmt.Sprintf("%s alert: range label %q is not a CIDR prefix", LeaseAlert, q.LeaseRange)
	}
	return "", ""
}

// deviceGates are the request gates of a device a human named: there is
// no alert, so none of the alert's.
var deviceGates = []requestGate{
	deviceNameValid,
}

// oversized refuses a request that carries a fingerprint or a label no
// alert of ours has (any label, by name or value): it is not remembered,
// and not echoed whole.
// A name a human gave that long is no interface name: invalid_device,
// not echoed whole either.
func oversized(q request) (reason, detail string) {
	switch {
	case q.Named && len(q.Device) > maxLabel:
		return ReasonInvalidDevice, fmt.Sprintf("a name of %d bytes is not an interface name (at most 15)", len(q.Device))
	case len(q.Fingerprint) > maxFingerprint || len(q.Device) > maxLabel || len(q.BadIndex) > maxLabel || q.LongLabel != "":
		return ReasonInvalidAlert, fmt.Sprintf("the fingerprint is longer than %d bytes, or a label's name or value longer than %d", maxFingerprint, maxLabel)
	}
	return "", ""
}

func alertFiring(q request, _ time.Time, _ *Config) (reason, detail string) {
	if q.Resolved {
		return ReasonResolved, ""
	}
	return "", ""
}

func deviceNameValid(q request, _ time.Time, _ *Config) (reason, detail string) {
	if err := ValidDeviceName(q.Device); err != nil {
		return ReasonInvalidDevice, err.Error()
	}
	return "", ""
}

func ifindexLabelValid(q request, _ time.Time, _ *Config) (reason, detail string) {
	if q.BadIndex != "" {
		return ReasonInvalidIfindex, fmt.Sprintf("ifindex %q: not an interface index", q.BadIndex)
	}
	return "", ""
}

func alertForThisNode(q request, _ time.Time, cfg *Config) (reason, detail string) {
	if q.OtherNode {
		return ReasonOtherNode, cfg.Instance.Mismatch(q.Instance, q.HasInstance)
	}
	return "", ""
}

func alertNotFromTheFuture(q request, now time.Time, _ *Config) (reason, detail string) {
	if q.StartsAt.After(now) {
		return ReasonStartsInFuture, fmt.Sprintf("alert starts at %s, in the future", q.StartsAt.Format(time.RFC3339))
	}
	return "", ""
}

func alertOldEnough(q request, now time.Time, cfg *Config) (reason, detail string) {
	if q.StartsAt.IsZero() {
		return ReasonAlertTooYoung, fmt.Sprintf("alert has no startsAt: how long it has fired is unknown (at least %s needed)", cfg.MinAge)
	}
	if now.Sub(q.StartsAt) < cfg.MinAge {
		return ReasonAlertTooYoung, fmt.Sprintf("alert firing for %s, less than %s", under(now.Sub(q.StartsAt)), cfg.MinAge)
	}
	return "", ""
}

// historyFresh is the gate of the fresh inventory as a whole, for every
// request at once: the history behind its orphaned-since times must have
// been refreshed by an observation within the maximum gap, or anything may
// have lived in a leftover's namespace meanwhile.
func historyFresh(snap *inventory.Snapshot, cfg *Config) (reason, detail string) {
	gap := cfg.MaxStateGap
	if gap <= 0 || (!snap.HistoryObserved.IsZero() && snap.Taken.Sub(snap.HistoryObserved) <= gap) {
		return "", ""
	}
	if snap.HistoryObserved.IsZero() && snap.HistoryUnreadable != "" {
		return ReasonStaleState, fmt.Sprintf("no history to prove anything: %s (a running exporter replaces it at its next observation)", snap.HistoryUnreadable)
	}
	if snap.HistoryObserved.IsZero() {
		return ReasonStaleState, "no running exporter has recorded this node's veths (is it running with this --state.path?)"
	}
	return ReasonStaleState, fmt.Sprintf("the exporter's record was last refreshed %s ago, more than %s: its orphan times prove nothing",
		over(snap.Taken.Sub(snap.HistoryObserved)), gap)
}

// under and over print a duration that is compared with a bound so that
// the comparison reads true: under truncates (59.6s is 59s, never a 1m0s
// "less than 1m0s"), over rounds up. Both count whole seconds from a
// second on, milliseconds below.
func under(d time.Duration) time.Duration { return d.Truncate(unitOf(d)) }

func over(d time.Duration) time.Duration {
	u := unitOf(d)
	return (d + u - 1).Truncate(u)
}

func unitOf(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Millisecond
	}
	return time.Second
}

// A vethGate looks at the veth a request names, as the fresh inventory
// shows it, in the round of the request's other devices.
type vethGate func(rd *round, c *candidate) (reason, detail string)

// vethGates are the gates of every veth, whoever asked, in order.
var vethGates = []vethGate{
	ifindexUnchanged,
	stillOrphaned,
	orphanReasonAllowed,
	orphanRecorded,
	orphanOldEnough,
	hostPeerKnown,
	masterAllowed,
	deviceNotExcluded,
	cniAgentRunning,
	notTooManyOrphans,
	withinRequestLimit,
	withinHourlyLimit,
	mayAdminNetwork,
}

// round is one fresh inventory and what the requests decided on it so far
// have approved.
type round struct {
	cfg  *Config
	snap *inventory.Snapshot
	now  time.Time
	// orphans counts the veths orphaned for a reason a failing resolver
	// gives; tooMany says they are too large a share of the node's.
	orphans int
	tooMany bool
	// hourly counts the deletions of the last hour before this request.
	hourly int
	// interfaces counts what the approved requests remove: a pair left on
	// the host goes with both its ends. claimed maps each of those
	// ifindexes to the request that removes it.
	interfaces int
	claimed    map[int]int
	// capable reports whether the process may delete interfaces.
	capable func() bool
}

// minVethsForRatio is how many veths a node needs before the orphan ratio
// guard applies.
const minVethsForRatio = 5

// resolverFailureReasons are the orphan reasons a failing resolver
// produces en masse: only they count towards the orphan ratio guard. A
// pair left on the host is structural, whatever a resolver says.
var resolverFailureReasons = []inventory.Reason{inventory.ReasonNetnsEmpty, inventory.ReasonOwnerExited}

func newRound(cfg *Config, snap *inventory.Snapshot, now time.Time, hourly int, capable func() bool) *round {
	rd := &round{cfg: cfg, snap: snap, now: now, hourly: hourly, claimed: map[int]int{}, capable: capable}
	for i := range snap.Veths {
		if v := &snap.Veths[i]; v.Verdict == inventory.Orphaned && slices.Contains(resolverFailureReasons, v.Reason) {
			rd.orphans++
		}
	}
	// A node drained of workloads may hold nothing but a few leftovers:
	// the ratio says something from a handful of veths on.
	rd.tooMany = len(snap.Veths) >= minVethsForRatio && float64(rd.orphans)/float64(len(snap.Veths)) > cfg.MaxOrphanRatio
	return rd
}

// candidate is the veth a request names, as the fresh inventory shows it.
type candidate struct {
	q request
	v *inventory.Veth
	// peer is the other end of a pair left on the host: deleting one end
	// deletes the other, so both must pass the gates on interfaces. It is
	// nil for a peer in a namespace, and when the inventory lacks it.
	peer *inventory.Veth
	// weight is how many interfaces the deletion removes.
	weight int
}

func (rd *round) candidate(q request, v *inventory.Veth) *candidate {
	c := &candidate{q: q, v: v, weight: 1}
	if v.PeerOnHost {
		c.peer, c.weight = rd.snap.Veth(v.PeerName), 2
	}
	return c
}

// check runs the veth gates in order and returns the first refusal.
func (rd *round) check(c *candidate) (reason, detail string) {
	for _, gate := range vethGates {
		if reason, detail = gate(rd, c); reason != "" {
			return reason, detail
		}
	}
	return "", ""
}

// approve counts an approved request's deletions against the limits, and
// claims its interfaces for it.
func (rd *round) approve(i int, c *candidate) {
	rd.interfaces += c.weight
	rd.claimed[c.v.Index] = i
	if c.peer != nil {
		rd.claimed[c.peer.Index] = i
	}
}

func ifindexUnchanged(_ *round, c *candidate) (reason, detail string) {
	if c.q.Index != 0 && c.v.Index != c.q.Index {
		return ReasonIfindexMismatch, fmt.Sprintf("%s has ifindex %d now, the alert names %d", c.q.Device, c.v.Index, c.q.Index)
	}
	return "", ""
}

// stillOrphaned says why a veth is not orphaned: one that still settles
// has looked orphaned for less than the settle time, whatever the minimum
// age; on a partial view the detail says what the inventory cannot see.
func stillOrphaned(rd *round, c *candidate) (reason, detail string) {
	v := c.v
	switch {
	case v.Verdict == inventory.Orphaned:
		return "", ""
	case v.Reason == inventory.ReasonSettling:
		return ReasonNotOrphaned, fmt.Sprintf("%s is %s (%s): it has looked orphaned for %s, less than the settle time (--inventory.settle-time); "+
			"runtimes build and tear down networks in steps that each look like a leftover for a moment", c.q.Device, v.Verdict, v.Reason, under(rd.now.Sub(v.OrphanedSince)))
	case v.Verdict == inventory.Unknown && len(rd.snap.Warnings) > 0:
		return ReasonNotOrphaned, fmt.Sprintf("%s is %s (%s); the inventory's view is partial: %s", c.q.Device, v.Verdict, v.Reason, strings.Join(rd.snap.Warnings, "; "))
	}
	return ReasonNotOrphaned, fmt.Sprintf("%s is %s (%s)", c.q.Device, v.Verdict, v.Reason)
}

func orphanReasonAllowed(rd *round, c *candidate) (reason, detail string) {
	if !slices.Contains(rd.cfg.Reasons, c.v.Reason) {
		return ReasonReasonNotAllowed, fmt.Sprintf("%s is orphaned for %s, not an allowed reason", c.q.Device, c.v.Reason)
	}
	return "", ""
}

// orphanRecorded holds whatever the minimum age: the orphan must have been
// recorded by an observation before this request's; one look is not proof.
func orphanRecorded(rd *round, c *candidate) (reason, detail string) {
	if c.v.OrphanedSince.IsZero() || !c.v.OrphanedSince.Before(rd.snap.Taken) {
		return ReasonNotRecorded, fmt.Sprintf("no observation before this request recorded %s as orphaned", c.q.Device)
	}
	return "", ""
}

func orphanOldEnough(rd *round, c *candidate) (reason, detail string) {
	if age := rd.now.Sub(c.v.OrphanedSince); age < rd.cfg.MinAge {
		return ReasonOrphanTooYoung, fmt.Sprintf("%s orphaned for %s here, less than %s", c.q.Device, under(age), rd.cfg.MinAge)
	}
	return "", ""
}

func hostPeerKnown(_ *round, c *candidate) (reason, detail string) {
	if c.v.PeerOnHost && c.peer == nil {
		return ReasonChanged, fmt.Sprintf("the peer %s of %s is not in the inventory", c.v.PeerName, c.q.Device)
	}
	return "", ""
}

func masterAllowed(rd *round, c *candidate) (reason, detail string) {
	ok := func(v *inventory.Veth) bool {
		return rd.cfg.MasterInclude == nil || rd.cfg.MasterInclude.MatchString(v.Master)
	}
	switch {
	case !ok(c.v):
		return ReasonMasterNotAllowed, fmt.Sprintf("master %q of %s is not allowed", c.v.Master, c.q.Device)
	case c.peer != nil && !ok(c.peer):
		return ReasonMasterNotAllowed, fmt.Sprintf("master %q of %s, the peer %s deletes too, is not allowed", c.peer.Master, c.peer.Name, c.q.Device)
	}
	return "", ""
}

func deviceNotExcluded(rd *round, c *candidate) (reason, detail string) {
	excluded := func(v *inventory.Veth) bool {
		return rd.cfg.DeviceExclude != nil && rd.cfg.DeviceExclude.MatchString(v.Name)
	}
	switch {
	case excluded(c.v):
		return ReasonDeviceExcluded, fmt.Sprintf("%s is excluded", c.q.Device)
	case c.peer != nil && excluded(c.peer):
		return ReasonDeviceExcluded, fmt.Sprintf("%s, the peer %s deletes too, is excluded", c.peer.Name, c.q.Device)
	}
	return "", ""
}

// cniAgentRunning: a CNI whose node agent is down cleans up its own
// interfaces when the agent restarts.
func cniAgentRunning(rd *round, _ *candidate) (reason, detail string) {
	if agent, down := rd.snap.AgentDown(); down {
		return ReasonCNINotReady, fmt.Sprintf("the node agent of %s is not running: it cleans up itself when it restarts", agent)
	}
	return "", ""
}

func notTooManyOrphans(rd *round, _ *candidate) (reason, detail string) {
	if !rd.tooMany {
		return "", ""
	}
	byReason := map[inventory.Reason]int{}
	for i := range rd.snap.Veths {
		if v := &rd.snap.Veths[i]; v.Verdict == inventory.Orphaned {
			byReason[v.Reason]++
		}
	}
	var seen []string
	for _, r := range resolverFailureReasons {
		if byReason[r] > 0 {
			seen = append(seen, fmt.Sprintf("%d %s", byReason[r], r))
		}
	}
	share := float64(rd.orphans) / float64(len(rd.snap.Veths))
	return ReasonTooManyOrphans, fmt.Sprintf("%d of %d veths look orphaned (%s), more than --remediation.max-orphan-ratio=%g of them: "+
		"a failing resolver makes live veths look so; %s. If they are leftovers, --remediation.max-orphan-ratio=%g lets them through",
		rd.orphans, len(rd.snap.Veths), strings.Join(seen, ", "), rd.cfg.MaxOrphanRatio, resolversSeen(rd.snap, rd.cfg), math.Ceil(share*100-1e-9)/100)
}

// resolversSeen says which runtime resolvers of cfg answered in snap and
// which failed: what the owners of its namespaces rest on.
func resolversSeen(snap *inventory.Snapshot, cfg *Config) string {
	if len(cfg.Resolvers) == 0 {
		return "no runtime resolver is on, so no runtime was asked whether it still claims these namespaces"
	}
	var up, down []string
	for _, name := range cfg.Resolvers {
		i := slices.IndexFunc(snap.Steps, func(st inventory.Step) bool { return st.Name == name })
		switch {
		case i < 0:
			down = append(down, name+" (not asked)")
		case snap.Steps[i].Err != nil:
			down = append(down, fmt.Sprintf("%s (%v)", name, snap.Steps[i].Err))
		default:
			up = append(up, name)
		}
	}
	var parts []string
	if len(up) > 0 {
		parts = append(parts, "up: "+strings.Join(up, ", "))
	}
	if len(down) > 0 {
		parts = append(parts, "down: "+strings.Join(down, ", "))
	}
	return "runtime resolvers " + strings.Join(parts, "; ")
}

func withinRequestLimit(rd *round, c *candidate) (reason, detail string) {
	if limit := rd.cfg.MaxPerRequest; limit > 0 && rd.interfaces+c.weight > limit {
		return ReasonRequestLimit, fmt.Sprintf("at most %d deletions per request", limit)
	}
	return "", ""
}

func withinHourlyLimit(rd *round, c *candidate) (reason, detail string) {
	if limit := rd.cfg.MaxPerHour; limit > 0 && rd.hourly+rd.interfaces+c.weight > limit {
		return ReasonHourlyLimit, fmt.Sprintf("at most %d deletions per hour", limit)
	}
	return "", ""
}

// mayAdminNetwork is asked only in enforce mode: a dry run deletes
// nothing, and says what it would delete without the capability.
func mayAdminNetwork(rd *round, _ *candidate) (reason, detail string) {
	if rd.cfg.Mode == ModeEnforce && !rd.capable() {
		return ReasonNoPermission, "the exporter lacks CAP_NET_ADMIN"
	}
	return "", ""
}
