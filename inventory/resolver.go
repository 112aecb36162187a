package inventory

import (
	"context"
	"path"
	"strings"
	"time"
)

// Runtime names a container runtime, as its [CgroupNaming] and its
// resolver name it in [Owner.Runtime] ("docker", "containerd").
type Runtime string

// NetnsDirs are directories where a runtime pins the namespaces it makes
// with nsfs bind mounts, written as mountinfo shows them (/run, not
// /var/run, which links to it). A namespace pinned there is the runtime's
// to decide: while the runtime cannot be asked, one that looks empty may
// be a sandbox the runtime will clean up or reuse.
type NetnsDirs []string

// Holds reports whether mount is directly in one of the directories.
func (d NetnsDirs) Holds(mount string) bool {
	dir := path.Dir(mount)
	for _, x := range d {
		if dir == x {
			return true
		}
	}
	return false
}

// Resolver is a container runtime's API, asked who owns the namespaces
// the runtime made. Every resolver is optional: one that does not answer
// makes the veths it must decide unknown, never a snapshot fail. Several
// resolvers' claims about one namespace are weighed by strength (see
// [RuntimeClaim]).
type Resolver interface {
	// Step names the resolver in [Snapshot.Steps], and so in
	// veth_scrape_collector_*{collector}.
	Step() string
	// Timeout bounds what one snapshot may spend asking the runtime: it
	// is the deadline of the context that Observe and every Claim of the
	// snapshot get. A runtime slower than that is down for the snapshot.
	Timeout() time.Duration
	// Start follows the runtime between snapshots (an events stream that
	// tells a cached view is stale) until Close. A resolver never started
	// asks the runtime afresh for every snapshot.
	Start()
	// Close stops what Start started.
	Close()
	// Observe asks the runtime once for a snapshot, and returns what the
	// resolver saw and the step's error. It returns an Observation even
	// when the runtime does not answer: that one claims down the
	// namespaces that are the runtime's. Every resolver is observed
	// before the snapshot reads a process: what a runtime said was said
	// before any process the snapshot finds was seen.
	Observe(ctx context.Context, p Paths) (Observation, error)
}

// Observation is what one [Resolver] saw for one snapshot.
type Observation interface {
	// Claim says what the runtime says about v's peer namespace and what
	// it knows of its owners; ctx carries the resolver's deadline for the
	// snapshot. It must not change v: the strongest claim of all
	// resolvers is written into v.
	Claim(ctx context.Context, v *Veth) Claim
	// View is what the resolver saw, for the snapshot's readers: the
	// JSON of inspect and the resolver's metric families (see
	// [Snapshot.Views]).
	View() RuntimeView
	// Running returns the namespaces that Claim claims running: those in
	// which the runtime runs a container or sandbox now, found when the
	// observation was made. A snapshot in which every veth's peer
	// namespace is one of them (and every namespace a mount holds too)
	// needs no pass over /proc: their verdicts are settled.
	Running() []RunningNetns
}

// RunningNetns is a namespace in which a runtime runs a container or a
// pod sandbox.
type RunningNetns struct {
	// Inode identifies the namespace.
	Inode uint64
	// Path opens it, as this process sees it: the mount that pins it or
	// the ns/net of the container's process. It must still open to Inode.
	Path string
	// PID is the container's (the sandbox's) process, 0 when unknown.
	PID int
}

// Annotator reads, for each snapshot, what the node keeps beside its
// runtimes (the CNI's configuration and result cache). It never changes
// a verdict: it adds to a veth's record only what nothing else says (a
// last owner no history or runtime names) and keeps its own view.
type Annotator interface {
	// Step names the annotator in [Snapshot.Steps] and [Snapshot.Views].
	Step() string
	// Annotate reads the annotator's files for one snapshot. It returns
	// an Annotation even with an error when it read part of them.
	Annotate(p Paths) (Annotation, error)
}

// Annotation is what one [Annotator] read for one snapshot.
type Annotation interface {
	// Annotate is called for each veth once its verdict is given, with
	// the claim of the runtimes that won (silent when none).
	Annotate(v *Veth, claim RuntimeClaim)
	// View is the annotator's record, once every veth was annotated.
	View() RuntimeView
}

// NodeAgent is a view that knows of a node agent that cleans up its own
// leftovers when it runs, such as a CNI's daemon: while the agent is
// down, what looks left over may be its to clean.
type NodeAgent interface {
	// AgentDown reports whether the agent is down, and names it ("the
	// CNI calico (calico-node)").
	AgentDown() (agent string, down bool)
}

// RuntimeView is a resolver's record in a [Snapshot].
type RuntimeView interface {
	// Families are the resolver's own metric families for s: what only
	// it knows, such as Docker's networks and container records.
	Families(s *Snapshot) []Family
}

// Family is a metric family a [RuntimeView] exposes. Several views may
// expose one family (the same name and help): the collector joins them. The collector turns
// it into Prometheus exposition; nothing here depends on Prometheus.
type Family struct {
	// Name is the whole metric name, veth_ prefix included.
	Name string
	Help string
	// Counter: the family is a counter; otherwise a gauge.
	Counter bool
	// Series in the order they are exposed.
	Series []Series
}

// Series is one series of a [Family].
type Series struct {
	// Labels are sorted by name.
	Labels []Label
	Value  float64
}

// Label is one label of a [Series].
type Label struct {
	Name, Value string
}

// OwnedBy reports whether a container or pod of runtime owns v's peer
// namespace now (by the cgroups) or owned it last (by the history).
func OwnedBy(v *Veth, runtime Runtime) bool {
	for _, o := range []*Owner{v.Owner, v.LastOwner} {
		if o != nil && o.Runtime == runtime {
			return true
		}
	}
	return false
}

// RequestsFamily is veth_<name>_api_requests_total: the requests the
// resolver name made of its runtime's API so far. Each resolver has its
// own family, which dashboards and alerts select together with
// {__name__=~"veth_.+_api_requests_total"}.
func RequestsFamily(name, help string, requests uint64) Family {
	metric := "veth_" + strings.ReplaceAll(name, "-", "_") + "_api_requests_total"
	return Family{Name: metric, Help: help, Counter: true, Series: []Series{{Value: float64(requests)}}}
}
