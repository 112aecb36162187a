package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// minVethsForRatio is how many veths a node needs before the orphan ratio
// guard applies.
const minVethsForRatio = 5

// Snapshotter takes a fresh inventory: one whose build starts after the
// call.
type Snapshotter interface {
	Snapshot(ctx context.Context) (*inventory.Snapshot, error)
}

// Remediator applies the safety gates and, when all pass, removes the
// veths through the one deletion path. Requests are handled one at a time:
// no two can race on one device, and limits are counted exactly.
type Remediator struct {
	cfg    Config
	inv    Snapshotter
	logger *slog.Logger
	now    func() time.Time
	// capable reports whether the process may delete interfaces.
	capable func() bool
	// remover returns the deletion path over a netlink handle.
	remover func(h *netlink.Handle) *remover

	// turn admits one request at a time (a channel, unlike a mutex,
	// lets a request give up waiting when its deadline passes).
	turn      chan struct{}
	deletions []time.Time // within the last hour
	answers   *answerCache
	metrics   *Metrics
}

// New returns a Remediator over the inventory inv.
func New(cfg Config, inv Snapshotter, metrics *Metrics, logger *slog.Logger) *Remediator {
	if cfg.Paths == (inventory.Paths{}) {
		cfg.Paths = inventory.DefaultPaths
	}
	return &Remediator{
		cfg: cfg, inv: inv, logger: logger, now: time.Now, capable: CanAdminNetwork,
		remover: func(h *netlink.Handle) *remover { return newRemover(h, cfg.Paths) },
		answers: newAnswerCache(time.Hour, 10000), metrics: metrics, turn: make(chan struct{}, 1),
	}
}

// CanAdminNetwork reports whether the process holds CAP_NET_ADMIN in its
// effective set: whether it could delete an interface at all.
func CanAdminNetwork() bool {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_NET_ADMIN) != 0
}

// HandleAlerts decides on every alert of an Alertmanager webhook payload,
// in order, with one fresh inventory taken now, and removes what passes
// every gate. It answers once per alert, in the order of p.Alerts.
//
// It returns ErrBusy when ctx ends before the request's turn comes: the
// caller answers 503 and Alertmanager retries.
func (r *Remediator) HandleAlerts(ctx context.Context, p *Payload) ([]Answer, error) {
	return r.handle(ctx, alertRequests(p, r.cfg.Instance), true)
}

// HandleDevices decides on every device a human named, in order, with one
// fresh inventory taken now, and removes what passes every gate: the gates
// of an alert, minus those about the alert itself. It answers once per
// device, in order.
//
// It returns ErrBusy when ctx ends before the request's turn comes.
func (r *Remediator) HandleDevices(ctx context.Context, devices []Device) ([]Answer, error) {
	return r.handle(ctx, deviceRequests(devices), false)
}

// handle decides on every request; fromAlert applies the alert-only gates
// (resolved, other node, startsAt) and the memory of answers.
func (r *Remediator) handle(ctx context.Context, reqs []request, fromAlert bool) ([]Answer, error) {
	select {
	case r.turn <- struct{}{}:
		defer func() { <-r.turn }()
	case <-ctx.Done():
		return nil, ErrBusy
	}
	r.metrics.request()

	answers := make([]Answer, len(reqs))
	var pending []int
	now := r.now()
	for i, q := range reqs {
		if len(q.Fingerprint) > maxFingerprint || len(q.Device) > maxLabel || len(q.BadIndex) > maxLabel {
			// Not an alert of ours; neither remembered nor echoed whole.
			q.Device, q.Fingerprint = truncate(q.Device, 32), truncate(q.Fingerprint, 32)
			answers[i] = r.refuse(q, ReasonInvalidAlert, fmt.Sprintf("the fingerprint is longer than %d bytes, or a label longer than %d", maxFingerprint, maxLabel))
			continue
		}
		if fromAlert && q.Fingerprint != "" {
			if a, ok := r.answers.get(keyOf(q), now); ok {
				// Alertmanager re-sends and HA peers: answered already.
				answers[i] = a
				continue
			}
		}
		if q.Resolved {
			answers[i] = r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultSkipped, Reason: ReasonResolved})
			continue
		}
		if err := ValidDeviceName(q.Device); err != nil {
			answers[i] = r.refuse(q, ReasonInvalidDevice, err.Error())
			continue
		}
		if q.BadIndex != "" {
			answers[i] = r.refuse(q, ReasonInvalidIfindex, fmt.Sprintf("ifindex %q: not an interface index", q.BadIndex))
			continue
		}
		if q.OtherNode {
			answers[i] = r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultSkipped, Reason: ReasonOtherNode})
			continue
		}
		if fromAlert {
			switch {
			case q.StartsAt.After(now):
				answers[i] = r.refuse(q, ReasonStartsInFuture, fmt.Sprintf("alert starts at %s, in the future", q.StartsAt.Format(time.RFC3339)))
				continue
			case q.StartsAt.IsZero() || now.Sub(q.StartsAt) < r.cfg.MinAge:
				answers[i] = r.refuse(q, ReasonAlertTooYoung, fmt.Sprintf("alert firing for %s, less than %s", now.Sub(q.StartsAt).Round(time.Second), r.cfg.MinAge))
				continue
			}
		}
		pending = append(pending, i)
	}
	if len(pending) > 0 {
		r.decide(ctx, reqs, pending, answers)
	}
	for i, q := range reqs {
		if fromAlert && q.Fingerprint != "" && len(q.Fingerprint) <= maxFingerprint && final(answers[i]) {
			r.answers.put(keyOf(q), answers[i], now)
		}
	}
	return answers, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ErrBusy: the request's deadline passed while other requests were handled.
var ErrBusy = errors.New("remediation busy: the request's deadline passed while others were handled")

// resolverFailureReasons are the orphan reasons a failing resolver
// produces en masse: only they count towards the orphan ratio guard. A
// pair left on the host is structural, whatever a resolver says.
var resolverFailureReasons = []inventory.Reason{inventory.ReasonNetnsEmpty, inventory.ReasonOwnerExited}

// decide takes the fresh inventory, runs the remaining gates on each
// pending request, and removes what passes them all; the caller holds the
// turn.
func (r *Remediator) decide(ctx context.Context, reqs []request, pending []int, answers []Answer) {
	snap, err := r.inv.Snapshot(ctx)
	if err != nil {
		for _, i := range pending {
			answers[i] = r.fail(reqs[i], ReasonInventoryFailed, err.Error())
		}
		return
	}
	if gap := r.cfg.MaxStateGap; gap > 0 && (snap.HistoryObserved.IsZero() || snap.Taken.Sub(snap.HistoryObserved) > gap) {
		detail := "no running exporter has recorded this node's veths (is it running with this --state.path?)"
		if !snap.HistoryObserved.IsZero() {
			detail = fmt.Sprintf("the exporter's record was last refreshed %s ago, more than %s: its orphan times prove nothing",
				snap.Taken.Sub(snap.HistoryObserved).Round(time.Second), gap)
		}
		for _, i := range pending {
			q := reqs[i]
			if v := snap.Veth(q.Device); v != nil {
				q.Index = v.Index
			}
			answers[i] = r.refuse(q, ReasonStaleState, detail)
		}
		return
	}
	orphans := 0
	for i := range snap.Veths {
		if v := &snap.Veths[i]; v.Verdict == inventory.Orphaned && slices.Contains(resolverFailureReasons, v.Reason) {
			orphans++
		}
	}
	// A node drained of workloads may hold nothing but a few leftovers:
	// the ratio says something from a handful of veths on.
	tooMany := len(snap.Veths) >= minVethsForRatio && float64(orphans)/float64(len(snap.Veths)) > r.cfg.MaxOrphanRatio
	now := r.now()
	hourly := r.deletedInLastHour(now)
	var approved []int
	// interfaces counts what the approved requests remove: a pair left on
	// the host goes with both its ends. claimed maps each of those
	// ifindexes to the request that removes it.
	interfaces := 0
	claimed := map[int]int{}
	var duplicates [][2]int // {request, request removing the same veth}
	vethOf := map[int]*inventory.Veth{}
	masterOK := func(v *inventory.Veth) bool {
		return r.cfg.MasterInclude == nil || r.cfg.MasterInclude.MatchString(v.Master)
	}
	excluded := func(v *inventory.Veth) bool {
		return r.cfg.DeviceExclude != nil && r.cfg.DeviceExclude.MatchString(v.Name)
	}
	for _, i := range pending {
		q := reqs[i]
		v := snap.Veth(q.Device)
		if v == nil {
			answers[i] = r.missing(snap, q)
			continue
		}
		vethOf[i] = v
		refuse := func(reason, format string, args ...any) {
			answers[i] = r.record(q, Answer{Device: v.Name, Ifindex: v.Index, Result: ResultRefused, Reason: reason, Detail: fmt.Sprintf(format, args...)})
		}
		// Deleting one end of a pair left on the host deletes the other:
		// both must pass the gates on interfaces.
		var peer *inventory.Veth
		weight := 1
		if v.PeerOnHost {
			peer, weight = snap.Veth(v.PeerName), 2
		}
		if first, ok := claimed[v.Index]; ok && (q.Index == 0 || q.Index == v.Index) {
			duplicates = append(duplicates, [2]int{i, first})
			continue
		}
		switch {
		case q.Index != 0 && v.Index != q.Index:
			refuse(ReasonIfindexMismatch, "%s has ifindex %d now, the alert names %d", q.Device, v.Index, q.Index)
		case v.Verdict != inventory.Orphaned:
			refuse(ReasonNotOrphaned, "%s is %s (%s)", q.Device, v.Verdict, v.Reason)
		case !slices.Contains(r.cfg.Reasons, v.Reason):
			refuse(ReasonReasonNotAllowed, "%s is orphaned for %s, not an allowed reason", q.Device, v.Reason)
		case v.OrphanedSince.IsZero() || !v.OrphanedSince.Before(snap.Taken):
			// Whatever the min-age: the orphan must have been recorded by
			// an observation before this request's; one look is not proof.
			refuse(ReasonNotRecorded, "no observation before this request recorded %s as orphaned", q.Device)
		case now.Sub(v.OrphanedSince) < r.cfg.MinAge:
			refuse(ReasonOrphanTooYoung, "%s orphaned for %s here, less than %s", q.Device, now.Sub(v.OrphanedSince).Round(time.Second), r.cfg.MinAge)
		case v.PeerOnHost && peer == nil:
			refuse(ReasonChanged, "the peer %s of %s is not in the inventory", v.PeerName, q.Device)
		case !masterOK(v):
			refuse(ReasonMasterNotAllowed, "master %q of %s is not allowed", v.Master, q.Device)
		case peer != nil && !masterOK(peer):
			refuse(ReasonMasterNotAllowed, "master %q of %s, the peer %s deletes too, is not allowed", peer.Master, peer.Name, q.Device)
		case excluded(v):
			refuse(ReasonDeviceExcluded, "%s is excluded", q.Device)
		case peer != nil && excluded(peer):
			refuse(ReasonDeviceExcluded, "%s, the peer %s deletes too, is excluded", peer.Name, q.Device)
		case snap.CNI.AgentDown():
			refuse(ReasonCNINotReady, "the node agent of the CNI %s (%s) is not running: it cleans up itself when it restarts",
				snap.CNI.Network.Type, strings.Join(snap.CNI.Network.Agents, ", "))
		case tooMany:
			refuse(ReasonTooManyOrphans, "%d of %d veths look orphaned with a reason a failing resolver gives, more than %.0f%%: a resolver failure, not a leak",
				orphans, len(snap.Veths), 100*r.cfg.MaxOrphanRatio)
		case r.cfg.MaxPerRequest > 0 && interfaces+weight > r.cfg.MaxPerRequest:
			refuse(ReasonRequestLimit, "at most %d deletions per request", r.cfg.MaxPerRequest)
		case r.cfg.MaxPerHour > 0 && hourly+interfaces+weight > r.cfg.MaxPerHour:
			refuse(ReasonHourlyLimit, "at most %d deletions per hour", r.cfg.MaxPerHour)
		case r.cfg.Mode == ModeEnforce && !r.capable():
			refuse(ReasonNoPermission, "the exporter lacks CAP_NET_ADMIN")
		default:
			if r.cfg.Mode != ModeEnforce {
				answers[i] = r.record(q, Answer{Device: v.Name, Ifindex: v.Index, Result: ResultWouldDelete, Reason: string(v.Reason)})
			}
			approved = append(approved, i)
			interfaces += weight
			claimed[v.Index] = i
			if peer != nil {
				claimed[peer.Index] = i
			}
		}
	}
	if r.cfg.Mode == ModeEnforce && len(approved) > 0 {
		r.remove(ctx, snap, reqs, approved, vethOf, answers)
	}
	for _, d := range duplicates {
		// Another request of this one removes (or would remove) that
		// veth: the same answer, said of this device.
		i, first := d[0], d[1]
		v, a := vethOf[i], answers[first]
		if a.Result == ResultDeleted || a.Result == ResultWouldDelete {
			a.Detail = fmt.Sprintf("with %s, in this request", a.Device)
		}
		a.Device, a.Ifindex = v.Name, v.Index
		answers[i] = r.record(reqs[i], a)
	}
}

// missing answers a request for a device the fresh inventory has no veth
// of: not a veth, gone since the exporter recorded it, or never heard of.
func (r *Remediator) missing(snap *inventory.Snapshot, q request) Answer {
	if linkExists(q.Device) {
		return r.refuse(q, ReasonNotVeth, fmt.Sprintf("%s exists but is not a host-side veth", q.Device))
	}
	for _, g := range snap.Gone {
		if g.Device == q.Device && (q.Index == 0 || q.Index == g.Index) {
			return r.record(q, Answer{Device: q.Device, Ifindex: g.Index, Result: ResultGone})
		}
	}
	return r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultNotFound,
		Detail: fmt.Sprintf("no interface %s, and the exporter never recorded one", q.Device)})
}

// remove writes the audit intents of the approved requests and deletes
// their veths through the one deletion path.
func (r *Remediator) remove(ctx context.Context, snap *inventory.Snapshot, reqs []request, approved []int, vethOf map[int]*inventory.Veth, answers []Answer) {
	if err := ctx.Err(); err != nil {
		for _, i := range approved {
			answers[i] = r.fail(reqs[i], ReasonDeadline, "the request's deadline passed before the deletion")
		}
		return
	}
	var proceed []int
	for _, i := range approved {
		v := vethOf[i]
		intent := Answer{Device: v.Name, Ifindex: v.Index, Result: ResultDeleted, Reason: string(v.Reason)}
		if r.cfg.AuditFile != "" {
			if err := appendAudit(r.cfg.AuditFile, r.now(), r.cfg.Mode, auditIntent, reqs[i], intent); err != nil {
				// A deletion nobody could account for afterwards does not
				// happen.
				answers[i] = r.record(reqs[i], Answer{Device: v.Name, Ifindex: v.Index, Result: ResultRefused, Reason: ReasonAuditFailed,
					Detail: fmt.Sprintf("cannot write the audit intent: %v", err)})
				continue
			}
		}
		proceed = append(proceed, i)
	}
	if len(proceed) == 0 {
		return
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		for _, i := range proceed {
			answers[i] = r.fail(reqs[i], ReasonNetlink, err.Error())
		}
		return
	}
	defer h.Close()
	targets := make([]Target, len(proceed))
	for k, i := range proceed {
		targets[k] = targetOf(snap, vethOf[i], r.cfg.Paths)
	}
	start := time.Now()
	results := r.remover(h).remove(ctx, targets)
	r.logger.Debug("remediation deletions", "veths", len(targets), "took", time.Since(start))
	for k, i := range proceed {
		v, q, res := vethOf[i], reqs[i], results[k]
		a := Answer{Device: v.Name, Ifindex: v.Index}
		switch res.Outcome {
		case OutcomeDeleted:
			now := r.now()
			r.deletions = append(r.deletions, now)
			if v.PeerOnHost {
				r.deletions = append(r.deletions, now) // its peer went too
			}
			r.metrics.lastDeletion(now)
			a.Result, a.Reason = ResultDeleted, string(v.Reason)
			if r.cfg.ReleaseNetns {
				a.Detail = r.releaseNetns(v)
			}
		case OutcomeGone:
			a.Result = ResultGone
		case OutcomeChanged:
			a.Result, a.Reason, a.Detail = ResultRefused, ReasonChanged, res.Err.Error()
		default:
			a.Result, a.Reason, a.Detail = ResultFailed, ReasonDelete, res.Err.Error()
			if errors.Is(res.Err, context.DeadlineExceeded) || errors.Is(res.Err, context.Canceled) {
				a.Reason = ReasonDeadline // nothing done: worth a retry
			}
		}
		answers[i] = r.record(q, a)
	}
}

// releaseNetns unmounts and removes the mounts that pinned the deleted
// veth's peer namespace, if no process is in it, and says what it did.
// Only mounts in the configured netns directories are touched.
func (r *Remediator) releaseNetns(v *inventory.Veth) string {
	n := v.PeerNetns
	if n == nil || !n.Empty() {
		return "namespace not released: it holds processes"
	}
	var released []string
	for _, m := range n.Mounts {
		if !slices.Contains(r.cfg.NetnsDirs, filepath.Dir(m)) {
			continue
		}
		p := filepath.Join(r.cfg.Paths.Rootfs, m)
		// The path must still pin the very namespace the inventory saw.
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil || st.Ino != n.Inode {
			continue
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			r.logger.Warn("cannot release the namespace mount", "device", v.Name, "mount", m, "err", err)
			continue
		}
		if err := os.Remove(p); err != nil {
			r.logger.Warn("namespace released, its mount point stays", "device", v.Name, "mount", m, "err", err)
		}
		released = append(released, m)
	}
	if len(released) == 0 {
		return "no namespace mount released"
	}
	return "released " + strings.Join(released, ",")
}

// linkExists reports whether the host has an interface of that name.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func (r *Remediator) deletedInLastHour(now time.Time) int {
	r.deletions = slices.DeleteFunc(r.deletions, func(t time.Time) bool { return now.Sub(t) >= time.Hour })
	return len(r.deletions)
}

func (r *Remediator) refuse(q request, reason, detail string) Answer {
	return r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultRefused, Reason: reason, Detail: detail})
}

func (r *Remediator) fail(q request, reason, detail string) Answer {
	return r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultFailed, Reason: reason, Detail: detail})
}

// record counts, logs and audits an answer.
func (r *Remediator) record(q request, a Answer) Answer {
	r.metrics.action(a)
	level := r.cfg.AnswerLogLevel
	if a.Result == ResultFailed && level >= slog.LevelInfo {
		level = slog.LevelError
	}
	r.logger.Log(context.Background(), level, "remediation", "device", a.Device, "ifindex", a.Ifindex,
		"result", a.Result, "reason", a.Reason, "detail", a.Detail, "fingerprint", q.Fingerprint)
	if r.cfg.AuditFile != "" {
		if err := appendAudit(r.cfg.AuditFile, r.now(), r.cfg.Mode, auditResult, q, a); err != nil {
			r.logger.Error("cannot write the remediation audit record", "file", r.cfg.AuditFile, "err", err)
		}
	}
	return a
}
