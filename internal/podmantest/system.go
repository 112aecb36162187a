package podmantest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// prepareMounts makes the cgroup hierarchies visible and mounts a private
// tmpfs on each of privateDirs (see [Podman.overlayVarLib] for those the
// machine lacks), recording in p.undo how to undo each step.
func (p *Podman) prepareMounts() error {
	if err := p.mountCgroups(); err != nil {
		return err
	}
	var missing []string
	for _, dir := range privateDirs {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, dir)
		} else if err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		if err := p.overlayVarLib(missing); err != nil {
			return err
		}
	}
	for _, dir := range privateDirs {
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
		p.undo = append(p.undo, func() error {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			return nil
		})
	}
	return nil
}

// overlayVarLib makes the mount points in missing (/var/lib/containers,
// /var/lib/cni on a machine without them) in an overlay of /var/lib whose
// upper layer is in Dir: nothing is created on the machine's disk.
func (p *Podman) overlayVarLib(missing []string) error {
	const varLib = "/var/lib"
	for _, dir := range missing {
		if filepath.Dir(dir) != varLib {
			return fmt.Errorf("%s does not exist, and making it would change the machine's disk", dir)
		}
	}
	upper, work := filepath.Join(p.Dir, "varlib", "upper"), filepath.Join(p.Dir, "varlib", "work")
	for _, dir := range []string{upper, work} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", varLib, upper, work)
	if err := unix.Mount("overlay", varLib, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount an overlay on %s (%s): %w", varLib, opts, err)
	}
	p.undo = append(p.undo, func() error {
		if err := unix.Unmount(varLib, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", varLib, err)
		}
		return nil
	})
	for _, dir := range missing {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// hierarchy is a cgroup hierarchy to mount under /sys/fs/cgroup.
type hierarchy struct {
	dir     string // directory under /sys/fs/cgroup: "pids", "cpu,cpuacct", "systemd"
	fstype  string // "cgroup"
	options string // mount options: "pids", "cpu,cpuacct", "none,name=systemd"
}

// cgroupHierarchies returns the machine's cgroup hierarchies that crun
// uses: the v1 ones with controllers and name=systemd, read from
// /proc/self/cgroup (which lists every hierarchy), but not the unified one
// of a hybrid host: crun refuses to run with it mounted ("cgroups in hybrid
// mode not supported, drop all controllers from cgroupv2"). So Podman's
// containers show "0::/" in /proc/PID/cgroup here.
// Other named hierarchies (netnstest's) are none of Podman's business.
func cgroupHierarchies() ([]hierarchy, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var hs []hierarchy
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
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
	return hs, nil
}

// mountCgroups mounts every hierarchy of [cgroupHierarchies] that is not
// mounted yet under /sys/fs/cgroup, on a tmpfs that it mounts unless one is
// there (netnstest.CgroupRoot's). The fresh sysfs of netnstest.Main hides
// the machine's cgroup mounts, and Podman's cgroupfs manager needs them.
func (p *Podman) mountCgroups() error {
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
		p.undo = append(p.undo, func() error {
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
			p.undo = append(p.undo, func() error { return removeIfExists(dir) })
		} else if !errors.Is(err, fs.ErrExist) {
			return err
		}
		if isCgroupFS(dir) {
			continue
		}
		if err := unix.Mount(h.fstype, dir, h.fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, h.options); err != nil {
			return fmt.Errorf("mount -t %s -o %q on %s: %w", h.fstype, h.options, dir, err)
		}
		p.undo = append(p.undo, func() error {
			if err := unix.Unmount(dir, 0); err != nil {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			return nil
		})
		if names := strings.Split(h.dir, ","); len(names) > 1 {
			for _, n := range names {
				link := filepath.Join(cgroupMountDir, n)
				if err := os.Symlink(h.dir, link); err == nil {
					p.undo = append(p.undo, func() error { return removeIfExists(link) })
				}
			}
		}
	}
	return nil
}

// removeCgroups removes, in every hierarchy mounted under /sys/fs/cgroup,
// the cgroups below /libpod_parent named after one of ids (libpod-<ctr>,
// <pod> with its conmon cgroup), deepest first, then /libpod_parent/conmon
// and /libpod_parent if that leaves them empty: the hierarchies are the machine's, and Podman
// leaves these behind after a crash. Cgroups of other Podmans are left
// alone.
func removeCgroups(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	dirs, err := os.ReadDir(cgroupMountDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range dirs {
		root := filepath.Join(cgroupMountDir, e.Name())
		if e.Type()&fs.ModeSymlink != 0 || !isCgroupFS(root) {
			continue
		}
		parent := filepath.Join(root, cgroupParent)
		var ours []string
		_ = filepath.WalkDir(parent, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() || path == parent {
				return nil
			}
			for _, id := range ids {
				if strings.Contains(d.Name(), id) {
					// With everything below it: a pod's cgroup also
					// holds the conmon cgroup of its containers.
					_ = filepath.WalkDir(path, func(sub string, d fs.DirEntry, err error) error {
						if err == nil && d.IsDir() {
							ours = append(ours, sub)
						}
						return nil
					})
					return filepath.SkipDir
				}
			}
			return nil
		})
		// Deepest first: a pod's cgroup holds its containers'.
		slices.SortFunc(ours, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, dir := range ours {
			if err := rmdirRetry(dir); err != nil {
				errs = append(errs, err)
			}
		}
		// /libpod_parent/conmon (the conmons of containers outside pods)
		// and /libpod_parent are shared with other test binaries and a
		// Podman of the machine's: whoever leaves them empty removes them.
		for _, dir := range []string{filepath.Join(parent, "conmon"), parent} {
			if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT && err != unix.EBUSY && err != unix.ENOTEMPTY {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes the cgroup dir unless it is gone; a process killed a
// moment ago can still count in it for a little while (EBUSY).
func rmdirRetry(dir string) error {
	err := unix.Rmdir(dir)
	for deadline := time.Now().Add(3 * time.Second); err == unix.EBUSY && time.Now().Before(deadline); err = unix.Rmdir(dir) {
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
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
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []mountEntry
	for _, line := range strings.Split(string(b), "\n") {
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

// unescapeMountinfo undoes the octal escapes (\040 for a space, ...) of a
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

// unmountUnder unmounts every mount strictly below the given directories,
// and each directory itself if it is a mount point, deepest first: the
// network namespaces of crashed containers (/run/netns/netns-*) and the shm
// mounts of containers.
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
	slices.Reverse(targets)
	var errs []error
	for _, m := range targets {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
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

// waitGone waits until pid has exited, reaping it once it is a zombie
// child of this process (the test binary, PID 1 of the namespace, inherits
// orphans and does not reap them).
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
