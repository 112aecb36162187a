package inventory

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// dumpAttempts bounds the retries of an interrupted dump. The kernel
// interrupts a dump when the link table changes under it; on a node that is
// creating pods a few retries are normal, an endless loop is not.
const dumpAttempts = 5

// dumpLinks is the one place that dumps the host's links. It retries
// [netlink.ErrDumpInterrupted], whose results may be inconsistent, and
// nothing else calls the raw dump.
func dumpLinks(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range dumpAttempts {
		var links []netlink.Link
		links, err = h.LinkList()
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("netlink link dump: %w", err)
		}
	}
	return nil, fmt.Errorf("netlink link dump interrupted %d times in a row: %w", dumpAttempts, err)
}

// vethsFromLinks picks the veths out of one dump and fills in what the dump
// alone tells: names, indexes, master, operstate and peer.
func vethsFromLinks(links []netlink.Link) []Veth {
	byIndex := make(map[int]string, len(links))
	for _, l := range links {
		a := l.Attrs()
		byIndex[a.Index] = a.Name
	}
	var veths []Veth
	for _, l := range links {
		if l.Type() != "veth" {
			continue
		}
		a := l.Attrs()
		v := Veth{
			Name:        a.Name,
			Index:       a.Index,
			Master:      byIndex[a.MasterIndex],
			OperState:   a.OperState.String(),
			PeerIndex:   a.ParentIndex,
			PeerNetNSID: a.NetNsID,
		}
		if a.MasterIndex == 0 {
			v.Master = ""
		}
		// The peer index names a host link only when the peer is in the
		// host namespace; otherwise it is an index in the peer's namespace
		// and often collides with a host bridge.
		if v.PeerOnHost() {
			v.PeerName = byIndex[a.ParentIndex]
		}
		veths = append(veths, v)
	}
	return veths
}
