package inventory

import (
	"regexp"
	"strings"
)

// cgroupOwner is what a process's cgroup path says about the container it
// runs in. It needs no runtime API: the runtimes name their cgroups after
// the container ID, and the kubelet names pod cgroups after the pod UID.
type cgroupOwner struct {
	ContainerID string
	Runtime     Runtime
	PodUID      string
	// PodmanPod is the ID of the Podman pod the container runs in:
	// Podman names a pod's cgroup after it, "/libpod_parent/<pod ID>"
	// with the cgroupfs manager, "machine-libpod_pod_<pod ID>.slice"
	// with systemd. Podman pods have no Kubernetes UID.
	PodmanPod string
}

// runtimePrefixes are the names runtimes give a container's cgroup,
// "<prefix><64 hex>.scope" with the systemd driver, and the runtime each
// means. CRI-O and podman use the same name without ".scope" with their
// cgroupfs driver ("crio-<id>" under the pod's cgroup, "libpod-<id>" under
// /libpod_parent); nerdctl is a containerd client. The conmon cgroups of
// CRI-O and podman ("crio-conmon-<id>", "libpod-conmon-<id>.scope") hold
// the monitor, not the container, and do not match: "conmon-<id>" is not
// an ID.
var runtimePrefixes = []struct {
	prefix  string
	runtime Runtime
}{
	{"docker-", RuntimeDocker},
	{"cri-containerd-", RuntimeContainerd},
	{"nerdctl-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"libpod-", RuntimePodman},
	// Podman's --cgroups=split (Quadlet's default): the container's
	// processes in "<unit>.service/libpod-payload-<id>".
	{"libpod-payload-", RuntimePodman},
}

var (
	containerIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// podUIDPattern matches the kubelet's pod cgroup: "pod<uid>" with the
	// cgroupfs driver, "kubepods-<qos>-pod<uid with _>.slice" with systemd
	// (each slice name repeats its parents', so a kubelet with a cgroup
	// root such as kind's /kubelet makes "kubelet-kubepods-<qos>-pod….slice").
	// Static pods have a 32-hex UID without dashes.
	podUIDPattern = regexp.MustCompile(`(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?$`)
	// podmanPodSlice matches a Podman pod's cgroup with the systemd
	// manager: "machine-libpod_pod_<pod ID>.slice" (under user slices
	// for rootless Podman).
	podmanPodSlice = regexp.MustCompile(`^(?:.*-)?libpod_pod_([0-9a-f]{64})\.slice$`)
)

// parseCgroup reads /proc/PID/cgroup (cgroup v1 or v2) and returns the
// container and pod the process runs in; the zero value when none. Lines
// it does not understand are skipped.
func parseCgroup(data string) cgroupOwner {
	var o cgroupOwner
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
		p := parseCgroupPath(path)
		if o.ContainerID == "" && p.ContainerID != "" {
			o.ContainerID, o.Runtime = p.ContainerID, p.Runtime
		}
		if o.PodUID == "" {
			o.PodUID = p.PodUID
		}
		if o.PodmanPod == "" {
			o.PodmanPod = p.PodmanPod
		}
	}
	if o.Runtime != RuntimePodman {
		// A pod's conmon, or a pod cgroup without a Podman container in
		// it: not a process of the pod's containers.
		o.PodmanPod = ""
	}
	return o
}

// owner is the owner a process in this cgroup makes its namespace's: a
// pod (a Kubernetes pod by its container, a Podman pod by its ID), a
// container, or nil when the cgroup names neither.
func (o cgroupOwner) owner() *Owner {
	switch {
	case o.PodmanPod != "":
		return &Owner{Kind: OwnerPod, ID: o.PodmanPod, Runtime: o.Runtime}
	case o.PodUID != "":
		return &Owner{Kind: OwnerPod, ID: o.ContainerID, PodUID: o.PodUID, Runtime: o.Runtime}
	case o.ContainerID != "":
		return &Owner{Kind: OwnerContainer, ID: o.ContainerID, Runtime: o.Runtime}
	}
	return nil
}

// parseCgroupPath finds the innermost container ID and the pod UID in one
// cgroup path. The innermost wins so a container nested in another
// (Docker in Docker, kind) is attributed to itself.
func parseCgroupPath(path string) cgroupOwner {
	var o cgroupOwner
	segments := strings.Split(path, "/")
	for i, seg := range segments {
		if m := podUIDPattern.FindStringSubmatch(seg); m != nil && (strings.HasPrefix(seg, "pod") || strings.Contains(seg, "kubepods-")) {
			o.PodUID = strings.ReplaceAll(m[1], "_", "-")
			continue
		}
		if m := podmanPodSlice.FindStringSubmatch(seg); m != nil {
			o.PodmanPod = m[1]
			continue
		}
		if containerIDPattern.MatchString(seg) && i > 0 && segments[i-1] == "libpod_parent" {
			// cgroupfs: /libpod_parent/<pod ID>/libpod-<container ID>.
			o.PodmanPod = seg
			continue
		}
		if id, runtime, ok := runtimeContainerID(seg); ok {
			o.ContainerID, o.Runtime = id, runtime
			continue
		}
		if containerIDPattern.MatchString(seg) && i > 0 {
			switch parent := segments[i-1]; {
			case parent == "docker":
				o.ContainerID, o.Runtime = seg, RuntimeDocker
			case strings.HasPrefix(parent, "pod") || strings.Contains(path, "kubepods"):
				// The cgroupfs driver of the kubelet does not name the runtime.
				o.ContainerID, o.Runtime = seg, ""
			}
		}
	}
	return o
}

// runtimeContainerID returns the container ID and runtime a cgroup named
// after a container by its runtime ("<prefix><id>.scope" or
// "<prefix><id>") stands for.
func runtimeContainerID(seg string) (id string, runtime Runtime, ok bool) {
	name := strings.TrimSuffix(seg, ".scope")
	for _, s := range runtimePrefixes {
		if id, ok := strings.CutPrefix(name, s.prefix); ok && containerIDPattern.MatchString(id) {
			return id, s.runtime, true
		}
	}
	return "", "", false
}
