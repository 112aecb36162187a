package inventory

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/kernel"
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

// StepPodman is the Podman resolver's stage in [Snapshot.Steps]:
// veth_scrape_collector_*{collector="podman"}.
const StepPodman = string(RuntimePodman)

// PodmanNetnsDirs are where rootful Podman pins its namespaces, as
// /run/netns/netns-<uuid>.
var PodmanNetnsDirs = NetnsDirs{"/run/netns"}

// podmanNetnsPrefix starts the names Podman gives its namespace mounts.
const podmanNetnsPrefix = "netns-"

// Step implements [Resolver].
func (pm *Podman) Step() string { return StepPodman }

// Timeout implements [Resolver].
func (pm *Podman) Timeout() time.Duration { return pm.timeout }

// Observe implements [Resolver]: Podman's view for the snapshot, with
// each running record checked against its process.
func (pm *Podman) Observe(ctx context.Context, p Paths) (Observation, error) {
	v := pm.View(ctx)
	v.Requests = pm.Requests()
	c := newPodmanClaims(v, p)
	c.confirm = func(ctx context.Context, pc *PodmanContainer) (bool, error) {
		return pm.confirmCrash(ctx, p, pc, c.boot)
	}
	return c, v.Err
}

// podmanClaims is what Podman said for one snapshot.
type podmanClaims struct {
	view *PodmanView
	// running: the live containers in each namespace, by inode, a pod's
	// infra container (or the first) first.
	running map[uint64][]*PodmanContainer
	// paths open the namespaces of running, by inode.
	paths map[uint64]string
	// crashed: running records whose process is gone, by ID.
	crashed map[string]bool
	// byID: every container; pods: the containers of each pod.
	byID map[string]*PodmanContainer
	pods map[string][]*PodmanContainer
	// boot is when the node booted, to date processes; zero if unknown.
	boot time.Time
	// confirm asks Podman afresh whether a crashed record still is one
	// (see [Podman.confirmCrash]); nil trusts the view. confirmed keeps
	// its answers for the snapshot, an error as down.
	confirm   func(context.Context, *PodmanContainer) (bool, error)
	confirmed map[string]RuntimeClaim
}

func newPodmanClaims(v *PodmanView, p Paths) *podmanClaims {
	c := &podmanClaims{view: v, running: map[uint64][]*PodmanContainer{}, paths: map[uint64]string{},
		crashed: map[string]bool{}, byID: map[string]*PodmanContainer{}, pods: map[string][]*PodmanContainer{},
		boot: bootTime(p.Procfs), confirmed: map[string]RuntimeClaim{}}
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
			c.running[inode] = append([]*PodmanContainer{pc}, c.running[inode]...)
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
func podmanProcessLives(procfs string, pc *PodmanContainer, boot time.Time) bool {
	if pc.Pid <= 0 {
		return false
	}
	dir := procfs + "/" + strconv.Itoa(pc.Pid)
	ticks, ok := kernel.ProcessStartTime(dir)
	if !ok {
		return false
	}
	if cg, err := os.ReadFile(dir + "/cgroup"); err == nil && parseCgroup(string(cg)).ContainerID == pc.ID {
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
func podmanNetnsOf(p Paths, pc *PodmanContainer, dir string) (uint64, string) {
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

// Running implements [Observation]: the namespaces of the live containers.
func (c *podmanClaims) Running() []RunningNetns {
	running := make([]RunningNetns, 0, len(c.running))
	for inode, pcs := range c.running {
		running = append(running, RunningNetns{Inode: inode, Path: c.paths[inode], PID: pcs[0].Pid})
	}
	return running
}

// Claim implements [Observation]. A namespace a live container runs in
// is running, owned by its pod or the container. One that a crashed or
// exited container's record names (by its sandbox mount, or as the owner
// the cgroups or the history name) is exited, unless a process of that
// very container still lives in it. While Podman cannot be asked, its
// namespaces (a netns-* mount in its directory, a Podman owner now or
// last) are down.
func (c *podmanClaims) Claim(ctx context.Context, v *Veth) Claim {
	n := v.PeerNetns
	if n == nil {
		return Claim{}
	}
	if !c.view.Up {
		if c.podmanNamespace(v) {
			return Claim{State: RuntimeDown}
		}
		return Claim{}
	}
	if pcs := c.running[n.Inode]; len(pcs) > 0 {
		claim := Claim{State: RuntimeRunning, Owner: podmanOwner(pcs[0])}
		for _, pc := range pcs {
			claim.Containers = append(claim.Containers, pc.Name)
		}
		return claim
	}
	pc := c.record(v)
	if pc == nil {
		return Claim{}
	}
	if c.crashed[pc.ID] {
		if state := c.confirmCrash(ctx, pc); state != RuntimeExited {
			return Claim{State: state}
		}
	}
	return Claim{State: RuntimeExited, LastOwner: podmanOwner(pc), LastOwnerSeen: pc.FinishedAt}
}

// confirmCrash asks Podman once per snapshot whether a crashed record is
// still one: exited if so, silent if not (the container runs again, or
// was removed), down when Podman does not answer.
func (c *podmanClaims) confirmCrash(ctx context.Context, pc *PodmanContainer) RuntimeClaim {
	if c.confirm == nil {
		return RuntimeExited
	}
	if state, ok := c.confirmed[pc.ID]; ok {
		return state
	}
	state := RuntimeSilent
	switch crashed, err := c.confirm(ctx, pc); {
	case err != nil:
		state = RuntimeDown
	case crashed:
		state = RuntimeExited
	}
	c.confirmed[pc.ID] = state
	return state
}

// record returns the record of the gone container whose namespace v's
// peer is in: by the sandbox mount that still pins it, or by the owner
// the cgroups or the history name (a container, or a pod with no live
// container left).
func (c *podmanClaims) record(v *Veth) *PodmanContainer {
	gone := func(pc *PodmanContainer) bool { return !pc.joinsOther() && (pc.stopped() || c.crashed[pc.ID]) }
	for _, pc := range c.view.Containers {
		if pc.SandboxKey != "" && gone(pc) && slices.Contains(v.PeerNetns.Mounts, pc.SandboxKey) {
			return pc
		}
	}
	for _, o := range []*Owner{v.Owner, v.LastOwner} {
		if o == nil || o.Runtime != RuntimePodman {
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
		case OwnerContainer:
			if pc := c.byID[o.ID]; pc != nil && gone(pc) {
				return pc
			}
		case OwnerPod:
			members := c.pods[o.ID]
			if len(members) > 0 && !slices.ContainsFunc(members, func(pc *PodmanContainer) bool { return !gone(pc) }) {
				return members[0]
			}
		}
	}
	return nil
}

// podmanNamespace reports whether v's peer namespace is Podman's to
// decide: pinned as netns-* in its directory, or owned (now or last) by
// a Podman container or pod.
func (c *podmanClaims) podmanNamespace(v *Veth) bool {
	for _, m := range v.PeerNetns.Mounts {
		if PodmanNetnsDirs.Holds(m) && strings.HasPrefix(path.Base(m), podmanNetnsPrefix) {
			return true
		}
	}
	return ownedBy(v, RuntimePodman)
}

// podmanOwner is the owner a Podman container makes: its pod, or itself.
func podmanOwner(pc *PodmanContainer) *Owner {
	if pc.PodID != "" {
		return &Owner{Kind: OwnerPod, ID: pc.PodID, Name: pc.PodName, PodName: pc.PodName, Runtime: RuntimePodman}
	}
	return &Owner{Kind: OwnerContainer, ID: pc.ID, Name: pc.Name, Runtime: RuntimePodman}
}

// Record implements [Observation].
func (c *podmanClaims) Record(s *Snapshot) { s.Podman = c.view }

// Help texts of Podman's families.
const (
	helpPodmanAPI = "Podman REST API requests made by the exporter."
)

// Families implements [RuntimeView]: the API requests made so far and,
// while Podman answers, the Podman networks of the masters in use
// (veth_bridge_info, as for Docker's).
func (v *PodmanView) Families(s *Snapshot) []Family {
	families := []Family{{Name: "veth_podman_api_requests_total", Help: helpPodmanAPI, Counter: true,
		Series: []Series{{Value: float64(v.Requests)}}}}
	if !v.Up {
		return families
	}
	return append(families, bridgeInfo(s, v.Bridges))
}
