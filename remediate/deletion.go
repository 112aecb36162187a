package remediate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate/cnidel"
)

// The way out of the approved requests, in enforce mode: the audit
// intent, the removal through the remover (a release or a deletion), the
// answers.

// remove writes the audit intents of the approved requests and deletes
// their veths through the one deletion path.
func (r *Remediator) remove(ctx context.Context, snap *inventory.Snapshot, reqs []request, approved []int, vethOf map[int]*inventory.Veth, answers []Answer) {
	if err := ctx.Err(); err != nil {
		for _, i := range approved {
			answers[i] = r.decline(reqs[i], ReasonDeadline, "the request's deadline passed before the deletion")
		}
		return
	}
	proceed, h := r.prepareRemoval(reqs, approved, func(i int) Answer {
		return Answer{Device: vethOf[i].Name, Ifindex: vethOf[i].Index, Result: ResultDeleted, Reason: string(vethOf[i].Reason)}
	}, answers)
	if h == nil {
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
		a := r.removed(vethOf[i], results[k])
		if a.Result == ResultDeleted && a.Method == MethodRelease {
			r.finishDEL(ctx, vethOf[i], &a)
		}
		answers[i] = r.record(reqs[i], a)
	}
}

// finishDEL runs, for a veth whose namespace a release freed, the CNI DEL
// that never ran of the attachment that made it, when a libcni cache entry
// is proved to be about it: the plugins release its address lease,
// portmap's rules and the rest. The veth is gone whatever the DEL does;
// a DEL that fails leaves a leaked lease for `clean --leases`, and says
// so in the answer's detail.
func (r *Remediator) finishDEL(ctx context.Context, v *inventory.Veth, a *Answer) {
	att := v.CNIAttachment
	if att == nil || r.cfg.CNI == nil {
		return
	}
	rel, err := r.cniDel(ctx, cnidel.Attachment{Network: att.Network, ContainerID: att.ContainerID, IfName: att.IfName})
	detail := "; CNI DEL of " + att.ContainerID + " ran"
	switch {
	case err != nil:
		detail = "; CNI DEL of " + att.ContainerID + " not done (its lease stays, see clean --leases): " + err.Error()
	case len(rel.Leases) > 0:
		detail += ", released " + strings.Join(rel.Leases, ",")
	}
	a.Detail += detail
}

// writeIntents writes the audit intent of each approved request, intentOf
// says what it is, and returns those whose intent is written (all of them
// without an audit file). The others are refused: a deletion nobody could
// account for afterwards does not happen.
func (r *Remediator) writeIntents(reqs []request, approved []int, intentOf func(i int) Answer, answers []Answer) []int {
	if r.cfg.AuditFile == "" {
		return approved
	}
	var proceed []int
	for _, i := range approved {
		intent := intentOf(i)
		if err := appendAudit(r.cfg.AuditFile, r.now(), r.cfg.Mode, r.cfg.AuditBy, auditIntent, reqs[i], intent); err != nil {
			answers[i] = r.record(reqs[i], Answer{Device: intent.Device, Ifindex: intent.Ifindex, Result: ResultRefused, Reason: ReasonAuditFailed,
				Detail: fmt.Sprintf("cannot write the audit intent: %v", err)})
			continue
		}
		proceed = append(proceed, i)
	}
	return proceed
}

// prepareRemoval writes the audit intents of the approved requests
// (intentOf says what each is) and opens the netlink socket the removal
// works through. It returns the requests that may proceed and the handle,
// nil when none may (each other request answered: audit_failed, netlink).
func (r *Remediator) prepareRemoval(reqs []request, approved []int, intentOf func(i int) Answer, answers []Answer) ([]int, *netlink.Handle) {
	proceed := r.writeIntents(reqs, approved, intentOf, answers)
	if len(proceed) == 0 {
		return nil, nil
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		for _, i := range proceed {
			answers[i] = r.decline(reqs[i], ReasonNetlink, err.Error())
		}
		return nil, nil
	}
	return proceed, h
}

// removed is the answer for the veth v the remover dealt with: a deletion
// counts towards the hourly limit (twice for a pair left on the host, whose
// peer went too).
func (r *Remediator) removed(v *inventory.Veth, res removal) Answer {
	a := Answer{Device: v.Name, Ifindex: v.Index, Method: res.Method}
	switch res.Outcome {
	case OutcomeDeleted:
		now := r.now()
		r.deletions = append(r.deletions, now)
		if v.PeerOnHost {
			r.deletions = append(r.deletions, now)
		}
		r.metrics.lastDeletion(now)
		a.Result, a.Reason = ResultDeleted, string(v.Reason)
		if len(res.Released) > 0 {
			a.Detail = "released " + strings.Join(res.Released, ",")
		}
	case OutcomeGone:
		a.Result = ResultGone
	case OutcomeChanged:
		a.Result, a.Reason, a.Detail = ResultRefused, ReasonChanged, res.Err.Error()
	case OutcomeHeld:
		a.Result, a.Reason, a.Detail = ResultRefused, ReasonStillHeld, res.Err.Error()
	default:
		a.Result, a.Reason, a.Detail = ResultFailed, ReasonDelete, res.Err.Error()
		switch {
		case errors.Is(res.Err, errNotReleasable):
			a.Result, a.Reason = ResultRefused, ReasonNotReleasable
		case errors.Is(res.Err, context.DeadlineExceeded) || errors.Is(res.Err, context.Canceled):
			a.Reason = ReasonDeadline // nothing done: worth a retry
		}
	}
	return a
}

func (r *Remediator) deletedInLastHour(now time.Time) int {
	r.deletions = slices.DeleteFunc(r.deletions, func(t time.Time) bool { return now.Sub(t) >= time.Hour })
	return len(r.deletions)
}

// cniDel runs the CNI DEL of a in the host's mount namespace: the plugins
// run with the host's files, as at ADD (package cnidel).
func (r *Remediator) cniDel(ctx context.Context, a cnidel.Attachment) (rel cnidel.Released, err error) {
	err = r.inHostMounts(func() error {
		var err error
		rel, err = r.cfg.CNI.Del(ctx, a)
		return err
	})
	return rel, err
}

// releaseLease releases a host-local lease in the host's mount namespace,
// where its directory is writable whatever the exporter's own view.
func (r *Remediator) releaseLease(dir, ip, containerID string) error {
	return r.inHostMounts(func() error { return r.cfg.CNI.ReleaseLease(dir, ip, containerID) })
}
