// Package cri is the runtime resolver of Kubernetes pod sandboxes, through
// the Container Runtime Interface of containerd, CRI-O or cri-dockerd:
// which namespace each sandbox (ready or not) uses, and the pod's name,
// namespace and UID. It only lists and inspects; it never stops or
// removes a sandbox. Each registration of it ([Registration]) is one
// instance, for one runtime's socket.
package cri

import (
	"cmp"
	"context"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"golang.org/x/sys/unix"
)

// The CRI resolver's claims: which namespaces the pod sandboxes of a
// Kubernetes runtime use, matched by namespace inode, never by a name.
// What the runtime records, and how it is asked, is in cri_client.go.

// Name is the CRI resolver's name: its stage in
// [inventory.Snapshot.Steps] (veth_scrape_collector_*{collector="cri"})
// and its key in a snapshot's JSON. Another instance, for a second
// runtime's socket, has a name of its own (see [Instance]).
const Name = "cri"

// The runtimes behind CRI endpoints, as [inventory.Owner.Runtime] names
// them.
const (
	RuntimeContainerd inventory.Runtime = "containerd"
	RuntimeCRIO       inventory.Runtime = "crio"
	// runtimeDocker is cri-dockerd's runtime, named as the Docker
	// resolver names it.
	runtimeDocker inventory.Runtime = "docker"
)

// Cgroups are the names containerd gives its containers' cgroups
// ("cri-containerd-<id>.scope" under the kubelet's systemd driver, and
// nerdctl's "nerdctl-<id>.scope"); CRIOCgroups are CRI-O's ("crio-<id>",
// with ".scope" under systemd; its monitor's "crio-conmon-<id>" is no
// container's).
var (
	Cgroups     = inventory.CgroupNaming{Runtime: RuntimeContainerd, Prefixes: []string{"cri-containerd-", "nerdctl-"}}
	CRIOCgroups = inventory.CgroupNaming{Runtime: RuntimeCRIO, Prefixes: []string{"crio-"}}
)

// NetnsDirs are where CRI runtimes pin pod namespaces: containerd's
// /var/run/netns/cni-<uuid> and CRI-O's /var/run/netns/<uuid>, as
// mountinfo shows them. Others are learned from the sandboxes' statuses.
var NetnsDirs = inventory.NetnsDirs{"/run/netns"}

// Pins are containerd's namespace pins, cni-<uuid> in /run/netns;
// CRIOPins are CRI-O's, a bare <uuid> there. The directory is shared with
// `ip netns` and Podman: the names tell whose a pin is.
var (
	Pins     = []inventory.NetnsPin{{Dir: "/run/netns", Name: regexp.MustCompile(`^cni-` + inventory.UUIDPattern + `$`)}}
	CRIOPins = []inventory.NetnsPin{{Dir: "/run/netns", Name: regexp.MustCompile(`^` + inventory.UUIDPattern + `$`)}}
)

// Step implements [inventory.Resolver].
func (c *Resolver) Step() string { return c.name }

// Timeout implements [inventory.Resolver]: what one snapshot may spend asking the
// runtime.
func (c *Resolver) Timeout() time.Duration { return c.timeout }

// Observe implements [inventory.Resolver]: the runtime's sandboxes for the snapshot
// (see [Resolver.View]) and the namespaces they use.
func (c *Resolver) Observe(ctx context.Context, p inventory.Paths) (inventory.Observation, error) {
	v := c.View(ctx)
	// Claims make no call: the count is the snapshot's.
	v.Requests, v.name = c.Requests(), c.name
	if v.NoCRI && c.quietWithoutCRI {
		return newCRIObservation(v, p), nil
	}
	return newCRIObservation(v, p), v.Err
}

// criObservation is what the CRI runtime said for one snapshot.
type criObservation struct {
	view *View
	// byInode: the sandbox whose namespace each inode is. A NOTREADY
	// sandbox whose namespace still exists is there too: the kubelet
	// will stop it, and its network is the runtime's to tear down.
	byInode map[uint64]*Sandbox
	// byID: the sandboxes not in the node's namespace, by ID.
	byID map[string]*Sandbox
	// paths open the namespaces of byInode, by inode.
	paths map[uint64]string
	// listed: every sandbox's ID.
	listed map[string]bool
}

func newCRIObservation(v *View, p inventory.Paths) *criObservation {
	o := &criObservation{view: v, byInode: map[uint64]*Sandbox{}, byID: map[string]*Sandbox{}, paths: map[uint64]string{},
		listed: make(map[string]bool, len(v.Sandboxes))}
	for _, sb := range v.Sandboxes {
		o.listed[sb.ID] = true
		if sb.HostNetwork {
			continue
		}
		o.byID[sb.ID] = sb
		inode, path := criNetnsOf(p, sb)
		if inode == 0 {
			continue
		}
		// Two sandboxes in one namespace cannot be, but a ready one is
		// the better answer.
		if old := o.byInode[inode]; old == nil || (old.State != Ready && sb.State == Ready) {
			o.byInode[inode] = sb
			o.paths[inode] = path
		}
	}
	return o
}

// criNetnsOf finds the namespace of a sandbox, and a path that opens it:
// the mount that pins it, which names it for as long as the runtime keeps
// it, else the pause process, whose PID a cached status may hold after it
// died: the process must still be in the sandbox's cgroup.
func criNetnsOf(p inventory.Paths, sb *Sandbox) (uint64, string) {
	var st unix.Stat_t
	if sb.Netns != "" {
		// A mount point the runtime unmounted stays a plain file for a
		// moment: only an nsfs inode is a namespace.
		path := filepath.Join(p.Rootfs, sb.Netns)
		var fs unix.Statfs_t
		if unix.Statfs(path, &fs) == nil && fs.Type == unix.NSFS_MAGIC && unix.Stat(path, &st) == nil {
			return st.Ino, path
		}
	}
	if sb.Pid <= 0 {
		return 0, ""
	}
	dir := p.Procfs + "/" + strconv.Itoa(sb.Pid)
	if cg, err := os.ReadFile(dir + "/cgroup"); err != nil || inventory.ParseCgroup(string(cg), []inventory.CgroupNaming{Cgroups, CRIOCgroups}).ContainerID != sb.ID {
		return 0, ""
	}
	if unix.Stat(dir+"/ns/net", &st) == nil {
		return st.Ino, dir + "/ns/net"
	}
	return 0, ""
}

// Claim implements [inventory.Observation]. A sandbox the runtime lists, ready or
// not, runs in its namespace. A namespace the runtime no longer lists is
// left to the evidence (silent): a mount alone makes it netns_empty, a
// stray process in a namespace a pod owned last makes it owner_exited.
// While the runtime cannot be asked, the namespaces in its netns
// directories and those of pods are its to decide (down).
func (o *criObservation) Claim(_ context.Context, v *inventory.Veth) inventory.Claim {
	n := v.PeerNetns
	if n == nil {
		return inventory.Claim{}
	}
	if !o.view.Up {
		if !o.view.NoCRI && o.podNamespace(v) {
			return inventory.Claim{State: inventory.RuntimeDown}
		}
		return inventory.Claim{}
	}
	sb := o.byInode[n.Inode]
	if sb == nil && v.Owner != nil && v.Owner.Kind == inventory.OwnerPod && v.Owner.ID != "" && len(n.PIDs) > 0 {
		// A status without the namespace's path or pause PID (cri-dockerd
		// gives neither): the oldest process in the namespace runs in the
		// cgroup of a listed sandbox, the pause container's.
		sb = o.byID[v.Owner.ID]
	}
	if sb == nil {
		return inventory.Claim{}
	}
	return inventory.Claim{State: inventory.RuntimeRunning, Owner: o.owner(sb)}
}

// podNamespace reports whether v's peer namespace is a CRI runtime's to
// decide: pinned in its netns directory, or owned (now or last) by a pod.
func (o *criObservation) podNamespace(v *inventory.Veth) bool {
	for _, m := range v.PeerNetns.Mounts {
		if o.view.NetnsDirs.Holds(m) {
			return true
		}
	}
	for _, ow := range []*inventory.Owner{v.Owner, v.LastOwner} {
		if ow != nil && ow.Kind == inventory.OwnerPod {
			return true
		}
	}
	return false
}

// owner is the owner a sandbox makes.
func (o *criObservation) owner(sb *Sandbox) *inventory.Owner {
	return &inventory.Owner{Kind: inventory.OwnerPod, ID: sb.ID, Name: sb.Name, PodNamespace: sb.Namespace, PodName: sb.Name, PodUID: sb.UID, Runtime: o.view.Runtime}
}

// Running implements [inventory.Observation]: the namespaces of the ready
// sandboxes. A NOTREADY one is claimed running too (see Claim), but its
// pause process is gone: its namespace's processes are counted, as the
// evidence of a pod the kubelet is about to stop.
func (o *criObservation) Running() []inventory.RunningNetns {
	if !o.view.Up {
		return nil
	}
	running := make([]inventory.RunningNetns, 0, len(o.byInode))
	for inode, sb := range o.byInode {
		if sb.State == Ready {
			running = append(running, inventory.RunningNetns{Inode: inode, Path: o.paths[inode], PID: sb.Pid})
		}
	}
	return running
}

// View implements [inventory.Observation]: the snapshot's key of the
// resolver and its metric families.
func (o *criObservation) View() inventory.RuntimeView { return o.view }

// Answered implements [inventory.Lister]: the runtime listed its sandboxes.
func (o *criObservation) Answered() bool { return o.view.Up && !o.view.NoCRI }

// Lists implements [inventory.Lister]: a sandbox of that ID is listed,
// ready or not, host network or not.
func (o *criObservation) Lists(id string) bool {
	return o.listed[id]
}

// Help texts of the CRI resolver's families; the names and labels are a
// contract with dashboards and alerts.
const (
	helpCRIAPI  = "Kubernetes CRI API calls made by the exporter."
	helpPodInfo = "Kubernetes pod that owns or last owned a veth, as its CRI runtime lists it (state gone: listed no more), for joins on pod_uid or sandbox_id."
)

// Families implements [inventory.RuntimeView]: the calls made so far and, while the
// runtime answers, every pod that owns or last owned a veth. A runtime
// that is down gives no pod facts at all rather than stale ones.
func (v *View) Families(s *inventory.Snapshot) []inventory.Family {
	// A view made by hand has no name of its own.
	families := []inventory.Family{inventory.RequestsFamily(cmp.Or(v.name, Name), helpCRIAPI, v.Requests)}
	if !v.Up {
		return families
	}
	byID := make(map[string]*Sandbox, len(v.Sandboxes))
	for _, sb := range v.Sandboxes {
		byID[sb.ID] = sb
	}
	type pod struct{ namespace, name, uid, state string }
	pods := map[string]pod{}
	for i := range s.Veths {
		veth := &s.Veths[i]
		for _, o := range []*inventory.Owner{veth.Owner, veth.LastOwner} {
			if o == nil || o.Kind != inventory.OwnerPod || o.ID == "" {
				continue
			}
			if sb := byID[o.ID]; sb != nil {
				pods[o.ID] = pod{sb.Namespace, sb.Name, sb.UID, sb.State}
			} else if _, seen := pods[o.ID]; !seen && o.PodName != "" && (o.Runtime == v.Runtime || o.Runtime == "") {
				// The runtime named it once and lists it no more.
				pods[o.ID] = pod{o.PodNamespace, o.PodName, o.PodUID, Gone}
			}
		}
	}
	info := inventory.Family{Name: "veth_pod_info", Help: helpPodInfo}
	for _, id := range slices.Sorted(maps.Keys(pods)) {
		p := pods[id]
		info.Series = append(info.Series, inventory.Series{Value: 1, Labels: []inventory.Label{
			{Name: "pod_name", Value: p.name}, {Name: "pod_namespace", Value: p.namespace}, {Name: "pod_uid", Value: p.uid},
			{Name: "runtime", Value: string(v.Runtime)}, {Name: "sandbox_id", Value: id}, {Name: "state", Value: p.state}}})
	}
	// As client_golang orders series: by the values of the sorted labels.
	slices.SortStableFunc(info.Series, func(a, b inventory.Series) int {
		for i := range a.Labels {
			if c := strings.Compare(a.Labels[i].Value, b.Labels[i].Value); c != 0 {
				return c
			}
		}
		return 0
	})
	return append(families, info)
}
