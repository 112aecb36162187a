package kernel

import (
	"errors"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// NSIDWatch follows the host namespace's nsid table (RTNLGRP_NSID) from
// the moment it is opened: it tells whether an nsid was freed since. An
// nsid names one namespace until the kernel frees it, when that
// namespace dies, and only then can it go to another. So while no nsid
// was freed, an nsid that a link dump reported still names the
// namespace the dump meant, and the dump may run beside the scan instead
// of after the scan's pins.
type NSIDWatch struct {
	fd int
}

// WatchNSIDs subscribes to the host namespace's nsid notifications.
func WatchNSIDs() (*NSIDWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.RTNLGRP_NSID - 1)}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &NSIDWatch{fd: fd}, nil
}

// Freed reports whether an nsid was freed since the watch was opened,
// as far as the notifications queued so far tell; a lost notification
// (the socket overflowed) or an error counts as freed.
func (w *NSIDWatch) Freed() bool {
	buf := make([]byte, 16*1024)
	for {
		n, _, err := unix.Recvfrom(w.fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
			return false
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return true
		}
		if deletesNSID(buf[:n]) {
			return true
		}
	}
}

// deletesNSID reports whether the netlink messages in b hold an
// RTM_DELNSID, or cannot be read.
func deletesNSID(b []byte) bool {
	native := nl.NativeEndian()
	for len(b) > 0 {
		if len(b) < unix.SizeofNlMsghdr {
			return true
		}
		size, typ := int(native.Uint32(b[0:4])), native.Uint16(b[4:6])
		if size < unix.SizeofNlMsghdr || size > len(b) {
			return true
		}
		if typ == unix.RTM_DELNSID {
			return true
		}
		next := (size + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next >= len(b) {
			return false
		}
		b = b[next:]
	}
	return false
}

// FreedIDs returns the nsids freed since the last call (or since the
// watch was opened), as far as the notifications queued so far tell;
// lost is true when notifications were lost or could not be read, and
// then any nsid may have been freed.
func (w *NSIDWatch) FreedIDs() (ids []int, lost bool) {
	buf := make([]byte, 16*1024)
	for {
		n, _, err := unix.Recvfrom(w.fd, buf, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK):
			return ids, lost
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return ids, true
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return ids, true
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_DELNSID {
				continue
			}
			id, ok := nsidOf(m.Data)
			if !ok {
				return ids, true
			}
			ids = append(ids, id)
		}
	}
}

// nsidOf reads NETNSA_NSID from the body of an RTM_*NSID message (a
// struct rtgenmsg, padded to 4 bytes, then attributes).
func nsidOf(b []byte) (int, bool) {
	const rtgenmsgLen = 4
	if len(b) < rtgenmsgLen {
		return 0, false
	}
	attrs, err := nl.ParseRouteAttr(b[rtgenmsgLen:])
	if err != nil {
		return 0, false
	}
	for _, a := range attrs {
		if a.Attr.Type == unix.NETNSA_NSID && len(a.Value) >= 4 {
			return int(int32(nl.NativeEndian().Uint32(a.Value))), true
		}
	}
	return 0, false
}

// Close ends the watch.
func (w *NSIDWatch) Close() { unix.Close(w.fd) }
