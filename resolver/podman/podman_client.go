package podman

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/resolver/engine"
)

// The Podman resolver's client of Podman's REST API (the libpod endpoints
// of `podman system service`): what Podman records of its containers,
// pods and networks, cached between snapshots and kept fresh by the
// events stream, as for Docker. Podman has no daemon of its own: the
// service answers for the containers, but no one watches them, so a
// container whose conmon and process were killed stays "running" in its
// record. Its claims about namespaces, and that crash check, are in
// podman.go.
const (
	// podmanAPIPrefix is the libpod API path; Podman 4 and 5 serve it.
	podmanAPIPrefix = "/v4.0.0/libpod"
	// podmanCallTimeout bounds each API call.
	podmanCallTimeout = 3 * time.Second
	// podmanViewTTL bounds how long a view is reused without a fresh
	// list when the events stream is connected and quiet.
	podmanViewTTL = 5 * time.Minute
	// DefaultHost is the rootful Podman service's socket.
	DefaultHost = "unix:///run/podman/podman.sock"
)

// Container is Podman's record of one container.
type Container struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Image string `json:"image"`
	// State is Podman's: created, initialized, running, paused,
	// stopping, stopped, exited, removing.
	State string `json:"state"`
	// PodID and PodName name the container's Podman pod, if any.
	PodID   string `json:"pod_id,omitempty"`
	PodName string `json:"pod_name,omitempty"`
	// IsInfra: the pod's infra container, which holds its namespaces.
	IsInfra bool `json:"is_infra,omitempty"`
	// Pid and ConmonPid are the container's process and its monitor
	// while it runs, as Podman recorded them.
	Pid       int `json:"pid,omitempty"`
	ConmonPid int `json:"conmon_pid,omitempty"`
	// SandboxKey is the nsfs mount pinning the container's namespace
	// (its pod's infra container's for a container in a pod).
	SandboxKey string `json:"sandbox_key,omitempty"`
	// NetworkMode is "bridge", "host", "container:<id>", "ns:<path>" (a
	// namespace of someone else's that the container joins), ...
	NetworkMode string `json:"network_mode,omitempty"`
	// StartedAt is when Podman last started the container: its process
	// started at or before it, and a process at Pid that started later is
	// another one, the PID reused.
	StartedAt time.Time `json:"started_at,omitzero"`
	// FinishedAt is when a stopped container last stopped running.
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// inspected: ConmonPid, StartedAt and SandboxKey are known.
	inspected bool
}

// running: Podman's record says the container's namespace is in use.
func (c *Container) running() bool {
	return c.State == "running" || c.State == "paused"
}

// joinsOther: the container runs in a namespace it did not make and that
// outlives it (--network ns:PATH): it never owns that namespace, and its
// end leaves no leftover.
func (c *Container) joinsOther() bool { return strings.HasPrefix(c.NetworkMode, "ns:") }

// stopped: Podman's record says the container is gone.
func (c *Container) stopped() bool { return c.State == "exited" || c.State == "stopped" }

// View is what Podman said: listed for one snapshot and reused by
// the next ones while the events stream reports no change.
type View struct {
	// Up: the service answered.
	Up  bool  `json:"up"`
	Err error `json:"-"`
	// Containers are all containers, exited ones included.
	Containers []*Container `json:"-"`
	// Bridges maps each Podman network's bridge interface (podman0,
	// cni-podman0, podman1) to the network's name.
	Bridges map[string]string `json:"bridges,omitempty"`
	// Listed is when Podman listed these containers.
	Listed time.Time `json:"listed"`
	// Requests counts the API requests made since start, when the view
	// was asked for.
	Requests uint64 `json:"-"`
	// name is the resolver's, which names its families.
	name string
}

// Resolver resolves owners through Podman's REST API: it is the [inventory.Resolver]
// of Podman's containers and pods. It is safe for concurrent use.
type Resolver struct {
	// name is the resolver's: its step and its key in a snapshot.
	name    string
	host    string
	timeout time.Duration
	api     *engine.API
	logger  *slog.Logger

	// FollowedView's mu guards inspected too.
	engine.FollowedView[*View]
	inspected map[string]*Container
}

// New returns a resolver for the Podman service at host:
// unix:///path or tcp://host:port (the CONTAINER_HOST forms). It does not
// contact the service; one that is not there is an answer ("down"), not
// an error. timeout bounds what one snapshot may spend asking it.
func New(host string, timeout time.Duration, logger *slog.Logger) (*Resolver, error) {
	api, err := engine.New("podman", host)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = podmanCallTimeout
	}
	return &Resolver{name: Name, host: host, timeout: timeout, api: api, logger: logger, inspected: map[string]*Container{}}, nil
}

// Start follows the service's events until Close.
func (pm *Resolver) Start() { pm.Follow(pm.streamEvents, pm.logger, "Podman") }

// Close stops following events.
func (pm *Resolver) Close() { pm.CloseEvents() }

// Requests is the number of API requests made so far.
func (pm *Resolver) Requests() uint64 { return pm.api.Requests() }

// View returns Podman's view for a snapshot: the cached one while the
// events stream is connected, quiet and the view young; otherwise a
// fresh list of containers (one call), the inspection of containers not
// seen in their state before, and the networks (one call).
func (pm *Resolver) View(ctx context.Context) *View {
	pm.Mu.Lock()
	defer pm.Mu.Unlock()
	v, ok, gen := pm.Cached(podmanViewTTL)
	if ok {
		return v
	}
	v, err := pm.fetch(ctx)
	if err != nil {
		if pm.WasUp() {
			pm.logger.Warn("Podman API unreachable: veths Podman must decide are unknown until it answers", "host", pm.host, "err", err)
		}
		v = &View{Err: err}
	} else if !pm.WasUp() {
		pm.logger.Info("Podman API reachable again", "host", pm.host)
	}
	pm.Store(v, v.Up, gen)
	return v
}

// fetch builds a fresh view; the caller holds pm.Mu.
func (pm *Resolver) fetch(ctx context.Context) (*View, error) {
	var list []struct {
		ID       string `json:"Id"`
		Names    []string
		Image    string
		State    string
		Pid      int
		Pod      string
		PodName  string
		IsInfra  bool
		ExitedAt int64
	}
	if err := pm.get(ctx, "/containers/json", url.Values{"all": {"true"}}, &list); err != nil {
		return nil, err
	}
	v := &View{Up: true, Bridges: map[string]string{}, Listed: time.Now()}
	seen := map[string]bool{}
	for _, c := range list {
		seen[c.ID] = true
		pc := &Container{ID: c.ID, Image: c.Image, State: c.State, Pid: c.Pid, PodID: c.Pod, PodName: c.PodName, IsInfra: c.IsInfra}
		if len(c.Names) > 0 {
			pc.Name = c.Names[0]
		}
		if c.ExitedAt > 0 && pc.stopped() {
			pc.FinishedAt = time.Unix(c.ExitedAt, 0)
		}
		// SandboxKey and the conmon's PID come only from inspect: asked
		// once per state of a container, and again after an event.
		if !pm.reuseInspect(pc) && pc.running() {
			if err := pm.inspect(ctx, pc); err != nil {
				if engine.IsNotFound(err) {
					continue // removed since the list
				}
				return nil, err
			}
		}
		v.Containers = append(v.Containers, pc)
	}
	for id := range pm.inspected {
		if !seen[id] {
			delete(pm.inspected, id)
		}
	}
	var networks []struct {
		Name             string `json:"name"`
		Driver           string `json:"driver"`
		NetworkInterface string `json:"network_interface"`
	}
	if err := pm.get(ctx, "/networks/json", nil, &networks); err != nil {
		return nil, err
	}
	for _, n := range networks {
		if n.Driver == "bridge" && n.NetworkInterface != "" {
			v.Bridges[n.NetworkInterface] = n.Name
		}
	}
	return v, nil
}

// inspect fills in the container's PIDs and SandboxKey; the caller holds
// pm.Mu.
func (pm *Resolver) inspect(ctx context.Context, c *Container) error {
	if err := pm.inspectInto(ctx, c); err != nil {
		return err
	}
	pm.inspected[c.ID] = c
	return nil
}

// inspectInto fills in what only inspect tells of c, without caching it.
func (pm *Resolver) inspectInto(ctx context.Context, c *Container) error {
	var r struct {
		State struct {
			Status     string
			Pid        int
			ConmonPid  int
			StartedAt  time.Time
			FinishedAt time.Time
		}
		NetworkSettings struct{ SandboxKey string }
		HostConfig      struct{ NetworkMode string }
	}
	if err := pm.get(ctx, "/containers/"+c.ID+"/json", nil, &r); err != nil {
		return err
	}
	if r.State.Status != "" {
		c.State = r.State.Status
	}
	c.Pid, c.ConmonPid, c.SandboxKey, c.inspected = r.State.Pid, r.State.ConmonPid, inventory.HostRunPath(r.NetworkSettings.SandboxKey), true
	c.NetworkMode = r.HostConfig.NetworkMode
	if r.State.StartedAt.Year() > 1 {
		c.StartedAt = r.State.StartedAt
	}
	if r.State.FinishedAt.Year() > 1 && c.stopped() {
		c.FinishedAt = r.State.FinishedAt
	}
	return nil
}

// reuseInspect copies what an earlier inspect of the same run of the
// container (the same state and, from the list, the same PID) learned;
// the caller holds pm.Mu.
func (pm *Resolver) reuseInspect(c *Container) bool {
	old := pm.inspected[c.ID]
	if old == nil || old.State != c.State || old.Pid != c.Pid {
		return false
	}
	c.ConmonPid, c.SandboxKey, c.StartedAt, c.NetworkMode, c.inspected = old.ConmonPid, old.SandboxKey, old.StartedAt, old.NetworkMode, true
	if c.FinishedAt.IsZero() {
		c.FinishedAt = old.FinishedAt
	}
	return true
}

// confirmCrash asks Podman afresh about a container whose recorded
// process is gone, before its record makes a leftover: a view reused
// from the cache (a hung service keeps the events stream quiet) may hold
// a run of the container that has been replaced. It reports whether the
// fresh record still says the container's process is gone (or that the
// container stopped), and marks the cached view stale when the record
// changed. A container removed meanwhile is no longer a record (gone
// false, no error).
func (pm *Resolver) confirmCrash(ctx context.Context, p inventory.Paths, cached *Container, boot time.Time) (crashed bool, err error) {
	fresh := &Container{ID: cached.ID}
	if err := pm.inspectInto(ctx, fresh); err != nil {
		if engine.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	if fresh.State != cached.State || fresh.Pid != cached.Pid || !fresh.StartedAt.Equal(cached.StartedAt) {
		pm.Mu.Lock()
		delete(pm.inspected, cached.ID)
		pm.Changed()
		pm.Mu.Unlock()
	}
	if fresh.stopped() {
		return true, nil
	}
	return fresh.running() && !podmanProcessLives(p.Procfs, fresh, boot), nil
}

// get calls one libpod endpoint and decodes its JSON answer into out.
func (pm *Resolver) get(ctx context.Context, p string, query url.Values, out any) error {
	return pm.api.Get(ctx, podmanCallTimeout, podmanAPIPrefix+p, query, out)
}

// streamEvents reads the events stream and marks the cached view stale
// at each event.
func (pm *Resolver) streamEvents(ctx context.Context) error {
	filters := `{"type":["container","pod","network"]}`
	resp, err := pm.api.Open(ctx, podmanAPIPrefix+"/events", url.Values{"stream": {"true"}, "filters": {filters}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	pm.Opened()
	// What changed while the stream was away is unknown: inspect afresh.
	pm.Mu.Lock()
	clear(pm.inspected)
	pm.Mu.Unlock()
	return engine.ReadEvents(resp.Body, func(ev engine.Event) {
		if ev.Type == "container" && (ev.Action == "exec" || ev.Action == "exec_died" || ev.Action == "health_status") {
			return // changes nothing a view holds
		}
		pm.Mu.Lock()
		defer pm.Mu.Unlock()
		pm.Changed()
		if ev.Type == "container" {
			// Its process, its state or its sandbox may have changed.
			delete(pm.inspected, ev.Actor.ID)
		}
	})
}
