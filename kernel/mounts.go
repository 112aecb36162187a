package kernel

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ParseNsfsMount returns the namespace inode and the mount point of a
// mountinfo line that is an nsfs mount of a network namespace.
//
//	36 35 0:4 net:[4026532281] /run/netns/leak rw shared:9 - nsfs nsfs rw
func ParseNsfsMount(line string) (inode uint64, mountPoint string, ok bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" {
			sep = i
			break
		}
	}
	if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "nsfs" {
		return 0, "", false
	}
	root := fields[3]
	if !strings.HasPrefix(root, "net:[") || !strings.HasSuffix(root, "]") {
		return 0, "", false
	}
	inode, err := strconv.ParseUint(root[len("net:["):len(root)-1], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return inode, unescapeMountPath(fields[4]), true
}

// unescapeMountPath undoes the octal escapes (\040 for a space) that the
// kernel writes into mountinfo paths.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// NsfsMount is an nsfs mount of a network namespace in mountinfo.
type NsfsMount struct {
	// Inode identifies the namespace it holds.
	Inode uint64
	// Point is the mount point as the reading process opens it.
	Point string
}

// NsfsMounts lists the nsfs mounts of network namespaces in the mount
// namespace of the process reading procfs/self/mountinfo, each mount
// point once, in the order mountinfo first lists it. A mount point
// mounted over shows the later mount: the last line for a path is the
// namespace that path holds now.
func NsfsMounts(procfs string) ([]NsfsMount, error) {
	return NsfsMountsIn(filepath.Join(procfs, "self/mountinfo"))
}

// NsfsMountsIn is [NsfsMounts] of the mountinfo file at path
// (/proc/thread-self/mountinfo for a thread in a mount namespace of its
// own).
func NsfsMountsIn(path string) ([]NsfsMount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var mounts []NsfsMount
	at := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		inode, point, ok := ParseNsfsMount(sc.Text())
		if !ok {
			continue
		}
		if i, dup := at[point]; dup {
			mounts[i].Inode = inode
			continue
		}
		at[point] = len(mounts)
		mounts = append(mounts, NsfsMount{Inode: inode, Point: point})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

// NsfsInode returns the inode of the namespace the nsfs mount at path
// pins, 0 when path is no nsfs mount now.
func NsfsInode(path string) uint64 {
	var fs unix.Statfs_t
	if unix.Statfs(path, &fs) != nil || fs.Type != unix.NSFS_MAGIC {
		return 0
	}
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}
