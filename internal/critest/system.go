package critest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
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

// mountCgroups mounts the machine's cgroup hierarchies runc uses, the
// unified one of a hybrid host included (see [fixturesys.MountCgroups]).
func (r *Runtime) mountCgroups() error {
	hs, err := fixturesys.CgroupHierarchies(true)
	if err != nil {
		return err
	}
	return fixturesys.MountCgroups(hs, &r.undo)
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
	mounted, err := fixturesys.MountedAt(NetnsDir)
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
	hs, err := fixturesys.CgroupHierarchies(true)
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
		root := filepath.Join(cgroupMountDir, h.Dir)
		if !fixturesys.IsCgroupFS(root) {
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

// dirNames returns the names in dir.
func dirNames(dir string) map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
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
		return fixturesys.RemoveIfExists(path)
	}
	return nil
}
