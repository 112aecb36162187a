package remediate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// The way out of the approved requests, in enforce mode: the audit
// intent, the deletion through the remover, the answers, and the release
// of the mounts that pinned an emptied namespace.

// remove writes the audit intents of the approved requests and deletes
// their veths through the one deletion path.
func (r *Remediator) remove(ctx context.Context, snap *inventory.Snapshot, reqs []request, approved []int, vethOf map[int]*inventory.Veth, answers []Answer) {
	if err := ctx.Err(); err != nil {
		for _, i := range approved {
			answers[i] = r.decline(reqs[i], ReasonDeadline, "the request's deadline passed before the deletion")
		}
		return
	}
	proceed := r.writeIntents(reqs, approved, vethOf, answers)
	if len(proceed) == 0 {
		return
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		for _, i := range proceed {
			answers[i] = r.decline(reqs[i], ReasonNetlink, err.Error())
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
		answers[i] = r.record(reqs[i], r.removed(vethOf[i], results[k]))
	}
}

// writeIntents writes the audit intent of each approved request and
// returns those whose intent is written (all of them without an audit
// file). The others are refused: a deletion nobody could account for
// afterwards does not happen.
func (r *Remediator) writeIntents(reqs []request, approved []int, vethOf map[int]*inventory.Veth, answers []Answer) []int {
	if r.cfg.AuditFile == "" {
		return approved
	}
	var proceed []int
	for _, i := range approved {
		v := vethOf[i]
		intent := Answer{Device: v.Name, Ifindex: v.Index, Result: ResultDeleted, Reason: string(v.Reason)}
		if err := appendAudit(r.cfg.AuditFile, r.now(), r.cfg.Mode, auditIntent, reqs[i], intent); err != nil {
			answers[i] = r.record(reqs[i], Answer{Device: v.Name, Ifindex: v.Index, Result: ResultRefused, Reason: ReasonAuditFailed,
				Detail: fmt.Sprintf("cannot write the audit intent: %v", err)})
			continue
		}
		proceed = append(proceed, i)
	}
	return proceed
}

// removed is the answer for the veth v the remover dealt with: a deletion
// counts towards the hourly limit (twice for a pair left on the host, whose
// peer went too) and, with release-netns, releases the namespace's mounts.
func (r *Remediator) removed(v *inventory.Veth, res removal) Answer {
	a := Answer{Device: v.Name, Ifindex: v.Index}
	switch res.Outcome {
	case OutcomeDeleted:
		now := r.now()
		r.deletions = append(r.deletions, now)
		if v.PeerOnHost {
			r.deletions = append(r.deletions, now)
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
	return a
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

func (r *Remediator) deletedInLastHour(now time.Time) int {
	r.deletions = slices.DeleteFunc(r.deletions, func(t time.Time) bool { return now.Sub(t) >= time.Hour })
	return len(r.deletions)
}
