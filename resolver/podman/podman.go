// Package podman is the runtime resolver of Podman's containers and pods,
// through Podman's REST API service: names, pods, exited containers and
// the crashes Podman itself misses (a record still running whose process
// is gone). It only reads the API and /proc; it never runs podman. Its
// [Registration] is its line in the command's list.
package podman

import (
	"cmp"
	"context"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/kernel"
	"github.com/veth-exporter/veth_exporter/resolver/engine"
	"golang.org/x/sys/unix"
)

// Podman's claims: which namespaces Podman's containers and pods run in,
// and its record of those that are gone. Podman records a container as
// running until something asks its runtime; a container whose conmon and
// process were killed (a crash, an OOM kill of the whole scope) stays
// "running" for good. So a running record counts only while the
// container's recorded process still runs (see podmanProcessLives);
// otherwise the container crashed, and once Podman, asked afresh, still
// says so, its record is that of an exited container.

// Runtime is Podman's name in [inventory.Owner.Runtime].
const Runtime inventory.Runtime = "podman"

// Name is the Podman resolver's name: its stage in
// [inventory.Snapshot.Steps] (veth_scrape_collector_*{collector="podman"})
// and its key in a snapshot's JSON.
const Name = "podman"

// Cgroups are the names Podman gives the cgroups of its containers and
// pods: "libpod-<id>.scope" (systemd) or /libpod_parent/libpod-<id>
// (cgroupfs) for a container, "<unit>.service/libpod-payload-<id>" with
// --cgroups=split (Quadlet's default), and a pod's
// "machine-libpod_pod_<pod ID>.slice" or /libpod_parent/<pod ID>. Its
// monitor's "libpod-conmon-<id>.scope" is no container's.
var Cgroups = inventory.CgroupNaming{
	Runtime:          Runtime,
	Prefixes:         []string{"libpod-", "libpod-payload-"},
	PodParents:       []string{"libpod_parent"},
	PodSlicePrefixes: []string{"libpod_pod_"},
}

// NetnsDirs are where rootful Podman pins its namespaces, as
// /run/netns/netns-<uuid>.
var NetnsDirs = inventory.NetnsDirs{"/run/netns"}

// podmanNetnsPrefix starts the names Podman gives its namespace mounts.
const podmanNetnsPrefix = "netns-"

// Pins are rootful Podman's namespace pins: netns-<uuid> in /run/netns,
// which `ip netns` and CRI runtimes share.
var Pins = []inventory.NetnsPin{{Dir: "/run/netns", Name: regexp.MustCompile(`^` + podmanNetnsPrefix + inventory.UUIDPattern + `$`)}}

// Step implements [inventory.Resolver].
func (pm *Resolver) Step() string { return pm.name }

// Timeout implements [inventory.Resolver].
func (pm *Resolver) Timeout() time.Duration { return pm.timeout }

// Observe implements [inventory.Resolver]: Podman's view for the snapshot, with
// each running record checked against its process.
func (pm *Resolver) Observe(ctx context.Context, p inventory.Paths) (inventory.Observation, error) {
	// A copy for this snapshot: the cached view is shared with others.
	v := *pm.View(ctx)
	v.Requests, v.name = pm.Requests(), pm.name
	c := newPodmanClaims(&v, p)
	c.confirm = func(ctx context.Context, pc *Container) (bool, error) {
		return pm.confirmCrash(ctx, p, pc, c.boot)
	}
	return c, v.Err
}

// podmanClaims is what Podman said for one snapshot.
type podmanClaims struct {
	view *View
	// running: the live containers in each namespace, by inode, a pod's
	// infra container (or the first) first.
	running map[uint64][]*Container
	// paths open the namespaces of running, by inode.
	paths map[uint64]string
	// crashed: running records whose process is gone, by ID.
	crashed map[string]bool
	// byID: every container; pods: the containers of each pod.
	byID map[string]*Container
	pods map[string][]*Container
	// boot is when the node booted, to date processes; zero if unknown.
	boot time.Time
	// confirm asks Podman afresh whether a crashed record still is one
	// (see [Podman.confirmCrash]); nil trusts the view. confirmed keeps
	// its answers for the snapshot, an error as down.
	confirm   func(context.Context, *Container) (bool, error)
	confirmed map[string]inventory.RuntimeClaim
}

func newPodmanClaims(v *View, p inventory.Paths) *podmanClaims {
	c := &podmanClaims{view: v, running: map[uint64][]*Container{}, paths: map[uint64]string{},
		crashed: map[string]bool{}, byID: map[string]*Container{}, pods: map[string][]*Container{},
		boot: bootTime(p.Procfs), confirmed: map[string]inventory.RuntimeClaim{}}
	for _, pc := range v.Containers {
		c.byID[pc.ID] = pc
		if pc.PodID != "" {
			c.pods[pc.PodID] = append(c.pods[pc.PodID], pc)
		}
		if !pc.running() || pc.joinsOther() {
			continue
		}
		if !podmanProcessLives(p.Procfs, pc, c.boot) {
			c.crashed[pc.ID] = true
			continue
		}
		dir := p.Procfs + "/" + strconv.Itoa(pc.Pid)
		inode, path := podmanNetnsOf(p, pc, dir)
		if inode == 0 {
			continue
		}
		if _, ok := c.paths[inode]; !ok || pc.IsInfra {
			c.paths[inode] = path
		}
		if pc.IsInfra {
			c.running[inode] = append([]*Container{pc}, c.running[inode]...)
		} else {
			c.running[inode] = append(c.running[inode], pc)
		}
	}
	return c
}

// podmanProcessLives reports whether the container's recorded process
// still runs. It is gone when no process has its PID; a process at that
// PID is the container's when it is in the container's cgroup, or (for
// containers run without one of their own: --cgroups=disabled or split)
// when it started no later than Podman recorded the container's start. A
// process that started later is another, the PID reused. Without the
// times to tell, a process at the PID counts as the container's: a crash
// missed keeps a veth owned, never the other way round.
func podmanProcessLives(procfs string, pc *Container, boot time.Time) bool {
	if pc.Pid <= 0 {
		return false
	}
	dir := procfs + "/" + strconv.Itoa(pc.Pid)
	ticks, ok := kernel.ProcessStartTime(dir)
	if !ok {
		return false
	}
	if cg, err := os.ReadFile(dir + "/cgroup"); err == nil && inventory.ParseCgroup(string(cg), []inventory.CgroupNaming{Cgroups}).ContainerID == pc.ID {
		return true
	}
	if boot.IsZero() || pc.StartedAt.IsZero() {
		return true
	}
	started := boot.Add(time.Duration(ticks) * time.Second / clockTicks)
	return !started.After(pc.StartedAt.Add(podmanStartSlack))
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's start time: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// podmanStartSlack absorbs the rounding of boot and start times when a
// process is dated against Podman's record of the container's start.
const podmanStartSlack = 2 * time.Second

// bootTime returns when the node booted (btime of /proc/stat), zero if it
// cannot be read.
func bootTime(procfs string) time.Time {
	b, err := os.ReadFile(procfs + "/stat")
	if err != nil {
		return time.Time{}
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "btime "); ok {
			if sec, err := strconv.ParseInt(v, 10, 64); err == nil {
				return time.Unix(sec, 0)
			}
		}
	}
	return time.Time{}
}

// podmanNetnsOf finds the namespace of a live container and a path that
// opens it: its sandbox mount, else its process's.
func podmanNetnsOf(p inventory.Paths, pc *Container, dir string) (uint64, string) {
	var st unix.Stat_t
	if pc.SandboxKey != "" {
		path := filepath.Join(p.Rootfs, pc.SandboxKey)
		if unix.Stat(path, &st) == nil {
			return st.Ino, path
		}
	}
	if unix.Stat(dir+"/ns/net", &st) == nil {
		return st.Ino, dir + "/ns/net"
	}
	return 0, ""
}

// Running implements [inventory.Observation]: the namespaces of the live containers.
func (c *podmanClaims) Running() []inventory.RunningNetns {
	running := make([]inventory.RunningNetns, 0, len(c.running))
	for inode, pcs := range c.running {
		running = append(running, inventory.RunningNetns{Inode: inode, Path: c.paths[inode], PID: pcs[0].Pid})
	}
	return running
}

// Claim implements [inventory.Observation]. A namespace a live container runs in
// is running, owned by its pod or the container. One that a crashed or
// exited container's record names (by its sandbox mount, or as the owner
// the cgroups or the history name) is exited, unless a process of that
// very container still lives in it. While Podman cannot be asked, its
// namespaces (a netns-* mount in its directory, a Podman owner now or
// last) are down.
func (c *podmanClaims) Claim(ctx context.Context, v *inventory.Veth) inventory.Claim {
	n := v.PeerNetns
	if n == nil {
		return inventory.Claim{}
	}
	if !c.view.Up {
		if c.podmanNamespace(v) {
			return inventory.Claim{State: inventory.RuntimeDown}
		}
		return inventory.Claim{}
	}
	if pcs := c.running[n.Inode]; len(pcs) > 0 {
		claim := inventory.Claim{State: inventory.RuntimeRunning, Owner: podmanOwner(pcs[0])}
		for _, pc := range pcs {
			claim.Containers = append(claim.Containers, pc.Name)
		}
		return claim
	}
	pc := c.record(v)
	if pc == nil {
		return inventory.Claim{}
	}
	if c.crashed[pc.ID] {
		if state := c.confirmCrash(ctx, pc); state != inventory.RuntimeExited {
			return inventory.Claim{State: state}
		}
	}
	return inventory.Claim{State: inventory.RuntimeExited, LastOwner: podmanOwner(pc), LastOwnerSeen: pc.FinishedAt}
}

// confirmCrash asks Podman once per snapshot whether a crashed record is
// still one: exited if so, silent if not (the container runs again, or
// was removed), down when Podman does not answer.
func (c *podmanClaims) confirmCrash(ctx context.Context, pc *Container) inventory.RuntimeClaim {
	if c.confirm == nil {
		return inventory.RuntimeExited
	}
	if state, ok := c.confirmed[pc.ID]; ok {
		return state
	}
	state := inventory.RuntimeSilent
	switch crashed, err := c.confirm(ctx, pc); {
	case err != nil:
		state = inventory.RuntimeDown
	case crashed:
		state = inventory.RuntimeExited
	}
	c.confirmed[pc.ID] = state
	return state
}

// record returns the record of the gone container whose namespace v's
// peer is in: by the sandbox mount that still pins it, or by the owner
// the cgroups or the history name (a container, or a pod with no live
// container left).
func (c *podmanClaims) record(v *inventory.Veth) *Container {
	gone := func(pc *Container) bool { return !pc.joinsOther() && (pc.stopped() || c.crashed[pc.ID]) }
	for _, pc := range c.view.Containers {
		if pc.SandboxKey != "" && gone(pc) && slices.Contains(v.PeerNetns.Mounts, pc.SandboxKey) {
			return pc
		}
	}
	for _, o := range []*inventory.Owner{v.Owner, v.LastOwner} {
		if o == nil || o.Runtime != Runtime {
			continue
		}
		// A process of the very container (or pod) in the namespace:
		// the record was listed before it was seen, and it may have
		// started again since. The process wins, whichever owner names
		// the container.
		if v.Owner != nil && v.Owner.Kind == o.Kind && v.Owner.ID == o.ID {
			continue
		}
		switch o.Kind {
		case inventory.OwnerContainer:
			if pc := c.byID[o.ID]; pc != nil && gone(pc) {
				return pc
			}
		case inventory.OwnerPod:
			members := c.pods[o.ID]
			if len(members) > 0 && !slices.ContainsFunc(members, func(pc *Container) bool { return !gone(pc) }) {
				return members[0]
			}
		}
	}
	return nil
}

// podmanNamespace reports whether v's peer namespace is Podman's to
// decide: pinned as netns-* in its directory, or owned (now or last) by
// a Podman container or pod.
func (c *podmanClaims) podmanNamespace(v *inventory.Veth) bool {
	for _, m := range v.PeerNetns.Mounts {
		if NetnsDirs.Holds(m) && strings.HasPrefix(path.Base(m), podmanNetnsPrefix) {
			return true
		}
	}
	return inventory.OwnedBy(v, Runtime)
}

// podmanOwner is the owner a Podman container makes: its pod, or itself.
func podmanOwner(pc *Container) *inventory.Owner {
	if pc.PodID != "" {
		return &inventory.Owner{Kind: inventory.OwnerPod, ID: pc.PodID, Name: pc.PodName, PodName: pc.PodName, Runtime: Runtime}
	}
	return &inventory.Owner{Kind: inventory.OwnerContainer, ID: pc.ID, Name: pc.Name, Runtime: Runtime}
}

// View implements [inventory.Observation].
func (c *podmanClaims) View() inventory.RuntimeView { return c.view }

// Answered implements [inventory.Lister]: Podman listed its containers.
func (c *podmanClaims) Answered() bool { return c.view.Up }

// Lists implements [inventory.Lister]: a container of that ID (a pod's
// infra container included) is listed, whatever its state.
func (c *podmanClaims) Lists(id string) bool { return c.byID[id] != nil }

// Help texts of Podman's families.
const (
	helpPodmanAPI = "Podman REST API requests made by the exporter."
)

// Families implements [inventory.RuntimeView]: the API requests made so far and,
// while Podman answers, the Podman networks of the masters in use
// (veth_bridge_info, as for Docker's).
func (v *View) Families(s *inventory.Snapshot) []inventory.Family {
	// A view made by hand has no name of its own.
	families := []inventory.Family{inventory.RequestsFamily(cmp.Or(v.name, Name), helpPodmanAPI, v.Requests)}
	if !v.Up {
		return families
	}
	return append(families, engine.BridgeInfo(s, v.Bridges))
}
