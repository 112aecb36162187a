package inventory

import (
	"regexp"
	"slices"
	"strings"
)

// CgroupOwner is what a process's cgroup path says about the container it
// runs in. It needs no runtime API: the runtimes name their cgroups after
// the container ID (see [CgroupNaming]), and the kubelet names pod cgroups
// after the pod UID.
type CgroupOwner struct {
	ContainerID string
	// Runtime is the runtime whose naming the container's cgroup has; ""
	// for a container the kubelet's cgroupfs driver names without it.
	Runtime Runtime
	PodUID  string
	// Pod is the ID of a pod that its runtime names a cgroup after
	// (Podman's pods, which have no Kubernetes UID). It is set only when
	// a container of that same runtime runs in the pod's cgroup: a pod's
	// monitor (conmon) or an empty pod is no process of its containers.
	Pod string
}

// CgroupNaming is how a container runtime names the cgroups of its
// containers, and of its pods where it has pods of its own.
type CgroupNaming struct {
	Runtime Runtime
	// Prefixes name a container's cgroup "<prefix><64 hex>", with
	// ".scope" under systemd ("docker-<id>.scope", "crio-<id>"). A
	// runtime's monitor cgroups ("crio-conmon-<id>") do not match: the
	// rest of the name is not an ID.
	Prefixes []string
	// Parents: a cgroup "<64 hex>" right below a cgroup of one of these
	// names is a container's (Docker's cgroupfs driver: /docker/<id>).
	Parents []string
	// PodParents: a cgroup "<64 hex>" right below a cgroup of one of
	// these names is a pod's, named by its ID (Podman's cgroupfs manager:
	// /libpod_parent/<pod ID>).
	PodParents []string
	// PodSlicePrefixes: a systemd slice "[…-]<prefix><64 hex>.slice" is a
	// pod's (Podman's systemd manager: machine-libpod_pod_<pod ID>.slice).
	PodSlicePrefixes []string
}

var (
	containerIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// podUIDPattern matches the kubelet's pod cgroup: "pod<uid>" with the
	// cgroupfs driver, "kubepods-<qos>-pod<uid with _>.slice" with systemd
	// (each slice name repeats its parents', so a kubelet with a cgroup
	// root such as kind's /kubelet makes "kubelet-kubepods-<qos>-pod….slice").
	// Static pods have a 32-hex UID without dashes.
	podUIDPattern = regexp.MustCompile(`(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?$`)
)

// ParseCgroup reads /proc/PID/cgroup (cgroup v1 or v2) and returns the
// container and pod the process runs in, as names (the runtimes'
// namings) tell; the zero value when none. Lines it does not understand
// are skipped.
func ParseCgroup(data string, names []CgroupNaming) CgroupOwner {
	var o CgroupOwner
	var podRuntime Runtime
	for line := range strings.Lines(data) {
		// hierarchy-ID:controller-list:cgroup-path
		_, rest, ok := strings.Cut(strings.TrimRight(line, "\n"), ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":")
		if !ok || !strings.HasPrefix(path, "/") {
			continue
		}
		p, pr := parseCgroupPath(path, names)
		if o.ContainerID == "" && p.ContainerID != "" {
			o.ContainerID, o.Runtime = p.ContainerID, p.Runtime
		}
		if o.PodUID == "" {
			o.PodUID = p.PodUID
		}
		if o.Pod == "" {
			o.Pod, podRuntime = p.Pod, pr
		}
	}
	if o.Pod != "" && (o.ContainerID == "" || podRuntime != o.Runtime) {
		// A pod's monitor, or a pod cgroup without a container of its
		// runtime in it: not a process of the pod's containers.
		o.Pod = ""
	}
	return o
}

// owner is the owner a process in this cgroup makes its namespace's: a
// pod (a Kubernetes pod by its container, a runtime's own pod by its
// ID), a container, or nil when the cgroup names neither.
func (o CgroupOwner) owner() *Owner {
	switch {
	case o.Pod != "":
		return &Owner{Kind: OwnerPod, ID: o.Pod, Runtime: o.Runtime}
	case o.PodUID != "":
		return &Owner{Kind: OwnerPod, ID: o.ContainerID, PodUID: o.PodUID, Runtime: o.Runtime}
	case o.ContainerID != "":
		return &Owner{Kind: OwnerContainer, ID: o.ContainerID, Runtime: o.Runtime}
	}
	return nil
}

// parseCgroupPath finds the innermost container ID, the pod UID and a
// runtime's pod in one cgroup path, and the runtime that names that pod.
// The innermost wins so a container nested in another (Docker in Docker,
// kind) is attributed to itself.
func parseCgroupPath(path string, names []CgroupNaming) (o CgroupOwner, podRuntime Runtime) {
	segments := strings.Split(path, "/")
	for i, seg := range segments {
		parent := ""
		if i > 0 {
			parent = segments[i-1]
		}
		if m := podUIDPattern.FindStringSubmatch(seg); m != nil && (strings.HasPrefix(seg, "pod") || strings.Contains(seg, "kubepods-")) {
			o.PodUID = strings.ReplaceAll(m[1], "_", "-")
			continue
		}
		if id, runtime, ok := runtimePod(seg, parent, names); ok {
			o.Pod, podRuntime = id, runtime
			continue
		}
		if id, runtime, ok := runtimeContainerID(seg, parent, names); ok {
			o.ContainerID, o.Runtime = id, runtime
			continue
		}
		if containerIDPattern.MatchString(seg) && i > 0 && (strings.HasPrefix(parent, "pod") || strings.Contains(path, "kubepods")) {
			// The cgroupfs driver of the kubelet does not name the runtime.
			o.ContainerID, o.Runtime = seg, ""
		}
	}
	return o, podRuntime
}

// runtimePod returns the pod ID and runtime of a cgroup that a runtime
// names after one of its pods.
func runtimePod(seg, parent string, names []CgroupNaming) (string, Runtime, bool) {
	slice, isSlice := strings.CutSuffix(seg, ".slice")
	for _, n := range names {
		if containerIDPattern.MatchString(seg) && slices.Contains(n.PodParents, parent) {
			return seg, n.Runtime, true
		}
		if !isSlice {
			continue
		}
		for _, prefix := range n.PodSlicePrefixes {
			i := strings.LastIndex(slice, prefix)
			if i >= 0 && (i == 0 || slice[i-1] == '-') && containerIDPattern.MatchString(slice[i+len(prefix):]) {
				return slice[i+len(prefix):], n.Runtime, true
			}
		}
	}
	return "", "", false
}

// runtimeContainerID returns the container ID and runtime of a cgroup
// that a runtime names after a container: "<prefix><id>.scope",
// "<prefix><id>", or "<id>" right below one of its parents.
func runtimeContainerID(seg, parent string, names []CgroupNaming) (string, Runtime, bool) {
	name := strings.TrimSuffix(seg, ".scope")
	for _, n := range names {
		for _, prefix := range n.Prefixes {
			if id, ok := strings.CutPrefix(name, prefix); ok && containerIDPattern.MatchString(id) {
				return id, n.Runtime, true
			}
		}
		if containerIDPattern.MatchString(seg) && slices.Contains(n.Parents, parent) {
			return seg, n.Runtime, true
		}
	}
	return "", "", false
}
