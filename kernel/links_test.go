package kernel

import (
	"bytes"
	"slices"
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
		want Link
	}{
		{"no attributes", encodeLinkMsg(7), Link{Index: 7, PeerNetNSID: -1}},
		{"veth with its peer on the host", hostVeth,
			Link{Index: 12, Name: "veth1a2b3c4", Veth: true, Master: 3, OperState: 6, PeerIndex: 13, PeerNetNSID: -1}},
		{"veth with its peer in nsid 3", encodeLinkMsg(40,
			encodeAttr(unix.IFLA_IFNAME, attrString("vethc0ffee")),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{2}),
			encodeAttr(unix.IFLA_LINK, attrU32(2)),
			encodeAttr(unix.IFLA_LINK_NETNSID, attrS32(3)),
			linkInfo(unix.IFLA_LINKINFO, "veth")),
			Link{Index: 40, Name: "vethc0ffee", Veth: true, OperState: 2, PeerIndex: 2, PeerNetNSID: 3, PeerElsewhere: true}},
		{"veth with its peer in nsid 0", encodeLinkMsg(41,
			encodeAttr(unix.IFLA_LINK_NETNSID, attrS32(0)),
			linkInfo(unix.IFLA_LINKINFO, "veth")),
			Link{Index: 41, Veth: true, PeerNetNSID: 0, PeerElsewhere: true}},
		// The kernel reports -1 for a peer namespace that is being
		// destroyed: the peer is still elsewhere.
		{"veth with its peer in a dying namespace", encodeLinkMsg(42,
			encodeAttr(unix.IFLA_LINK, attrU32(5)),
			encodeAttr(unix.IFLA_LINK_NETNSID, attrS32(-1)),
			linkInfo(unix.IFLA_LINKINFO, "veth")),
			Link{Index: 42, Veth: true, PeerIndex: 5, PeerNetNSID: -1, PeerElsewhere: true}},
		{"veth in interface group 7", encodeLinkMsg(43,
			encodeAttr(unix.IFLA_IFNAME, attrString("vgroup")),
			encodeAttr(unix.IFLA_GROUP, attrU32(7)),
			linkInfo(unix.IFLA_LINKINFO, "veth")),
			Link{Index: 43, Name: "vgroup", Veth: true, Group: 7, PeerNetNSID: -1}},
		{"group too short", encodeLinkMsg(44, encodeAttr(unix.IFLA_GROUP, []byte{7, 0})),
			Link{Index: 44, PeerNetNSID: -1}},
		{"bridge", encodeLinkMsg(3,
			encodeAttr(unix.IFLA_IFNAME, attrString("docker0")),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{6}),
			linkInfo(unix.IFLA_LINKINFO, "bridge")),
			Link{Index: 3, Name: "docker0", OperState: 6, PeerNetNSID: -1}},
		{"kind with veth as a prefix", encodeLinkMsg(4, linkInfo(unix.IFLA_LINKINFO, "vethx")),
			Link{Index: 4, PeerNetNSID: -1}},
		{"loopback without link info", encodeLinkMsg(1,
			encodeAttr(unix.IFLA_IFNAME, attrString("lo")),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{0})),
			Link{Index: 1, Name: "lo", PeerNetNSID: -1}},
		{"nested bit on IFLA_LINKINFO", encodeLinkMsg(12, linkInfo(unix.IFLA_LINKINFO|unix.NLA_F_NESTED, "veth")),
			Link{Index: 12, Veth: true, PeerNetNSID: -1}},
		{"nested bit on IFLA_INFO_KIND", encodeLinkMsg(12,
			encodeAttr(unix.IFLA_LINKINFO, encodeAttr(unix.IFLA_INFO_KIND|unix.NLA_F_NESTED, attrString("veth")))),
			Link{Index: 12, Veth: true, PeerNetNSID: -1}},
		{"byte order bit on IFLA_IFNAME", encodeLinkMsg(12,
			encodeAttr(unix.IFLA_IFNAME|unix.NLA_F_NET_BYTEORDER, attrString("eth0"))),
			Link{Index: 12, Name: "eth0", PeerNetNSID: -1}},
		{"name without a NUL", encodeLinkMsg(12, encodeAttr(unix.IFLA_IFNAME, []byte("eth0"))),
			Link{Index: 12, Name: "eth0", PeerNetNSID: -1}},
		{"name with bytes after its NUL", encodeLinkMsg(12, encodeAttr(unix.IFLA_IFNAME, []byte("eth0\x00junk"))),
			Link{Index: 12, Name: "eth0", PeerNetNSID: -1}},
		{"kind without a NUL", encodeLinkMsg(12, encodeAttr(unix.IFLA_LINKINFO, encodeAttr(unix.IFLA_INFO_KIND, []byte("veth")))),
			Link{Index: 12, Veth: true, PeerNetNSID: -1}},
		{"unknown attributes", encodeLinkMsg(12,
			encodeAttr(0x7ffe, []byte("whatever the kernel adds next")),
			encodeAttr(unix.IFLA_IFNAME, attrString("eth0")),
			encodeAttr(0x7fff|unix.NLA_F_NESTED, encodeAttr(1, attrU32(1))),
			encodeAttr(unix.IFLA_LINKINFO, encodeAttr(0x7fff, attrString("veth")))),
			Link{Index: 12, Name: "eth0", PeerNetNSID: -1}},
		{"empty attribute", encodeLinkMsg(12, encodeAttr(unix.IFLA_IFNAME, nil)),
			Link{Index: 12, PeerNetNSID: -1}},
		{"integer attributes too short", encodeLinkMsg(12,
			encodeAttr(unix.IFLA_MASTER, []byte{3, 0}),
			encodeAttr(unix.IFLA_LINK, []byte{13}),
			encodeAttr(unix.IFLA_OPERSTATE, nil),
			encodeAttr(unix.IFLA_LINK_NETNSID, []byte{3, 0, 0})),
			Link{Index: 12, PeerNetNSID: -1}},
		{"last attribute not padded", append(encodeLinkMsg(12, encodeAttr(unix.IFLA_IFNAME, attrString("eth0"))),
			encodeAttr(unix.IFLA_OPERSTATE, []byte{6})[:5]...),
			Link{Index: 12, Name: "eth0", OperState: 6, PeerNetNSID: -1}},
		{"trailing bytes shorter than a header", append(bytes.Clone(hostVeth), 0xff, 0xff, 0xff),
			Link{Index: 12, Name: "veth1a2b3c4", Veth: true, Master: 3, OperState: 6, PeerIndex: 13, PeerNetNSID: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLink(tc.msg)
			if err != nil || got != tc.want {
				t.Errorf("ParseLink(%q) = %+v, %v, want %+v, <nil>", tc.msg, got, err, tc.want)
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
			got, err := ParseLink(tc.msg)
			if err == nil || got != (Link{}) {
				t.Errorf("ParseLink(%q) = %+v, %v, want %+v and an error", tc.msg, got, err, Link{})
			}
			// Errors carry the ifindex once the header is there.
			if err != nil && len(tc.msg) >= unix.SizeofIfInfomsg && !strings.Contains(err.Error(), "link 7") {
				t.Errorf("ParseLink(%q) error %q does not name link 7", tc.msg, err)
			}
		})
	}
}

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
			if got := OperStateName(tc.state); got != tc.want {
				t.Errorf("OperStateName(%d) = %q, want %q", tc.state, got, tc.want)
			}
		})
	}
}

// TestParseLinkDump parses one dump as the kernel sends it: a veth whose
// peer is on the host (IFLA_LINK_NETNSID -1) on a bridge.
func TestParseLinkDump(t *testing.T) {
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
	var links []Link
	for _, msg := range msgs {
		l, err := ParseLink(msg)
		if err != nil {
			t.Fatalf("ParseLink(%q): %v", msg, err)
		}
		links = append(links, l)
	}
	want := []Link{
		{Index: 1, Name: "lo", PeerNetNSID: -1},
		{Index: 3, Name: "docker0", OperState: 6, PeerNetNSID: -1},
		{Index: 9, Name: "veth5c1d", Veth: true, Master: 3, OperState: 3, PeerIndex: 3, PeerNetNSID: -1, PeerElsewhere: true},
	}
	if !slices.Equal(links, want) {
		t.Errorf("ParseLink of the dump = %+v, want %+v", links, want)
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
		got, err := ParseLink(msg)
		if err != nil {
			if got != (Link{}) {
				t.Errorf("ParseLink(%q) = %+v, %v, want the zero link with an error", msg, got, err)
			}
			return
		}
		if len(msg) < unix.SizeofIfInfomsg {
			t.Fatalf("ParseLink(%q) = %+v, want an error for a message shorter than ifinfomsg", msg, got)
		}
		if want := int(int32(nl.NativeEndian().Uint32(msg[4:8]))); got.Index != want {
			t.Errorf("ParseLink(%q).Index = %d, want %d", msg, got.Index, want)
		}
		if strings.ContainsRune(got.Name, 0) {
			t.Errorf("ParseLink(%q).Name = %q, contains a NUL", msg, got.Name)
		}
		if !got.PeerElsewhere && got.PeerNetNSID != -1 {
			t.Errorf("ParseLink(%q) = %+v, peerNetNSID without IFLA_LINK_NETNSID", msg, got)
		}
	})
}
