// Package fixturesys holds what the harnesses of real runtimes
// (internal/dockertest, internal/critest, internal/podmantest) do to the
// private namespaces of [netnstest.Main] alike, so that each harness keeps
// only what is its runtime's: the life of a runtime (one at a time, its
// environment and binaries, a reaper for what daemonizes, the daemon and
// its log, a cleanup that kills and removes by mark), reading processes
// and mountinfo, mounting the machine's cgroup hierarchies and private
// directories, undoing mounts, deleting the interfaces a runtime leaves,
// building a busybox root file system, and the checks their tests make
// that nothing is left. It is test support: every function assumes the
// caller runs inside those private namespaces.
package fixturesys

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CgroupMountDir is where the cgroup hierarchies are mounted.
const CgroupMountDir = "/sys/fs/cgroup"

// ProcStat holds the fields of /proc/PID/stat the harnesses read.
type ProcStat struct {
	Comm  string
	State byte
	PPID  int
}

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcStat{}, err
	}
	// The command name may hold spaces and parentheses: the fields
	// start after the last ')'.
	open, i := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || i < open {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	return ProcStat{Comm: string(b[open+1 : i]), State: f[0][0], PPID: ppid}, nil
}

// CmdlineContains reports whether the command line of pid contains s.
func CmdlineContains(pid int, s string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte(s))
}

// WaitGone waits until pid has exited. A process whose parent died is
// reparented to the test binary, PID 1 of the namespace, which does not
// reap orphans (see netnstest.Main): WaitGone reaps pid itself once it is
// a zombie child of this process. Reaping that one PID cannot steal the
// exit status of a child that os/exec waits for, and the PID cannot be
// reused before it is reaped.
func WaitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := ReadStat(pid)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && st.State == 'Z' && st.PPID == os.Getpid() {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if time.Now().After(deadline) {
			if err == nil {
				return fmt.Errorf("process %d still there after %v (state %c, parent %d)", pid, timeout, st.State, st.PPID)
			}
			return fmt.Errorf("process %d: %w", pid, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// MountEntry is a line of /proc/self/mountinfo.
type MountEntry struct {
	Point  string
	FSType string
}

// ReadMountinfo returns the mounts of this mount namespace in the order of
// /proc/self/mountinfo, hidden ones included.
func ReadMountinfo() ([]MountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []MountEntry
	for line := range strings.Lines(string(b)) {
		// ID parent major:minor root point options [optional...] - fstype source superoptions
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mounts = append(mounts, MountEntry{Point: unescapeMountinfo(fields[4]), FSType: fields[sep+1]})
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

// MountedAt reports whether path is a mount point in this mount namespace,
// as /proc/self/mountinfo tells; a symlink in its directory is resolved
// (/var/run/netns/X is /run/netns/X there).
func MountedAt(path string) (bool, error) {
	if resolved, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		path = filepath.Join(resolved, filepath.Base(path))
	}
	mounts, err := ReadMountinfo()
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(mounts, func(m MountEntry) bool { return m.Point == path }), nil
}

// UnmountUnder unmounts every mount at or below the given directories,
// deepest first (later mounts stack on earlier ones).
func UnmountUnder(dirs ...string) error {
	mounts, err := ReadMountinfo()
	if err != nil {
		return err
	}
	var targets []string
	for _, m := range mounts {
		for _, dir := range dirs {
			if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
				targets = append(targets, m.Point)
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

// IsFS reports whether path is on a file system of type magic.
func IsFS(path string, magic int64) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	return int64(st.Type) == magic, nil
}

// IsCgroupFS reports whether path is on a cgroup or cgroup2 file system.
func IsCgroupFS(path string) bool {
	v1, _ := IsFS(path, unix.CGROUP_SUPER_MAGIC)
	v2, _ := IsFS(path, unix.CGROUP2_SUPER_MAGIC)
	return v1 || v2
}

// RemoveIfExists removes the file or empty directory path unless it is
// gone already.
func RemoveIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// LinkNames returns the names of the interfaces of this network namespace.
func LinkNames() map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir("/sys/class/net")
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}

// DeleteLink deletes the interface name of the test's private namespace
// unless it is already gone (the veths of a namespace that was just
// unmounted go away with it).
func DeleteLink(name string) error {
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

// Hierarchy is a cgroup hierarchy to mount under [CgroupMountDir].
type Hierarchy struct {
	Dir     string // directory under /sys/fs/cgroup: "pids", "cpu,cpuacct", "systemd", "unified"
	FSType  string // "cgroup" or, for the unified hierarchy, "cgroup2"
	Options string // mount options: "pids", "cpu,cpuacct", "none,name=systemd", ""
}

// CgroupHierarchies returns the machine's cgroup hierarchies a runtime
// uses: the v1 ones with controllers and name=systemd, read from
// /proc/self/cgroup (which lists every hierarchy), and, with unified, the
// unified one if the machine mounts it beside them (a hybrid host: runc
// puts containers there too). Other named hierarchies (netnstest's, other
// tools') are none of a runtime's business.
func CgroupHierarchies(unified bool) ([]Hierarchy, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var hs []Hierarchy
	for line := range strings.Lines(string(b)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 || parts[0] == "0" || parts[1] == "" {
			continue
		}
		switch {
		case parts[1] == "name=systemd":
			hs = append(hs, Hierarchy{Dir: "systemd", FSType: "cgroup", Options: "none,name=systemd"})
		case strings.Contains(parts[1], "name="):
		default:
			hs = append(hs, Hierarchy{Dir: parts[1], FSType: "cgroup", Options: parts[1]})
		}
	}
	if len(hs) == 0 || !unified {
		return hs, nil
	}
	// The machine's own mount is still listed in this namespace's
	// mountinfo, under the sysfs that hides it.
	mounts, err := ReadMountinfo()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if m.FSType == "cgroup2" && m.Point == CgroupMountDir+"/unified" {
			hs = append(hs, Hierarchy{Dir: "unified", FSType: "cgroup2"})
			break
		}
	}
	return hs, nil
}

// MountCgroups mounts every one of hs that is not mounted yet (by another
// harness, say) under [CgroupMountDir], on a tmpfs that it mounts unless
// one is there (netnstest.CgroupRoot's), and appends to undo how to undo
// each step, to be run in reverse order: the fresh sysfs of netnstest.Main
// hides the machine's cgroup mounts, and runtimes need them.
func MountCgroups(hs []Hierarchy, undo *[]func() error) error {
	if len(hs) == 0 {
		return errors.New("no cgroup v1 hierarchy on this machine: only cgroup v1 and hybrid hosts are supported")
	}
	if ok, err := IsFS(CgroupMountDir, unix.TMPFS_MAGIC); err != nil {
		return err
	} else if !ok {
		if err := unix.Mount("tmpfs", CgroupMountDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", CgroupMountDir, err)
		}
		*undo = append(*undo, func() error {
			// Something else may have been mounted in it since
			// (netnstest.CgroupRoot's hierarchy): it stays then.
			if err := unix.Unmount(CgroupMountDir, 0); err != nil && err != unix.EBUSY {
				return fmt.Errorf("unmount %s: %w", CgroupMountDir, err)
			}
			return nil
		})
	}
	for _, h := range hs {
		dir := filepath.Join(CgroupMountDir, h.Dir)
		if err := os.Mkdir(dir, 0o755); err == nil {
			*undo = append(*undo, func() error { return RemoveIfExists(dir) })
		} else if !errors.Is(err, fs.ErrExist) {
			return err
		}
		if IsCgroupFS(dir) {
			continue
		}
		if err := unix.Mount(h.FSType, dir, h.FSType, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, h.Options); err != nil {
			return fmt.Errorf("mount -t %s -o %q on %s: %w", h.FSType, h.Options, dir, err)
		}
		*undo = append(*undo, func() error {
			if err := unix.Unmount(dir, 0); err != nil {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			return nil
		})
		// Co-mounted controllers (cpu,cpuacct) get a link per
		// controller, as systemd makes them.
		if names := strings.Split(h.Dir, ","); len(names) > 1 {
			for _, n := range names {
				link := filepath.Join(CgroupMountDir, n)
				if err := os.Symlink(h.Dir, link); err == nil {
					*undo = append(*undo, func() error { return RemoveIfExists(link) })
				}
			}
		}
	}
	return nil
}

// PrivateDirs mounts a tmpfs on each of dirs, where a runtime or its
// plugins write whatever their configuration says (leases, caches, lock
// files), and appends to undo how to unmount each. A dir the machine
// lacks must be in /var/lib: it is made in an overlay of /var/lib whose
// upper layer is below layers (a directory of the test's), so that
// nothing is created on the machine's disk.
func PrivateDirs(dirs []string, layers string, undo *[]func() error) error {
	const varLib = "/var/lib"
	var missing []string
	for _, dir := range dirs {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			if filepath.Dir(dir) != varLib {
				return fmt.Errorf("%s does not exist, and making it would change the machine's disk", dir)
			}
			missing = append(missing, dir)
		} else if err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		upper, work := filepath.Join(layers, "upper"), filepath.Join(layers, "work")
		for _, dir := range []string{upper, work} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", varLib, upper, work)
		if err := unix.Mount("overlay", varLib, "overlay", 0, opts); err != nil {
			return fmt.Errorf("mount an overlay on %s (%s): %w", varLib, opts, err)
		}
		*undo = append(*undo, unmountStep(varLib))
		for _, dir := range missing {
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
		}
	}
	for _, dir := range dirs {
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
		*undo = append(*undo, unmountStep(dir))
	}
	return nil
}

// unmountStep returns an undo step that detaches the mount at path.
func unmountStep(path string) func() error {
	return func() error {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
		return nil
	}
}

// Undo runs undo steps in reverse order and joins their errors.
func Undo(undo []func() error) error {
	var errs []error
	for i := len(undo) - 1; i >= 0; i-- {
		errs = append(errs, undo[i]())
	}
	return errors.Join(errs...)
}

// busyboxApplets are the commands the image links to /bin/busybox.
var busyboxApplets = []string{
	"sh", "sleep", "cat", "echo", "ls", "ps", "ip", "ifconfig", "hostname",
	"mount", "true", "false", "wget", "nc", "kill", "env", "id",
}

// BusyboxRootfs returns a tar of a root file system with the machine's
// static busybox as /bin/busybox and its applet links: an image made
// without pulling anything.
func BusyboxRootfs() ([]byte, error) {
	path, err := exec.LookPath("busybox")
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, dir := range []string{"bin/", "dev/", "etc/", "proc/", "sys/", "tmp/", "root/"} {
		mode := int64(0o755)
		if dir == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: mode, ModTime: now}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: now}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	for _, applet := range busyboxApplets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// KillAll sends SIGKILL to each of pids (processes the caller started
// or found in its own cgroups; never the test binary or PID 1, which it
// refuses) and waits until each is gone, reaping those that are its
// zombie children.
func KillAll(pids []int) error {
	var errs []error
	for _, pid := range pids {
		if pid <= 1 || pid == os.Getpid() {
			errs = append(errs, fmt.Errorf("refusing to kill %d", pid))
			continue
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
	}
	for _, pid := range pids {
		if pid > 1 && pid != os.Getpid() {
			if err := WaitGone(pid, 10*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
