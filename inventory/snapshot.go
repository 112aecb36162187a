package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"
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
	// Docker is one more resolver, asked before Resolvers; nil is none.
	// Prefer Resolvers: this field stays for the callers that set it.
	Docker *Docker
	// CNI reads the node's CNI configuration and libcni result cache;
	// nil is none.
	CNI *CNI
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
	// everyThread reads every thread on every scrape and turns the owner
	// cache off: the code before both shortcuts, for the benchmark that
	// compares with it.
	everyThread bool
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
	if cfg.Docker != nil && !slices.Contains(cfg.Resolvers, Resolver(cfg.Docker)) {
		cfg.Resolvers = append([]Resolver{cfg.Docker}, cfg.Resolvers...)
	}
	cfg.Docker = nil
	inv := &Inventory{cfg: cfg, owners: newOwnerCache()}
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
func (inv *Inventory) take(ctx context.Context) (*Snapshot, error) {
	s := &Snapshot{Taken: inv.cfg.Now()}

	// Namespaces first: the scan holds every namespace it finds open, so
	// none of them can die and hand its nsid to a new namespace before the
	// dump has reported the peers' nsids. A dump taken before the scan
	// could show a dying namespace's nsid that the scan then finds on a
	// newcomer. The owners' cgroups, mostly /proc reads, are then resolved
	// beside the dump, which is mostly kernel time.
	start := time.Now()
	scanStart := start
	ns, nsErr := scanNamespaces(inv.cfg.Paths, inv.cfg.TrustPIDNamespace, inv.everyThread)
	s.step(StepNetns, time.Since(start), nsErr)
	if ns != nil {
		defer ns.close()
	}
	// The runtimes are asked beside the cgroups and the dump, each on its
	// own: a runtime that hangs delays no other. Everything this snapshot
	// asks one runtime shares one deadline, that runtime's timeout.
	runtimes := make([]asked, len(inv.cfg.Resolvers))
	var (
		cgroupsTook time.Duration
		resolved    sync.WaitGroup
	)
	resolved.Go(func() {
		if nsErr == nil {
			start := time.Now()
			ns.resolveOwners(inv.cfg.Paths.Procfs, inv.ownerCache())
			cgroupsTook = time.Since(start)
		}
	})
	for i, r := range inv.cfg.Resolvers {
		a := &runtimes[i]
		a.resolver, a.ctx = r, ctx
		if t := r.Timeout(); t > 0 {
			var cancel context.CancelFunc
			a.ctx, cancel = context.WithTimeout(ctx, t)
			defer cancel()
		}
		resolved.Go(func() {
			start := time.Now()
			a.observation, a.err = r.Observe(a.ctx, inv.cfg.Paths, scanStart)
			a.took = time.Since(start)
		})
	}
	// The CNI's files, beside the dump like a runtime.
	var (
		cniObs  *cniObservation
		cniErr  error
		cniTook time.Duration
	)
	if inv.cfg.CNI != nil {
		resolved.Go(func() {
			start := time.Now()
			cniObs, cniErr = inv.cfg.CNI.observe(inv.cfg.Paths)
			cniTook = time.Since(start)
		})
	}
	start = time.Now()
	links, err := dumpLinks()
	linksTook := time.Since(start)
	resolved.Wait()
	var cgroupErr error
	if nsErr != nil {
		cgroupErr = errors.New("not run: no namespaces to find owners in")
	}
	// The threads of every process, only when a namespace could look
	// empty or ownerless without them. After the dump: the namespaces it
	// finds that the scan did not pin get their nsids late, and attach
	// then dumps the links again, as for any namespace the scan missed.
	if err == nil && nsErr == nil && ns.needThreads(links) {
		// Counted in the netns step: a step that only some scrapes have
		// would make its series come and go.
		start := time.Now()
		if terr := ns.addThreads(inv.cfg.Paths, inv.ownerCache()); terr != nil {
			ns.partial = append(ns.partial, fmt.Sprintf("threads not read: %v", terr))
		}
		s.Steps[0].Duration += time.Since(start)
		s.threadsRead = true
	}
	s.step(StepLinks, linksTook, err)
	s.step(StepCgroup, cgroupsTook, cgroupErr)
	for _, a := range runtimes {
		s.step(a.resolver.Step(), a.took, a.err)
		if a.observation != nil {
			a.observation.Record(s)
		}
	}
	if inv.cfg.CNI != nil {
		s.step(StepCNI, cniTook, cniErr)
		s.CNI = cniObs.view
	}
	if err != nil {
		return s, err
	}
	if nsErr != nil {
		// Without namespaces every peer is unknown, which is the truth.
		s.Warnings = append(s.Warnings, fmt.Sprintf("network namespaces not scanned: %v", nsErr))
		ns = &namespaces{byInode: map[uint64]*Namespace{}, byNSID: map[int]*Namespace{}}
	}
	s.Warnings = append(s.Warnings, ns.partial...)
	s.Veths, err = ns.attach(links, func() error { return ns.lookupLate(inv.cfg.Paths, inv.ownerCache()) }, dumpLinks)
	if nsErr == nil {
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

	start = time.Now()
	e := evidence{partialView: len(ns.partial) > 0}
	claims := make([]Claim, 0, len(runtimes))
	obs, err := inv.cfg.State.observe(s.Taken, s.Veths, inv.cfg.SettleTime, func(v *Veth) {
		e.infrastructure = inv.cfg.Infrastructure.Matches(v)
		// Every runtime is asked before any answer is written into v.
		claims = claims[:0]
		for _, a := range runtimes {
			if a.observation != nil {
				claims = append(claims, a.observation.Claim(a.ctx, v))
			}
		}
		e.runtime = weigh(v, claims)
		v.Verdict, v.Reason = decide(v, e)
		if cniObs != nil {
			cniObs.judge(v, e.runtime)
		}
	})
	s.HistoryObserved, s.Gone = obs.historyObserved, obs.gone
	if cniObs != nil {
		cniObs.finish()
	}
	s.step(StepState, time.Since(start), err)
	if err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("state file not written, history kept in memory only: %v", err))
	}
	return s, nil
}

// ownerCache returns the cache of process owners, nil when turned off.
func (inv *Inventory) ownerCache() *ownerCache {
	if inv.everyThread {
		return nil
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
