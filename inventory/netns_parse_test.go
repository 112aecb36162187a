package inventory

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseNsfsMount(t *testing.T) {
	for _, tc := range []struct {
		name       string
		line       string
		wantInode  uint64
		wantMount  string
		wantParsed bool
	}{
		{"ip netns", "616 29 0:4 net:[4026532584] /run/netns/leak rw shared:319 - nsfs nsfs rw",
			4026532584, "/run/netns/leak", true},
		{"docker", "1077 26 0:4 net:[4026532281] /run/docker/netns/abc123def456 rw - nsfs nsfs rw",
			4026532281, "/run/docker/netns/abc123def456", true},
		{"several optional fields", "36 35 0:4 net:[4026532281] /run/netns/x rw,nosuid shared:5 master:1 propagate_from:2 unbindable - nsfs nsfs rw",
			4026532281, "/run/netns/x", true},
		{"escaped space", `616 29 0:4 net:[4026532584] /run/netns/my\040ns rw shared:319 - nsfs nsfs rw`,
			4026532584, "/run/netns/my ns", true},
		{"escaped tab, newline and backslash", `616 29 0:4 net:[4026532584] /run/netns/a\011b\012c\134d rw - nsfs nsfs rw`,
			4026532584, "/run/netns/a\tb\nc\\d", true},
		{"under a rootfs", "702 650 0:4 net:[4026532999] /host/run/netns/cni-1b2c3d4e rw,relatime master:12 - nsfs nsfs rw",
			4026532999, "/host/run/netns/cni-1b2c3d4e", true},
		{"tab separated", "616\t29\t0:4\tnet:[1]\t/run/netns/x\trw\t-\tnsfs\tnsfs\trw", 1, "/run/netns/x", true},
		{"no super options", "616 29 0:4 net:[4026532584] /run/netns/x rw - nsfs", 4026532584, "/run/netns/x", true},

		{"mount namespace", "617 29 0:4 mnt:[4026531841] /run/snapd/ns/lxd.mnt rw - nsfs nsfs rw", 0, "", false},
		{"pid namespace", "618 29 0:4 pid:[4026531836] /run/pidns/x rw shared:1 - nsfs nsfs rw", 0, "", false},
		{"user namespace", "619 29 0:4 user:[4026531837] /run/userns/x rw - nsfs nsfs rw", 0, "", false},
		{"root", "29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro", 0, "", false},
		{"tmpfs on /run/netns", "615 29 0:25 /netns /run/netns rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=3270284k,mode=755", 0, "", false},
		{"proc", "22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw", 0, "", false},
		{"net root on another file system", "616 29 0:4 net:[4026532584] /run/netns/x rw - proc proc rw", 0, "", false},
		{"nsfs as the source only", "616 29 0:4 net:[4026532584] /run/netns/x rw - tmpfs nsfs rw", 0, "", false},

		{"empty", "", 0, "", false},
		{"no separator", "616 29 0:4 net:[4026532584] /run/netns/x rw shared:319 nsfs nsfs rw", 0, "", false},
		{"separator too early", "616 29 0:4 net:[4026532584] - nsfs nsfs rw", 0, "", false},
		{"separator last", "616 29 0:4 net:[4026532584] /run/netns/x rw -", 0, "", false},
		{"empty inode", "616 29 0:4 net:[] /run/netns/x rw - nsfs nsfs rw", 0, "", false},
		{"inode not a number", "616 29 0:4 net:[abc] /run/netns/x rw - nsfs nsfs rw", 0, "", false},
		{"negative inode", "616 29 0:4 net:[-1] /run/netns/x rw - nsfs nsfs rw", 0, "", false},
		{"inode overflows", "616 29 0:4 net:[18446744073709551616] /run/netns/x rw - nsfs nsfs rw", 0, "", false},
		{"unclosed bracket", "616 29 0:4 net:[4026532584 /run/netns/x rw - nsfs nsfs rw", 0, "", false},
		{"bracket only", "616 29 0:4 net:[ /run/netns/x rw - nsfs nsfs rw", 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inode, mount, ok := parseNsfsMount(tc.line)
			if inode != tc.wantInode || mount != tc.wantMount || ok != tc.wantParsed {
				t.Errorf("parseNsfsMount(%q) = %d, %q, %v, want %d, %q, %v",
					tc.line, inode, mount, ok, tc.wantInode, tc.wantMount, tc.wantParsed)
			}
		})
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"/run/netns/x", "/run/netns/x"},
		{`/run/netns/a\040b`, "/run/netns/a b"},
		{`/run/netns/x\040`, "/run/netns/x "},
		{`\040/x`, " /x"},
		{`/a\040\040b`, "/a  b"},
		{`/a\134040`, `/a\040`},
		{`/a\377`, "/a\xff"},
		// Not an escape the kernel writes: kept as is.
		{`/a\`, `/a\`},
		{`/a\04`, `/a\04`},
		{`/a\400`, `/a\400`},
		{`/a\089`, `/a\089`},
		{`/a\x20`, `/a\x20`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := unescapeMountPath(tc.in); got != tc.want {
				t.Errorf("unescapeMountPath(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestAddMounts reads a synthetic <procfs>/self/mountinfo.
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
			writeProcFile(t, procfs, "self/mountinfo", tc.mountinfo)
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
	writeProcFile(t, procfs, "self/mountinfo", "616 615 0:4 net:[4026532281] /run/netns/a rw - nsfs nsfs rw\n")
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

func TestInitialPIDNamespace(t *testing.T) {
	const kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 3 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	for _, tc := range []struct {
		name string
		stat string
		want bool
	}{
		{"host", kthreadd, true},
		{"container shell as PID 2", "2 (sh) S 1 2 1 34816 2 4194560 101 0 0 0 0 0 0 0 20 0 1 0 41250 1683456 230 18446744073709551615\n", false},
		{"command named kthreadd-ish", "2 (kthreadd2) S 1 2 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 41250\n", false},
		{"other PID in the file", "20 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3\n", false},
		{"truncated after the command", "2 (kthreadd)", false},
		{"garbage", "\x00\xff(kthreadd) ", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			procfs := t.TempDir()
			writeProcFile(t, procfs, "2/stat", tc.stat)
			if got := initialPIDNamespace(procfs); got != tc.want {
				t.Errorf("initialPIDNamespace(%q) = %v, want %v", tc.stat, got, tc.want)
			}
		})
	}
	for _, procfs := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		if initialPIDNamespace(procfs) {
			t.Errorf("initialPIDNamespace(%s) without 2/stat = true, want false", procfs)
		}
	}
}

// writeProcFile writes data to name under a synthetic procfs dir.
func writeProcFile(t *testing.T, dir, name, data string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
