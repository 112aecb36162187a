package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
)

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
	// inHostMounts runs a function in the host's mount namespace, where
	// the CNI plugins run.
	inHostMounts func(fn func() error) error

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
		remover:      func(h *netlink.Handle) *remover { return newRemover(h, cfg) },
		inHostMounts: func(fn func() error) error { return inHostMounts(cfg.Paths.Procfs, fn) },
		answers:      newAnswerCache(time.Hour, 10000), metrics: metrics, turn: make(chan struct{}, 1),
	}
}

// takeTurn waits for the request's turn, counts the request, and returns
// the function that ends the turn; ErrBusy when ctx ends first.
func (r *Remediator) takeTurn(ctx context.Context) (done func(), err error) {
	select {
	case r.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, ErrBusy
	}
	r.metrics.request()
	return func() { <-r.turn }, nil
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
	return r.handle(ctx, alertRequests(p, r.cfg.Instance), alertGates)
}

// HandleDevices decides on every device a human named, in order, with one
// fresh inventory taken now, and removes what passes every gate: the gates
// of an alert, minus those about the alert itself. It answers once per
// device, in order.
//
// It returns ErrBusy when ctx ends before the request's turn comes.
func (r *Remediator) HandleDevices(ctx context.Context, devices []Device) ([]Answer, error) {
	return r.handle(ctx, deviceRequests(devices), deviceGates)
}

// handle decides on every request, in order: first by what each says
// alone (the gates given, in order), then, for those that pass, with one
// fresh inventory taken now.
func (r *Remediator) handle(ctx context.Context, reqs []request, gates []requestGate) ([]Answer, error) {
	done, err := r.takeTurn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()

	answers := make([]Answer, len(reqs))
	var pending, leases []int
	now := r.now()
	for i, q := range reqs {
		g := gates
		if q.lease() {
			g = leaseAlertGates
		}
		if a, done := r.screen(q, g, now); done {
			answers[i] = a
			continue
		}
		if q.lease() {
			leases = append(leases, i)
			continue
		}
		pending = append(pending, i)
	}
	if len(pending) > 0 {
		r.decide(ctx, reqs, pending, answers)
	}
	if len(leases) > 0 {
		r.decideLeases(ctx, reqs, leases, answers)
	}
	r.remember(reqs, answers, now)
	return answers, nil
}

// screen answers a request by what it says alone, before any inventory:
// done is false when it passed and goes on to the inventory.
func (r *Remediator) screen(q request, gates []requestGate, now time.Time) (a Answer, done bool) {
	if reason, detail := oversized(q); reason != "" {
		q.Device, q.Fingerprint = truncate(q.Device, 32), truncate(q.Fingerprint, 32)
		return r.decline(q, reason, detail), true
	}
	if q.Fingerprint != "" {
		if a, ok := r.answers.get(keyOf(q), now); ok {
			// Alertmanager re-sends and HA peers: answered already.
			return a, true
		}
	}
	for _, gate := range gates {
		if reason, detail := gate(q, now, &r.cfg); reason != "" {
			return r.decline(q, reason, detail), true
		}
	}
	return Answer{}, false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ErrBusy: the request's deadline passed while other requests were handled.
var ErrBusy = errors.New("remediation busy: the request's deadline passed while others were handled")

// decide takes the fresh inventory, runs the history gate and the veth
// gates on each pending request, and removes what passes them all; the
// caller holds the turn.
func (r *Remediator) decide(ctx context.Context, reqs []request, pending []int, answers []Answer) {
	snap, err := r.inv.Snapshot(ctx)
	if err != nil {
		for _, i := range pending {
			answers[i] = r.decline(reqs[i], ReasonInventoryFailed, err.Error())
		}
		return
	}
	if reason, detail := historyFresh(snap, &r.cfg); reason != "" {
		for _, i := range pending {
			q := reqs[i]
			if v := snap.Veth(q.Device); v != nil {
				q.Index = v.Index
			}
			answers[i] = r.decline(q, reason, detail)
		}
		return
	}
	now := r.now()
	rd := newRound(&r.cfg, snap, now, r.deletedInLastHour(now), r.capable)
	var approved []int
	var duplicates [][2]int // {request, request removing the same veth}
	vethOf := map[int]*inventory.Veth{}
	for _, i := range pending {
		q := reqs[i]
		v := snap.Veth(q.Device)
		if v == nil {
			answers[i] = r.missing(snap, q)
			continue
		}
		vethOf[i] = v
		if first, ok := rd.claimed[v.Index]; ok && (q.Index == 0 || q.Index == v.Index) {
			duplicates = append(duplicates, [2]int{i, first})
			continue
		}
		c := rd.candidate(q, v)
		if reason, detail := rd.check(c); reason != "" {
			answers[i] = r.record(q, Answer{Device: v.Name, Ifindex: v.Index, Result: resultOf(reason), Reason: reason, Detail: detail})
			continue
		}
		if r.cfg.Mode != ModeEnforce {
			answers[i] = r.record(q, Answer{Device: v.Name, Ifindex: v.Index, Result: ResultWouldDelete, Reason: string(v.Reason)})
		}
		approved = append(approved, i)
		rd.approve(i, c)
	}
	if r.cfg.Mode == ModeEnforce && len(approved) > 0 {
		r.remove(ctx, snap, reqs, approved, vethOf, answers)
	}
	r.answerDuplicates(reqs, duplicates, vethOf, answers)
}

// answerDuplicates answers the requests for a veth that another request
// of this one removes (or would remove): the same answer, said of this
// device.
func (r *Remediator) answerDuplicates(reqs []request, duplicates [][2]int, vethOf map[int]*inventory.Veth, answers []Answer) {
	for _, d := range duplicates {
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
		return r.decline(q, ReasonNotVeth, fmt.Sprintf("%s exists but is not a host-side veth", q.Device))
	}
	for _, g := range snap.Gone {
		if g.Device == q.Device && (q.Index == 0 || q.Index == g.Index) {
			return r.record(q, Answer{Device: q.Device, Ifindex: g.Index, Result: ResultGone})
		}
	}
	return r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: ResultNotFound,
		Detail: fmt.Sprintf("no interface %s, and the exporter never recorded one", q.Device)})
}

// linkExists reports whether the host has an interface of that name.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// decline answers a request a gate stopped, or that failed on the way,
// with the result its reason has.
func (r *Remediator) decline(q request, reason, detail string) Answer {
	return r.record(q, Answer{Device: q.Device, Ifindex: q.Index, Result: resultOf(reason), Reason: reason, Detail: detail})
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
		if err := appendAudit(r.cfg.AuditFile, r.now(), r.cfg.Mode, r.cfg.AuditBy, auditResult, q, a); err != nil {
			r.logger.Error("cannot write the remediation audit record", "file", r.cfg.AuditFile, "err", err)
		}
	}
	return a
}
