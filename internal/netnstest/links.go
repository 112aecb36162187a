package netnstest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The functions below read the interfaces of the test's namespace, as
// /sys/class/net (the fresh sysfs of [Main]) and netlink show them; they
// change nothing.

// LinkExists reports whether the interface name exists in this network
// namespace.
func LinkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// LinkIndex returns the ifindex of the interface name in this network
// namespace, failing t if there is none.
func LinkIndex(t testing.TB, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/class/net", name, "ifindex"))
	if err != nil {
		t.Fatalf("ifindex of %s: %v", name, err)
	}
	index, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("ifindex of %s: %v", name, err)
	}
	return index
}

// Master returns the bridge the interface name is a port of, or "" if it
// is on none; it fails t if the interface does not exist.
func Master(t testing.TB, name string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join("/sys/class/net", name, "master"))
	if err == nil {
		return filepath.Base(target)
	}
	if !LinkExists(name) {
		t.Fatalf("interface %s does not exist", name)
	}
	if !os.IsNotExist(err) {
		t.Fatalf("master of %s: %v", name, err)
	}
	return ""
}

// BridgePorts returns the names of the ports of bridge, sorted; it fails t
// if bridge is not a bridge of this namespace.
func BridgePorts(t testing.TB, bridge string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("/sys/class/net", bridge, "brif"))
	if err != nil {
		t.Fatalf("ports of %s: %v", bridge, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// HostVeth returns the name, in this network namespace, of the veth whose
// peer is eth0 in the network namespace at nsPath (/proc/PID/ns/net of a
// container's process, or a bind mount of the namespace such as a
// runtime's /run/netns/cni-<uuid>), failing t if there is not exactly one.
func HostVeth(t testing.TB, nsPath string) string {
	t.Helper()
	l, err := hostVeth(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	return l.Name
}

// hostVeth finds the one veth here whose IFLA_LINK_NETNSID is the nsid of
// the namespace at nsPath and whose peer is eth0 there. An ifindex names
// different links in different namespaces: both ends must point at each
// other, in the namespace each says.
func hostVeth(nsPath string) (*netlink.LinkAttrs, error) {
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer unix.Close(fd)
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return nil, fmt.Errorf("eth0 in %s: %w", nsPath, err)
	}
	if eth0.Type() != "veth" {
		return nil, fmt.Errorf("eth0 in %s is a %s, want a veth", nsPath, eth0.Type())
	}
	// The dump comes first: reporting a peer's namespace gives that
	// namespace an nsid here if it had none.
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	nsid, err := netlink.GetNetNsIdByFd(fd)
	if err != nil {
		return nil, fmt.Errorf("nsid of %s: %w", nsPath, err)
	}
	var found []string
	var peer *netlink.LinkAttrs
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || nsid < 0 || a.NetNsID != nsid {
			continue
		}
		found = append(found, a.Name)
		if a.ParentIndex == eth0.Attrs().Index && eth0.Attrs().ParentIndex == a.Index {
			peer = a
		}
	}
	if peer == nil || len(found) != 1 {
		return nil, fmt.Errorf("veths here with their peer in %s (nsid %d): %q, want exactly the peer of its eth0 (ifindex %d, peer %d)",
			nsPath, nsid, found, eth0.Attrs().Index, eth0.Attrs().ParentIndex)
	}
	return peer, nil
}
