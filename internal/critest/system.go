package critest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// prepareMounts makes the cgroup hierarchies visible (the unified one of
// a hybrid host included, see [fixturesys.MountCgroups]), puts a private
// tmpfs on /var/lib/cni (and on each of more), where the host-local plugin keeps its leases and
// libcni, run by containerd, its cache (it ignores any other directory),
// makes /run/netns a shared mount point (see [Start]) and, if asked, puts
// iptables-legacy in iptables-nft's place ([Options.LegacyIptables]),
// recording in r.undo how to undo each step.
func (r *Runtime) prepareMounts(more []string, legacyIptables bool) error {
	hs, err := fixturesys.CgroupHierarchies(true)
	if err != nil {
		return err
	}
	if err := fixturesys.MountCgroups(hs, &r.undo); err != nil {
		return err
	}
	if err := fixturesys.PrivateDirs(append([]string{cniStateDir}, more...), filepath.Join(r.Root, "..", "varlib"), &r.undo); err != nil {
		return err
	}
	if legacyIptables {
		if err := r.legacyIptables(); err != nil {
			return err
		}
	}
	return r.shareNetnsDir()
}

// legacyIptables bind-mounts xtables-legacy-multi over xtables-nft-multi
// (Debian's package iptables installs both) and checks that iptables is
// legacy then.
func (r *Runtime) legacyIptables() error {
	const nft, legacy = "/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi"
	for _, p := range []string{nft, legacy} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (Debian package iptables)", err)
		}
	}
	if err := unix.Mount(legacy, nft, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s on %s: %w", legacy, nft, err)
	}
	r.undo = append(r.undo, func() error { return unix.Unmount(nft, 0) })
	if out, err := exec.Command("iptables", "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), "legacy") {
		return fmt.Errorf("iptables --version: %v %s, want legacy", err, out)
	}
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
		root := filepath.Join(fixturesys.CgroupMountDir, h.Dir)
		if !fixturesys.IsCgroupFS(root) {
			continue
		}
		base := filepath.Join(root, podCgroupBase)
		for _, uid := range uids {
			pod := filepath.Join(base, "pod"+uid)
			children, _ := os.ReadDir(pod)
			for _, c := range children {
				if c.IsDir() {
					errs = append(errs, fixturesys.RemoveCgroup(filepath.Join(pod, c.Name())))
				}
			}
			errs = append(errs, fixturesys.RemoveCgroup(pod))
		}
		for _, dir := range []string{base, filepath.Dir(base)} {
			errs = append(errs, fixturesys.RemoveSharedCgroup(dir))
		}
	}
	return errors.Join(errs...)
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
