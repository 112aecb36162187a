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
	Runtime     string
	PodUID      string
}

// scopePrefixes are the systemd scope names runtimes give a container's
// cgroup, "<prefix><64 hex>.scope", and the runtime each means. The conmon
// scopes of CRI-O and podman hold the monitor, not the container.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"docker-", "docker"},
	{"cri-containerd-", "containerd"},
	{"crio-", "crio"},
	{"libpod-", "podman"},
}

var (
	containerIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// podUIDPattern matches the kubelet's pod cgroup: "pod<uid>" with the
	// cgroupfs driver, "kubepods-<qos>-pod<uid with _>.slice" with systemd.
	// Static pods have a 32-hex UID without dashes.
	podUIDPattern = regexp.MustCompile(`(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?$`)
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
	}
	return o
}

// parseCgroupPath finds the innermost container ID and the pod UID in one
// cgroup path. The innermost wins so a container nested in another
// (Docker in Docker, kind) is attributed to itself.
func parseCgroupPath(path string) cgroupOwner {
	var o cgroupOwner
	segments := strings.Split(path, "/")
	for i, seg := range segments {
		if m := podUIDPattern.FindStringSubmatch(seg); m != nil && (strings.HasPrefix(seg, "pod") || strings.HasPrefix(seg, "kubepods")) {
			o.PodUID = strings.ReplaceAll(m[1], "_", "-")
			continue
		}
		if id, runtime, ok := scopeContainerID(seg); ok {
			o.ContainerID, o.Runtime = id, runtime
			continue
		}
		if containerIDPattern.MatchString(seg) && i > 0 {
			switch parent := segments[i-1]; {
			case parent == "docker":
				o.ContainerID, o.Runtime = seg, "docker"
			case strings.HasPrefix(parent, "pod") || strings.Contains(path, "kubepods"):
				// The cgroupfs driver of the kubelet does not name the runtime.
				o.ContainerID, o.Runtime = seg, ""
			}
		}
	}
	return o
}

func scopeContainerID(seg string) (id, runtime string, ok bool) {
	name, ok := strings.CutSuffix(seg, ".scope")
	if !ok {
		return "", "", false
	}
	for _, s := range scopePrefixes {
		if id, ok := strings.CutPrefix(name, s.prefix); ok && containerIDPattern.MatchString(id) {
			return id, s.runtime, true
		}
	}
	return "", "", false
}
