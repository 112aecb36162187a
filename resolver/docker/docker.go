// Package docker is the runtime resolver of Docker's containers: it asks
// the Docker Engine API which namespaces running containers use and what
// Docker records of the containers whose namespaces they were, and gives
// Docker's metric families (its networks, its container records). It
// only reads the API and /proc; it never stops, removes or changes a
// container. Its [Registration] is its line in the command's list.
package docker

import (
	"cmp"
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/resolver/engine"
	"golang.org/x/sys/unix"
)

// Docker's claims: which namespaces Docker's containers run in, and its
// record of the containers whose namespaces they were. What Docker
// records, and how it is asked, is in docker_client.go.

// Runtime is Docker's name in [inventory.Owner.Runtime].
const Runtime inventory.Runtime = "docker"

// Name is the Docker resolver's name: its stage in
// [inventory.Snapshot.Steps] (veth_scrape_collector_*{collector="docker"})
// and its key in a snapshot's JSON.
const Name = "docker"

// Cgroups are the names Docker gives its containers' cgroups:
// "docker-<id>.scope" with the systemd driver, "/docker/<id>" with
// cgroupfs.
var Cgroups = inventory.CgroupNaming{Runtime: Runtime, Prefixes: []string{"docker-"}, Parents: []string{"docker"}}

// NetnsDirs are where Docker pins its sandboxes' namespaces with the
// default exec root; others are learned from SandboxKeys.
var NetnsDirs = inventory.NetnsDirs{"/run/docker/netns"}

// Pins are Docker's namespace pins with the default exec root: every
// mount in /run/docker/netns, a directory only Docker uses.
var Pins = []inventory.NetnsPin{{Dir: "/run/docker/netns"}}

// Step implements [inventory.Resolver].
func (d *Resolver) Step() string { return d.name }

// Timeout implements [inventory.Resolver]: what one snapshot may spend asking the
// daemon.
func (d *Resolver) Timeout() time.Duration { return d.timeout }

// Observe implements [inventory.Resolver]: Docker's view for the snapshot (see
// [Docker.View]) and the namespaces its running containers use.
func (d *Resolver) Observe(ctx context.Context, p inventory.Paths) (inventory.Observation, error) {
	// A copy for this snapshot: the cached view is shared with others.
	v := *d.View(ctx)
	v.Requests, v.name = d.Requests(), d.name
	return &dockerObservation{docker: d, claims: newDockerClaims(&v, p)}, v.Err
}

// dockerObservation is what Docker said for one snapshot.
type dockerObservation struct {
	docker *Resolver
	claims *dockerClaims
}

// Claim implements [inventory.Observation]. A namespace no running container uses
// is claimed exited when Docker has a record of the container it was
// (the owner the cgroups or the history name, or the stopped container
// whose sandbox a mount of it is).
func (o *dockerObservation) Claim(ctx context.Context, v *inventory.Veth) inventory.Claim {
	view := o.claims.view
	claim, dc := o.claims.claim(v)
	if claim == inventory.RuntimeSilent && view.Up && v.PeerNetns != nil && (v.Owner == nil || v.Owner.Kind == inventory.OwnerProcess) {
		// A namespace that a mount holds and no container process owns
		// may be the sandbox of a stopped container, in whatever exec root
		// that daemon runs: ask its record, which costs one inspect per
		// stopped container, once.
		for _, m := range v.PeerNetns.Mounts {
			if rec := o.docker.SandboxRecord(ctx, view, m); rec != nil {
				claim, dc = inventory.RuntimeExited, rec
				break
			}
		}
	}
	c := inventory.Claim{State: claim}
	switch claim {
	case inventory.RuntimeRunning:
		if v.Owner != nil && v.Owner.Kind == inventory.OwnerPod {
			// A pod's container that Docker runs (cri-dockerd): the
			// cgroups know the pod, Docker its name.
			named := *v.Owner
			named.Name = dc.Name
			c.Owner = &named
		} else {
			c.Owner = dockerOwner(dc)
		}
		for _, shared := range o.claims.running[v.PeerNetns.Inode] {
			c.Containers = append(c.Containers, shared.Name)
		}
	case inventory.RuntimeExited:
		c.LastOwner, c.LastOwnerSeen = dockerOwner(dc), dc.FinishedAt
	}
	return c
}

// Running implements [inventory.Observation]: the namespaces of the running
// containers, each found through the namespace's owner (the sandbox).
func (o *dockerObservation) Running() []inventory.RunningNetns {
	if !o.claims.view.Up {
		return nil
	}
	running := make([]inventory.RunningNetns, 0, len(o.claims.running))
	for inode, cs := range o.claims.running {
		running = append(running, inventory.RunningNetns{Inode: inode, Path: o.claims.paths[inode], PID: cs[0].Pid})
	}
	return running
}

// View implements [inventory.Observation]: the snapshot's docker key and
// Docker's metric families.
func (o *dockerObservation) View() inventory.RuntimeView { return o.claims.view }

// Help texts of Docker's families; the names and labels are a contract
// with dashboards and alerts.
const (
	helpDockerInfo = "Docker container that owns or last owned a veth, for joins on id."
	helpDockerAPI  = "Docker Engine API requests made by the exporter."
)

// Families implements [inventory.RuntimeView]: the API requests made so far and,
// while Docker answers, the Docker networks of the masters in use and
// Docker's record of every container that owns or last owned a veth. A
// daemon that is down gives no Docker facts at all rather than stale ones.
func (v *View) Families(s *inventory.Snapshot) []inventory.Family {
	// A view made by hand has no name of its own.
	families := []inventory.Family{inventory.RequestsFamily(cmp.Or(v.name, Name), helpDockerAPI, v.Requests)}
	if !v.Up {
		return families
	}
	containers := make(map[string]*Container, len(v.Containers))
	for _, c := range v.Containers {
		containers[c.ID] = c
	}
	owners := map[string]*Container{}
	for i := range s.Veths {
		veth := &s.Veths[i]
		for _, o := range []*inventory.Owner{veth.Owner, veth.LastOwner} {
			if o != nil && o.Kind != inventory.OwnerProcess && containers[o.ID] != nil {
				owners[o.ID] = containers[o.ID]
			}
		}
	}
	info := inventory.Family{Name: "veth_docker_container_info", Help: helpDockerInfo}
	for _, id := range slices.Sorted(maps.Keys(owners)) {
		c := owners[id]
		info.Series = append(info.Series, inventory.Series{Value: 1, Labels: []inventory.Label{
			{Name: "compose_project", Value: c.ComposeProject}, {Name: "compose_service", Value: c.ComposeService},
			{Name: "id", Value: c.ID}, {Name: "image", Value: c.Image}, {Name: "name", Value: c.Name}, {Name: "state", Value: c.State}}})
	}
	return append(families, engine.BridgeInfo(s, v.Bridges), info)
}

// dockerClaims says, for one snapshot, what Docker claims about each
// namespace: the running containers in it, or its record of the
// container whose sandbox it was.
type dockerClaims struct {
	view *View
	// running: containers running in each namespace, by inode, the
	// namespace's owner (the sandbox) first.
	running map[uint64][]*Container
	// paths open the namespaces of running, by inode.
	paths map[uint64]string
	// byID: every container Docker knows.
	byID map[string]*Container
}

func newDockerClaims(v *View, p inventory.Paths) *dockerClaims {
	c := &dockerClaims{view: v, running: map[uint64][]*Container{}, paths: map[uint64]string{}, byID: map[string]*Container{}}
	for _, dc := range v.Containers {
		c.byID[dc.ID] = dc
		if !dc.running() || dc.NetworkMode == "host" || dc.NetworkMode == "none" {
			continue
		}
		inode, path := netnsOf(p, dc)
		if inode == 0 {
			continue
		}
		if _, ok := c.paths[inode]; !ok || !dc.sharesNamespace() {
			c.paths[inode] = path
		}
		if dc.sharesNamespace() {
			c.running[inode] = append(c.running[inode], dc)
		} else {
			c.running[inode] = append([]*Container{dc}, c.running[inode]...)
		}
	}
	return c
}

// netnsOf finds the namespace of a running container, and a path that
// opens it: its sandbox mount, which names that namespace for as long as
// the container runs, else (a container in another's namespace has none)
// its init process, whose PID a cached inspect may hold after a restart
// the events stream missed: the process must still be in a Docker cgroup
// of this container.
func netnsOf(p inventory.Paths, c *Container) (uint64, string) {
	var st unix.Stat_t
	if c.SandboxKey != "" {
		path := filepath.Join(p.Rootfs, c.SandboxKey)
		if unix.Stat(path, &st) == nil {
			return st.Ino, path
		}
	}
	if c.Pid <= 0 {
		return 0, ""
	}
	dir := p.Procfs + "/" + strconv.Itoa(c.Pid)
	if cg, err := os.ReadFile(dir + "/cgroup"); err != nil || inventory.ParseCgroup(string(cg), []inventory.CgroupNaming{Cgroups}).ContainerID != c.ID {
		return 0, ""
	}
	if unix.Stat(dir+"/ns/net", &st) == nil {
		return st.Ino, dir + "/ns/net"
	}
	return 0, ""
}

// claim returns what Docker says about v's peer namespace, and the
// container it says it about, if any.
func (c *dockerClaims) claim(v *inventory.Veth) (inventory.RuntimeClaim, *Container) {
	n := v.PeerNetns
	if n == nil {
		return inventory.RuntimeSilent, nil
	}
	if !c.view.Up {
		// A namespace only a mount holds could be a sandbox of this
		// daemon in an exec root not learned yet (an exporter started
		// while Docker was down): Docker decides those too.
		if c.dockerNamespace(v) || n.Empty() {
			return inventory.RuntimeDown, nil
		}
		return inventory.RuntimeSilent, nil
	}
	if cs := c.running[n.Inode]; len(cs) > 0 {
		return inventory.RuntimeRunning, cs[0]
	}
	// Docker's record of the container whose namespace this was: by the
	// owner the cgroups or the history name, or by the sandbox mount.
	for _, o := range []*inventory.Owner{v.Owner, v.LastOwner} {
		if o == nil || o.Kind != inventory.OwnerContainer {
			continue
		}
		dc := c.byID[o.ID]
		if dc == nil || !dc.stopped() {
			continue
		}
		// A process in the container's cgroup against the record, which
		// was listed before any process was read (every runtime is asked
		// first): the container may have started since, and its start
		// event not have reached the cache yet. The process wins.
		if v.Owner != nil && v.Owner.ID == dc.ID {
			continue
		}
		return inventory.RuntimeExited, dc
	}
	return inventory.RuntimeSilent, nil
}

// dockerNamespace reports whether v's peer namespace is Docker's to
// decide: pinned in Docker's netns directory, or owned (now or last) by a
// Docker container.
func (c *dockerClaims) dockerNamespace(v *inventory.Veth) bool {
	for _, m := range v.PeerNetns.Mounts {
		if c.view.NetnsDirs.Holds(m) {
			return true
		}
	}
	return inventory.OwnedBy(v, Runtime)
}

// dockerOwner is the owner a Docker container makes.
func dockerOwner(dc *Container) *inventory.Owner {
	return &inventory.Owner{Kind: inventory.OwnerContainer, ID: dc.ID, Name: dc.Name, Runtime: Runtime}
}
