package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/veth-exporter/veth_exporter/kernel"
)

// Config is what an [Inventory] needs; nothing in this package reads flags.
type Config struct {
	Paths          Paths
	Infrastructure *Infrastructure
	// TrustPIDNamespace: Paths.Procfs lists every process that can hold a
	// network namespace although it is not the host's PID namespace (a
	// node that is itself a container, a test). Without it such a view is
	// partial, and nothing is orphaned on a partial view.
	TrustPIDNamespace bool
	// SettleTime is how long an orphan verdict must hold before it is
	// given; until then the veth is unknown, reason settling.
	SettleTime time.Duration
	// Resolvers are the container runtimes' APIs asked about each
	// snapshot's namespaces; the first of equally strong claims wins.
	// They are the caller's to Start and Close.
	Resolvers []Resolver
	// Runtimes are every registered runtime resolver, on or off: a
	// namespace pinned where a runtime whose resolver is off pins them is
	// unknown (resolver_off), and each is listed in [Snapshot.Resolvers].
	Runtimes []RuntimeSetup
	// Annotators read what the node keeps beside its runtimes (the CNI's
	// files) for each snapshot.
	Annotators []Annotator
	// Cgroups are the runtimes' namings of their containers' cgroups,
	// read whether or not a runtime's resolver runs: a process's cgroup
	// names its container even when its runtime cannot be asked.
	Cgroups []CgroupNaming
	// State is the remembered history; nil keeps none.
	State  *State
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Inventory builds snapshots. It is safe for concurrent use. At most one
// snapshot is built at a time, and callers share builds: a scrape joins
// the build in flight ([Inventory.SharedSnapshot]); a caller that must
// see the node as it is now waits for a build that starts after its call
// ([Inventory.Snapshot]). A build runs detached from the context of the
// caller that started it, within its own bounds (such as each resolver's
// timeout), and every caller waits only until its own context ends.
type Inventory struct {
	cfg Config
	// build takes one snapshot: take, or a fake in tests.
	build func(ctx context.Context) (*Snapshot, error)

	mu sync.Mutex
	// inflight is the build running now, nil when none runs.
	inflight *build
	// started counts the builds started so far; a build's seq is the
	// value after its start.
	started uint64
	// waiting counts the callers waiting for a build, for tests.
	waiting int

	// owners caches the container owners of processes across builds.
	owners *ownerCache
	// noShortcuts is the code before the shortcuts of busy nodes: every
	// thread read and every process's cgroup on every scrape, no owner
	// cache, a scan even where the runtimes account for every namespace.
	// For the benchmark that compares with it.
	noShortcuts bool
	// betweenDumpAndScan, when set, runs after the link dump of a scan
	// and before the scan itself, for the test of what dies between them.
	betweenDumpAndScan func()
}

// build is one snapshot being taken, shared by everyone who waits for it.
type build struct {
	seq  uint64
	done chan struct{} // closed when snap and err are set
	snap *Snapshot
	err  error
}

// New returns an Inventory for cfg.
func New(cfg Config) *Inventory {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.State == nil {
		cfg.State = OpenState("", StateOptions{Logger: cfg.Logger})
	}
	if cfg.Paths == (Paths{}) {
		cfg.Paths = DefaultPaths
	}
	inv := &Inventory{cfg: cfg, owners: newOwnerCache(cfg.Cgroups)}
	inv.build = inv.take
	return inv
}

// The stages of a snapshot, as reported in [Snapshot.Steps] and in the
// veth_scrape_collector_* metrics; each resolver adds its own
// ([Resolver.Step]).
const (
	StepLinks  = "links"
	StepNetns  = "netns"
	StepCgroup = "cgroup"
	StepState  = "state"
)

// Snapshot returns a fresh inventory: one whose build started after this
// call, as a decision to delete something needs. If a build is in flight
// that started earlier, Snapshot waits for its end and then starts (or
// joins) a new one. It returns ctx.Err() as soon as ctx ends, whatever
// the build does; the build goes on for whoever else waits.
//
// Otherwise it returns an error only when the link dump itself fails, and
// even then a snapshot with its steps; every other failure makes the
// snapshot partial, with warnings, never wrong. The snapshot may be shared
// with other callers: it must not be modified.
func (inv *Inventory) Snapshot(ctx context.Context) (*Snapshot, error) {
	return inv.snapshot(ctx, true)
}

// SharedSnapshot returns the inventory of the build in flight, or of a
// new one if none is: concurrent scrapes share one build instead of
// queueing for one each. It waits at most until ctx ends, and returns
// what [Inventory.Snapshot] returns.
func (inv *Inventory) SharedSnapshot(ctx context.Context) (*Snapshot, error) {
	return inv.snapshot(ctx, false)
}

func (inv *Inventory) snapshot(ctx context.Context, fresh bool) (*Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	inv.mu.Lock()
	// Builds numbered after this one start after this call.
	after := inv.started
	for {
		b := inv.inflight
		if b == nil {
			b = inv.start(ctx)
		}
		inv.waiting++
		inv.mu.Unlock()
		var err error
		select {
		case <-b.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
		inv.mu.Lock()
		inv.waiting--
		if err != nil {
			inv.mu.Unlock()
			return nil, err
		}
		if !fresh || b.seq > after {
			inv.mu.Unlock()
			return b.snap, b.err
		}
		// That build started before the call: take the next one.
	}
}

// start starts a build; the caller holds inv.mu. The build is detached
// from ctx: callers that give up do not cancel it for the others, and
// its steps carry their own time limits.
func (inv *Inventory) start(ctx context.Context) *build {
	inv.started++
	b := &build{seq: inv.started, done: make(chan struct{})}
	inv.inflight = b
	go func() {
		defer func() {
			// A build used to run in the scrape's own handler, where
			// net/http contained a panic to that one request; detached,
			// it would end the exporter.
			if r := recover(); r != nil {
				inv.cfg.Logger.Error("inventory panicked", "panic", r, "stack", string(debug.Stack()))
				b.snap, b.err = nil, fmt.Errorf("inventory panicked: %v", r)
			}
			inv.mu.Lock()
			inv.inflight = nil
			inv.mu.Unlock()
			close(b.done)
		}()
		b.snap, b.err = inv.build(context.WithoutCancel(ctx))
	}()
	return b
}

// take builds one snapshot.
//
// The runtimes are asked first, each on its own: a runtime that hangs
// delays no other, and everything this snapshot asks one runtime shares
// one deadline, that runtime's timeout. When they account for every
// namespace that matters, the verdicts are settled without reading a
// process (see [Inventory.accounted]); otherwise every process's
// namespace is read ([Inventory.scan]).
func (inv *Inventory) take(ctx context.Context) (*Snapshot, error) {
	s := &Snapshot{Taken: inv.cfg.Now(), Resolvers: inv.cfg.Runtimes}
	// What the node keeps beside its runtimes, beside everything else.
	annotated := inv.annotate()
	runtimes, cancel := inv.askRuntimes(ctx)
	defer cancel()
	f, ok := found{}, false
	if !inv.noShortcuts {
		f, ok = inv.accounted(runtimes)
	}
	if !ok {
		f = inv.scan()
	}
	if f.ns != nil {
		defer f.ns.close()
	}
	s.threadsRead = f.threadsRead
	s.addSteps(f, runtimes)
	annotations := annotated()
	for _, a := range annotations {
		s.step(a.annotator.Step(), a.took, a.err)
	}
	if f.linksErr != nil {
		s.addViews(annotations)
		return s, f.linksErr
	}
	ns := inv.attachVeths(s, f, !ok)
	s.PartialView = len(ns.partial) > 0
	start := time.Now()
	obs, err := inv.judge(s, s.PartialView, runtimes, annotations)
	s.HistoryObserved, s.Gone, s.HistoryUnreadable = obs.historyObserved, obs.gone, obs.unreadable
	s.addViews(annotations)
	s.step(StepState, time.Since(start), err)
	if err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("state file not written, history kept in memory only: %v", err))
	}
	return s, nil
}

// addSteps records the namespace stages and the runtimes' answers: each
// resolver's step and view.
func (s *Snapshot) addSteps(f found, runtimes []asked) {
	s.step(StepNetns, f.netnsTook, f.nsErr)
	s.step(StepLinks, f.linksTook, f.linksErr)
	var cgroupErr error
	if f.nsErr != nil {
		cgroupErr = errors.New("not run: no namespaces to find owners in")
	}
	s.step(StepCgroup, f.cgroupsTook, cgroupErr)
	for _, a := range runtimes {
		s.step(a.resolver.Step(), a.took, a.err)
		if a.observation != nil {
			s.Views = append(s.Views, NamedView{a.resolver.Step(), a.observation.View()})
		}
	}
}

// attachVeths turns f's link dump into s's veths, linked to their peers'
// namespaces, with the warnings of what could not be seen and the leaked
// namespaces; it returns the namespaces. scanned: f comes from a pass
// over /proc, which alone sees which processes are gone.
func (inv *Inventory) attachVeths(s *Snapshot, f found, scanned bool) *namespaces {
	ns := f.ns
	if f.nsErr != nil {
		// Without namespaces every peer is unknown, which is the truth.
		s.Warnings = append(s.Warnings, fmt.Sprintf("network namespaces not scanned: %v", f.nsErr))
		ns = &namespaces{byInode: map[uint64]*Namespace{}, byNSID: map[int]*Namespace{}}
	}
	s.Warnings = append(s.Warnings, ns.partial...)
	var err error
	s.Veths, err = ns.attach(f.links, func() error { return ns.lookupLate(inv.cfg.Paths, inv.ownerCache()) }, kernel.DumpLinks)
	if f.nsErr == nil && scanned {
		ns.evict(inv.ownerCache())
	}
	if err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("peers whose namespace got its nsid during the scan are not resolved: %v", err))
	}
	s.Warnings = append(s.Warnings, ns.findOtherLinks(s.Veths)...)
	if len(ns.partial) == 0 {
		// On a partial view "no process" is not proved: no count at all
		// rather than a wrong one.
		s.LeakedNetns = ns.leaked(s.Veths)
	}
	return ns
}

// judge gives every veth of s its verdict and records it in the history:
// the history lends the veth its last owner, every runtime is asked
// before any answer is written into the veth, the strongest claim and
// the evidence decide, the annotators add what they know, and the history
// records the verdict's times.
func (inv *Inventory) judge(s *Snapshot, partialView bool, runtimes []asked, annotations []annotation) (observation, error) {
	history := inv.cfg.State.begin(s.Taken, inv.cfg.SettleTime)
	defer history.release()
	claims := make([]Claim, 0, len(runtimes))
	for i := range s.Veths {
		v := &s.Veths[i]
		recorded := history.recall(v)
		claims = claims[:0]
		for _, a := range runtimes {
			if a.observation != nil {
				claims = append(claims, a.observation.Claim(a.ctx, v))
			}
		}
		e := evidence{
			infrastructure: inv.cfg.Infrastructure.Matches(v), partialView: partialView,
			runtime: weigh(v, claims), unasked: inv.pinnedUnasked(v),
		}
		v.Verdict, v.Reason = decide(v, e)
		for _, a := range annotations {
			if a.annotation != nil {
				a.annotation.Annotate(v, e.runtime)
			}
		}
		history.record(v, recorded)
	}
	history.nameLeaked(s.LeakedNetns)
	history.recordLeaked(s.LeakedNetns)
	for _, n := range s.LeakedNetns {
		if r := inv.unaskedRuntime(n.Mounts); r != nil {
			n.UnaskedRuntime = r.Name + " (" + r.Why + ")"
		}
	}
	inv.finish(s, runtimes, annotations, history)
	return history.end()
}

// pinnedUnasked reports whether v's peer namespace is pinned where a
// runtime whose resolver is off pins its namespaces.
func (inv *Inventory) pinnedUnasked(v *Veth) bool {
	return v.PeerNetns != nil && inv.unaskedRuntime(v.PeerNetns.Mounts) != nil
}

// unaskedRuntime returns the runtime whose resolver is off that pins its
// namespaces where one of mounts is, nil when none does.
func (inv *Inventory) unaskedRuntime(mounts []string) *RuntimeSetup {
	for i, r := range inv.cfg.Runtimes {
		if r.Enabled {
			continue
		}
		for _, pin := range r.Pins {
			for _, m := range mounts {
				if pin.Pins(m) {
					return &inv.cfg.Runtimes[i]
				}
			}
		}
	}
	return nil
}

// askRuntimes observes every resolver at once, each under its own
// deadline, and returns when all have answered or given up. The
// deadlines hold for the claims asked later too, until cancel.
func (inv *Inventory) askRuntimes(ctx context.Context) (runtimes []asked, cancel func()) {
	runtimes = make([]asked, len(inv.cfg.Resolvers))
	var (
		cancels  []context.CancelFunc
		answered sync.WaitGroup
	)
	for i, r := range inv.cfg.Resolvers {
		a := &runtimes[i]
		a.resolver, a.ctx = r, ctx
		if t := r.Timeout(); t > 0 {
			var cancel context.CancelFunc
			a.ctx, cancel = context.WithTimeout(ctx, t)
			cancels = append(cancels, cancel)
		}
		answered.Go(func() {
			start := time.Now()
			a.observation, a.err = r.Observe(a.ctx, inv.cfg.Paths)
			a.took = time.Since(start)
		})
	}
	answered.Wait()
	return runtimes, func() {
		for _, c := range cancels {
			c()
		}
	}
}

// annotation is one annotator's part in a snapshot.
type annotation struct {
	annotator  Annotator
	annotation Annotation
	err        error
	took       time.Duration
}

// addViews adds the annotators' views, once every veth was annotated.
func (s *Snapshot) addViews(annotations []annotation) {
	for _, a := range annotations {
		if a.annotation != nil {
			s.Views = append(s.Views, NamedView{a.annotator.Step(), a.annotation.View()})
		}
	}
}

// annotate reads every annotator's files at once, beside the rest of the
// snapshot, and returns a function that waits for them.
func (inv *Inventory) annotate() (wait func() []annotation) {
	annotations := make([]annotation, len(inv.cfg.Annotators))
	var read sync.WaitGroup
	for i, an := range inv.cfg.Annotators {
		a := &annotations[i]
		a.annotator = an
		read.Go(func() {
			start := time.Now()
			a.annotation, a.err = an.Annotate(inv.cfg.Paths)
			a.took = time.Since(start)
		})
	}
	return func() []annotation {
		read.Wait()
		return annotations
	}
}

// found is what the namespace stages of a snapshot found: the namespaces
// and the link dump whose peers they resolve, with the time each stage
// took and its error.
type found struct {
	ns          *namespaces
	nsErr       error
	links       []kernel.Link
	linksErr    error
	threadsRead bool

	netnsTook, linksTook, cgroupsTook time.Duration
}

// scan reads the namespace of every process, and of every thread when
// some namespace could look empty or ownerless without them.
//
// The scan holds every namespace it finds open, so none of them can die
// and hand its nsid to a new namespace before the dump has reported the
// peers' nsids. The dump runs beside the scan, under an nsid watch: a
// namespace that died meanwhile may have handed its nsid to a newcomer
// the scan found, and the dump could then show the dying namespace's
// nsid for the newcomer's; if the watch saw an nsid freed, the links are
// dumped again once the scan holds its namespaces. Without a watch the
// dump waits for the scan. The owners' cgroups, mostly /proc reads, are
// resolved after the scan, beside what is left of the dump.
func (inv *Inventory) scan() found {
	var f found
	dump := func() {
		start := time.Now()
		f.links, f.linksErr = kernel.DumpLinks()
		f.linksTook += time.Since(start)
	}
	var dumped sync.WaitGroup
	watch, err := kernel.WatchNSIDs()
	if err == nil {
		defer watch.Close()
		dumped.Go(dump)
		if inv.betweenDumpAndScan != nil {
			dumped.Wait()
			inv.betweenDumpAndScan()
		}
	}
	start := time.Now()
	f.ns, f.nsErr = scanNamespaces(inv.cfg.Paths, inv.cfg.TrustPIDNamespace, inv.noShortcuts)
	f.netnsTook = time.Since(start)
	var owners sync.WaitGroup
	if f.nsErr == nil {
		owners.Go(func() {
			start := time.Now()
			f.ns.resolveOwners(inv.cfg.Paths.Procfs, inv.ownerCache())
			f.cgroupsTook = time.Since(start)
		})
	}
	if watch == nil {
		dump()
	} else {
		dumped.Wait()
		if watch.Freed() {
			dump()
		}
	}
	owners.Wait()
	// The threads of every process, only when a namespace could look
	// empty or ownerless without them. After the dump: the namespaces it
	// finds that the scan did not pin get their nsids late, and attach
	// then dumps the links again, as for any namespace the scan missed.
	if f.linksErr == nil && f.nsErr == nil && f.ns.needThreads(f.links) {
		// Counted in the netns step: a step that only some scrapes have
		// would make its series come and go.
		start := time.Now()
		if err := f.ns.addThreads(inv.cfg.Paths, inv.ownerCache()); err != nil {
			f.ns.partial = append(f.ns.partial, fmt.Sprintf("threads not read: %v", err))
		}
		f.netnsTook += time.Since(start)
		f.threadsRead = true
	}
	return f
}

// ownerCache returns the cache of process owners, nil when turned off.
func (inv *Inventory) ownerCache() *ownerCache {
	if inv.noShortcuts {
		return &ownerCache{cgroups: inv.cfg.Cgroups, off: true}
	}
	return inv.owners
}

func (s *Snapshot) step(name string, took time.Duration, err error) {
	st := Step{Name: name, Duration: took, Err: err}
	if err != nil {
		st.Error = err.Error()
	}
	s.Steps = append(s.Steps, st)
}

// asked is one resolver's part in a snapshot.
type asked struct {
	resolver Resolver
	// ctx carries the resolver's deadline for the snapshot.
	ctx         context.Context
	observation Observation
	err         error
	took        time.Duration
}
