// Package inventory builds snapshots of the host-side veth interfaces of this
// node: which veths exist, which network namespace holds each peer, who owns
// that namespace, and whether the veth is a leftover.
//
// A snapshot is built from one netlink link dump, one read of mountinfo and
// one pass over /proc, which it skips when the container runtimes account
// for every namespace; it never forks, never enters a namespace and never
// changes the system. The only thing it writes is the exporter's own state
// file (when it last observed; per veth its peer, first-seen and
// orphaned-since times and last known owner; veths gone within the hour).
package inventory

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Verdict is the exporter's judgement of one veth.
type Verdict string

// The verdicts. A veth is orphaned only on positive evidence; any doubt is
// unknown, and unknown is never remediated.
const (
	Owned    Verdict = "owned"
	Orphaned Verdict = "orphaned"
	Unknown  Verdict = "unknown"
)

// Reason explains a [Verdict].
type Reason string

// Reasons for [Owned].
const (
	// ReasonContainer: a process in the peer namespace runs in a container's cgroup.
	ReasonContainer Reason = "container"
	// ReasonPod: a process in the peer namespace runs in a Kubernetes pod's cgroup.
	ReasonPod Reason = "pod"
	// ReasonInfrastructure: the veth is a known infrastructure pair such as
	// cilium_host/cilium_net, which lives on the host by design.
	ReasonInfrastructure Reason = "infrastructure"
)

// Reasons for [Orphaned].
const (
	// ReasonNetnsEmpty: no process is left in the peer namespace; only a
	// mount (or another handle) keeps it alive.
	ReasonNetnsEmpty Reason = "netns_empty"
	// ReasonOwnerExited: the container or pod that owned the namespace is gone,
	// yet other processes (a stray nsenter, a zombie) still live in it.
	ReasonOwnerExited Reason = "owner_exited"
	// ReasonPeerOnHost: both ends of the pair are in the host namespace and
	// the pair is not a known infrastructure pair.
	ReasonPeerOnHost Reason = "peer_on_host"
)

// OrphanReasons are the reasons an [Orphaned] verdict can have.
var OrphanReasons = []Reason{ReasonNetnsEmpty, ReasonOwnerExited, ReasonPeerOnHost}

// Reasons for [Unknown].
const (
	// ReasonNetnsNotFound: the peer's namespace is held by something the
	// exporter cannot see (an open file descriptor, a process it may not
	// read); it is neither proved alive nor proved empty.
	ReasonNetnsNotFound Reason = "netns_not_found"
	// ReasonNoKnownOwner: processes live in the peer namespace but none of
	// them belongs to a container or pod the exporter knows.
	ReasonNoKnownOwner Reason = "no_known_owner"
	// ReasonPartialView: the exporter could not read every process's
	// namespace (it is not root), so a namespace that looks empty or
	// ownerless may not be.
	ReasonPartialView Reason = "partial_view"
	// ReasonSettling: the veth looks orphaned, but has for less than the
	// settle time; runtimes build and tear down networks in steps that
	// each look like a leftover for a moment.
	ReasonSettling Reason = "settling"
	// ReasonOtherLinks: no process is in the peer namespace, but it holds
	// interfaces other than loopback and the peers of host veths (see
	// [Namespace.OtherLinks]): it may route for live containers.
	ReasonOtherLinks Reason = "other_links"
	// ReasonResolverDown: the namespace belongs to a runtime (Docker) that
	// cannot be asked: a namespace a crashed daemon left looks empty until
	// it restarts and cleans up.
	ReasonResolverDown Reason = "resolver_down"
	// ReasonResolverOff: the namespace is pinned where a runtime pins its
	// namespaces (see [NetnsPin]) and that runtime's resolver is off (no
	// socket at its address at start-up, or turned off by flag): only the
	// runtime can tell a sandbox it will clean up or reuse from a leftover.
	ReasonResolverOff Reason = "resolver_off"
)

// OwnerKind says what kind of thing owns a veth's peer namespace.
type OwnerKind string

// The owner kinds.
const (
	OwnerContainer OwnerKind = "container"
	OwnerPod       OwnerKind = "pod"
	OwnerProcess   OwnerKind = "process"
)

// Owner is who a veth's peer namespace belongs to.
type Owner struct {
	Kind OwnerKind `json:"kind"`
	// ID is the container ID for containers and pods (the pod's first
	// container, normally its sandbox), the PID for a process.
	ID           string `json:"id"`
	Name         string `json:"name,omitempty"`
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	PodUID       string `json:"pod_uid,omitempty"`
	// Runtime is the container runtime the cgroup path or a runtime
	// resolver names.
	Runtime Runtime `json:"runtime,omitempty"`
}

// Namespace is one network namespace other than the host's.
type Namespace struct {
	// Inode identifies the namespace on this host (the number in net:[…]).
	Inode uint64 `json:"inode"`
	// NSID is the id the host namespace knows it by, or -1 when none is
	// assigned (a namespace that holds no peer of a host veth).
	NSID int `json:"nsid"`
	// PIDs are the processes in the namespace, as seen in --path.procfs;
	// empty when they were not counted (Uncounted).
	PIDs []int `json:"pids"`
	// Uncounted: the processes in the namespace were not counted. A
	// runtime resolver runs a container or a pod sandbox in it, which
	// settles the verdicts of its veths without a pass over /proc (see
	// [Observation.Running]); a count not taken is not zero.
	Uncounted bool `json:"uncounted,omitempty"`
	// Mounts are the nsfs bind mounts that hold the namespace, such as
	// /run/netns/NAME or /run/docker/netns/ID.
	Mounts []string `json:"mounts"`
	// Owner is the container or pod that the namespace's processes belong
	// to, or a plain process; nil when no process is in it.
	Owner *Owner `json:"owner,omitempty"`
	// Guest: the owner joined a namespace that was a plain process's
	// before: that process, in no container, started before every
	// process of the owner (podman run --network ns:PATH, a runtime run
	// under `ip netns exec`). The owner is not remembered as the
	// namespace's last owner: when it leaves, the namespace is the plain
	// process's again, not a leftover of the container.
	Guest bool `json:"owner_is_guest,omitempty"`
	// Containers are the names of the running containers a runtime says
	// share the namespace, its owner (the sandbox) first.
	Containers []string `json:"containers,omitempty"`
	// LastOwner is, for a leaked namespace, the last container or pod
	// the history saw own it (through a veth into it, within the hour
	// after that veth went), and LastOwnerSeen when; nil when unknown.
	LastOwner     *Owner    `json:"last_owner,omitempty"`
	LastOwnerSeen time.Time `json:"last_owner_seen,omitzero"`
	// UnaskedRuntime names, for a leaked namespace pinned where a runtime
	// whose resolver is off pins its namespaces, that runtime and why its
	// resolver is off: only it can say whether the namespace is its.
	UnaskedRuntime string `json:"unasked_runtime,omitempty"`
	// LeakedSince is, for a leaked namespace, since when the history has
	// seen it leaked, held by the same mounts; zero when it does not know
	// (a read-only history that never recorded it).
	LeakedSince time.Time `json:"leaked_since,omitzero"`
	// OtherLinks are the interfaces of a namespace with no process in it
	// other than loopback and the peers of host veths: a namespace that
	// routes for others (a veth to a live container, a tunnel) is in use
	// without a process. "?" when its links could not be listed.
	OtherLinks []string `json:"other_links,omitempty"`
}

// Empty reports whether no process is in the namespace: the processes
// were counted, and none was found.
func (n *Namespace) Empty() bool {
	return !n.Uncounted && len(n.PIDs) == 0
}

// Veth is one host-side veth interface and everything known about it.
type Veth struct {
	Name      string `json:"device"`
	Index     int    `json:"ifindex"`
	Master    string `json:"master"`
	OperState string `json:"operstate"`
	// PeerIndex is the ifindex of the peer IN THE PEER'S NAMESPACE; it is a
	// host ifindex only when PeerOnHost.
	PeerIndex int `json:"peer_ifindex"`
	// PeerNetNSID is the nsid of the peer's namespace as the host knows
	// it; -1 when the peer is on the host, or when the kernel reports no
	// id (a namespace being destroyed).
	PeerNetNSID int `json:"peer_netnsid"`
	// PeerOnHost: both ends are in the host namespace, verified as the
	// kernel's own veth code would: the host link at PeerIndex is a veth
	// whose peer index points back at this one.
	PeerOnHost bool `json:"peer_on_host"`
	// PeerName is the name of the peer when it is in the host namespace.
	PeerName string `json:"peer_device,omitempty"`
	// PeerNetns is the peer's namespace; nil when the peer is on the host or
	// its namespace could not be found.
	PeerNetns *Namespace `json:"peer_netns,omitempty"`

	Owner     *Owner  `json:"owner,omitempty"`
	LastOwner *Owner  `json:"last_owner,omitempty"`
	Verdict   Verdict `json:"verdict"`
	Reason    Reason  `json:"reason"`

	FirstSeen time.Time `json:"first_seen,omitzero"`
	// OrphanedSince is when the exporter first saw the veth orphaned,
	// without interruption since (the orphan clock). It equals the
	// snapshot's Taken exactly when this snapshot is the first to see the
	// veth orphaned, or restarted its clock after a gap in the
	// observations longer than the state's MaxGap; a time before Taken
	// was recorded by an earlier snapshot. A read-only state lends only
	// recorded times: zero for a veth its file never saw orphaned. It is
	// set while the orphan verdict is still settling.
	OrphanedSince time.Time `json:"orphaned_since,omitzero"`
	// LastOwnerSeen is when LastOwner was last seen owning the namespace.
	LastOwnerSeen time.Time `json:"last_owner_seen,omitzero"`
	// CNIAttachment is the CNI attachment that made the veth, when a
	// libcni cache entry is proved to be about it: what a removal
	// finishes the CNI DEL of once the namespace is gone.
	CNIAttachment *CNIAttachment `json:"cni_attachment,omitempty"`
}

// CNIAttachment identifies a CNI attachment, as libcni caches it.
type CNIAttachment struct {
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
}

// Snapshot is the inventory of one moment.
type Snapshot struct {
	Taken time.Time `json:"taken"`
	Veths []Veth    `json:"veths"`
	// Steps reports each stage of the build (links, netns, cgroup, state):
	// its duration and its error, for the scrape_collector metrics.
	Steps []Step `json:"steps"`
	// threadsRead says the threads of every process were read, not only
	// each process's own namespace, for tests.
	threadsRead bool
	// Warnings say what the snapshot could not see, e.g. processes whose
	// namespace is unreadable without root. A snapshot with warnings is
	// still correct in what it says; veths it cannot decide are unknown.
	Warnings []string `json:"warnings,omitempty"`
	// LeakedNetns are namespaces held only by a mount: no process in
	// them and no veth of the host leading into them. They are the same
	// failure as an orphaned veth, one step earlier or later. Nil on a
	// partial view, where "no process" is not proved.
	LeakedNetns []*Namespace `json:"leaked_netns"`
	// PartialView: the snapshot could not see every process that can
	// hold a namespace (not root, processes whose namespace is
	// unreadable, not the host's PID namespace); Warnings say why. No
	// veth whose peer is in another namespace is orphaned on it.
	PartialView bool `json:"partial_view"`
	// Resolvers are the registered runtime resolvers, on or off, and why.
	Resolvers []RuntimeSetup `json:"resolvers,omitempty"`
	// HistoryObserved is when the history behind this snapshot's
	// first-seen and orphaned-since times was last refreshed before this
	// snapshot: with a writable state the previous observation, with a
	// read-only one the state file's last_observed; zero when there is
	// none (no state file, one from another boot, or one that never
	// recorded it). Orphan times from a history older than the state's
	// MaxGap prove nothing about the time in between.
	HistoryObserved time.Time `json:"history_observed,omitzero"`
	// HistoryUnreadable says why the state file could not be read when
	// it exists and could not (corrupt, another version, unreadable):
	// then there is no history, and it says so rather than "none yet".
	HistoryUnreadable string `json:"history_unreadable,omitempty"`
	// Gone are the devices the history recorded that are absent from
	// this snapshot's dump: with a writable state those that disappeared
	// within the last hour, with a read-only one every device of the state
	// file not in the dump. They tell a device deleted since it was
	// recorded from one never heard of (a typo).
	Gone []GoneVeth `json:"gone,omitempty"`
	// Views are the records of the runtime resolvers and annotators that
	// took part in the snapshot, in the order they were asked, each under
	// its name: the JSON of inspect shows each under its name as a key of
	// the snapshot ("docker", "cri", …), and readers such as the collector
	// ask each for its own metric families.
	Views []NamedView `json:"-"`
}

// NamedView is a resolver's or an annotator's record in a [Snapshot],
// under the resolver's name.
type NamedView struct {
	Name string
	View RuntimeView
}

// View returns the record of the resolver or annotator name, nil when
// it took no part in the snapshot.
func (s *Snapshot) View(name string) RuntimeView {
	for _, v := range s.Views {
		if v.Name == name {
			return v.View
		}
	}
	return nil
}

// AgentDown reports whether a node agent that cleans up its own leftovers
// (see [NodeAgent]) is down, and names it.
func (s *Snapshot) AgentDown() (agent string, down bool) {
	for _, v := range s.Views {
		if a, ok := v.View.(NodeAgent); ok {
			if agent, down := a.AgentDown(); down {
				return agent, true
			}
		}
	}
	return "", false
}

// MarshalJSON writes the snapshot with each view under its name.
func (s *Snapshot) MarshalJSON() ([]byte, error) {
	type plain Snapshot
	b, err := json.Marshal((*plain)(s))
	if err != nil || len(s.Views) == 0 {
		return b, err
	}
	var out bytes.Buffer
	out.Write(b[:len(b)-1])
	for _, v := range s.Views {
		key, err := json.Marshal(v.Name)
		if err != nil {
			return nil, err
		}
		view, err := json.Marshal(v.View)
		if err != nil {
			return nil, fmt.Errorf("view %s: %w", v.Name, err)
		}
		out.WriteByte(',')
		out.Write(key)
		out.WriteByte(':')
		out.Write(view)
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

// GoneVeth is a recorded veth that no longer exists.
type GoneVeth struct {
	Device string `json:"device"`
	Index  int    `json:"ifindex"`
	// Since is when the exporter first missed it; zero when a read-only
	// state file still held it as present (it went after the file's
	// last_observed).
	Since time.Time `json:"since,omitzero"`
}

// Step is one stage of building a snapshot.
type Step struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
	Err      error         `json:"-"`
	// Error is Err's message, for JSON readers.
	Error string `json:"error,omitempty"`
}

// Veth returns the veth with the given name, or nil.
func (s *Snapshot) Veth(name string) *Veth {
	for i := range s.Veths {
		if s.Veths[i].Name == name {
			return &s.Veths[i]
		}
	}
	return nil
}
