package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// Docker resolves owners through the Docker Engine API; nil is off.
	Docker *Docker
	// State is the remembered history; nil keeps none.
	State  *State
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Inventory builds snapshots. It is safe for concurrent use: concurrent
// callers are served one at a time, each with a fresh snapshot.
type Inventory struct {
	cfg Config
	mu  sync.Mutex
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
		cfg.State = OpenState("", false, cfg.Logger)
	}
	if cfg.Paths == (Paths{}) {
		cfg.Paths = DefaultPaths
	}
	return &Inventory{cfg: cfg}
}

// The stages of a snapshot, as reported in [Snapshot.Steps] and in the
// veth_scrape_collector_* metrics.
const (
	StepLinks  = "links"
	StepNetns  = "netns"
	StepCgroup = "cgroup"
	StepState  = "state"
	StepDocker = "docker"
)

// Snapshot takes a fresh inventory. It returns an error only when the link
// dump itself fails, and even then a snapshot with its steps; every other
// failure makes the snapshot partial, with warnings, never wrong.
func (inv *Inventory) Snapshot(ctx context.Context) (*Snapshot, error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()

	s := &Snapshot{Taken: inv.cfg.Now()}

	// Namespaces first: the scan holds every namespace it finds open, so
	// none of them can die and hand its nsid to a new namespace before the
	// dump has reported the peers' nsids. A dump taken before the scan
	// could show a dying namespace's nsid that the scan then finds on a
	// newcomer. The owners' cgroups, mostly /proc reads, are then resolved
	// beside the dump, which is mostly kernel time.
	start := time.Now()
	scanStart := start
	ns, nsErr := scanNamespaces(inv.cfg.Paths, inv.cfg.TrustPIDNamespace)
	s.step(StepNetns, time.Since(start), nsErr)
	if ns != nil {
		defer ns.close()
	}
	// Everything this snapshot asks Docker shares one deadline.
	dockerCtx := ctx
	if inv.cfg.Docker != nil {
		var cancel context.CancelFunc
		dockerCtx, cancel = context.WithTimeout(ctx, inv.cfg.Docker.timeout)
		defer cancel()
	}
	var (
		cgroupsTook, dockerTook time.Duration
		docker                  *DockerView
		resolved                = make(chan struct{})
	)
	go func() {
		defer close(resolved)
		if nsErr == nil {
			start := time.Now()
			ns.resolveOwners(inv.cfg.Paths.Procfs)
			cgroupsTook = time.Since(start)
		}
		if inv.cfg.Docker != nil {
			start := time.Now()
			docker = inv.cfg.Docker.View(dockerCtx)
			dockerTook = time.Since(start)
		}
	}()
	start = time.Now()
	links, err := dumpLinks()
	linksTook := time.Since(start)
	<-resolved
	var cgroupErr error
	if nsErr != nil {
		cgroupErr = errors.New("not run: no namespaces to find owners in")
	}
	s.step(StepLinks, linksTook, err)
	s.step(StepCgroup, cgroupsTook, cgroupErr)
	if docker != nil {
		s.step(StepDocker, dockerTook, docker.Err)
		s.Docker = docker
		s.DockerRequests = inv.cfg.Docker.Requests()
	}
	if err != nil {
		return s, err
	}
	if err := ctx.Err(); err != nil {
		return s, err
	}
	if nsErr != nil {
		// Without namespaces every peer is unknown, which is the truth.
		s.Warnings = append(s.Warnings, fmt.Sprintf("network namespaces not scanned: %v", nsErr))
		ns = &namespaces{byInode: map[uint64]*Namespace{}, byNSID: map[int]*Namespace{}}
	}
	s.Warnings = append(s.Warnings, ns.partial...)
	s.Veths, err = ns.attach(links, func() error { return ns.lookupLate(inv.cfg.Paths) }, dumpLinks)
	if err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("peers whose namespace got its nsid during the scan are not resolved: %v", err))
	}
	if len(ns.partial) == 0 {
		// On a partial view "no process" is not proved: no count at all
		// rather than a wrong one.
		s.LeakedNetns = ns.leaked(s.Veths)
	}

	var claims *dockerClaims
	if docker != nil {
		claims = newDockerClaims(docker, inv.cfg.Paths, scanStart)
	}
	start = time.Now()
	e := evidence{partialView: len(ns.partial) > 0}
	err = inv.cfg.State.observe(s.Taken, s.Veths, inv.cfg.SettleTime, func(v *Veth) {
		e.infrastructure = inv.cfg.Infrastructure.Matches(v)
		e.runtime = RuntimeSilent
		if claims != nil {
			e.runtime = inv.dockerEvidence(dockerCtx, claims, v)
		}
		v.Verdict, v.Reason = decide(v, e)
	})
	s.step(StepState, time.Since(start), err)
	if err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("state file not written, history kept in memory only: %v", err))
	}
	return s, nil
}

func (s *Snapshot) step(name string, took time.Duration, err error) {
	st := Step{Name: name, Duration: took, Err: err}
	if err != nil {
		st.Error = err.Error()
	}
	s.Steps = append(s.Steps, st)
}

// dockerEvidence asks Docker's view about v, names v's owner after the
// container Docker runs in its namespace, and falls back on Docker's
// record for the last owner of a leftover the exporter never saw running.
func (inv *Inventory) dockerEvidence(ctx context.Context, claims *dockerClaims, v *Veth) RuntimeClaim {
	claim, dc := claims.claim(v)
	if claim == RuntimeSilent && claims.view.Up && v.PeerNetns != nil && (v.Owner == nil || v.Owner.Kind == OwnerProcess) {
		// A namespace that a mount holds and no container process owns
		// may be the sandbox of a stopped container, in whatever exec root
		// that daemon runs: ask its record, which costs one inspect per
		// stopped container, once.
		for _, m := range v.PeerNetns.Mounts {
			if rec := inv.cfg.Docker.SandboxRecord(ctx, claims.view, m); rec != nil {
				claim, dc = RuntimeExited, rec
				break
			}
		}
	}
	switch {
	case claim == RuntimeRunning && v.Owner != nil && v.Owner.Kind == OwnerPod:
		named := *v.Owner
		named.Name = dc.Name
		v.Owner = &named
	case claim == RuntimeRunning:
		v.Owner = dockerOwner(dc)
	case claim == RuntimeExited && v.LastOwner == nil:
		v.LastOwner, v.LastOwnerSeen = dockerOwner(dc), dc.FinishedAt
	}
	return claim
}
