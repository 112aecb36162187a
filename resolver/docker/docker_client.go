package docker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/resolver/engine"
)

// The Docker resolver's client of the Docker Engine API: what Docker
// records of its containers and networks, cached between snapshots and
// kept fresh by the events stream. Its claims about namespaces are in
// docker.go. It needs five endpoints (ping, container list and inspect,
// networks, events), stable since API 1.24, so it speaks them itself
// rather than through the official client, whose module brings
// OpenTelemetry and image-spec packages along for them.
const (
	// dockerMaxAPIVersion is the newest API version this resolver asks
	// for; an older daemon (Debian's 20.10 speaks 1.41) is asked in its own.
	dockerMaxAPIVersion = "1.47"
	// dockerMinAPIVersion is the oldest the endpoints used here exist in.
	dockerMinAPIVersion = "1.24"
	// dockerCallTimeout bounds each API call: a hung daemon makes veths
	// unknown, not scrapes slow.
	dockerCallTimeout = 3 * time.Second
	// dockerViewTTL bounds how long a view is reused without a fresh list
	// when the events stream is connected and quiet.
	dockerViewTTL = 5 * time.Minute
)

// Container is Docker's record of one container.
type Container struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Image          string `json:"image"`
	State          string `json:"state"`
	ComposeProject string `json:"compose_project,omitempty"`
	ComposeService string `json:"compose_service,omitempty"`
	// NetworkMode is host, none, default, a network name, or
	// container:<id> for a container that joins another's namespace.
	NetworkMode string `json:"network_mode"`
	// Pid is the container's init process while it runs.
	Pid int `json:"pid,omitempty"`
	// SandboxKey is the nsfs mount pinning the container's namespace.
	SandboxKey string `json:"sandbox_key,omitempty"`
	// FinishedAt is when a stopped container last stopped running.
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// sandboxID names the sandbox; Docker pins its namespace at
	// <netns dir>/<first 12 hex of it>.
	sandboxID string
	// inspected: Pid, SandboxKey and sandboxID are known.
	inspected bool
}

// running: the container's namespace is in use. A paused container is
// frozen, not gone, and a restarting one comes back in the same sandbox.
func (c *Container) running() bool {
	return c.State == "running" || c.State == "paused" || c.State == "restarting"
}

// stopped: Docker's record says the container is gone. A created
// container has not started yet, a removing one is being cleaned up:
// neither says anything about a namespace.
func (c *Container) stopped() bool { return c.State == "exited" || c.State == "dead" }

// sharesNamespace: the container joins another container's namespace and
// so is never the owner of a veth.
func (c *Container) sharesNamespace() bool {
	return strings.HasPrefix(c.NetworkMode, "container:")
}

// View is what Docker said: listed for one snapshot and reused by the
// next ones while the events stream reports no change.
type View struct {
	// Up: the daemon answered.
	Up  bool  `json:"up"`
	Err error `json:"-"`
	// Containers are all containers, exited and created ones included.
	Containers []*Container `json:"-"`
	// Bridges maps the kernel name of each Docker bridge (docker0,
	// br-<12 hex>) to its Docker network's name.
	Bridges map[string]string `json:"bridges,omitempty"`
	// NetnsDirs are the directories where Docker pins namespaces:
	// [NetnsDirs] and those its containers' SandboxKeys showed.
	NetnsDirs inventory.NetnsDirs `json:"netns_dirs"`
	// Listed is when Docker listed these containers; a view is reused
	// while the events stream reports no change.
	Listed time.Time `json:"listed"`
	// Requests counts the API requests made since start, when the view
	// was asked for.
	Requests uint64 `json:"-"`
	// name is the resolver's, which names its families.
	name string
}

// Resolver resolves owners through the Docker Engine API: it is the
// [inventory.Resolver] of Docker's containers. It caches what it learns between
// snapshots and follows the events stream to know when the cache is
// stale, so that a quiet node costs no API call per scrape. It is safe
// for concurrent use.
type Resolver struct {
	// name is the resolver's: its step and its key in a snapshot.
	name    string
	host    string
	timeout time.Duration
	api     *engine.API
	logger  *slog.Logger

	// FollowedView's Mu guards these too.
	engine.FollowedView[*View]
	version   string // negotiated, "" until the first ping
	inspected map[string]*Container
	netnsDirs map[string]bool
}

// New returns a resolver for the daemon at host: unix:///path or
// tcp://host:port (the DOCKER_HOST forms). It does not contact the daemon;
// a daemon that is not there is an answer ("down"), not an error.
//
// timeout bounds what one snapshot may spend asking the daemon: a daemon
// that does not answer in time is down for that snapshot.
func New(host string, timeout time.Duration, logger *slog.Logger) (*Resolver, error) {
	api, err := engine.New("docker", host)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = dockerCallTimeout
	}
	d := &Resolver{
		name:      Name,
		host:      host,
		timeout:   timeout,
		api:       api,
		logger:    logger,
		inspected: map[string]*Container{},
		netnsDirs: map[string]bool{},
	}
	for _, dir := range NetnsDirs {
		d.netnsDirs[dir] = true
	}
	return d, nil
}

// Start follows the daemon's events until Close, reconnecting when the
// daemon goes away and comes back.
func (d *Resolver) Start() { d.Follow(d.streamEvents, d.logger, "Docker") }

// Close stops following events.
func (d *Resolver) Close() { d.CloseEvents() }

// Requests is the number of API requests made so far.
func (d *Resolver) Requests() uint64 { return d.api.Requests() }

// View returns Docker's view for a snapshot: the cached one while the
// events stream is connected, quiet and the view young; otherwise a fresh
// list (one call), the inspection of containers not seen running before,
// and the networks (one call).
func (d *Resolver) View(ctx context.Context) *View {
	d.Mu.Lock()
	defer d.Mu.Unlock()
	v, ok, gen := d.Cached(dockerViewTTL)
	if ok {
		return v
	}
	v, err := d.fetch(ctx)
	if err != nil {
		if d.WasUp() {
			d.logger.Warn("Docker API unreachable: veths Docker must decide are unknown until it answers", "host", d.host, "err", err)
		}
		v = &View{Err: err}
		d.version = "" // negotiate again: the daemon may come back upgraded
	} else if !d.WasUp() {
		d.logger.Info("Docker API reachable again", "host", d.host)
	}
	for dir := range d.netnsDirs {
		v.NetnsDirs = append(v.NetnsDirs, dir)
	}
	d.Store(v, v.Up, gen)
	return v
}

// fetch builds a fresh view; the caller holds d.Mu.
func (d *Resolver) fetch(ctx context.Context) (*View, error) {
	if d.version == "" {
		if err := d.negotiate(ctx); err != nil {
			return nil, err
		}
	}
	var list []struct {
		ID     string `json:"Id"`
		Names  []string
		Image  string
		State  string
		Labels map[string]string
		// HostConfig.NetworkMode in the list is all a container in
		// another's namespace needs to be recognised.
		HostConfig struct{ NetworkMode string }
	}
	if err := d.get(ctx, "/containers/json", url.Values{"all": {"1"}}, &list); err != nil {
		return nil, err
	}
	v := &View{Up: true, Bridges: map[string]string{}, Listed: time.Now()}
	seen := map[string]bool{}
	for _, c := range list {
		seen[c.ID] = true
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		dc := &Container{
			ID: c.ID, Name: name, Image: c.Image, State: c.State,
			ComposeProject: c.Labels["com.docker.compose.project"],
			ComposeService: c.Labels["com.docker.compose.service"],
			NetworkMode:    c.HostConfig.NetworkMode,
		}
		// Pid and SandboxKey only come from inspect: asked once per run
		// of a container, and again only after it started, died or was
		// destroyed (the events that change them).
		if !d.reuseInspect(dc) && dc.running() {
			if err := d.inspect(ctx, dc); err != nil {
				if engine.IsNotFound(err) {
					continue // removed since the list
				}
				return nil, err
			}
		}
		v.Containers = append(v.Containers, dc)
	}
	for id := range d.inspected {
		if !seen[id] {
			delete(d.inspected, id)
		}
	}
	var networks []struct {
		ID      string `json:"Id"`
		Name    string
		Driver  string
		Options map[string]string
	}
	if err := d.get(ctx, "/networks", nil, &networks); err != nil {
		return nil, err
	}
	for _, n := range networks {
		if n.Driver != "bridge" {
			continue
		}
		bridge := n.Options["com.docker.network.bridge.name"]
		if bridge == "" && len(n.ID) >= 12 {
			bridge = "br-" + n.ID[:12]
		}
		v.Bridges[bridge] = n.Name
	}
	return v, nil
}

// inspect fills in the container's Pid and SandboxKey; the caller holds d.Mu.
func (d *Resolver) inspect(ctx context.Context, c *Container) error {
	var r struct {
		State struct {
			Pid        int
			FinishedAt time.Time
		}
		NetworkSettings struct{ SandboxKey, SandboxID string }
	}
	if err := d.get(ctx, "/containers/"+c.ID+"/json", nil, &r); err != nil {
		return err
	}
	c.Pid, c.SandboxKey, c.sandboxID, c.inspected = r.State.Pid, inventory.HostRunPath(r.NetworkSettings.SandboxKey), r.NetworkSettings.SandboxID, true
	if r.State.FinishedAt.Year() > 1 {
		c.FinishedAt = r.State.FinishedAt
	}
	d.inspected[c.ID] = c
	if c.SandboxKey != "" {
		d.netnsDirs[filepath.Dir(c.SandboxKey)] = true
	}
	return nil
}

// reuseInspect copies what an earlier inspect of the same container in
// the same state learned; the caller holds d.Mu.
func (d *Resolver) reuseInspect(c *Container) bool {
	old := d.inspected[c.ID]
	if old == nil || old.State != c.State {
		return false
	}
	c.Pid, c.SandboxKey, c.sandboxID, c.FinishedAt, c.inspected = old.Pid, old.SandboxKey, old.sandboxID, old.FinishedAt, true
	return true
}

// negotiate asks /_ping for the daemon's API version and settles on the
// newer of what both speak.
func (d *Resolver) negotiate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	defer cancel()
	resp, err := d.api.Open(ctx, "/_ping", nil)
	if err != nil {
		return fmt.Errorf("docker ping: %w", err)
	}
	// Drained so that the connection is reused; a failed drain only costs that.
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	version := resp.Header.Get("Api-Version")
	switch {
	case version == "":
		version = dockerMinAPIVersion
	case versionLess(dockerMaxAPIVersion, version):
		version = dockerMaxAPIVersion
	case versionLess(version, dockerMinAPIVersion):
		return fmt.Errorf("docker API %s is older than %s", version, dockerMinAPIVersion)
	}
	d.version = version
	return nil
}

// versionLess compares API versions such as 1.41 and 1.9 numerically.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// get calls one endpoint of the negotiated API version and decodes its
// JSON answer into out.
func (d *Resolver) get(ctx context.Context, p string, query url.Values, out any) error {
	return d.api.Get(ctx, dockerCallTimeout, "/v"+d.version+p, query, out)
}

// streamEvents keeps a stream of container and network events open and
// marks the cached view stale at each event. While it is down, every
// snapshot asks the daemon afresh.
func (d *Resolver) streamEvents(ctx context.Context) error {
	d.Mu.Lock()
	if d.version == "" {
		if err := d.negotiate(ctx); err != nil {
			d.Mu.Unlock()
			return err
		}
	}
	version := d.version
	d.Mu.Unlock()
	// Only events that change what a view holds: health checks and
	// execs emit exec_* events all the time and must not cost a list.
	filters := `{"type":["container","network"],"event":["create","start","restart","die","kill","stop","pause","unpause","destroy","rename","connect","disconnect"]}`
	resp, err := d.api.Open(ctx, "/v"+version+"/events", url.Values{"filters": {filters}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	d.Opened()
	// What changed while the stream was away is unknown: inspect afresh.
	d.Mu.Lock()
	clear(d.inspected)
	d.Mu.Unlock()
	return engine.ReadEvents(resp.Body, func(ev engine.Event) {
		d.Mu.Lock()
		defer d.Mu.Unlock()
		d.Changed()
		if ev.Type == "container" && (ev.Action == "start" || ev.Action == "die" || ev.Action == "destroy" || ev.Action == "restart") {
			// The container's init process changed or ended.
			delete(d.inspected, ev.Actor.ID)
		}
	})
}

// SandboxRecord returns Docker's record of the stopped container whose
// sandbox a namespace pinned at mount was: what a leftover that the
// exporter never saw running came from. Stopped containers are inspected
// once (their record no longer changes) and only when a namespace held by
// a mount is left unexplained by running containers and known owners.
func (d *Resolver) SandboxRecord(ctx context.Context, v *View, mount string) *Container {
	if !v.Up {
		return nil
	}
	base := path.Base(mount)
	d.Mu.Lock()
	defer d.Mu.Unlock()
	for _, dc := range v.Containers {
		if !dc.stopped() {
			continue
		}
		if !dc.inspected && !d.reuseInspect(dc) {
			if err := d.inspect(ctx, dc); engine.IsNotFound(err) {
				continue // removed since the list
			} else if err != nil {
				// A daemon that stops answering now would make every
				// further inspect wait for its timeout.
				return nil
			}
		}
		if dc.SandboxKey == mount || (len(dc.sandboxID) >= len(base) && len(base) >= 12 && strings.HasPrefix(dc.sandboxID, base)) {
			return dc
		}
	}
	return nil
}
