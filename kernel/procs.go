package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HostNetnsInode returns the inode of the namespace the exporter's netlink
// socket lives in: the namespace whose link dump is the inventory.
func HostNetnsInode(procfs string) (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/thread-self/ns/net", &st)
	if err != nil {
		err = unix.Stat(filepath.Join(procfs, "self/ns/net"), &st)
	}
	if err != nil {
		return 0, fmt.Errorf("stat own network namespace: %w", err)
	}
	return st.Ino, nil
}

// ProcessWalk is what one pass over /proc could not see.
type ProcessWalk struct {
	// Denied counts processes whose namespace may not be read and that
	// are not shown to be in the exporter's own namespace.
	Denied int
	// Failed are the other errors reading a process's or a thread's
	// namespace or its task directory, one per process: the threads
	// behind them were not seen.
	Failed []error
}

func (w *ProcessWalk) FailedMessage() string {
	msg := fmt.Sprintf("cannot read the network namespace of %d processes or their threads: %v", len(w.Failed), w.Failed[0])
	if len(w.Failed) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(w.Failed)-1)
	}
	return msg
}

// Err is nil when the walk saw every process and thread, else says why not.
func (w *ProcessWalk) Err() error {
	var errs []error
	if w.Denied > 0 {
		errs = append(errs, fmt.Errorf("cannot read the network namespace of %d processes (permission denied)", w.Denied))
	}
	if len(w.Failed) > 0 {
		errs = append(errs, errors.New(w.FailedMessage()))
	}
	return errors.Join(errs...)
}

// vanished reports whether err means the process or thread exited
// while it was being read: it holds no namespace any more.
func vanished(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// WalkProcesses calls visit with the network namespace inode of every
// process in procfs and, when threads is true, of each of its threads
// that is in another namespace than the process, in one pass: visit may
// see one PID several times. The threads of a process whose leader has
// exited are read in any case: the leader shows no namespace. A process
// or thread that exits meanwhile is skipped; any other failure is counted
// in the result, never silently taken for "no namespace".
func WalkProcesses(procfs string, threads bool, visit func(pid int, inode uint64)) (ProcessWalk, error) {
	return walkProcesses(procfs, threads, nil, visit)
}

// walkProcesses is WalkProcesses that, when listed is not nil, records in
// it every process and thread it read.
func walkProcesses(procfs string, threads bool, listed Tasks, visit func(pid int, inode uint64)) (ProcessWalk, error) {
	var w ProcessWalk
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
		if listed != nil {
			listed[pid] = true
		}
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
				w.Denied++
			}
			continue
		case vanished(err):
			// Exited, or a leader that exited before its threads: they
			// still run, each with its own namespace.
		default:
			w.Failed = append(w.Failed, fmt.Errorf("PID %d: ns/net: %w", pid, err))
			continue
		}
		// A thread can sit in another namespace than its leader (setns on
		// one thread), and a leader that has exited leaves its threads
		// running with no ns link of its own: either keeps a namespace
		// alive that the leader alone does not show.
		if err := walkThreads(dir, pid, leader, listed, visit); err != nil {
			w.Failed = append(w.Failed, fmt.Errorf("PID %d: %w", pid, err))
		}
	}
	return w, nil
}

// walkThreads visits the namespaces of the threads of the process at dir
// that are not the leader's. The leader itself is skipped when its
// namespace was read (leader != 0).
func walkThreads(dir string, pid int, leader uint64, listed Tasks, visit func(pid int, inode uint64)) error {
	tids, err := ReadDirNames(dir + "/task")
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
		if listed != nil {
			if n, err := strconv.Atoi(tid); err == nil {
				listed[n] = true
			}
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
	tids, err := ReadDirNames(dir + "/task")
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

// ReadDirNames returns the names in dir.
func ReadDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// Tasks is a set of process and thread IDs.
type Tasks map[int]bool

// Occupants returns, for each namespace inode of inodes, the processes
// that have at least one thread in it, from one pass over every process
// and thread of procfs, and the processes and threads that pass listed.
// It is the last check before a deletion, so it reads only namespace
// links, no cgroups. A process or thread that exits during the pass is
// skipped; any other failure to read one (a namespace link, a task
// directory) makes the answer incomplete and is returned as an error
// with what was seen, never taken for an empty namespace. A process
// whose namespace may not be read but that /proc/PID/net/dev shows in the
// caller's own namespace is in none of inodes (the caller's namespace is
// the host's, which holds no peer).
func Occupants(procfs string, inodes map[uint64]bool) (map[uint64][]int, Tasks, error) {
	occupants := make(map[uint64][]int, len(inodes))
	listed := Tasks{}
	w, err := walkProcesses(procfs, true, listed, func(pid int, inode uint64) {
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
		return occupants, listed, err
	}
	return occupants, listed, w.Err()
}

// Newcomers lists the processes and threads of procfs again and returns,
// for each namespace of inodes, the processes with a thread in it among
// those that listed does not hold: what started, or was cloned, since
// that listing. It adds them to listed. A listing costs one directory
// read per process, and a namespace link read only per newcomer: cheap
// enough to take right before a deletion. It reads the list of processes
// again until that shows none it has not looked at (at most a few
// times), so that a process started while it read is seen too. It cannot
// see a thread already listed that enters a namespace afterwards
// (setns): no listing can.
func Newcomers(procfs string, listed Tasks, inodes map[uint64]bool) (map[uint64][]int, error) {
	occupants := map[uint64][]int{}
	hostDev := procNetDevInode(procfs + "/self")
	looked := map[int]bool{}
	const rounds = 4
	for round := 0; round < rounds; round++ {
		names, err := ReadDirNames(procfs)
		if err != nil {
			return nil, fmt.Errorf("read processes: %w", err)
		}
		fresh := false
		for _, name := range names {
			pid, err := strconv.Atoi(name)
			if err != nil || looked[pid] {
				continue
			}
			looked[pid], fresh = true, true
			if err := newcomersOf(procfs+"/"+name, pid, listed, inodes, hostDev, occupants); err != nil {
				return occupants, err
			}
		}
		if !fresh {
			break
		}
	}
	return occupants, nil
}

// newcomersOf looks at the threads of the process pid at dir that listed
// does not hold, adding them to listed and the process to occupants of
// the namespace of inodes one of them is in.
func newcomersOf(dir string, pid int, listed Tasks, inodes map[uint64]bool, hostDev uint64, occupants map[uint64][]int) error {
	tids, err := ReadDirNames(dir + "/task")
	if err != nil {
		if vanished(err) {
			return nil
		}
		return fmt.Errorf("PID %d: read task directory: %w", pid, err)
	}
	var st unix.Stat_t
	for _, tid := range tids {
		n, err := strconv.Atoi(tid)
		if err != nil || listed[n] {
			continue
		}
		listed[n] = true
		switch err := unix.Stat(dir+"/task/"+tid+"/ns/net", &st); {
		case err == nil:
			if inodes[st.Ino] && !slices.Contains(occupants[st.Ino], pid) {
				occupants[st.Ino] = append(occupants[st.Ino], pid)
			}
		case vanished(err):
		case (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) && hostDev != 0 && threadsInNetDev(dir, hostDev):
		default:
			return fmt.Errorf("PID %d thread %s: ns/net: %w", pid, tid, err)
		}
	}
	return nil
}

// InitialPIDNamespace reports whether procfs shows the host's PID
// namespace: only that one lists the kernel threads, kthreadd as PID 2.
func InitialPIDNamespace(procfs string) bool {
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

// InNamespace reports whether the process at dir, or one of its threads, is
// in the network namespace inode.
func InNamespace(dir string, inode uint64) bool {
	var st unix.Stat_t
	if unix.Stat(dir+"/ns/net", &st) == nil && st.Ino == inode {
		return true
	}
	tids, err := os.ReadDir(dir + "/task")
	if err != nil {
		return false
	}
	for _, tid := range tids {
		if unix.Stat(dir+"/task/"+tid.Name()+"/ns/net", &st) == nil && st.Ino == inode {
			return true
		}
	}
	return false
}

// ProcessStartTime returns field 22 of /proc/PID/stat, the start time in
// clock ticks since boot: the order in which processes started.
func ProcessStartTime(dir string) (uint64, bool) {
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name may contain spaces and parentheses: fields start
	// after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	const startTimeField = 22 - 3 // fields after ")" start at field 3
	if len(fields) <= startTimeField {
		return 0, false
	}
	v, err := strconv.ParseUint(fields[startTimeField], 10, 64)
	return v, err == nil
}

// ProcessName returns the command name of the process at dir, "" when unreadable.
func ProcessName(dir string) string {
	b, err := os.ReadFile(dir + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
