package inventory

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// dumpAttempts bounds the retries of an interrupted dump. The kernel
// interrupts a dump when the link table changes under it; on a node that is
// creating pods a few retries are normal, an endless loop is not.
const dumpAttempts = 5

// rtextFilterSkipStats asks the kernel to leave the statistics out of a
// link dump (RTEXT_FILTER_SKIP_STATS, Linux 4.13). A veth's statistics are
// per-CPU sums that also read its peer; the exporter needs none of them,
// and they are most of every message. Older kernels ignore the bit.
//
// Only the host's dump asks for it. A dump that carries a non-zero
// IFLA_EXT_MASK first makes the kernel size its buffer by walking every
// link of the asking socket's namespace, the host's (rtnl_calcit), whatever
// namespace the dump is of: a dump of another namespace's 51 links then
// cost 4 ms with 5,000 links on the host, against 0.6 ms with their
// statistics and no walk.
const rtextFilterSkipStats = 1 << 3

// link is what the inventory needs of one RTM_NEWLINK message.
type link struct {
	index       int
	name        string
	veth        bool
	master      int
	operState   uint8
	peerIndex   int    // IFLA_LINK
	peerNetNSID int    // IFLA_LINK_NETNSID
	group       uint32 // IFLA_GROUP
	// peerElsewhere: IFLA_LINK_NETNSID is present, so the peer is in
	// another namespace, even when its id is negative (the kernel reports
	// -1 for a peer namespace that is being destroyed).
	peerElsewhere bool
}

// dumpLinks is the one place that dumps the host's links. It retries
// [nl.ErrDumpInterrupted], whose results may be inconsistent, and nothing
// else dumps links. Messages are parsed as they arrive and only the few
// attributes the inventory uses are kept: holding the fully decoded dump of
// ten thousand links costs tens of megabytes.
func dumpLinks() ([]link, error) { return dumpLinksIn(-1) }

// dumpLinksIn dumps the links of the namespace the host knows by nsid
// (IFLA_TARGET_NETNSID, Linux 4.20), without entering it; a negative nsid
// is the host's own namespace.
func dumpLinksIn(nsid int) ([]link, error) {
	var err error
	for range dumpAttempts {
		var links []link
		links, err = dumpLinksOnce(nsid)
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			return nil, fmt.Errorf("netlink link dump: %w", err)
		}
	}
	return nil, fmt.Errorf("netlink link dump interrupted %d times in a row: %w", dumpAttempts, err)
}

// LinkRef is what a deletion needs to know of one link of the host
// namespace: enough to pick an interface group no link uses and to verify
// which links are in a group before deleting it.
type LinkRef struct {
	Index int
	Name  string
	Veth  bool
	// Group is the interface group (IFLA_GROUP); 0 is the default group.
	Group uint32
	// PeerNetNSID is the nsid of the namespace of the link's peer
	// (IFLA_LINK_NETNSID), -1 when the peer is on the host (or the kernel
	// reports none, as for a namespace being destroyed).
	PeerNetNSID int
}

// DumpLinkRefs lists every link of the host namespace with one netlink
// dump, through the same wrapper as the inventory.
func DumpLinkRefs() ([]LinkRef, error) { return DumpLinkRefsIn(-1) }

// DumpLinkRefsIn lists every link of the namespace the host knows by nsid,
// without entering it; a negative nsid is the host's namespace. Peer
// nsids are as the host knows them.
func DumpLinkRefsIn(nsid int) ([]LinkRef, error) {
	links, err := dumpLinksIn(nsid)
	if err != nil {
		return nil, err
	}
	refs := make([]LinkRef, len(links))
	for i, l := range links {
		refs[i] = LinkRef{Index: l.index, Name: l.name, Veth: l.veth, Group: l.group, PeerNetNSID: l.peerNetNSID}
	}
	return refs, nil
}

func dumpLinksOnce(nsid int) ([]link, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	if nsid >= 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(nsid))))
	} else {
		req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats)))
	}
	var (
		links    []link
		parseErr error
	)
	err := req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWLINK, func(msg []byte) bool {
		l, err := parseLink(msg)
		if err != nil {
			parseErr = err
			return false
		}
		links = append(links, l)
		return true
	})
	if err != nil {
		return nil, err
	}
	return links, parseErr
}

// parseLink decodes an ifinfomsg and the attributes the inventory uses.
func parseLink(msg []byte) (link, error) {
	if len(msg) < unix.SizeofIfInfomsg {
		return link{}, fmt.Errorf("short link message: %d bytes", len(msg))
	}
	native := nl.NativeEndian()
	l := link{index: int(int32(native.Uint32(msg[4:8]))), peerNetNSID: -1}
	// A malformed IFLA_LINKINFO hides the link's kind: a veth read as
	// "not a veth" would silently drop out of the inventory, so it fails
	// the link as a malformed top-level attribute does.
	var nestedErr error
	err := walkAttrs(msg[unix.SizeofIfInfomsg:], func(typ uint16, data []byte) {
		switch typ {
		case unix.IFLA_IFNAME:
			l.name = cString(data)
		case unix.IFLA_MASTER:
			if len(data) >= 4 {
				l.master = int(native.Uint32(data))
			}
		case unix.IFLA_OPERSTATE:
			if len(data) >= 1 {
				l.operState = data[0]
			}
		case unix.IFLA_GROUP:
			if len(data) >= 4 {
				l.group = native.Uint32(data)
			}
		case unix.IFLA_LINK:
			if len(data) >= 4 {
				l.peerIndex = int(native.Uint32(data))
			}
		case unix.IFLA_LINK_NETNSID:
			if len(data) >= 4 {
				l.peerNetNSID = int(int32(native.Uint32(data)))
				l.peerElsewhere = true
			}
		case unix.IFLA_LINKINFO:
			if err := walkAttrs(data, func(typ uint16, data []byte) {
				if typ == unix.IFLA_INFO_KIND && cString(data) == "veth" {
					l.veth = true
				}
			}); err != nil && nestedErr == nil {
				nestedErr = fmt.Errorf("IFLA_LINKINFO: %w", err)
			}
		}
	})
	if err == nil {
		err = nestedErr
	}
	if err != nil {
		return link{}, fmt.Errorf("link %d: %w", l.index, err)
	}
	return l, nil
}

// walkAttrs calls f for each route attribute in b.
func walkAttrs(b []byte, f func(typ uint16, data []byte)) error {
	native := nl.NativeEndian()
	for len(b) >= unix.SizeofRtAttr {
		n := int(native.Uint16(b[0:2]))
		if n < unix.SizeofRtAttr || n > len(b) {
			return fmt.Errorf("malformed attribute: length %d of %d bytes", n, len(b))
		}
		f(native.Uint16(b[2:4])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[unix.SizeofRtAttr:n])
		n = (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if n > len(b) {
			break
		}
		b = b[n:]
	}
	return nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// operStates are the RFC 2863 operational states, named as in
// /sys/class/net/X/operstate.
var operStates = [...]string{"unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"}

func operStateName(s uint8) string {
	if int(s) < len(operStates) {
		return operStates[s]
	}
	return "unknown"
}

// vethsFromLinks picks the veths out of one dump and fills in what the dump
// alone tells: names, indexes, master, operstate and peer.
func vethsFromLinks(links []link) []Veth {
	byIndex := make(map[int]*link, len(links))
	for i := range links {
		byIndex[links[i].index] = &links[i]
	}
	n := 0
	for i := range links {
		if links[i].veth {
			n++
		}
	}
	// Sized once: grown by append, the 5,000 veths of a node took 6-8 ms
	// instead of 2.5-3 (a Veth is 224 bytes).
	var veths []Veth
	if n > 0 {
		veths = make([]Veth, 0, n)
	}
	for i := range links {
		l := &links[i]
		if !l.veth {
			continue
		}
		v := Veth{
			Name:        l.name,
			Index:       l.index,
			OperState:   operStateName(l.operState),
			PeerIndex:   l.peerIndex,
			PeerNetNSID: l.peerNetNSID,
		}
		if m := byIndex[l.master]; m != nil && l.master != 0 {
			v.Master = m.name
		}
		// The peer index names a host link only when the peer is in the
		// host namespace; otherwise it is an index in the peer's namespace
		// and often collides with a host bridge. Even then the host link
		// must be a veth pointing back: an index can be reused between
		// the kernel filling two messages of one dump.
		if !l.peerElsewhere {
			v.PeerNetNSID = -1
			if p := byIndex[l.peerIndex]; p != nil && p.veth && !p.peerElsewhere && p.peerIndex == l.index {
				v.PeerOnHost = true
				v.PeerName = p.name
			}
		}
		veths = append(veths, v)
	}
	return veths
}
