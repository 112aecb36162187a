package inventory

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// namespaces is the result of one pass over /proc and mountinfo: every
// network namespace other than the host's that a process or an nsfs mount
// holds, by inode and by nsid.
type namespaces struct {
	// host is the inode of the exporter's own namespace.
	host    uint64
	byInode map[uint64]*Namespace
	byNSID  map[int]*Namespace
	// mountPaths are the nsfs mount points as this process opens them,
	// which differ from Namespace.Mounts when --path.rootfs is set.
	mountPaths map[uint64][]string
	// partial says why the scan may have missed processes; empty when it
	// saw every process that can hold a namespace.
	partial []string
	// pins are open handles on every namespace whose nsid was looked up.
	// A namespace that is held open cannot die, so its nsid cannot be
	// given to a new namespace before the link dump that runs beside the
	// scan has finished: without them a new pod's veth could be matched to
	// the record of a leaked namespace deleted in between.
	pins []int
	// threadsRead says every thread of every process has been seen, not
	// only each process's own namespace.
	threadsRead bool
	// denied says the partial view already counts processes whose
	// namespace may not be read.
	denied bool
}

// close releases the pins once the snapshot no longer maps nsids.
func (ns *namespaces) close() {
	for _, fd := range ns.pins {
		unix.Close(fd)
	}
	ns.pins = nil
}

// scanNamespaces finds every network namespace held by a process or an nsfs
// mount, without entering any of them, and asks the kernel once per
// namespace for the nsid the host knows it by.
//
// It reads each process's namespace, not its threads' unless every
// thread is true or the process's leader has exited: a namespace that
// holds a process is not empty whatever its threads do. The threads are
// read later, by addThreads, only when some namespace could look empty
// or ownerless without them.
func scanNamespaces(p Paths, trustPIDNamespace, everyThread bool) (*namespaces, error) {
	ns, err := newNamespaces(p)
	if err != nil {
		return nil, err
	}
	host := ns.host
	ns.threadsRead = everyThread
	if err := ns.addProcesses(p.Procfs, host, everyThread); err != nil {
		return nil, err
	}
	ns.partial = append(ns.partial, viewLimits(p, trustPIDNamespace)...)
	if err := ns.addMounts(p, host); err != nil {
		return nil, err
	}
	for _, n := range ns.byInode {
		sort.Ints(n.PIDs)
		sort.Strings(n.Mounts)
	}
	if err := ns.lookupNSIDs(p, func(*Namespace) bool { return true }); err != nil {
		return nil, err
	}
	return ns, nil
}

// newNamespaces returns an empty set of the namespaces other than the
// exporter's own, which it identifies.
func newNamespaces(p Paths) (*namespaces, error) {
	host, err := hostNetnsInode(p)
	if err != nil {
		return nil, err
	}
	return &namespaces{
		host:       host,
		byInode:    map[uint64]*Namespace{},
		byNSID:     map[int]*Namespace{},
		mountPaths: map[uint64][]string{},
	}, nil
}

// lookupNSIDs asks the kernel for the nsid of each namespace that want
// selects, over one netlink socket.
func (ns *namespaces) lookupNSIDs(p Paths, want func(*Namespace) bool) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink socket: %w", err)
	}
	defer h.Close()
	for _, n := range ns.byInode {
		if !want(n) {
			continue
		}
		if id, fd, ok := ns.lookupNSID(h, p, n); ok {
			ns.pins = append(ns.pins, fd)
			if id >= 0 {
				n.NSID = id
				ns.byNSID[id] = n
			}
		}
	}
	return nil
}

// resolveOwners finds the owner of every namespace that has an nsid: only
// those can hold the peer of a host veth, since the kernel gives a
// namespace an id when a link crosses into it.
func (ns *namespaces) resolveOwners(procfs string, cache *ownerCache) {
	for _, n := range ns.byNSID {
		n.resolve(procfs, cache)
	}
}

// evict drops from cache the processes this scan did not find in any
// namespace: gone, or no longer where an owner is looked for.
func (ns *namespaces) evict(cache *ownerCache) {
	live := map[int]bool{}
	for _, n := range ns.byInode {
		for _, pid := range n.PIDs {
			live[pid] = true
		}
	}
	cache.keep(func(pid int) bool { return live[pid] })
}

// attach turns a link dump into veths linked to their peers' namespaces
// and those namespaces' owners.
//
// The scan pinned what it found before the dump ended, and no nsid was
// freed since the dump began (or the links were dumped again after the
// scan: see [Inventory.scan]), so an nsid of the dump that the scan knows
// names the namespace the scan found. One it
// does not know may belong to a namespace that got its first nsid from the
// dump itself (a veth created meanwhile), which lookupLate finds, or to a
// namespace the scan never saw (being destroyed, its last process just
// gone). The kernel frees such a namespace's nsid when it is cleaned up
// and hands the lowest free id to the next namespace that needs one: the
// late lookup can find the dump's nsid on another namespace than the one
// the dump meant. So the dump is not trusted after a late lookup: the
// links are dumped again by redump, when every scanned namespace is
// pinned with a fixed id, and the veths of that second dump are returned;
// an nsid it shows that no scanned namespace has stays unresolved
// (netns_not_found). All of this only when some nsid was missing.
//
// If the late lookup or the second dump fails, the veths of the first dump
// are returned, attached only where the scan knew the nsid, with the
// error.
func (ns *namespaces) attach(links []link, lookupLate func() error, redump func() ([]link, error)) ([]Veth, error) {
	veths := vethsFromLinks(links)
	if !ns.link(veths) {
		return veths, nil
	}
	if err := lookupLate(); err != nil {
		return veths, fmt.Errorf("look up late nsids: %w", err)
	}
	again, err := redump()
	if err != nil {
		return veths, err
	}
	veths = vethsFromLinks(again)
	ns.link(veths)
	return veths, nil
}

// link sets the peer namespace and owner of every veth whose peer nsid is
// known, and reports whether some peer nsid is not.
func (ns *namespaces) link(veths []Veth) (missing bool) {
	for i := range veths {
		v := &veths[i]
		if v.PeerNetNSID < 0 {
			continue
		}
		if n := ns.byNSID[v.PeerNetNSID]; n != nil {
			v.PeerNetns = n
			v.Owner = n.Owner
		} else {
			missing = true
		}
	}
	return missing
}

// lookupLate asks again for the nsids of the namespaces that had none when
// scanned, pins them, and finds the owners of those that have one now.
func (ns *namespaces) lookupLate(p Paths, cache *ownerCache) error {
	var fresh []*Namespace
	err := ns.lookupNSIDs(p, func(n *Namespace) bool {
		if n.NSID >= 0 {
			return false
		}
		fresh = append(fresh, n)
		return true
	})
	if err != nil {
		return err
	}
	for _, n := range fresh {
		if n.NSID >= 0 {
			n.resolve(p.Procfs, cache)
		}
	}
	return nil
}

// leaked returns the namespaces held only by mounts: no process in them
// and no veth leading into them.
func (ns *namespaces) leaked(veths []Veth) []*Namespace {
	peers := map[*Namespace]bool{}
	for i := range veths {
		if veths[i].PeerNetns != nil {
			peers[veths[i].PeerNetns] = true
		}
	}
	leaked := []*Namespace{}
	for _, n := range ns.byInode {
		if n.Empty() && len(n.Mounts) > 0 && !peers[n] {
			leaked = append(leaked, n)
		}
	}
	sort.Slice(leaked, func(i, j int) bool { return leaked[i].Mounts[0] < leaked[j].Mounts[0] })
	return leaked
}

// hostNetnsInode returns the inode of the namespace the exporter's netlink
// socket lives in: the namespace whose link dump is the inventory.
func hostNetnsInode(p Paths) (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/thread-self/ns/net", &st)
	if err != nil {
		err = unix.Stat(filepath.Join(p.Procfs, "self/ns/net"), &st)
	}
	if err != nil {
		return 0, fmt.Errorf("stat own network namespace: %w", err)
	}
	return st.Ino, nil
}

func (ns *namespaces) get(inode uint64) *Namespace {
	n := ns.byInode[inode]
	if n == nil {
		n = &Namespace{Inode: inode, NSID: -1, PIDs: []int{}, Mounts: []string{}}
		ns.byInode[inode] = n
	}
	return n
}

func (ns *namespaces) addProcesses(procfs string, host uint64, threads bool) error {
	w, err := walkProcesses(procfs, threads, func(pid int, inode uint64) {
		if inode != host {
			ns.get(inode).addPID(pid)
		}
	})
	if err != nil {
		return err
	}
	ns.addWalk(w)
	return nil
}

// addWalk records in the partial view what a walk could not see.
func (ns *namespaces) addWalk(w processWalk) {
	if w.denied > 0 && !ns.denied {
		ns.denied = true
		ns.partial = append(ns.partial, fmt.Sprintf(
			"cannot read the network namespace of %d processes outside the host namespace (permission denied; CAP_SYS_PTRACE missing, or a security module)", w.denied))
	}
	if len(w.failed) > 0 {
		ns.partial = append(ns.partial, w.failedMessage())
	}
}

// needThreads reports whether the threads of every process must be read
// before the veths of links can be judged: some peer namespace was not
// found by the process pass (a thread alone may hold it), or holds no
// process of a container (a thread of one may be in it), or some
// namespace holds no process at all (a leaked namespace is only leaked if
// no thread is in it either).
func (ns *namespaces) needThreads(links []link) bool {
	if ns.threadsRead {
		return false
	}
	for _, n := range ns.byInode {
		if len(n.PIDs) == 0 {
			return true
		}
	}
	for _, l := range links {
		if !l.veth || l.peerNetNSID < 0 {
			continue
		}
		n := ns.byNSID[l.peerNetNSID]
		if n == nil || n.Owner == nil || n.Owner.Kind == OwnerProcess {
			return true
		}
	}
	return false
}

// addThreads reads the namespace of every thread of every process and
// adds the processes it finds to the namespaces their threads are in,
// new namespaces included (their nsids are looked up late, as for any
// namespace the scan did not pin). The owners of the namespaces that
// gained a process and have an nsid are resolved again. Threads that
// cannot be read make the view partial, never a namespace empty.
func (ns *namespaces) addThreads(p Paths, cache *ownerCache) error {
	if ns.threadsRead {
		return nil
	}
	ns.threadsRead = true
	known := map[*Namespace]map[int]bool{}
	w, err := walkProcesses(p.Procfs, true, func(pid int, inode uint64) {
		if inode == ns.host {
			return
		}
		n := ns.get(inode)
		pids := known[n]
		if pids == nil {
			pids = make(map[int]bool, len(n.PIDs))
			for _, pid := range n.PIDs {
				pids[pid] = true
			}
			known[n] = pids
		}
		if !pids[pid] {
			pids[pid] = true
			n.PIDs = append(n.PIDs, pid)
		}
	})
	if err != nil {
		return err
	}
	ns.addWalk(w)
	for n, pids := range known {
		if len(pids) == len(n.PIDs) {
			continue
		}
		sort.Ints(n.PIDs)
		if n.NSID >= 0 {
			n.resolve(p.Procfs, cache)
		}
	}
	return nil
}

// processWalk is what one pass over /proc could not see.
type processWalk struct {
	// denied counts processes whose namespace may not be read and that
	// are not shown to be in the exporter's own namespace.
	denied int
	// failed are the other errors reading a process's or a thread's
	// namespace or its task directory, one per process: the threads
	// behind them were not seen.
	failed []error
}

func (w *processWalk) failedMessage() string {
	msg := fmt.Sprintf("cannot read the network namespace of %d processes or their threads: %v", len(w.failed), w.failed[0])
	if len(w.failed) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(w.failed)-1)
	}
	return msg
}

// err is nil when the walk saw every process and thread, else says why not.
func (w *processWalk) err() error {
	var errs []error
	if w.denied > 0 {
		errs = append(errs, fmt.Errorf("cannot read the network namespace of %d processes (permission denied)", w.denied))
	}
	if len(w.failed) > 0 {
		errs = append(errs, errors.New(w.failedMessage()))
	}
	return errors.Join(errs...)
}

// vanished reports whether err means the process or thread exited
// while it was being read: it holds no namespace any more.
func vanished(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// walkProcesses calls visit with the network namespace inode of every
// process in procfs and, when threads is true, of each of its threads
// that is in another namespace than the process, in one pass: visit may
// see one PID several times. The threads of a process whose leader has
// exited are read in any case: the leader shows no namespace. A process
// or thread that exits meanwhile is skipped; any other failure is counted
// in the result, never silently taken for "no namespace".
func walkProcesses(procfs string, threads bool, visit func(pid int, inode uint64)) (processWalk, error) {
	var w processWalk
	d, err := os.Open(procfs)
	if err != nil {
		return w, fmt.Errorf("read processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return w, fmt.Errorf("read processes: %w", err)
	}
	hostDev := procNetDevInode(procfs + "/self")
	// Paths relative to the open procfs: each stat then resolves only the
	// process's own part, which makes the pass about a tenth cheaper.
	procfd := int(d.Fd())
	var st unix.Stat_t
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		dir := procfs + "/" + name
		leader := uint64(0)
		switch err := unix.Fstatat(procfd, name+"/ns/net", &st, 0); {
		case err == nil:
			leader = st.Ino
			visit(pid, leader)
			if !threads {
				continue
			}
		case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
			// procfs registers its net entries once per namespace, and
			// they are readable without ptrace access: a process whose
			// threads all show our own is in our namespace.
			if hostDev == 0 || !threadsInNetDev(dir, hostDev) {
				w.denied++
			}
			continue
		case vanished(err):
			// Exited, or a leader that exited before its threads: they
			// still run, each with its own namespace.
		default:
			w.failed = append(w.failed, fmt.Errorf("PID %d: ns/net: %w", pid, err))
			continue
		}
		// A thread can sit in another namespace than its leader (setns on
		// one thread), and a leader that has exited leaves its threads
		// running with no ns link of its own: either keeps a namespace
		// alive that the leader alone does not show.
		if err := walkThreads(dir, pid, leader, visit); err != nil {
			w.failed = append(w.failed, fmt.Errorf("PID %d: %w", pid, err))
		}
	}
	return w, nil
}

// walkThreads visits the namespaces of the threads of the process at dir
// that are not the leader's. The leader itself is skipped when its
// namespace was read (leader != 0).
func walkThreads(dir string, pid int, leader uint64, visit func(pid int, inode uint64)) error {
	tids, err := readDirNames(dir + "/task")
	if err != nil {
		if vanished(err) {
			return nil
		}
		return fmt.Errorf("read task directory: %w", err)
	}
	self := strconv.Itoa(pid)
	var st unix.Stat_t
	for _, tid := range tids {
		if leader != 0 && tid == self {
			continue
		}
		switch err := unix.Stat(dir+"/task/"+tid+"/ns/net", &st); {
		case err == nil:
			if st.Ino != leader {
				visit(pid, st.Ino)
			}
		case vanished(err):
		default:
			return fmt.Errorf("thread %s: ns/net: %w", tid, err)
		}
	}
	return nil
}

// threadsInNetDev reports whether the process at dir and every thread of
// it show the net/dev inode dev, that is, are in the namespace whose
// net/dev that is. A thread that exits meanwhile is in none.
func threadsInNetDev(dir string, dev uint64) bool {
	if procNetDevInode(dir) != dev {
		return false
	}
	tids, err := readDirNames(dir + "/task")
	if err != nil {
		return vanished(err)
	}
	var st unix.Stat_t
	for _, tid := range tids {
		err := unix.Stat(dir+"/task/"+tid+"/net/dev", &st)
		if (err != nil && !vanished(err)) || (err == nil && st.Ino != dev) {
			return false
		}
	}
	return true
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// Occupants returns, for each namespace inode of inodes, the processes
// that have at least one thread in it, from one pass over every process
// and thread of p.Procfs. It is the last check before a deletion, so it
// reads only namespace links, no cgroups. A process or thread that exits
// during the pass is skipped; any other failure to read one (a namespace
// link, a task directory) makes the answer incomplete and is returned as
// an error with what was seen, never taken for an empty namespace. A
// process whose namespace may not be read but that /proc/PID/net/dev shows
// in the caller's own namespace is in none of inodes (the caller's
// namespace is the host's, which holds no peer).
func Occupants(p Paths, inodes map[uint64]bool) (map[uint64][]int, error) {
	occupants := make(map[uint64][]int, len(inodes))
	w, err := walkProcesses(p.Procfs, true, func(pid int, inode uint64) {
		if !inodes[inode] {
			return
		}
		pids := occupants[inode]
		if len(pids) == 0 || pids[len(pids)-1] != pid {
			occupants[inode] = append(pids, pid)
		}
	})
	for _, pids := range occupants {
		sort.Ints(pids)
	}
	if err != nil {
		return occupants, err
	}
	return occupants, w.err()
}

// addPID records pid once, whichever of its threads is in the namespace.
func (n *Namespace) addPID(pid int) {
	if len(n.PIDs) == 0 || n.PIDs[len(n.PIDs)-1] != pid {
		n.PIDs = append(n.PIDs, pid)
	}
}

// initialPIDNamespace reports whether procfs shows the host's PID
// namespace: only that one lists the kernel threads, kthreadd as PID 2.
func initialPIDNamespace(procfs string) bool {
	b, err := os.ReadFile(procfs + "/2/stat")
	return err == nil && strings.HasPrefix(string(b), "2 (kthreadd) ")
}

// procNetDevInode returns the inode of a process's /proc/PID/net/dev, 0 if
// unreadable. procfs registers its net entries once per network namespace,
// so equal inodes mean the same namespace; unlike ns/net it is readable
// without ptrace access, which tells a process we may not inspect (a
// non-dumpable daemon) that it is in the host namespace and hides no peer.
func procNetDevInode(dir string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(dir+"/net/dev", &st); err != nil {
		return 0
	}
	return st.Ino
}

func (ns *namespaces) addMounts(p Paths, host uint64) error {
	f, err := os.Open(filepath.Join(p.Procfs, "self/mountinfo"))
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	// A mount point mounted over shows the later mount: the last line for
	// a path is the namespace that path holds now.
	var order []string
	byPath := map[string]uint64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		inode, mountPoint, ok := parseNsfsMount(sc.Text())
		if !ok {
			continue
		}
		if _, dup := byPath[mountPoint]; !dup {
			order = append(order, mountPoint)
		}
		byPath[mountPoint] = inode
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	for _, mountPoint := range order {
		inode := byPath[mountPoint]
		if inode == host {
			continue
		}
		n := ns.get(inode)
		n.Mounts = append(n.Mounts, p.hostPath(mountPoint))
		ns.mountPaths[inode] = append(ns.mountPaths[inode], mountPoint)
	}
	return nil
}

// parseNsfsMount returns the namespace inode and the mount point of a
// mountinfo line that is an nsfs mount of a network namespace.
//
//	36 35 0:4 net:[4026532281] /run/netns/leak rw shared:9 - nsfs nsfs rw
func parseNsfsMount(line string) (inode uint64, mountPoint string, ok bool) {
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

// lookupNSID asks the kernel for the nsid of n through the first handle that
// still opens to the same namespace: a process may exit and its PID be
// reused between the scan and the open, so the inode is checked again. It
// returns the open handle, which pins the namespace, for the caller to
// close.
func (ns *namespaces) lookupNSID(h *netlink.Handle, p Paths, n *Namespace) (id, fd int, ok bool) {
	paths := make([]string, 0, len(n.PIDs)+len(n.Mounts))
	for _, pid := range n.PIDs {
		paths = append(paths, filepath.Join(p.Procfs, strconv.Itoa(pid), "ns/net"))
	}
	paths = append(paths, ns.mountPaths[n.Inode]...)
	for _, path := range paths {
		id, fd, err := nsidOf(h, path, n.Inode)
		if err == nil {
			return id, fd, true
		}
	}
	// A namespace that only a thread holds opens through that thread.
	for _, pid := range n.PIDs {
		dir := filepath.Join(p.Procfs, strconv.Itoa(pid), "task")
		tids, err := readDirNames(dir)
		if err != nil {
			continue
		}
		for _, tid := range tids {
			id, fd, err := nsidOf(h, filepath.Join(dir, tid, "ns/net"), n.Inode)
			if err == nil {
				return id, fd, true
			}
		}
	}
	return -1, -1, false
}

func nsidOf(h *netlink.Handle, path string, inode uint64) (int, int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, -1, err
	}
	if st.Ino != inode {
		unix.Close(fd)
		return -1, -1, fs.ErrNotExist
	}
	id, err := h.GetNetNsIdByFd(fd)
	if err != nil {
		unix.Close(fd)
		return -1, -1, err
	}
	return id, fd, nil
}

// findOtherLinks lists, for each peer namespace no process is in, the
// interfaces it holds besides loopback and the peers of host veths, with
// one link dump per such namespace (IFLA_TARGET_NETNSID: it is not
// entered). A leaked pod namespace holds loopback and its eth0; one that
// holds more (a veth to a live container, a tunnel, a bridge) may route
// for others although no process lives in it. It returns warnings for the
// namespaces it could not list, which count as holding other links.
//
// Listing another namespace's links takes CAP_NET_ADMIN. An exporter that
// only monitors may lack it: then no namespace is listed and a namespace
// that routes for others reads netns_empty; remediation, which holds
// CAP_NET_ADMIN, lists the interfaces again right before deleting.
func (ns *namespaces) findOtherLinks(veths []Veth) []string {
	peers := map[*Namespace]map[int]bool{}
	for i := range veths {
		v := &veths[i]
		if n := v.PeerNetns; n != nil && n.Empty() && n.NSID >= 0 {
			if peers[n] == nil {
				peers[n] = map[int]bool{}
			}
			peers[n][v.PeerIndex] = true
		}
	}
	var warnings []string
	for n, allowed := range peers {
		links, err := dumpLinksIn(n.NSID)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return nil
		}
		if err != nil {
			n.OtherLinks = []string{"?"}
			warnings = append(warnings, fmt.Sprintf("cannot list the interfaces of namespace net:[%d]: %v", n.Inode, err))
			continue
		}
		for _, l := range links {
			if l.index == loopbackIndex || (l.veth && allowed[l.index]) {
				continue
			}
			n.OtherLinks = append(n.OtherLinks, l.name)
		}
		sort.Strings(n.OtherLinks)
	}
	return warnings
}

// loopbackIndex is the ifindex of loopback in every namespace.
const loopbackIndex = 1
