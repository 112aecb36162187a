package kernel

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Holder is something that keeps a network namespace alive, found in
// procfs: a process or thread in it, a file descriptor open on it, or an
// nsfs mount of it in some mount namespace.
type Holder struct {
	// PID is the process: the one in the namespace, the one holding the
	// descriptor, or one process of the mount namespace with the mount.
	PID int
	// Name is its command name.
	Name string
	// FD is the descriptor's number, Mount the mount point (as that mount
	// namespace sees it); both empty for a process in the namespace.
	FD    int
	Mount string
}

func (h Holder) String() string {
	who := fmt.Sprintf("process %d (%s)", h.PID, h.Name)
	switch {
	case h.Mount != "":
		return fmt.Sprintf("mount %s in the mount namespace of %s", h.Mount, who)
	case h.FD > 0:
		return fmt.Sprintf("fd %d of %s", h.FD, who)
	}
	return who + " in it"
}

// Holders returns, for each namespace of inodes, what one pass over procfs
// finds holding it: processes with a thread in it, descriptors open on it
// (their link reads net:[inode]), and nsfs mounts of it in every mount
// namespace a process of procfs is in, each mount namespace read once.
// It explains why a namespace lives on; it proves nothing: a process may
// enter or leave during the pass, and some holders cannot be seen here
// (a socket of the namespace passed elsewhere, a process of another PID
// namespace, a namespace the kernel has not freed yet). A process that
// cannot be read is skipped.
func Holders(procfs string, inodes map[uint64]bool) map[uint64][]Holder {
	holders := map[uint64][]Holder{}
	names, err := ReadDirNames(procfs)
	if err != nil {
		return holders
	}
	var self unix.Stat_t
	if unix.Stat(procfs+"/self/ns/net", &self) != nil {
		return holders
	}
	mountNamespaces := map[uint64]bool{}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		dir := procfs + "/" + name
		var found []Holder
		var in []uint64
		for _, inode := range namespacesOf(dir, inodes) {
			in = append(in, inode)
			found = append(found, Holder{PID: pid})
		}
		for fd, inode := range descriptorsOn(dir, self.Dev, inodes) {
			in = append(in, inode)
			found = append(found, Holder{PID: pid, FD: fd})
		}
		var st unix.Stat_t
		if unix.Stat(dir+"/ns/mnt", &st) == nil && !mountNamespaces[st.Ino] {
			mountNamespaces[st.Ino] = true
			for _, m := range nsfsMountsOf(dir, inodes) {
				in = append(in, m.Inode)
				found = append(found, Holder{PID: pid, Mount: m.Point})
			}
		}
		if len(found) == 0 {
			continue
		}
		comm := ProcessName(dir)
		for i, h := range found {
			h.Name = comm
			holders[in[i]] = append(holders[in[i]], h)
		}
	}
	for _, hs := range holders {
		slices.SortStableFunc(hs, func(a, b Holder) int { return a.PID - b.PID })
	}
	return holders
}

// descriptorsOn returns the descriptors of the process at dir open on a
// namespace of inodes (nsfs, device nsfsDev), with its inode. The link of
// one opened through an nsfs mount reads the mount's path, not
// net:[inode]: each descriptor whose link is a path is looked at.
func descriptorsOn(dir string, nsfsDev uint64, inodes map[uint64]bool) map[int]uint64 {
	on := map[int]uint64{}
	fds, _ := ReadDirNames(dir + "/fd")
	var st unix.Stat_t
	for _, fd := range fds {
		path := dir + "/fd/" + fd
		target, err := os.Readlink(path)
		if err != nil || !(strings.HasPrefix(target, "/") || strings.HasPrefix(target, "net:[")) {
			continue
		}
		if unix.Stat(path, &st) == nil && st.Dev == nsfsDev && inodes[st.Ino] {
			n, _ := strconv.Atoi(fd)
			on[n] = st.Ino
		}
	}
	return on
}

// namespacesOf returns the namespaces of inodes that the process at dir
// or one of its threads is in.
func namespacesOf(dir string, inodes map[uint64]bool) []uint64 {
	var in []uint64
	var st unix.Stat_t
	add := func(path string) {
		if unix.Stat(path, &st) == nil && inodes[st.Ino] && !slices.Contains(in, st.Ino) {
			in = append(in, st.Ino)
		}
	}
	add(dir + "/ns/net")
	tids, _ := ReadDirNames(dir + "/task")
	for _, tid := range tids {
		add(dir + "/task/" + tid + "/ns/net")
	}
	return in
}

// nsfsMountsOf returns the nsfs mounts of namespaces of inodes in the
// mount namespace of the process at dir.
func nsfsMountsOf(dir string, inodes map[uint64]bool) []NsfsMount {
	f, err := os.Open(dir + "/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []NsfsMount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, " nsfs ") {
			continue
		}
		if inode, point, ok := ParseNsfsMount(line); ok && inodes[inode] {
			mounts = append(mounts, NsfsMount{Inode: inode, Point: point})
		}
	}
	return mounts
}
