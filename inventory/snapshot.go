package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Config is what an [Inventory] needs; nothing in this package reads flags.
type Config struct {
	Paths          Paths
	Infrastructure *Infrastructure
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
)

// Snapshot takes a fresh inventory. It returns an error only when the link
// dump itself fails, and even then a snapshot with its steps; every other
// failure makes the snapshot partial, with warnings, never wrong.
func (inv *Inventory) Snapshot(ctx context.Context) (*Snapshot, error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()

	s := &Snapshot{Taken: inv.cfg.Now()}
	start := time.Now()
	links, err := dumpLinks()
	s.step(StepLinks, start, err)
	if err != nil {
		return s, err
	}
	s.Veths = vethsFromLinks(links)
	if err := ctx.Err(); err != nil {
		return s, err
	}

	start = time.Now()
	ns, err := scanNamespaces(inv.cfg.Paths)
	s.step(StepNetns, start, err)
	if err != nil {
		// Without namespaces every peer is unknown, which is the truth.
		s.Warnings = append(s.Warnings, fmt.Sprintf("network namespaces not scanned: %v", err))
		ns = &namespaces{byInode: map[uint64]*Namespace{}, byNSID: map[int]*Namespace{}}
	}
	if ns.deniedPIDs > 0 {
		hint := "run as root for a full view"
		if os.Geteuid() == 0 {
			hint = "they are protected from this process (CAP_SYS_PTRACE missing, or a security module)"
		}
		s.Warnings = append(s.Warnings, fmt.Sprintf(
			"cannot read the network namespace of %d processes outside the host namespace (permission denied): peers held only by them are not found and empty-looking namespaces are not proved empty; %s", ns.deniedPIDs, hint))
	}

	start = time.Now()
	owners := map[*Namespace]*Owner{}
	for i := range s.Veths {
		v := &s.Veths[i]
		if v.PeerOnHost() {
			continue
		}
		n := ns.byNSID[v.PeerNetNSID]
		if n == nil {
			continue
		}
		v.PeerNetns = n
		o, ok := owners[n]
		if !ok {
			o = resolveOwner(inv.cfg.Paths.Procfs, n)
			owners[n] = o
			n.Owner = o
		}
		v.Owner = o
	}
	s.step(StepCgroup, start, nil)

	start = time.Now()
	e := evidence{partialView: ns.deniedPIDs > 0}
	err = inv.cfg.State.observe(s.Taken, s.Veths, func(v *Veth) {
		e.infrastructure = inv.cfg.Infrastructure.Matches(v)
		v.Verdict, v.Reason = decide(v, e)
	})
	s.step(StepState, start, err)
	if err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("state file not written, history kept in memory only: %v", err))
	}
	return s, nil
}

func (s *Snapshot) step(name string, start time.Time, err error) {
	st := Step{Name: name, Duration: time.Since(start), Err: err}
	if err != nil {
		st.Error = err.Error()
	}
	s.Steps = append(s.Steps, st)
}
