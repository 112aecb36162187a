package remediate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// Mode says what remediation may do.
type Mode string

// The modes. Off is the default: the webhook is not even mounted.
const (
	ModeOff     Mode = "off"
	ModeDryRun  Mode = "dry-run"
	ModeEnforce Mode = "enforce"
)

// Result is the outcome of one request to remove one veth.
type Result string

// The results, as the webhook's response and the actions metric name them.
const (
	ResultDeleted     Result = "deleted"
	ResultWouldDelete Result = "would_delete"
	ResultGone        Result = "gone"
	ResultRefused     Result = "refused"
	ResultSkipped     Result = "skipped"
	ResultFailed      Result = "failed"
)

// Refusal reasons: stable strings used in the response, the log, the
// audit record and veth_remediation_refusals_total{reason}.
const (
	ReasonResolved         = "resolved"
	ReasonInvalidDevice    = "invalid_device"
	ReasonInvalidIfindex   = "invalid_ifindex"
	ReasonOtherNode        = "other_node"
	ReasonStartsInFuture   = "starts_in_future"
	ReasonAlertTooYoung    = "alert_too_young"
	ReasonInventoryFailed  = "inventory_failed"
	ReasonNotVeth          = "not_a_veth"
	ReasonIfindexMismatch  = "ifindex_mismatch"
	ReasonNotOrphaned      = "not_orphaned"
	ReasonReasonNotAllowed = "reason_not_allowed"
	ReasonOrphanTooYoung   = "orphan_too_young"
	ReasonMasterNotAllowed = "master_not_allowed"
	ReasonDeviceExcluded   = "device_excluded"
	ReasonRequestLimit     = "request_limit"
	ReasonHourlyLimit      = "hourly_limit"
	ReasonTooManyOrphans   = "too_many_orphans"
	ReasonNoPermission     = "no_permission"
	ReasonChanged          = "changed"
	// ReasonDelete: the kernel refused the deletion, or the link stayed.
	ReasonDelete = "delete"
	// Failures worth a retry: nothing was decided.
	ReasonDeadline = "deadline"
	ReasonNetlink  = "netlink"
)

// Transient reports whether a failed answer is worth a retry: nothing was
// decided about the device.
func (a Answer) Transient() bool {
	return a.Result == ResultFailed && (a.Reason == ReasonInventoryFailed || a.Reason == ReasonDeadline || a.Reason == ReasonNetlink)
}

// Config holds the gates' settings; nothing here reads flags.
type Config struct {
	Mode Mode
	// MinAge: an alert must have fired, and the veth have been orphaned,
	// at least this long.
	MinAge time.Duration
	// Reasons are the orphan reasons remediation may act on.
	Reasons []inventory.Reason
	// MasterInclude must match the veth's master bridge ("" when none);
	// DeviceExclude must not match its name.
	MasterInclude *regexp.Regexp
	DeviceExclude *regexp.Regexp
	// MaxPerRequest and MaxPerHour bound deletions; MaxOrphanRatio stops
	// every deletion while more than that share of the node's veths look
	// orphaned at once: that is a resolver failure, not a leak.
	MaxPerRequest  int
	MaxPerHour     int
	MaxOrphanRatio float64
	// AuditFile receives one JSON line per action or refusal; "" logs only.
	AuditFile string
	// ReleaseNetns: after deleting a veth whose peer namespace no process
	// is in, unmount and remove the mounts that pinned it, when they are in
	// one of NetnsDirs (host paths, opened under Rootfs).
	ReleaseNetns bool
	NetnsDirs    []string
	Rootfs       string
}

// minVethsForRatio is how many veths a node needs before the orphan ratio
// guard applies.
const minVethsForRatio = 5

// DefaultNetnsDirs are where `ip netns`, CNI runtimes and Docker pin
// namespaces; release-netns touches nothing elsewhere.
var DefaultNetnsDirs = []string{"/run/netns", "/run/docker/netns"}

// Snapshotter takes a fresh inventory.
type Snapshotter interface {
	Snapshot(ctx context.Context) (*inventory.Snapshot, error)
}

// Request asks for one veth to go: from an alert, or from the clean
// command (no alert: no fingerprint, no startsAt).
type Request struct {
	Device string
	// Index is the ifindex the asker saw; 0 when it did not say.
	Index int
	// StartsAt is when the alert started firing; zero for the clean
	// command, which has no alert.
	StartsAt    time.Time
	Fingerprint string
	// Resolved: the alert no longer fires; nothing is done for it.
	Resolved bool
	// BadIndex: the alert's ifindex label is not a valid ifindex.
	BadIndex string
}

// Answer is what became of one Request.
type Answer struct {
	Device  string `json:"device"`
	Ifindex int    `json:"ifindex,omitempty"`
	Result  Result `json:"result"`
	Reason  string `json:"reason,omitempty"`
	// Detail explains a refusal or a failure for a human.
	Detail string `json:"detail,omitempty"`
}

// Remediator applies the safety gates and, when all pass, removes the
// veth through the one deletion path. Requests are handled one at a time:
// no two can race on one device, and limits are counted exactly.
type Remediator struct {
	cfg    Config
	inv    Snapshotter
	logger *slog.Logger
	now    func() time.Time
	// capable reports whether the process may delete interfaces.
	capable func() bool

	// turn admits one request at a time (a channel, unlike a mutex,
	// lets a request give up waiting when its deadline passes).
	turn      chan struct{}
	deletions []time.Time // within the last hour
	done      map[doneKey]Answer
	metrics   *Metrics
}

type doneKey struct {
	fingerprint string
	startsAt    time.Time
	device      string
	index       int
}

// New returns a Remediator over the inventory inv.
func New(cfg Config, inv Snapshotter, metrics *Metrics, logger *slog.Logger) *Remediator {
	return &Remediator{
		cfg: cfg, inv: inv, logger: logger, now: time.Now, capable: CanAdminNetwork,
		done: map[doneKey]Answer{}, metrics: metrics, turn: make(chan struct{}, 1),
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

// Handle decides on every request, in order, with one fresh inventory
// taken now, and removes what passes every gate. fromAlert applies the
// alert-only gates (resolved, startsAt).
//
// It returns ErrBusy when ctx ends before the request's turn comes: the
// caller answers 503 and Alertmanager retries.
func (r *Remediator) Handle(ctx context.Context, reqs []Request, instanceOK func(i int) bool, fromAlert bool) ([]Answer, error) {
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
		if fromAlert && q.Fingerprint != "" {
			if a, ok := r.done[doneKey{q.Fingerprint, q.StartsAt, q.Device, q.Index}]; ok {
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
		if instanceOK != nil && !instanceOK(i) {
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
		if fromAlert && q.Fingerprint != "" && final(answers[i]) {
			r.done[doneKey{q.Fingerprint, q.StartsAt, q.Device, q.Index}] = answers[i]
		}
	}
	r.forgetOldAnswers(now)
	return answers, nil
}

// ErrBusy: the request's deadline passed while other requests were handled.
var ErrBusy = errors.New("remediation busy: the request's deadline passed while others were handled")

// decide takes the fresh inventory and runs the remaining gates on each
// pending request; the caller holds r.mu.
func (r *Remediator) decide(ctx context.Context, reqs []Request, pending []int, answers []Answer) {
	snap, err := r.inv.Snapshot(ctx)
	if err != nil {
		for _, i := range pending {
			answers[i] = r.fail(reqs[i], ReasonInventoryFailed, err.Error())
		}
		return
	}
	orphans := 0
	for i := range snap.Veths {
		if snap.Veths[i].Verdict == inventory.Orphaned {
			orphans++
		}
	}
	// A node drained of workloads may hold nothing but a few leftovers:
	// the ratio says something from a handful of veths on.
	tooMany := len(snap.Veths) >= minVethsForRatio && float64(orphans)/float64(len(snap.Veths)) > r.cfg.MaxOrphanRatio
	var h *netlink.Handle
	deletedNow := 0
	for _, i := range pending {
		q := reqs[i]
		v := snap.Veth(q.Device)
		now := r.now()
		switch {
		case v == nil && linkExists(q.Device):
			answers[i] = r.refuse(q, ReasonNotVeth, fmt.Sprintf("%s exists but is not a host-side veth", q.Device))
			continue
		case v == nil:
			answers[i] = r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultGone})
			continue
		case q.Index != 0 && v.Index != q.Index:
			answers[i] = r.refuse(q, ReasonIfindexMismatch, fmt.Sprintf("%s has ifindex %d now, the alert names %d", q.Device, v.Index, q.Index))
			continue
		case v.Verdict != inventory.Orphaned:
			answers[i] = r.refuse(q, ReasonNotOrphaned, fmt.Sprintf("%s is %s (%s)", q.Device, v.Verdict, v.Reason))
			continue
		case !slices.Contains(r.cfg.Reasons, v.Reason):
			answers[i] = r.refuse(q, ReasonReasonNotAllowed, fmt.Sprintf("%s is orphaned for %s, not an allowed reason", q.Device, v.Reason))
			continue
		case v.OrphanedSince.IsZero():
			// Whatever the min-age: an orphan the exporter never recorded
			// was seen once, by this request, and one look is not proof.
			answers[i] = r.refuse(q, ReasonOrphanTooYoung, fmt.Sprintf("the exporter has no record of %s as orphaned (is it running with this --state.path?)", q.Device))
			continue
		case now.Sub(v.OrphanedSince) < r.cfg.MinAge:
			answers[i] = r.refuse(q, ReasonOrphanTooYoung, fmt.Sprintf("%s orphaned for %s here, less than %s", q.Device, now.Sub(v.OrphanedSince).Round(time.Second), r.cfg.MinAge))
			continue
		case r.cfg.MasterInclude != nil && !r.cfg.MasterInclude.MatchString(v.Master):
			answers[i] = r.refuse(q, ReasonMasterNotAllowed, fmt.Sprintf("master %q of %s is not allowed", v.Master, q.Device))
			continue
		case r.cfg.DeviceExclude != nil && r.cfg.DeviceExclude.MatchString(v.Name):
			answers[i] = r.refuse(q, ReasonDeviceExcluded, fmt.Sprintf("%s is excluded", q.Device))
			continue
		case tooMany:
			answers[i] = r.refuse(q, ReasonTooManyOrphans, fmt.Sprintf("%d of %d veths look orphaned, more than %.0f%%: a resolver failure, not a leak", orphans, len(snap.Veths), 100*r.cfg.MaxOrphanRatio))
			continue
		case r.cfg.MaxPerRequest > 0 && deletedNow >= r.cfg.MaxPerRequest:
			answers[i] = r.refuse(q, ReasonRequestLimit, fmt.Sprintf("at most %d deletions per request", r.cfg.MaxPerRequest))
			continue
		case r.cfg.MaxPerHour > 0 && r.deletedInLastHour(now) >= r.cfg.MaxPerHour:
			answers[i] = r.refuse(q, ReasonHourlyLimit, fmt.Sprintf("at most %d deletions per hour", r.cfg.MaxPerHour))
			continue
		case r.cfg.Mode == ModeEnforce && !r.capable():
			answers[i] = r.refuse(q, ReasonNoPermission, "the exporter lacks CAP_NET_ADMIN")
			continue
		}
		if r.cfg.Mode != ModeEnforce {
			answers[i] = r.record(q, Answer{Device: v.Name, Ifindex: v.Index, Result: ResultWouldDelete, Reason: string(v.Reason)})
			deletedNow++
			continue
		}
		if err := ctx.Err(); err != nil {
			answers[i] = r.fail(q, ReasonDeadline, "the request's deadline passed before this deletion")
			continue
		}
		if h == nil {
			if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
				answers[i] = r.fail(q, ReasonNetlink, err.Error())
				continue
			}
			defer h.Close()
		}
		switch outcome, err := removeVeth(h, Target{Device: v.Name, Index: v.Index}); outcome {
		case OutcomeDeleted:
			deletedNow++
			r.deletions = append(r.deletions, now)
			r.metrics.lastDeletion(now)
			a := Answer{Device: v.Name, Ifindex: v.Index, Result: ResultDeleted, Reason: string(v.Reason)}
			if r.cfg.ReleaseNetns {
				a.Detail = r.releaseNetns(v)
			}
			answers[i] = r.record(q, a)
		case OutcomeGone:
			answers[i] = r.record(q, Answer{Device: v.Name, Ifindex: v.Index, Result: ResultGone})
		case OutcomeChanged:
			answers[i] = r.refuse(q, ReasonChanged, err.Error())
		default:
			answers[i] = r.fail(q, ReasonDelete, err.Error())
		}
	}
}

// releaseNetns unmounts and removes the mounts that pinned the deleted
// veth's peer namespace, if no process is in it, and says what it did.
// Only mounts in the configured netns directories are touched.
func (r *Remediator) releaseNetns(v *inventory.Veth) string {
	n := v.PeerNetns
	if n == nil || len(n.PIDs) > 0 {
		return "namespace not released: it holds processes"
	}
	var released []string
	for _, m := range n.Mounts {
		if !slices.Contains(r.cfg.NetnsDirs, filepath.Dir(m)) {
			continue
		}
		p := filepath.Join(r.cfg.Rootfs, m)
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

// final reports whether an answer holds for every re-send of the same
// alert: what was done, and what the alert itself makes impossible. A
// refusal that time or the node may lift (too young, limits, not orphaned
// yet, an inventory that failed) is decided again at the next re-send.
func final(a Answer) bool {
	switch a.Result {
	case ResultDeleted, ResultGone, ResultWouldDelete:
		return true
	case ResultSkipped:
		return a.Reason == ReasonResolved || a.Reason == ReasonOtherNode
	case ResultRefused:
		return a.Reason == ReasonInvalidDevice || a.Reason == ReasonInvalidIfindex
	}
	return false
}

// forgetOldAnswers bounds the idempotency cache: Alertmanager re-sends a
// firing alert at its repeat interval, hours at most.
func (r *Remediator) forgetOldAnswers(now time.Time) {
	if len(r.done) < 10000 {
		return
	}
	for k := range r.done {
		if age := now.Sub(k.startsAt); age > 24*time.Hour || age < 0 {
			delete(r.done, k)
		}
	}
	if len(r.done) >= 10000 {
		// Still full: a flood of distinct alerts. Forgetting only costs a
		// second decision, which is safe.
		clear(r.done)
	}
}

func (r *Remediator) refuse(q Request, reason, detail string) Answer {
	return r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultRefused, Reason: reason, Detail: detail})
}

func (r *Remediator) fail(q Request, reason, detail string) Answer {
	return r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultFailed, Reason: reason, Detail: detail})
}

// record counts, logs and audits an answer.
func (r *Remediator) record(q Request, a Answer) Answer {
	r.metrics.action(a)
	level := slog.LevelInfo
	if a.Result == ResultFailed {
		level = slog.LevelError
	}
	r.logger.Log(context.Background(), level, "remediation", "device", a.Device, "ifindex", a.Ifindex,
		"result", a.Result, "reason", a.Reason, "detail", a.Detail, "fingerprint", q.Fingerprint)
	if r.cfg.AuditFile != "" {
		if err := appendAudit(r.cfg.AuditFile, r.now(), r.cfg.Mode, q, a); err != nil {
			r.logger.Error("cannot write the remediation audit record", "file", r.cfg.AuditFile, "err", err)
		}
	}
	return a
}

// appendAudit writes one JSON line; each line is one write(2) on a file
// opened with O_APPEND, so lines from concurrent writers never mix.
func appendAudit(path string, now time.Time, mode Mode, q Request, a Answer) error {
	line, err := json.Marshal(struct {
		Time        time.Time `json:"time"`
		Mode        Mode      `json:"mode"`
		Fingerprint string    `json:"fingerprint,omitempty"`
		StartsAt    time.Time `json:"starts_at,omitzero"`
		Answer
	}{now.UTC(), mode, q.Fingerprint, q.StartsAt, a})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	_, werr := f.Write(append(line, '\n'))
	if err := f.Close(); werr == nil {
		werr = err
	}
	return werr
}
