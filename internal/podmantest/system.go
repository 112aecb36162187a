package podmantest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
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

// mountCgroups mounts the machine's v1 cgroup hierarchies, and not the
// unified one of a hybrid host: crun refuses to run with it mounted
// ("cgroups in hybrid mode not supported, drop all controllers from
// cgroupv2"), so Podman's containers show "0::/" in /proc/PID/cgroup here.
func (p *Podman) mountCgroups() error {
	hs, err := fixturesys.CgroupHierarchies(false)
	if err != nil {
		return err
	}
	return fixturesys.MountCgroups(hs, &p.undo)
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
		if e.Type()&fs.ModeSymlink != 0 || !fixturesys.IsCgroupFS(root) {
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
