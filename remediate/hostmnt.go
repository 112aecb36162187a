package remediate

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The host's mount namespace, where the pins of a leftover's namespace
// live. The exporter may run in a mount namespace of its own (systemd's
// ProtectSystem=, a pod): an unmount there would only detach its own copy,
// a slave of the host's mount, and leave the namespace pinned. So the
// unmounts happen on one OS thread that enters the host's mount
// namespace: setns(CLONE_NEWNS) accepts only a thread that shares no root
// and working directory with others, hence unshare(CLONE_FS) first. That
// thread is never handed back to the Go runtime (it stays locked, and
// exits with its goroutine).
//
// The CNI plugins of a DEL run there too (remediate/cnidel): a process
// started from that thread inherits its mount namespace, so the plugins
// find the host's files as the runtime that ran their ADD did.

// inHostMounts runs fn on a thread of its own in the mount namespace of
// PID 1 of procfs, the host's when procfs shows the host's processes. It
// needs CAP_SYS_ADMIN and CAP_SYS_CHROOT (setns), and the right to read
// PID 1's namespace (CAP_SYS_PTRACE for a process of another user).
func inHostMounts(procfs string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, in another mount namespace and
		// with a file system context of its own, exits with this
		// goroutine.
		runtime.LockOSThread()
		defer func() {
			if p := recover(); p != nil {
				errc <- fmt.Errorf("in the host's mount namespace: panic: %v", p)
			}
		}()
		if err := enterHostMounts(procfs); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// errNoHostMounts wraps every failure to enter the host's mount namespace:
// a release is impossible, not failed.
var errNoHostMounts = errors.New("cannot enter the host's mount namespace")

func enterHostMounts(procfs string) error {
	path := procfs + "/1/ns/mnt"
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open %s: %w", errNoHostMounts, path, err)
	}
	defer unix.Close(fd)
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("%w: unshare(CLONE_FS): %w", errNoHostMounts, err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("%w: setns(%s): %w (needs CAP_SYS_ADMIN and CAP_SYS_CHROOT)", errNoHostMounts, path, err)
	}
	return nil
}

// unpin unmounts, in the calling thread's mount namespace, each mount at
// point that pins the network namespace inode, the top one first, and
// then removes the mount point as `ip netns delete` does. Each mount is
// unmounted through a descriptor opened on it and checked to be an nsfs
// mount of inode: whatever is mounted at point meanwhile, only that very
// mount goes. It stops at a mount of anything else, and returns how many
// it unmounted. The mount point stays: removing it would also detach
// every copy of the mount in other mount namespaces (the kernel does so
// on unlink), which hold the namespace and must keep holding it; it goes
// once the kernel has freed the namespace ([removeMountPoint]).
func unpin(point string, inode uint64) (int, error) {
	n := 0
	for {
		fd, err := unix.Open(point, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return n, nil
			}
			return n, fmt.Errorf("open %s: %w", point, err)
		}
		if nsfsInode(fd) != inode {
			unix.Close(fd)
			break
		}
		err = unix.Unmount("/proc/thread-self/fd/"+strconv.Itoa(fd), unix.MNT_DETACH)
		unix.Close(fd)
		if err != nil {
			return n, fmt.Errorf("unmount %s: %w", point, err)
		}
		n++
	}
	return n, nil
}

// nsfsInode returns the inode of the namespace an nsfs file open at fd
// is, 0 when it is no nsfs file.
func nsfsInode(fd int) uint64 {
	var fs unix.Statfs_t
	var st unix.Stat_t
	if unix.Fstatfs(fd, &fs) != nil || fs.Type != unix.NSFS_MAGIC || unix.Fstat(fd, &st) != nil {
		return 0
	}
	return st.Ino
}

// removeMountPoint removes the empty file a namespace was mounted on, as
// `ip netns delete` does, if that is what point is now: a mount point in
// use stays. Call it only once the namespace is freed: unlinking detaches
// the copies of a mount in every other mount namespace.
func removeMountPoint(point string) {
	var fs unix.Statfs_t
	var st unix.Stat_t
	if unix.Statfs(point, &fs) != nil || fs.Type == unix.NSFS_MAGIC ||
		unix.Lstat(point, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return
	}
	_ = os.Remove(point)
}
