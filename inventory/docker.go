package inventory

import (
	"os"
	"path"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// dockerClaims says, for one snapshot, what Docker claims about each
// namespace: the running containers in it, or its record of the
// container whose sandbox it was.
type dockerClaims struct {
	view *DockerView
	// since is when the snapshot's namespace scan began.
	since time.Time
	// running: containers running in each namespace, by inode, the
	// namespace's owner (the sandbox) first.
	running map[uint64][]*DockerContainer
	// byID: every container Docker knows.
	byID map[string]*DockerContainer
}

func newDockerClaims(v *DockerView, p Paths, since time.Time) *dockerClaims {
	c := &dockerClaims{view: v, since: since, running: map[uint64][]*DockerContainer{}, byID: map[string]*DockerContainer{}}
	for _, dc := range v.Containers {
		c.byID[dc.ID] = dc
		if !dc.running() || dc.NetworkMode == "host" || dc.NetworkMode == "none" {
			continue
		}
		inode := netnsInodeOf(p, dc)
		if inode == 0 {
			continue
		}
		if dc.sharesNamespace() {
			c.running[inode] = append(c.running[inode], dc)
		} else {
			c.running[inode] = append([]*DockerContainer{dc}, c.running[inode]...)
		}
	}
	return c
}

// netnsInodeOf finds the namespace of a running container: through its
// sandbox mount, which names that namespace for as long as the container
// runs, else (a container in another's namespace has none) through its
// init process, whose PID a cached inspect may hold after a restart the
// events stream missed: the process must still be in a Docker cgroup of
// this container.
func netnsInodeOf(p Paths, c *DockerContainer) uint64 {
	var st unix.Stat_t
	if c.SandboxKey != "" && unix.Stat(filepath.Join(p.Rootfs, c.SandboxKey), &st) == nil {
		return st.Ino
	}
	if c.Pid <= 0 {
		return 0
	}
	dir := p.Procfs + "/" + strconv.Itoa(c.Pid)
	if cg, err := os.ReadFile(dir + "/cgroup"); err != nil || parseCgroup(string(cg)).ContainerID != c.ID {
		return 0
	}
	if unix.Stat(dir+"/ns/net", &st) == nil {
		return st.Ino
	}
	return 0
}

// inDockerNetnsDir reports whether a mount path is one of Docker's.
func (c *dockerClaims) inDockerNetnsDir(mount string) bool {
	for _, dir := range c.view.NetnsDirs {
		if path.Dir(mount) == dir {
			return true
		}
	}
	return false
}

// claim returns what Docker says about v's peer namespace, and the
// container it says it about, if any.
func (c *dockerClaims) claim(v *Veth) (RuntimeClaim, *DockerContainer) {
	n := v.PeerNetns
	if n == nil {
		return RuntimeSilent, nil
	}
	if !c.view.Up {
		// A namespace only a mount holds could be a sandbox of this
		// daemon in an exec root not learned yet (an exporter started
		// while Docker was down): Docker decides those too.
		if c.dockerNamespace(v) || len(n.PIDs) == 0 {
			return RuntimeDown, nil
		}
		return RuntimeSilent, nil
	}
	if cs := c.running[n.Inode]; len(cs) > 0 {
		n.Containers = n.Containers[:0]
		for _, dc := range cs {
			n.Containers = append(n.Containers, dc.Name)
		}
		return RuntimeRunning, cs[0]
	}
	// Docker's record of the container whose namespace this was: by the
	// owner the cgroups or the history name, or by the sandbox mount.
	for _, o := range []*Owner{v.Owner, v.LastOwner} {
		if o == nil || o.Kind != OwnerContainer {
			continue
		}
		dc := c.byID[o.ID]
		if dc == nil || !dc.stopped() {
			continue
		}
		// A process in the container's cgroup against a record listed
		// before the scan: the container may have started since, and its
		// start event not have reached the cache yet. The process wins.
		if v.Owner != nil && v.Owner.ID == dc.ID && c.view.Listed.Before(c.since) {
			continue
		}
		return RuntimeExited, dc
	}
	return RuntimeSilent, nil
}

// dockerNamespace reports whether v's peer namespace is Docker's to
// decide: pinned in Docker's netns directory, or owned (now or last) by a
// Docker container.
func (c *dockerClaims) dockerNamespace(v *Veth) bool {
	for _, m := range v.PeerNetns.Mounts {
		if c.inDockerNetnsDir(m) {
			return true
		}
	}
	for _, o := range []*Owner{v.Owner, v.LastOwner} {
		if o != nil && o.Runtime == "docker" {
			return true
		}
	}
	return false
}

// dockerOwner is the owner a Docker container makes.
func dockerOwner(dc *DockerContainer) *Owner {
	return &Owner{Kind: OwnerContainer, ID: dc.ID, Name: dc.Name, Runtime: "docker"}
}
