package inventory

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/proctest"
)

func TestAddMounts(t *testing.T) {
	const host = 4026531840
	const (
		nsA = 4026532281
		nsB = 4026532584
	)
	for _, tc := range []struct {
		name      string
		rootfs    string
		mountinfo string
		// wantMounts is Namespace.Mounts by inode, wantPaths mountPaths.
		wantMounts map[uint64][]string
		wantPaths  map[uint64][]string
	}{
		{"none", "/", `22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
`, map[uint64][]string{}, map[uint64][]string{}},
		{"two namespaces", "/", `29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
615 29 0:25 /netns /run/netns rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
616 615 0:4 net:[4026532281] /run/netns/a rw shared:319 - nsfs nsfs rw
617 29 0:4 net:[4026532584] /run/docker/netns/0123abcd rw - nsfs nsfs rw
618 29 0:4 mnt:[4026532999] /run/snapd/ns/x.mnt rw - nsfs nsfs rw
`,
			map[uint64][]string{nsA: {"/run/netns/a"}, nsB: {"/run/docker/netns/0123abcd"}},
			map[uint64][]string{nsA: {"/run/netns/a"}, nsB: {"/run/docker/netns/0123abcd"}}},
		{"one namespace mounted twice", "/", `616 615 0:4 net:[4026532281] /run/netns/a rw shared:319 - nsfs nsfs rw
617 29 0:4 net:[4026532281] /run/docker/netns/0123abcd rw - nsfs nsfs rw
`,
			map[uint64][]string{nsA: {"/run/docker/netns/0123abcd", "/run/netns/a"}},
			map[uint64][]string{nsA: {"/run/docker/netns/0123abcd", "/run/netns/a"}}},
		// A mount point mounted over holds the later namespace.
		{"mounted over", "/", `616 615 0:4 net:[4026532281] /run/netns/x rw shared:319 - nsfs nsfs rw
620 616 0:4 net:[4026532584] /run/netns/x rw shared:320 - nsfs nsfs rw
`,
			map[uint64][]string{nsB: {"/run/netns/x"}},
			map[uint64][]string{nsB: {"/run/netns/x"}}},
		{"mounted over and back", "/", `616 615 0:4 net:[4026532281] /run/netns/x rw - nsfs nsfs rw
620 616 0:4 net:[4026532584] /run/netns/x rw - nsfs nsfs rw
621 620 0:4 net:[4026532281] /run/netns/x rw - nsfs nsfs rw
`,
			map[uint64][]string{nsA: {"/run/netns/x"}},
			map[uint64][]string{nsA: {"/run/netns/x"}}},
		{"host namespace skipped", "/", `616 615 0:4 net:[4026531840] /run/netns/default rw - nsfs nsfs rw
617 615 0:4 net:[4026532281] /run/netns/a rw - nsfs nsfs rw
`,
			map[uint64][]string{nsA: {"/run/netns/a"}},
			map[uint64][]string{nsA: {"/run/netns/a"}}},
		{"mounted over by the host namespace", "/", `616 615 0:4 net:[4026532281] /run/netns/x rw - nsfs nsfs rw
620 616 0:4 net:[4026531840] /run/netns/x rw - nsfs nsfs rw
`, map[uint64][]string{}, map[uint64][]string{}},
		{"escaped mount point", "/", `616 615 0:4 net:[4026532281] /run/netns/my\040ns rw - nsfs nsfs rw
`,
			map[uint64][]string{nsA: {"/run/netns/my ns"}},
			map[uint64][]string{nsA: {"/run/netns/my ns"}}},
		{"rootfs", "/host", `702 650 0:4 net:[4026532281] /host/run/netns/x rw master:12 - nsfs nsfs rw
703 650 0:4 net:[4026532584] /host/run/docker/netns/0123abcd rw master:13 - nsfs nsfs rw
`,
			map[uint64][]string{nsA: {"/run/netns/x"}, nsB: {"/run/docker/netns/0123abcd"}},
			map[uint64][]string{nsA: {"/host/run/netns/x"}, nsB: {"/host/run/docker/netns/0123abcd"}}},
		{"rootfs with a trailing slash", "/host/", `702 650 0:4 net:[4026532281] /host/run/netns/x rw master:12 - nsfs nsfs rw
`,
			map[uint64][]string{nsA: {"/run/netns/x"}},
			map[uint64][]string{nsA: {"/host/run/netns/x"}}},
		{"no newline at the end", "/", `616 615 0:4 net:[4026532281] /run/netns/a rw - nsfs nsfs rw`,
			map[uint64][]string{nsA: {"/run/netns/a"}},
			map[uint64][]string{nsA: {"/run/netns/a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			procfs := t.TempDir()
			proctest.WriteFile(t, procfs, "self/mountinfo", tc.mountinfo)
			ns := &namespaces{byInode: map[uint64]*Namespace{}, byNSID: map[int]*Namespace{}, mountPaths: map[uint64][]string{}}
			if err := ns.addMounts(Paths{Procfs: procfs, Sysfs: "/sys", Rootfs: tc.rootfs}, host); err != nil {
				t.Fatalf("addMounts(%q): %v", tc.mountinfo, err)
			}
			gotMounts := map[uint64][]string{}
			for inode, n := range ns.byInode {
				if n.Inode != inode || n.NSID != -1 || len(n.PIDs) != 0 {
					t.Errorf("addMounts(%q): namespace %d = %+v, want inode %d, nsid -1 and no PIDs", tc.mountinfo, inode, *n, inode)
				}
				gotMounts[inode] = slices.Sorted(slices.Values(n.Mounts))
			}
			gotPaths := map[uint64][]string{}
			for inode, paths := range ns.mountPaths {
				gotPaths[inode] = slices.Sorted(slices.Values(paths))
			}
			if !reflect.DeepEqual(gotMounts, tc.wantMounts) {
				t.Errorf("addMounts(%q) Mounts = %v, want %v", tc.mountinfo, gotMounts, tc.wantMounts)
			}
			if !reflect.DeepEqual(gotPaths, tc.wantPaths) {
				t.Errorf("addMounts(%q) mountPaths = %v, want %v", tc.mountinfo, gotPaths, tc.wantPaths)
			}
		})
	}
}

// TestAddMountsToProcessNamespace checks that a mount joins the namespace
// the process scan already found rather than replacing it.
func TestAddMountsToProcessNamespace(t *testing.T) {
	procfs := t.TempDir()
	proctest.WriteFile(t, procfs, "self/mountinfo", "616 615 0:4 net:[4026532281] /run/netns/a rw - nsfs nsfs rw\n")
	ns := &namespaces{byInode: map[uint64]*Namespace{}, byNSID: map[int]*Namespace{}, mountPaths: map[uint64][]string{}}
	ns.get(4026532281).addPID(1234)
	if err := ns.addMounts(Paths{Procfs: procfs, Rootfs: "/"}, 4026531840); err != nil {
		t.Fatalf("addMounts: %v", err)
	}
	want := Namespace{Inode: 4026532281, NSID: -1, PIDs: []int{1234}, Mounts: []string{"/run/netns/a"}}
	if got := ns.byInode[4026532281]; len(ns.byInode) != 1 || got == nil || !reflect.DeepEqual(*got, want) {
		t.Errorf("addMounts: namespaces = %v, want only %+v", ns.byInode, want)
	}
}

func TestAddMountsMissingMountinfo(t *testing.T) {
	procfs := t.TempDir()
	ns := &namespaces{byInode: map[uint64]*Namespace{}, byNSID: map[int]*Namespace{}, mountPaths: map[uint64][]string{}}
	err := ns.addMounts(Paths{Procfs: procfs, Rootfs: "/"}, 4026531840)
	if err == nil || !strings.Contains(err.Error(), "mountinfo") {
		t.Errorf("addMounts(%s) = %v, want an error about mountinfo", procfs, err)
	}
}
