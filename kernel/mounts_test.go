package kernel

import (
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
			inode, mount, ok := ParseNsfsMount(tc.line)
			if inode != tc.wantInode || mount != tc.wantMount || ok != tc.wantParsed {
				t.Errorf("ParseNsfsMount(%q) = %d, %q, %v, want %d, %q, %v",
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
