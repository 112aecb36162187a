package inventory

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The CRI resolver's claims: which namespaces the pod sandboxes of a
// Kubernetes runtime use, matched by namespace inode, never by a name.
// What the runtime records, and how it is asked, is in cri_client.go.

// StepCRI is the CRI resolver's stage in [Snapshot.Steps]:
// veth_scrape_collector_*{collector="cri"}.
const StepCRI = "cri"

// CRINetnsDirs are where CRI runtimes pin pod namespaces: containerd's
// /var/run/netns/cni-<uuid> and CRI-O's /var/run/netns/<uuid>, as
// mountinfo shows them. Others are learned from the sandboxes' statuses.
var CRINetnsDirs = NetnsDirs{"/run/netns"}

// Step implements [Resolver].
func (c *CRI) Step() string { return StepCRI }

// Timeout implements [Resolver]: what one snapshot may spend asking the
// runtime.
func (c *CRI) Timeout() time.Duration { return c.timeout }

// Observe implements [Resolver]: the runtime's sandboxes for the snapshot
// (see [CRI.View]) and the namespaces they use.
func (c *CRI) Observe(ctx context.Context, p Paths) (Observation, error) {
	v := c.View(ctx)
	// Claims make no call: the count is the snapshot's.
	v.Requests = c.Requests()
	if v.NoCRI && c.quietWithoutCRI {
		return newCRIObservation(v, p), nil
	}
	return newCRIObservation(v, p), v.Err
}

// criObservation is what the CRI runtime said for one snapshot.
type criObservation struct {
	view *CRIView
	// byInode: the sandbox whose namespace each inode is. A NOTREADY
	// sandbox whose namespace still exists is there too: the kubelet
	// will stop it, and its network is the runtime's to tear down.
	byInode map[uint64]*CRISandbox
	// byID: the sandboxes not in the node's namespace, by ID.
	byID map[string]*CRISandbox
	// paths open the namespaces of byInode, by inode.
	paths map[uint64]string
}

func newCRIObservation(v *CRIView, p Paths) *criObservation {
	o := &criObservation{view: v, byInode: map[uint64]*CRISandbox{}, byID: map[string]*CRISandbox{}, paths: map[uint64]string{}}
	for _, sb := range v.Sandboxes {
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
		if old := o.byInode[inode]; old == nil || (old.State != CRIReady && sb.State == CRIReady) {
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
func criNetnsOf(p Paths, sb *CRISandbox) (uint64, string) {
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
	if cg, err := os.ReadFile(dir + "/cgroup"); err != nil || parseCgroup(string(cg)).ContainerID != sb.ID {
		return 0, ""
	}
	if unix.Stat(dir+"/ns/net", &st) == nil {
		return st.Ino, dir + "/ns/net"
	}
	return 0, ""
}

// Claim implements [Observation]. A sandbox the runtime lists, ready or
// not, runs in its namespace. A namespace the runtime no longer lists is
// left to the evidence (silent): a mount alone makes it netns_empty, a
// stray process in a namespace a pod owned last makes it owner_exited.
// While the runtime cannot be asked, the namespaces in its netns
// directories and those of pods are its to decide (down).
func (o *criObservation) Claim(_ context.Context, v *Veth) Claim {
	n := v.PeerNetns
	if n == nil {
		return Claim{}
	}
	if !o.view.Up {
		if !o.view.NoCRI && o.podNamespace(v) {
			return Claim{State: RuntimeDown}
		}
		return Claim{}
	}
	sb := o.byInode[n.Inode]
	if sb == nil && v.Owner != nil && v.Owner.Kind == OwnerPod && v.Owner.ID != "" && len(n.PIDs) > 0 {
		// A status without the namespace's path or pause PID (cri-dockerd
		// gives neither): the oldest process in the namespace runs in the
		// cgroup of a listed sandbox, the pause container's.
		sb = o.byID[v.Owner.ID]
	}
	if sb == nil {
		return Claim{}
	}
	return Claim{State: RuntimeRunning, Owner: o.owner(sb)}
}

// podNamespace reports whether v's peer namespace is a CRI runtime's to
// decide: pinned in its netns directory, or owned (now or last) by a pod.
func (o *criObservation) podNamespace(v *Veth) bool {
	for _, m := range v.PeerNetns.Mounts {
		if o.view.NetnsDirs.Holds(m) {
			return true
		}
	}
	for _, ow := range []*Owner{v.Owner, v.LastOwner} {
		if ow != nil && ow.Kind == OwnerPod {
			return true
		}
	}
	return false
}

// owner is the owner a sandbox makes.
func (o *criObservation) owner(sb *CRISandbox) *Owner {
	return &Owner{Kind: OwnerPod, ID: sb.ID, Name: sb.Name, PodNamespace: sb.Namespace, PodName: sb.Name, PodUID: sb.UID, Runtime: o.view.Runtime}
}

// Running implements [Observation]: the namespaces of the ready
// sandboxes. A NOTREADY one is claimed running too (see Claim), but its
// pause process is gone: its namespace's processes are counted, as the
// evidence of a pod the kubelet is about to stop.
func (o *criObservation) Running() []RunningNetns {
	if !o.view.Up {
		return nil
	}
	running := make([]RunningNetns, 0, len(o.byInode))
	for inode, sb := range o.byInode {
		if sb.State == CRIReady {
			running = append(running, RunningNetns{Inode: inode, Path: o.paths[inode], PID: sb.Pid})
		}
	}
	return running
}

// Record implements [Observation]: the snapshot's cri key and the CRI
// resolver's metric families.
func (o *criObservation) Record(s *Snapshot) {
	s.CRI = o.view
}

// Help texts of the CRI resolver's families; the names and labels are a
// contract with dashboards and alerts.
const (
	helpCRIAPI  = "Kubernetes CRI API calls made by the exporter."
	helpPodInfo = "Kubernetes pod that owns or last owned a veth, as its CRI runtime lists it (state gone: listed no more), for joins on pod_uid or sandbox_id."
)

// Families implements [RuntimeView]: the calls made so far and, while the
// runtime answers, every pod that owns or last owned a veth. A runtime
// that is down gives no pod facts at all rather than stale ones.
func (v *CRIView) Families(s *Snapshot) []Family {
	families := []Family{{Name: "veth_cri_api_requests_total", Help: helpCRIAPI, Counter: true,
		Series: []Series{{Value: float64(v.Requests)}}}}
	if !v.Up {
		return families
	}
	byID := make(map[string]*CRISandbox, len(v.Sandboxes))
	for _, sb := range v.Sandboxes {
		byID[sb.ID] = sb
	}
	type pod struct{ namespace, name, uid, state string }
	pods := map[string]pod{}
	for i := range s.Veths {
		veth := &s.Veths[i]
		for _, o := range []*Owner{veth.Owner, veth.LastOwner} {
			if o == nil || o.Kind != OwnerPod || o.ID == "" {
				continue
			}
			if sb := byID[o.ID]; sb != nil {
				pods[o.ID] = pod{sb.Namespace, sb.Name, sb.UID, sb.State}
			} else if _, seen := pods[o.ID]; !seen && o.PodName != "" && (o.Runtime == v.Runtime || o.Runtime == "") {
				// The runtime named it once and lists it no more.
				pods[o.ID] = pod{o.PodNamespace, o.PodName, o.PodUID, CRIGone}
			}
		}
	}
	info := Family{Name: "veth_pod_info", Help: helpPodInfo}
	for _, id := range slices.Sorted(maps.Keys(pods)) {
		p := pods[id]
		info.Series = append(info.Series, Series{Value: 1, Labels: []Label{
			{"pod_name", p.name}, {"pod_namespace", p.namespace}, {"pod_uid", p.uid},
			{"runtime", string(v.Runtime)}, {"sandbox_id", id}, {"state", p.state}}})
	}
	// As client_golang orders series: by the values of the sorted labels.
	slices.SortStableFunc(info.Series, func(a, b Series) int {
		for i := range a.Labels {
			if c := strings.Compare(a.Labels[i].Value, b.Labels[i].Value); c != 0 {
				return c
			}
		}
		return 0
	})
	return append(families, info)
}
