package fixturesys

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// What the tests of the harnesses check of the fixture, and that their
// cleanups leave nothing behind.

// netnstestHierarchy is the directory of netnstest.CgroupRoot's hierarchy
// under [CgroupMountDir]: it stays mounted for the whole test binary.
const netnstestHierarchy = "veth_exporter_test"

// Mounted reports whether path is a mount point here (see [MountedAt]),
// failing t on error.
func Mounted(t testing.TB, path string) bool {
	t.Helper()
	ok, err := MountedAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// NsInode returns the inode of the namespace at path (/proc/PID/ns/net,
// or a bind mount of one), which names the namespace.
func NsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Ino, nil
}

// NetnsProcesses returns the processes whose network namespace is the one
// at path, failing t if path cannot be read.
func NetnsProcesses(t testing.TB, path string) []int {
	t.Helper()
	want, err := NsInode(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if ino, err := NsInode(p + "/ns/net"); err != nil || ino != want {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(p))
		pids = append(pids, pid)
	}
	return pids
}

// CheckNothingLeft fails t for each thing a harness's cleanup left in the
// test's namespaces: a process other than the test binary, an interface
// other than lo, an entry of /run other than netns, an entry of
// /run/netns, a directory of [CgroupMountDir], or a mount that is not in
// before (what [ReadMountinfo] said before the runtime started: it also
// lists the machine's mounts that the fresh sysfs hides).
// netnstest.CgroupRoot's hierarchy stays for the test binary: it is no
// leftover.
func CheckNothingLeft(t testing.TB, before []MountEntry) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if pid == os.Getpid() {
			continue
		}
		if st, err := ReadStat(pid); err == nil {
			t.Errorf("after cleanup: process %d %s (%c, parent %d) left", pid, st.Comm, st.State, st.PPID)
		}
	}
	for name := range LinkNames() {
		if name != "lo" {
			t.Errorf("after cleanup: interface %s left", name)
		}
	}
	for dir, keep := range map[string]string{"/run": "netns", "/run/netns": "", CgroupMountDir: netnstestHierarchy} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Error(err)
		}
		for _, e := range entries {
			if e.Name() != keep {
				t.Errorf("after cleanup: %s left", filepath.Join(dir, e.Name()))
			}
		}
	}
	mounts, err := ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	had := map[MountEntry]int{}
	for _, m := range before {
		had[m]++
	}
	for _, m := range mounts {
		if had[m] > 0 {
			had[m]--
			continue
		}
		if m.Point == CgroupMountDir || m.Point == filepath.Join(CgroupMountDir, netnstestHierarchy) {
			continue
		}
		t.Errorf("after cleanup: mount %s (%s) left", m.Point, m.FSType)
	}
}

// CgroupsLeft returns the cgroups that match one of globs (paths below
// the root of a hierarchy, such as "docker/<id>") in one of the machine's
// hierarchies, as "/sys/fs/cgroup/<hierarchy>/<path>". The hierarchies are
// the machine's, kernel-wide: CgroupsLeft looks at them in a throwaway
// mount namespace of their own (unshare -m), not through the mounts a
// harness made and undid.
func CgroupsLeft(globs ...string) ([]string, error) {
	hs, err := CgroupHierarchies(true)
	if err != nil {
		return nil, err
	}
	var script strings.Builder
	script.WriteString("set -e\nmount -n -t tmpfs tmpfs /sys/fs/cgroup\n")
	for _, h := range hs {
		opts := ""
		if h.Options != "" {
			opts = "-o " + h.Options
		}
		fmt.Fprintf(&script, "mkdir -p '/sys/fs/cgroup/%s'\nmount -n -t %s %s cgroup '/sys/fs/cgroup/%s'\n", h.Dir, h.FSType, opts, h.Dir)
	}
	script.WriteString("set +e\n")
	for _, g := range globs {
		fmt.Fprintf(&script, "ls -d /sys/fs/cgroup/*/%s 2>/dev/null\n", g)
	}
	script.WriteString("true\n")
	out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script.String()).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("list cgroups: %v\n%s", err, out)
	}
	return strings.Fields(string(out)), nil
}
