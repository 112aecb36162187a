package remediate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/kernel"
)

// Leaked namespaces: held only by mounts, with no process in them and no
// veth of the host leading into them. They go the way a leftover does,
// by release: their pins are removed and the kernel frees them if and
// only if nothing else holds them. With no veth to see go, a freed
// namespace is seen by its nsid's release (RTM_DELNSID): the exporter
// gives it an nsid first if it has none.
//
// A namespace can also look leaked for a moment while a runtime builds a
// container's network (pinned before its first process starts and its
// veth is made), or for as long as a runtime is down: only one that an
// earlier observation recorded leaked, for the minimum age, in a fresh
// inventory whose every stage answered, is released.

// ErrPartialView: the fresh inventory could not read every process, so no
// namespace is proven to hold none.
var ErrPartialView = errors.New("the inventory has a partial view of the node's processes: no namespace is proven leaked")

// HandleLeaked releases the leaked namespaces of a fresh inventory taken
// now that pass every gate, and answers once for each leaked namespace,
// named by its first mount.
func (r *Remediator) HandleLeaked(ctx context.Context) ([]Answer, error) {
	done, err := r.takeTurn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	snap, err := r.inv.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if snap.LeakedNetns == nil {
		return nil, ErrPartialView
	}
	leaked := slices.Clone(snap.LeakedNetns)
	slices.SortFunc(leaked, func(a, b *inventory.Namespace) int { return cmp.Compare(leakedName(a), leakedName(b)) })
	reqs := make([]request, len(leaked))
	answers := make([]Answer, len(leaked))
	var approved []int
	now := r.now()
	for i, n := range leaked {
		reqs[i] = request{Device: leakedName(n)}
		reason, detail := r.leakedGates(snap, n, now, len(approved))
		switch {
		case reason != "":
			answers[i] = r.record(reqs[i], Answer{Device: reqs[i].Device, Result: resultOf(reason), Reason: reason, Detail: detail})
		case r.cfg.Mode != ModeEnforce:
			answers[i] = r.record(reqs[i], Answer{Device: reqs[i].Device, Result: ResultWouldDelete, Reason: leakedNetnsReason, Method: MethodRelease})
		default:
			approved = append(approved, i)
		}
	}
	r.releaseLeaked(ctx, leaked, reqs, approved, answers)
	return answers, nil
}

// leakedNetnsReason is the reason a removed leaked namespace is given, as an
// orphan reason is a removed veth's.
const leakedNetnsReason = "leaked_netns"

// leakedName names a leaked namespace by its first mount.
func leakedName(n *inventory.Namespace) string {
	if len(n.Mounts) > 0 {
		return n.Mounts[0]
	}
	return "net:[" + strconv.FormatUint(n.Inode, 10) + "]"
}

// leakedGates are the gates of one leaked namespace; approved is how many
// of the request's earlier ones passed.
func (r *Remediator) leakedGates(snap *inventory.Snapshot, n *inventory.Namespace, now time.Time, approved int) (reason, detail string) {
	if reason, detail := viewComplete(snap, &r.cfg, "a namespace it could not account for (a runtime that is down leaves its namespaces looking leaked)"); reason != "" {
		return reason, detail
	}
	name := leakedName(n)
	if n.UnaskedRuntime != "" {
		return ReasonIncompleteView, fmt.Sprintf("%s is pinned where %s pins its namespaces, and its resolver is off: only the runtime can say it is a leftover",
			name, n.UnaskedRuntime)
	}
	if reason, detail := r.leakedLongEnough(snap, name, n.LeakedSince, now); reason != "" {
		return reason, detail
	}
	return r.limits(now, approved, "")
}

// viewComplete is the gate of a fresh inventory for a leftover found
// beside the veths (a leaked namespace, a leaked lease), what: the
// history is fresh, and every stage answered.
func viewComplete(snap *inventory.Snapshot, cfg *Config, what string) (reason, detail string) {
	if reason, detail := historyFresh(snap, cfg); reason != "" {
		return reason, detail
	}
	for _, st := range snap.Steps {
		if st.Err != nil {
			return ReasonIncompleteView, fmt.Sprintf("the inventory's %s stage failed (%v): %s is not proven leaked", st.Name, st.Err, what)
		}
	}
	return "", ""
}

// leakedLongEnough: an observation before this request recorded name
// leaked, since at least the minimum age.
func (r *Remediator) leakedLongEnough(snap *inventory.Snapshot, name string, since, now time.Time) (reason, detail string) {
	if since.IsZero() || !since.Before(snap.Taken) {
		return ReasonNotRecorded, fmt.Sprintf("no observation before this request recorded %s as leaked", name)
	}
	if age := now.Sub(since); age < r.cfg.MinAge {
		return ReasonOrphanTooYoung, fmt.Sprintf("%s leaked for %s here, less than %s", name, age.Truncate(time.Second), r.cfg.MinAge)
	}
	return "", ""
}

// limits are the last gates of a removal: the per-request and hourly
// limits (approved: how many of the request's earlier ones passed), and
// the capability, which needs says what for ("" for the release).
func (r *Remediator) limits(now time.Time, approved int, needs string) (reason, detail string) {
	if r.cfg.MaxPerRequest > 0 && approved >= r.cfg.MaxPerRequest {
		return ReasonRequestLimit, fmt.Sprintf("--remediation.max-per-request %d reached", r.cfg.MaxPerRequest)
	}
	if r.cfg.MaxPerHour > 0 && r.deletedInLastHour(now)+approved >= r.cfg.MaxPerHour {
		return ReasonHourlyLimit, fmt.Sprintf("--remediation.max-per-hour %d reached", r.cfg.MaxPerHour)
	}
	if r.cfg.Mode == ModeEnforce && !r.capable() {
		return ReasonNoPermission, "the exporter lacks CAP_NET_ADMIN" + needs
	}
	return "", ""
}

// releaseLeaked writes the audit intents of the approved leaked
// namespaces and releases them through the remover.
func (r *Remediator) releaseLeaked(ctx context.Context, leaked []*inventory.Namespace, reqs []request, approved []int, answers []Answer) {
	if len(approved) == 0 {
		return
	}
	proceed, h := r.prepareRemoval(reqs, approved, func(i int) Answer {
		return Answer{Device: reqs[i].Device, Result: ResultDeleted, Reason: leakedNetnsReason, Method: MethodRelease}
	}, answers)
	if h == nil {
		return
	}
	defer h.Close()
	ts := make([]Target, len(proceed))
	for k, i := range proceed {
		ts[k] = Target{Device: reqs[i].Device, Netns: leaked[i].Inode, Releasable: true}
	}
	results := r.remover(h).releaseLeaked(ctx, ts)
	for k, i := range proceed {
		a := Answer{Device: reqs[i].Device, Method: MethodRelease}
		switch res := results[k]; res.Outcome {
		case OutcomeDeleted:
			r.deletions = append(r.deletions, r.now())
			r.metrics.lastDeletion(r.now())
			a.Result, a.Reason, a.Detail = ResultDeleted, leakedNetnsReason, "released "+strings.Join(res.Released, ",")
		case OutcomeGone:
			a.Result = ResultGone
		case OutcomeHeld:
			a.Result, a.Reason, a.Detail = ResultRefused, ReasonStillHeld, res.Err.Error()
		case OutcomeChanged:
			a.Result, a.Reason, a.Detail = ResultRefused, ReasonChanged, res.Err.Error()
		default:
			a.Result, a.Reason, a.Detail = ResultFailed, ReasonDelete, res.Err.Error()
			if errors.Is(res.Err, errNotReleasable) {
				a.Result, a.Reason = ResultRefused, ReasonNotReleasable
			}
		}
		answers[i] = r.record(reqs[i], a)
	}
}

// releaseLeaked releases the leaked namespaces ts (each a Target with
// only Device, its name, and Netns): in the host's mount namespace it
// checks each is pinned only under the netns directories and holds no
// interface but loopback, gives it an nsid if it has none, and removes
// its pins; then it waits for the kernel to free them, seen as their
// nsids' release.
func (rm *remover) releaseLeaked(ctx context.Context, ts []Target) []removal {
	res := make([]removal, len(ts))
	watch, err := kernel.WatchNSIDs()
	if err != nil {
		for i := range res {
			res[i] = removal{Outcome: OutcomeFailed, Method: MethodRelease, Err: fmt.Errorf("watch the nsid table: %w", err)}
		}
		return res
	}
	defer watch.Close()
	ns := make([]*nsRelease, len(ts))
	nsids := map[uint64]int{}
	var released []*nsRelease
	err = rm.enterHost(func() error {
		mounts, err := kernel.NsfsMountsIn("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		for i, t := range ts {
			n := &nsRelease{inode: t.Netns, targets: []int{i}, fd: -1}
			ns[i] = n
			nsid, r, ok := rm.prepareLeaked(n, mounts)
			if !ok {
				res[i] = r
				continue
			}
			if rm.unpinAll(n, ts, res) {
				nsids[n.inode] = nsid
				released = append(released, n)
			}
		}
		return nil
	})
	for _, n := range ns {
		if n != nil && n.fd >= 0 {
			unix.Close(n.fd)
		}
	}
	if err != nil {
		for i := range res {
			if res[i].Outcome == "" {
				res[i] = notReleasable("%v", err)
			}
		}
		return res
	}
	freedIDs := map[int]bool{}
	rm.removeMountPoints(rm.awaitRelease(ctx, ts, released, res, func(waiting map[uint64]*nsRelease) []uint64 {
		ids, lost := watch.FreedIDs()
		for _, id := range ids {
			freedIDs[id] = true
		}
		var freed []uint64
		for inode := range waiting {
			if freedIDs[nsids[inode]] || (lost && !rm.nsidHeld(nsids[inode])) {
				freed = append(freed, inode)
			}
		}
		return freed
	}))
	return res
}

// nsidHeld reports whether nsid still names a namespace, for when nsid
// notifications were lost: a namespace freed takes its nsid with it.
func (rm *remover) nsidHeld(nsid int) bool {
	_, err := rm.dumpIn(nsid)
	return err == nil
}

// prepareLeaked checks, in the host's mount namespace, that the leaked
// namespace n may be released: every mount that pins it is under the
// netns directories, and it holds no interface but loopback. It returns
// n's nsid (given one when it had none), holding n open through n.fd.
func (rm *remover) prepareLeaked(n *nsRelease, mounts []kernel.NsfsMount) (int, removal, bool) {
	if !slices.ContainsFunc(mounts, func(m kernel.NsfsMount) bool { return m.Inode == n.inode }) {
		// Gone, or no longer held by a mount: not leaked any more.
		return 0, removal{Outcome: OutcomeGone, Method: MethodRelease}, false
	}
	if r, ok := rm.findPins(n, mounts); !ok {
		return 0, r, false
	}
	nsid, r, ok := n.open(rm, true)
	if !ok {
		return 0, r, false
	}
	if r, ok := rm.checkInterfaces(n, nsid, nil); !ok {
		return 0, r, false
	}
	return nsid, removal{}, true
}
