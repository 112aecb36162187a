package inventory

import "github.com/veth-exporter/veth_exporter/kernel"

// vethsFromLinks picks the veths out of one dump and fills in what the dump
// alone tells: names, indexes, master, operstate and peer.
func vethsFromLinks(links []kernel.Link) []Veth {
	byIndex := make(map[int]*kernel.Link, len(links))
	for i := range links {
		byIndex[links[i].Index] = &links[i]
	}
	n := 0
	for i := range links {
		if links[i].Veth {
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
		if !l.Veth {
			continue
		}
		v := Veth{
			Name:        l.Name,
			Index:       l.Index,
			OperState:   kernel.OperStateName(l.OperState),
			PeerIndex:   l.PeerIndex,
			PeerNetNSID: l.PeerNetNSID,
		}
		if m := byIndex[l.Master]; m != nil && l.Master != 0 {
			v.Master = m.Name
		}
		// The peer index names a host link only when the peer is in the
		// host namespace; otherwise it is an index in the peer's namespace
		// and often collides with a host bridge. Even then the host link
		// must be a veth pointing back: an index can be reused between
		// the kernel filling two messages of one dump.
		if !l.PeerElsewhere {
			v.PeerNetNSID = -1
			if p := byIndex[l.PeerIndex]; p != nil && p.Veth && !p.PeerElsewhere && p.PeerIndex == l.Index {
				v.PeerOnHost = true
				v.PeerName = p.Name
			}
		}
		veths = append(veths, v)
	}
	return veths
}
