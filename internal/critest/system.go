package critest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// prepareMounts makes the cgroup hierarchies visible, puts a private tmpfs
// on /var/lib/cni and makes /run/netns a shared mount point (see [Start]),
// recording in r.undo how to undo each step.
func (r *Runtime) prepareMounts() error {
	if err := r.mountCgroups(); err != nil {
		return err
	}
	if err := r.mountCNIState(); err != nil {
		return err
	}
	return r.shareNetnsDir()
}

// hierarchy is a cgroup hierarchy to mount under /sys/fs/cgroup.
type hierarchy struct {
	dir     string // directory under /sys/fs/cgroup: "pids", "cpu,cpuacct", "systemd", "unified"
	fstype  string // "cgroup" or, for the unified hierarchy, "cgroup2"
	options string // mount options: "pids", "cpu,cpuacct", "none,name=systemd", ""
}

// cgroupHierarchies returns the machine's cgroup hierarchies that runc
// uses: the v1 ones with controllers and name=systemd, read from
// /proc/self/cgroup (which lists every hierarchy), and the unified one if
// the machine mounts it beside them (a hybrid host). Other named
// hierarchies (netnstest's, other tools') are none of runc's business.
func cgroupHierarchies() ([]hierarchy, error) {
	lines, err := readLines("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var hs []hierarchy
	for _, line := range lines {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[0] == "0" || parts[1] == "" {
			continue
		}
		switch {
		case parts[1] == "name=systemd":
			hs = append(hs, hierarchy{dir: "systemd", fstype: "cgroup", options: "none,name=systemd"})
		case strings.Contains(parts[1], "name="):
		default:
			hs = append(hs, hierarchy{dir: parts[1], fstype: "cgroup", options: parts[1]})
		}
	}
	if len(hs) == 0 {
		return nil, nil
	}
	// The machine's own mount is still listed in this namespace's
	// mountinfo, under the sysfs that hides it.
	mounts, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if m.fstype == "cgroup2" && m.point == cgroupMountDir+"/unified" {
			hs = append(hs, hierarchy{dir: "unified", fstype: "cgroup2"})
			break
		}
	}
	return hs, nil
}

// mountCgroups mounts every hierarchy of [cgroupHierarchies] that is not
// mounted yet (by dockertest, say) under /sys/fs/cgroup, on a tmpfs that
// it mounts unless one is there (netnstest.CgroupRoot's).
func (r *Runtime) mountCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	if len(hs) == 0 {
		return errors.New("no cgroup v1 hierarchy on this machine: only cgroup v1 and hybrid hosts are supported")
	}
	if ok, err := isFS(cgroupMountDir, unix.TMPFS_MAGIC); err != nil {
		return err
	} else if !ok {
		if err := unix.Mount("tmpfs", cgroupMountDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", cgroupMountDir, err)
		}
		r.undo = append(r.undo, func() error {
			// Something else may have been mounted in it since
			// (netnstest.CgroupRoot's hierarchy): it stays then.
			if err := unix.Unmount(cgroupMountDir, 0); err != nil && err != unix.EBUSY {
				return fmt.Errorf("unmount %s: %w", cgroupMountDir, err)
			}
			return nil
		})
	}
	for _, h := range hs {
		dir := filepath.Join(cgroupMountDir, h.dir)
		if err := os.Mkdir(dir, 0o755); err == nil {
			r.undo = append(r.undo, func() error { return removeIfExists(dir) })
		} else if !errors.Is(err, fs.ErrExist) {
			return err
		}
		if isCgroupFS(dir) {
			continue
		}
		if err := unix.Mount(h.fstype, dir, h.fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, h.options); err != nil {
			return fmt.Errorf("mount -t %s -o %q on %s: %w", h.fstype, h.options, dir, err)
		}
		r.undo = append(r.undo, func() error {
			if err := unix.Unmount(dir, 0); err != nil {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			return nil
		})
		// Co-mounted controllers (cpu,cpuacct) get a link per
		// controller, as systemd makes them.
		if names := strings.Split(h.dir, ","); len(names) > 1 {
			for _, n := range names {
				link := filepath.Join(cgroupMountDir, n)
				if err := os.Symlink(h.dir, link); err == nil {
					r.undo = append(r.undo, func() error { return removeIfExists(link) })
				}
			}
		}
	}
	return nil
}

// mountCNIState mounts a tmpfs on /var/lib/cni, where the host-local
// plugin keeps its leases and libcni, run by containerd, its cache (it
// ignores any other directory). On a machine without /var/lib/cni the
// mount point is made in an overlay of /var/lib whose upper layer is in
// the test's temporary directory: nothing is created on the machine's
// disk.
func (r *Runtime) mountCNIState() error {
	if _, err := os.Stat(cniStateDir); errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(cniStateDir)
		layers := filepath.Join(r.Root, "..", "varlib")
		upper, work := filepath.Join(layers, "upper"), filepath.Join(layers, "work")
		for _, dir := range []string{upper, work} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", parent, upper, work)
		if err := unix.Mount("overlay", parent, "overlay", 0, opts); err != nil {
			return fmt.Errorf("mount an overlay on %s (%s): %w", parent, opts, err)
		}
		r.undo = append(r.undo, func() error {
			if err := unix.Unmount(parent, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", parent, err)
			}
			return nil
		})
		if err := os.Mkdir(cniStateDir, 0o755); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", cniStateDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", cniStateDir, err)
	}
	r.undo = append(r.undo, func() error {
		if err := unix.Unmount(cniStateDir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", cniStateDir, err)
		}
		return nil
	})
	return nil
}

// shareNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does the first time: a bind mount of itself, shared. containerd 1.6
// does not, and an `ip netns add` run after it has mounted cni-*
// namespaces would bind /run/netns over itself and hide them.
func (r *Runtime) shareNetnsDir() error {
	mounted, err := isMountPoint(NetnsDir)
	if err != nil {
		return err
	}
	if !mounted {
		if err := unix.Mount(NetnsDir, NetnsDir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", NetnsDir, err)
		}
		r.undo = append(r.undo, func() error {
			// Not lazily: a namespace a test mounted there and
			// unmounts later must stay reachable. Busy, it stays.
			if err := unix.Unmount(NetnsDir, 0); err != nil && err != unix.EBUSY {
				return fmt.Errorf("unmount %s: %w", NetnsDir, err)
			}
			return nil
		})
	}
	if err := unix.Mount("", NetnsDir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", NetnsDir, err)
	}
	return nil
}

// removePodCgroups removes, in every hierarchy runc uses, the cgroups of
// the pods this runtime ran: the sandboxes' own (left by killed ones),
// pod<UID>, which runc never removes, then /kubepods/besteffort and
// /kubepods if that leaves them empty. Those two are shared with other
// test binaries: whoever leaves them empty removes them.
func (r *Runtime) removePodCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	r.mu.Lock()
	uids := make([]string, 0, len(r.uids))
	for uid := range r.uids {
		uids = append(uids, uid)
	}
	r.mu.Unlock()
	if len(uids) == 0 {
		return nil
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(cgroupMountDir, h.dir)
		if !isCgroupFS(root) {
			continue
		}
		base := filepath.Join(root, podCgroupBase)
		for _, uid := range uids {
			pod := filepath.Join(base, "pod"+uid)
			children, _ := os.ReadDir(pod)
			for _, c := range children {
				if c.IsDir() {
					errs = append(errs, rmdirCgroup(filepath.Join(pod, c.Name()), false))
				}
			}
			errs = append(errs, rmdirCgroup(pod, false))
		}
		for _, dir := range []string{base, filepath.Dir(base)} {
			errs = append(errs, rmdirCgroup(dir, true))
		}
	}
	return errors.Join(errs...)
}

// rmdirCgroup removes the cgroup dir unless it is gone already, or, if
// shared, still in use.
func rmdirCgroup(dir string, shared bool) error {
	switch err := unix.Rmdir(dir); {
	case err == nil, err == unix.ENOENT:
		return nil
	case shared && (err == unix.EBUSY || err == unix.ENOTEMPTY):
		return nil
	default:
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
}

// isFS reports whether path is on a file system of type magic.
func isFS(path string, magic int64) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	return int64(st.Type) == magic, nil
}

// isCgroupFS reports whether path is on a cgroup or cgroup2 file system.
func isCgroupFS(path string) bool {
	v1, _ := isFS(path, unix.CGROUP_SUPER_MAGIC)
	v2, _ := isFS(path, unix.CGROUP2_SUPER_MAGIC)
	return v1 || v2
}

// removeIfExists removes the file or empty directory path unless it is
// gone already.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// mountEntry is a line of /proc/self/mountinfo.
type mountEntry struct {
	point  string
	fstype string
}

// readMountinfo returns the mounts of this mount namespace in the order of
// /proc/self/mountinfo, hidden ones included.
func readMountinfo() ([]mountEntry, error) {
	lines, err := readLines("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []mountEntry
	for _, line := range lines {
		// ID parent major:minor root point options [optional...] - fstype source superoptions
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mounts = append(mounts, mountEntry{point: unescapeMountinfo(fields[4]), fstype: fields[sep+1]})
	}
	return mounts, nil
}

// isMountPoint reports whether path is a mount point in this mount
// namespace, as /proc/self/mountinfo tells.
func isMountPoint(path string) (bool, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if m.point == path {
			return true, nil
		}
	}
	return false, nil
}

// MountedAt reports whether path is a mount point in this mount namespace,
// as /proc/self/mountinfo tells: whether a pod's /var/run/netns/cni-*
// (resolved: /run/netns/cni-*) still pins its namespace.
func MountedAt(path string) (bool, error) {
	if resolved, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		path = filepath.Join(resolved, filepath.Base(path))
	}
	return isMountPoint(path)
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, …) of a
// mountinfo field.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder unmounts every mount at or below the given directories,
// deepest first: sandbox root file systems and shm, and whatever
// containerd mounted of its roots.
func unmountUnder(dirs ...string) error {
	mounts, err := readMountinfo()
	if err != nil {
		return err
	}
	var targets []string
	for _, m := range mounts {
		for _, dir := range dirs {
			if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
				targets = append(targets, m.point)
				break
			}
		}
	}
	// Later mounts stack on earlier ones: undo them in reverse order.
	slices.Reverse(targets)
	var errs []error
	for _, m := range targets {
		errs = append(errs, unmountOne(m))
	}
	return errors.Join(errs...)
}

// unmountOne detaches the mount at path unless nothing is mounted there.
func unmountOne(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}

// dirNames returns the names in dir.
func dirNames(dir string) map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}

// linkNames returns the names of the interfaces of this network namespace.
func linkNames() map[string]bool {
	return dirNames("/sys/class/net")
}

// deleteLink deletes the interface name unless it is already gone: the
// veths of a namespace that was just unmounted go away with it.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s (ifindex %d): %w", name, l.Attrs().Index, err)
	}
	return nil
}

// removeDeadSocket removes the unix socket at path if nothing listens on
// it any more (its shim was killed); a live one belongs to someone else.
func removeDeadSocket(path string) error {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return removeIfExists(path)
	}
	return nil
}

// procStat holds the fields of /proc/PID/stat that this package reads.
type procStat struct {
	comm  string
	state byte
	ppid  int
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name may hold spaces and parentheses: the fields
	// start after the last ')'.
	open, i := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || i < open {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	return procStat{comm: string(b[open+1 : i]), state: f[0][0], ppid: ppid}, nil
}

// cmdlineContains reports whether the command line of pid contains s.
func cmdlineContains(pid int, s string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte(s))
}

// waitGone waits until pid has exited. A process whose parent died is
// reparented to the test binary, PID 1 of the namespace, which does not
// reap orphans (see netnstest.Main): waitGone reaps pid itself once it is
// a zombie child of this process. Reaping that one PID cannot steal the
// exit status of a child that os/exec waits for, and the PID cannot be
// reused before it is reaped.
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := readStat(pid)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && st.state == 'Z' && st.ppid == os.Getpid() {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if time.Now().After(deadline) {
			if err == nil {
				return fmt.Errorf("process %d still there after %v (state %c, parent %d)", pid, timeout, st.state, st.ppid)
			}
			return fmt.Errorf("process %d: %w", pid, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
