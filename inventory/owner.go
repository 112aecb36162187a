package inventory

import (
	"os"

	"golang.org/x/sys/unix"
	"strconv"
	"strings"
)

// resolveOwner decides who owns a namespace from the cgroups of the
// processes in it. The container of the oldest process wins: in a pod that
// is the sandbox (pause), for `--network container:X` the first container.
// Processes outside any container make the owner a plain process, which is
// never evidence that a veth is in use by a workload.
func resolveOwner(procfs string, n *Namespace) *Owner {
	var (
		best      *Owner
		bestStart uint64
		oldest    *Owner
		oldStart  uint64
	)
	for _, pid := range n.PIDs {
		dir := procfs + "/" + strconv.Itoa(pid)
		start, ok := processStartTime(dir)
		if !ok {
			continue // exited during the scan
		}
		cg, err := os.ReadFile(dir + "/cgroup")
		if err != nil || !inNamespace(dir, n.Inode) {
			// Exited, or exited and its PID reused by a process elsewhere
			// since the scan: its cgroup says nothing about n.
			continue
		}
		if c := parseCgroup(string(cg)); c.ContainerID != "" || c.PodUID != "" {
			if best == nil || start < bestStart {
				kind := OwnerContainer
				if c.PodUID != "" {
					kind = OwnerPod
				}
				best = &Owner{Kind: kind, ID: c.ContainerID, PodUID: c.PodUID, Runtime: c.Runtime}
				bestStart = start
			}
			continue
		}
		if oldest == nil || start < oldStart {
			oldest = &Owner{Kind: OwnerProcess, ID: strconv.Itoa(pid), Name: processName(dir)}
			oldStart = start
		}
	}
	if best != nil {
		return best
	}
	return oldest
}

// inNamespace reports whether the process at dir, or one of its threads, is
// in the network namespace inode.
func inNamespace(dir string, inode uint64) bool {
	var st unix.Stat_t
	if unix.Stat(dir+"/ns/net", &st) == nil && st.Ino == inode {
		return true
	}
	tids, err := os.ReadDir(dir + "/task")
	if err != nil {
		return false
	}
	for _, tid := range tids {
		if unix.Stat(dir+"/task/"+tid.Name()+"/ns/net", &st) == nil && st.Ino == inode {
			return true
		}
	}
	return false
}

// processStartTime returns field 22 of /proc/PID/stat, the start time in
// clock ticks since boot: the order in which processes started.
func processStartTime(dir string) (uint64, bool) {
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name may contain spaces and parentheses: fields start
	// after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	const startTimeField = 22 - 3 // fields after ")" start at field 3
	if len(fields) <= startTimeField {
		return 0, false
	}
	v, err := strconv.ParseUint(fields[startTimeField], 10, 64)
	return v, err == nil
}

func processName(dir string) string {
	b, err := os.ReadFile(dir + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
