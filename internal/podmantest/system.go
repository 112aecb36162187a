package podmantest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// prepareMounts makes the machine's v1 cgroup hierarchies visible, and
// not the unified one of a hybrid host: crun refuses to run with it
// mounted ("cgroups in hybrid mode not supported, drop all controllers
// from cgroupv2"), so Podman's containers show "0::/" in /proc/PID/cgroup
// here. It then mounts a private tmpfs on each of privateDirs (see
// [fixturesys.PrivateDirs] for those the machine lacks), recording in
// p.undo how to undo each step.
func (p *Podman) prepareMounts() error {
	hs, err := fixturesys.CgroupHierarchies(false)
	if err != nil {
		return err
	}
	if err := fixturesys.MountCgroups(hs, &p.undo); err != nil {
		return err
	}
	return fixturesys.PrivateDirs(privateDirs, filepath.Join(p.Dir, "varlib"), &p.undo)
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
	dirs, err := os.ReadDir(fixturesys.CgroupMountDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range dirs {
		root := filepath.Join(fixturesys.CgroupMountDir, e.Name())
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
			errs = append(errs, fixturesys.RemoveCgroup(dir))
		}
		// /libpod_parent/conmon holds the conmons of containers outside
		// pods.
		for _, dir := range []string{filepath.Join(parent, "conmon"), parent} {
			errs = append(errs, fixturesys.RemoveSharedCgroup(dir))
		}
	}
	return errors.Join(errs...)
}
