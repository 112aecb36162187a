package kernel

import (
	"fmt"
	"io/fs"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NSIDs asks the kernel for the ids the exporter's network namespace
// knows other namespaces by (RTM_GETNSID), over one netlink socket.
type NSIDs struct {
	h *netlink.Handle
}

// OpenNSIDs opens the netlink socket of an [NSIDs].
func OpenNSIDs() (*NSIDs, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return &NSIDs{h: h}, nil
}

// Close closes the socket.
func (n *NSIDs) Close() { n.h.Close() }

// Pin opens path, a handle on a network namespace (/proc/PID/ns/net, an
// nsfs mount), checks that it is still the namespace inode (a process may
// have exited and its PID been reused), and returns the namespace's nsid
// (-1 when none is assigned) and the open descriptor, which pins the
// namespace, for the caller to close.
func (n *NSIDs) Pin(path string, inode uint64) (nsid, fd int, err error) {
	fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
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
	id, err := n.h.GetNetNsIdByFd(fd)
	if err != nil {
		unix.Close(fd)
		return -1, -1, err
	}
	return id, fd, nil
}
