package inventory

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// encodeAttr encodes one route attribute as the kernel does: a header whose
// length counts the header and the data but not the padding, then the data
// padded to RTA_ALIGNTO. Several data arguments are concatenated, which
// builds a nested attribute from encoded ones.
func encodeAttr(typ uint16, data ...[]byte) []byte {
	payload := bytes.Join(data, nil)
	n := unix.SizeofRtAttr + len(payload)
	b := make([]byte, (n+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1))
	nl.NativeEndian().PutUint16(b[0:2], uint16(n))
	nl.NativeEndian().PutUint16(b[2:4], typ)
	copy(b[unix.SizeofRtAttr:], payload)
	return b
}

// encodeLinkMsg encodes the payload of an RTM_NEWLINK message: an
// ifinfomsg for an Ethernet link that is up, then attrs as they are.
func encodeLinkMsg(index int32, attrs ...[]byte) []byte {
	native := nl.NativeEndian()
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	native.PutUint16(b[2:4], unix.ARPHRD_ETHER)
	native.PutUint32(b[4:8], uint32(index))
	native.PutUint32(b[8:12], unix.IFF_UP|unix.IFF_BROADCAST|unix.IFF_RUNNING|unix.IFF_MULTICAST|unix.IFF_LOWER_UP)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func attrU32(v uint32) []byte {
	b := make([]byte, 4)
	nl.NativeEndian().PutUint32(b, v)
	return b
}

func attrS32(v int32) []byte { return attrU32(uint32(v)) }

// attrString is a string attribute as the kernel writes it, NUL-terminated.
func attrString(s string) []byte { return append([]byte(s), 0) }

// linkInfo is an IFLA_LINKINFO attribute naming kind, with the nested
// IFLA_INFO_DATA that veths carry (VETH_INFO_PEER, left empty).
func linkInfo(typ uint16, kind string) []byte {
	return encodeAttr(typ,
		encodeAttr(unix.IFLA_INFO_KIND, attrString(kind)),
		encodeAttr(unix.IFLA_INFO_DATA|unix.NLA_F_NESTED, encodeAttr(1, nil)))
}

func TestParseLink(t *testing.T) {
	mac := []byte{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}
	hostVeth := encodeLinkMsg(12,
		encodeAttr(unix.IFLA_IFNAME, attrString("veth1a2b3c4")),
		encodeAttr(unix.IFLA_MTU, attrU32(1500)),
		encodeAttr(unix.IFLA_MASTER, attrU32(3)),
		encodeAttr(unix.IFLA_OPERSTATE, []byte{6}),
		encodeAttr(unix.IFLA_ADDRESS, mac),
		encodeAttr(unix.IFLA_LINK, attrU32(13)),
		linkInfo(unix.IFLA_LINKINFO, "veth"))
	for _, tc := range []struct {
		name string
		msg  []byte
		want link
	}{
		{"no attributes", encodeLinkMsg(7), link{index: 7, peerNetNSID: -1}},
		{"veth with its peer on the host", hostVeth,
			link{index: 12, name: "veth1a2b3c4", veth: true, master: 3, operState: 6, peerIndex: 13, peerNetNSID: -1}},
		{"veth with its peer in nsid 3", encodeLinkMsg(40,
			encodeAttr(unix.IFLA_IFNAME, attrString("vethc0ffee")),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{2}),
			encodeAttr(unix.IFLA_LINK, attrU32(2)),
			encodeAttr(unix.IFLA_LINK_NETNSID, attrS32(3)),
			linkInfo(unix.IFLA_LINKINFO, "veth")),
			link{index: 40, name: "vethc0ffee", veth: true, operState: 2, peerIndex: 2, peerNetNSID: 3, peerElsewhere: true}},
		{"veth with its peer in nsid 0", encodeLinkMsg(41,
			encodeAttr(unix.IFLA_LINK_NETNSID, attrS32(0)),
			linkInfo(unix.IFLA_LINKINFO, "veth")),
			link{index: 41, veth: true, peerNetNSID: 0, peerElsewhere: true}},
		// The kernel reports -1 for a peer namespace that is being
		// destroyed: the peer is still elsewhere.
		{"veth with its peer in a dying namespace", encodeLinkMsg(42,
			encodeAttr(unix.IFLA_LINK, attrU32(5)),
			encodeAttr(unix.IFLA_LINK_NETNSID, attrS32(-1)),
			linkInfo(unix.IFLA_LINKINFO, "veth")),
			link{index: 42, veth: true, peerIndex: 5, peerNetNSID: -1, peerElsewhere: true}},
		{"veth in interface group 7", encodeLinkMsg(43,
			encodeAttr(unix.IFLA_IFNAME, attrString("vgroup")),
			encodeAttr(unix.IFLA_GROUP, attrU32(7)),
			linkInfo(unix.IFLA_LINKINFO, "veth")),
			link{index: 43, name: "vgroup", veth: true, group: 7, peerNetNSID: -1}},
		{"group too short", encodeLinkMsg(44, encodeAttr(unix.IFLA_GROUP, []byte{7, 0})),
			link{index: 44, peerNetNSID: -1}},
		{"bridge", encodeLinkMsg(3,
			encodeAttr(unix.IFLA_IFNAME, attrString("docker0")),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{6}),
			linkInfo(unix.IFLA_LINKINFO, "bridge")),
			link{index: 3, name: "docker0", operState: 6, peerNetNSID: -1}},
		{"kind with veth as a prefix", encodeLinkMsg(4, linkInfo(unix.IFLA_LINKINFO, "vethx")),
			link{index: 4, peerNetNSID: -1}},
		{"loopback without link info", encodeLinkMsg(1,
			encodeAttr(unix.IFLA_IFNAME, attrString("lo")),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{0})),
			link{index: 1, name: "lo", peerNetNSID: -1}},
		{"nested bit on IFLA_LINKINFO", encodeLinkMsg(12, linkInfo(unix.IFLA_LINKINFO|unix.NLA_F_NESTED, "veth")),
			link{index: 12, veth: true, peerNetNSID: -1}},
		{"nested bit on IFLA_INFO_KIND", encodeLinkMsg(12,
			encodeAttr(unix.IFLA_LINKINFO, encodeAttr(unix.IFLA_INFO_KIND|unix.NLA_F_NESTED, attrString("veth")))),
			link{index: 12, veth: true, peerNetNSID: -1}},
		{"byte order bit on IFLA_IFNAME", encodeLinkMsg(12,
			encodeAttr(unix.IFLA_IFNAME|unix.NLA_F_NET_BYTEORDER, attrString("eth0"))),
			link{index: 12, name: "eth0", peerNetNSID: -1}},
		{"name without a NUL", encodeLinkMsg(12, encodeAttr(unix.IFLA_IFNAME, []byte("eth0"))),
			link{index: 12, name: "eth0", peerNetNSID: -1}},
		{"name with bytes after its NUL", encodeLinkMsg(12, encodeAttr(unix.IFLA_IFNAME, []byte("eth0\x00junk"))),
			link{index: 12, name: "eth0", peerNetNSID: -1}},
		{"kind without a NUL", encodeLinkMsg(12, encodeAttr(unix.IFLA_LINKINFO, encodeAttr(unix.IFLA_INFO_KIND, []byte("veth")))),
			link{index: 12, veth: true, peerNetNSID: -1}},
		{"unknown attributes", encodeLinkMsg(12,
			encodeAttr(0x7ffe, []byte("whatever the kernel adds next")),
			encodeAttr(unix.IFLA_IFNAME, attrString("eth0")),
			encodeAttr(0x7fff|unix.NLA_F_NESTED, encodeAttr(1, attrU32(1))),
			encodeAttr(unix.IFLA_LINKINFO, encodeAttr(0x7fff, attrString("veth")))),
			link{index: 12, name: "eth0", peerNetNSID: -1}},
		{"empty attribute", encodeLinkMsg(12, encodeAttr(unix.IFLA_IFNAME, nil)),
			link{index: 12, peerNetNSID: -1}},
		{"integer attributes too short", encodeLinkMsg(12,
			encodeAttr(unix.IFLA_MASTER, []byte{3, 0}),
			encodeAttr(unix.IFLA_LINK, []byte{13}),
			encodeAttr(unix.IFLA_OPERSTATE, nil),
			encodeAttr(unix.IFLA_LINK_NETNSID, []byte{3, 0, 0})),
			link{index: 12, peerNetNSID: -1}},
		{"last attribute not padded", append(encodeLinkMsg(12, encodeAttr(unix.IFLA_IFNAME, attrString("eth0"))),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{6})[:5]...),
			link{index: 12, name: "eth0", operState: 6, peerNetNSID: -1}},
		{"trailing bytes shorter than a header", append(bytes.Clone(hostVeth), 0xff, 0xff, 0xff),
			link{index: 12, name: "veth1a2b3c4", veth: true, master: 3, operState: 6, peerIndex: 13, peerNetNSID: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLink(tc.msg)
			if err != nil || got != tc.want {
				t.Errorf("parseLink(%q) = %+v, %v, want %+v, <nil>", tc.msg, got, err, tc.want)
			}
		})
	}
}

func TestParseLinkMalformed(t *testing.T) {
	name := encodeAttr(unix.IFLA_IFNAME, attrString("eth0"))
	badLength := func(n uint16) []byte {
		b := bytes.Clone(name)
		nl.NativeEndian().PutUint16(b[0:2], n)
		return b
	}
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"short ifinfomsg", encodeLinkMsg(7)[:unix.SizeofIfInfomsg-1]},
		{"attribute length 0", encodeLinkMsg(7, name, badLength(0))},
		{"attribute length 3", encodeLinkMsg(7, badLength(3))},
		{"attribute length beyond the message", encodeLinkMsg(7, badLength(uint16(len(name)+1)))},
		{"attribute length far beyond the message", encodeLinkMsg(7, name, badLength(0xffff))},
		{"trailing zero header", encodeLinkMsg(7, name, make([]byte, unix.SizeofRtAttr))},
		// The kind of the link is unreadable: it may be a veth.
		{"malformed IFLA_LINKINFO", encodeLinkMsg(7, name, encodeAttr(unix.IFLA_LINKINFO, badLength(0xffff)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLink(tc.msg)
			if err == nil || got != (link{}) {
				t.Errorf("parseLink(%q) = %+v, %v, want %+v and an error", tc.msg, got, err, link{})
			}
			// Errors carry the ifindex once the header is there.
			if err != nil && len(tc.msg) >= unix.SizeofIfInfomsg && !strings.Contains(err.Error(), "link 7") {
				t.Errorf("parseLink(%q) error %q does not name link 7", tc.msg, err)
			}
		})
	}
}

// TestVethsFromLinks runs on dumps as the kernel would send them; the
// indexes of peers in other namespaces are deliberately those of host
// links, as they often are (every namespace numbers its links from 1).
func TestVethsFromLinks(t *testing.T) {
	lo := link{index: 1, name: "lo", operState: 0, peerNetNSID: -1}
	eth0 := link{index: 2, name: "eth0", operState: 6, peerNetNSID: -1}
	docker0 := link{index: 3, name: "docker0", operState: 6, peerNetNSID: -1}
	for _, tc := range []struct {
		name  string
		links []link
		want  []Veth
	}{
		{"no veths", []link{lo, eth0, docker0,
			{index: 4, name: "vxlan.calico", operState: 0, peerIndex: 2, peerNetNSID: -1}}, nil},
		{"container veth on a bridge", []link{lo, eth0, docker0,
			{index: 10, name: "veth9f1c2a1", veth: true, master: 3, operState: 6, peerIndex: 2, peerNetNSID: 0, peerElsewhere: true}},
			[]Veth{{Name: "veth9f1c2a1", Index: 10, Master: "docker0", OperState: "up", PeerIndex: 2, PeerNetNSID: 0}}},
		{"master after the veth in the dump", []link{
			{index: 10, name: "veth9f1c2a1", veth: true, master: 30, operState: 6, peerIndex: 2, peerNetNSID: 1, peerElsewhere: true},
			{index: 30, name: "br-5d7e", operState: 6, peerNetNSID: -1}},
			[]Veth{{Name: "veth9f1c2a1", Index: 10, Master: "br-5d7e", OperState: "up", PeerIndex: 2, PeerNetNSID: 1}}},
		{"master missing from the dump", []link{lo,
			{index: 10, name: "veth9f1c2a1", veth: true, master: 99, operState: 6, peerIndex: 2, peerNetNSID: 0, peerElsewhere: true}},
			[]Veth{{Name: "veth9f1c2a1", Index: 10, OperState: "up", PeerIndex: 2, PeerNetNSID: 0}}},
		{"pair on the host", []link{lo,
			{index: 20, name: "cilium_host", veth: true, operState: 6, peerIndex: 21, peerNetNSID: -1},
			{index: 21, name: "cilium_net", veth: true, operState: 6, peerIndex: 20, peerNetNSID: -1}},
			[]Veth{
				{Name: "cilium_host", Index: 20, OperState: "up", PeerIndex: 21, PeerNetNSID: -1, PeerOnHost: true, PeerName: "cilium_net"},
				{Name: "cilium_net", Index: 21, OperState: "up", PeerIndex: 20, PeerNetNSID: -1, PeerOnHost: true, PeerName: "cilium_host"},
			}},
		{"host peer index at a bridge", []link{lo, docker0,
			{index: 30, name: "vethbad", veth: true, operState: 7, peerIndex: 3, peerNetNSID: -1}},
			[]Veth{{Name: "vethbad", Index: 30, OperState: "unknown", PeerIndex: 3, PeerNetNSID: -1}}},
		{"host peer index at a veth that does not point back", []link{
			{index: 40, name: "vethstale", veth: true, operState: 6, peerIndex: 41, peerNetNSID: -1},
			{index: 41, name: "vethnewA", veth: true, operState: 6, peerIndex: 42, peerNetNSID: -1},
			{index: 42, name: "vethnewB", veth: true, operState: 6, peerIndex: 41, peerNetNSID: -1}},
			[]Veth{
				{Name: "vethstale", Index: 40, OperState: "up", PeerIndex: 41, PeerNetNSID: -1},
				{Name: "vethnewA", Index: 41, OperState: "up", PeerIndex: 42, PeerNetNSID: -1, PeerOnHost: true, PeerName: "vethnewB"},
				{Name: "vethnewB", Index: 42, OperState: "up", PeerIndex: 41, PeerNetNSID: -1, PeerOnHost: true, PeerName: "vethnewA"},
			}},
		{"host peer index missing from the dump", []link{lo,
			{index: 50, name: "vethgone", veth: true, operState: 5, peerIndex: 51, peerNetNSID: -1}},
			[]Veth{{Name: "vethgone", Index: 50, OperState: "dormant", PeerIndex: 51, PeerNetNSID: -1}}},
		// The peer index is an index in the peer's namespace: that it
		// names a host bridge means nothing.
		{"peer elsewhere at the index of a host bridge", []link{lo, eth0, docker0,
			{index: 60, name: "veth3e0a", veth: true, master: 3, operState: 6, peerIndex: 3, peerNetNSID: 3, peerElsewhere: true}},
			[]Veth{{Name: "veth3e0a", Index: 60, Master: "docker0", OperState: "up", PeerIndex: 3, PeerNetNSID: 3}}},
		// Nor does it when the host link there is a veth pointing back,
		// from either side, nor when the peer's namespace is dying (-1).
		{"peer elsewhere at the index of a host veth pointing back", []link{
			{index: 70, name: "vethA", veth: true, operState: 6, peerIndex: 71, peerNetNSID: 3, peerElsewhere: true},
			{index: 71, name: "vethB", veth: true, operState: 6, peerIndex: 70, peerNetNSID: -1}},
			[]Veth{
				{Name: "vethA", Index: 70, OperState: "up", PeerIndex: 71, PeerNetNSID: 3},
				{Name: "vethB", Index: 71, OperState: "up", PeerIndex: 70, PeerNetNSID: -1},
			}},
		{"peer in a dying namespace at the index of a host veth pointing back", []link{
			{index: 80, name: "vethA", veth: true, operState: 3, peerIndex: 81, peerNetNSID: -1, peerElsewhere: true},
			{index: 81, name: "vethB", veth: true, operState: 6, peerIndex: 80, peerNetNSID: -1, peerElsewhere: true}},
			[]Veth{
				{Name: "vethA", Index: 80, OperState: "lowerlayerdown", PeerIndex: 81, PeerNetNSID: -1},
				{Name: "vethB", Index: 81, OperState: "up", PeerIndex: 80, PeerNetNSID: -1},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := vethsFromLinks(tc.links)
			if len(got) != len(tc.want) {
				t.Fatalf("vethsFromLinks(%+v) = %+v, want %+v", tc.links, got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("vethsFromLinks(%+v)[%d] = %+v, want %+v", tc.links, i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestLinkOperStateName checks the names against the kernel's operstates[]
// in net/core/net-sysfs.c, which /sys/class/net/X/operstate prints.
func TestLinkOperStateName(t *testing.T) {
	for _, tc := range []struct {
		state uint8
		want  string
	}{
		// IF_OPER_UNKNOWN … IF_OPER_UP from linux/if.h.
		{0, "unknown"},
		{1, "notpresent"},
		{2, "down"},
		{3, "lowerlayerdown"},
		{4, "testing"},
		{5, "dormant"},
		{6, "up"},
		// Values the kernel does not define yet.
		{7, "unknown"},
		{255, "unknown"},
	} {
		t.Run(strconv.Itoa(int(tc.state)), func(t *testing.T) {
			if got := operStateName(tc.state); got != tc.want {
				t.Errorf("operStateName(%d) = %q, want %q", tc.state, got, tc.want)
			}
		})
	}
}

// TestVethsFromParsedLinks runs both halves together on one dump.
func TestVethsFromParsedLinks(t *testing.T) {
	msgs := [][]byte{
		encodeLinkMsg(1, encodeAttr(unix.IFLA_IFNAME, attrString("lo"))),
		encodeLinkMsg(3,
			encodeAttr(unix.IFLA_IFNAME, attrString("docker0")),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{6}),
			linkInfo(unix.IFLA_LINKINFO|unix.NLA_F_NESTED, "bridge")),
		encodeLinkMsg(9,
			encodeAttr(unix.IFLA_IFNAME, attrString("veth5c1d")),
			encodeAttr(unix.IFLA_MASTER, attrU32(3)),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{3}),
			encodeAttr(unix.IFLA_LINK, attrU32(3)),
			encodeAttr(unix.IFLA_LINK_NETNSID, attrS32(-1)),
			linkInfo(unix.IFLA_LINKINFO|unix.NLA_F_NESTED, "veth")),
	}
	var links []link
	for _, msg := range msgs {
		l, err := parseLink(msg)
		if err != nil {
			t.Fatalf("parseLink(%q): %v", msg, err)
		}
		links = append(links, l)
	}
	want := []Veth{{Name: "veth5c1d", Index: 9, Master: "docker0", OperState: "lowerlayerdown", PeerIndex: 3, PeerNetNSID: -1}}
	got := vethsFromLinks(links)
	if len(got) != 1 || got[0] != want[0] {
		t.Errorf("vethsFromLinks(%+v) = %+v, want %+v", links, got, want)
	}
}

func FuzzParseLink(f *testing.F) {
	f.Add(encodeLinkMsg(7))
	f.Add(encodeLinkMsg(12,
		encodeAttr(unix.IFLA_IFNAME, attrString("veth1a2b3c4")),
		encodeAttr(unix.IFLA_MASTER, attrU32(3)),
		encodeAttr(unix.IFLA_OPERSTATE, []byte{6}),
		encodeAttr(unix.IFLA_LINK, attrU32(2)),
		encodeAttr(unix.IFLA_LINK_NETNSID, attrS32(-1)),
		linkInfo(unix.IFLA_LINKINFO|unix.NLA_F_NESTED, "veth")))
	f.Add(encodeLinkMsg(3, encodeAttr(unix.IFLA_IFNAME, []byte("docker0")), linkInfo(unix.IFLA_LINKINFO, "bridge")))
	f.Add(encodeLinkMsg(7, encodeAttr(unix.IFLA_IFNAME, attrString("eth0")), []byte{0xff, 0xff}))
	f.Add(encodeLinkMsg(7, []byte{3, 0, 3, 0}))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		got, err := parseLink(msg)
		if err != nil {
			if got != (link{}) {
				t.Errorf("parseLink(%q) = %+v, %v, want the zero link with an error", msg, got, err)
			}
			return
		}
		if len(msg) < unix.SizeofIfInfomsg {
			t.Fatalf("parseLink(%q) = %+v, want an error for a message shorter than ifinfomsg", msg, got)
		}
		if want := int(int32(nl.NativeEndian().Uint32(msg[4:8]))); got.index != want {
			t.Errorf("parseLink(%q).index = %d, want %d", msg, got.index, want)
		}
		if strings.ContainsRune(got.name, 0) {
			t.Errorf("parseLink(%q).name = %q, contains a NUL", msg, got.name)
		}
		if !got.peerElsewhere && got.peerNetNSID != -1 {
			t.Errorf("parseLink(%q) = %+v, peerNetNSID without IFLA_LINK_NETNSID", msg, got)
		}
	})
}
