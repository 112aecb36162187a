package cni

import (
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/invtest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/inventory"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// A pod's sandbox container and UID, as the kubelet names their cgroup.
const (
	testPod    = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	testPodUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
)

// peerMAC returns the MAC address of eth0 in the namespace of a PID or
// of an `ip netns` name.
func peerMAC(t *testing.T, netns string) string {
	t.Helper()
	cmd := exec.Command("ip", "-n", netns, "-o", "link", "show", "eth0")
	if _, err := strconv.Atoi(netns); err == nil {
		cmd = exec.Command("nsenter", "--net=/proc/"+netns+"/ns/net", "ip", "-o", "link", "show", "eth0")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show eth0 in %s: %v\n%s", netns, err, out)
	}
	fields := strings.Fields(string(out))
	if i := slices.Index(fields, "link/ether"); i >= 0 && i+1 < len(fields) {
		return fields[i+1]
	}
	t.Fatalf("no MAC address in %q", out)
	return ""
}

func hostMAC(t *testing.T, device string) string {
	t.Helper()
	i, err := net.InterfaceByName(device)
	if err != nil {
		t.Fatal(err)
	}
	return i.HardwareAddr.String()
}

// TestCNICacheLastOwner: an exporter that never saw the pods learns from
// the libcni cache which pod a leftover was, but only when the entry is
// proved to be about that veth: by its namespace path, or, that path
// gone, by the host veth's name and both ends' MACs. A name alone proves
// nothing.
func TestCNICacheLastOwner(t *testing.T) {
	netnstest.Require(t)
	cacheDir := t.TempDir()
	entry := func(sandbox, name, veth, hostMAC, podMAC, netns string) {
		t.Helper()
		writeCNIFile(t, filepath.Join(cacheDir, "k8s-pod-network-"+sandbox+"-eth0"),
			cacheEntry(sandbox, "default", name, "uid-"+name, veth, hostMAC, podMAC, netns))
	}

	// A pod the runtime lost: its namespace mount stays, no process.
	netnstest.NamedNetns(t, "cni-lost")
	netnstest.Veth(t, "calilost", "cni-lost", "")
	entry("s-lost", "lost", "calilost", "", "", "/var/run/netns/cni-lost")

	// A live pod whose namespace the runtime pinned.
	live := netnstest.Holder(t, "/kubepods/besteffort/pod"+testPodUID+"/"+testPod)
	netnstest.IP(t, "netns", "attach", "cni-live", strconv.Itoa(live))
	t.Cleanup(func() { exec.Command("ip", "netns", "del", "cni-live").Run() })
	netnstest.Veth(t, "calilive", strconv.Itoa(live), "")
	entry("s-live", "live", "calilive", "", "", "/run/netns/cni-live")

	// Out of band: the mount is gone, a stray process holds the
	// namespace; the recorded pair is this veth's.
	stray := netnstest.Holder(t, "")
	netnstest.Veth(t, "calistray", strconv.Itoa(stray), "")
	entry("s-stray", "stray", "calistray", hostMAC(t, "calistray"), peerMAC(t, strconv.Itoa(stray)), "/run/netns/cni-deleted")

	// The same, but the recorded pod-side MAC is another interface's: a
	// new pod under a reused name.
	reused := netnstest.Holder(t, "")
	netnstest.Veth(t, "calireused", strconv.Itoa(reused), "")
	entry("s-reused", "reused", "calireused", hostMAC(t, "calireused"), "02:00:00:00:00:01", "/run/netns/cni-deleted-too")

	// A name alone: Calico records only the host veth's name.
	netnstest.NamedNetns(t, "other")
	netnstest.Veth(t, "caliname", "other", "")
	writeCNIFile(t, filepath.Join(cacheDir, "k8s-pod-network-s-name-eth0"), `{"kind":"cniCacheV1","containerId":"s-name","ifName":"eth0",`+
		`"networkName":"k8s-pod-network","cniArgs":[["K8S_POD_NAMESPACE","default"],["K8S_POD_NAME","name"]],`+
		`"result":{"cniVersion":"0.3.1","interfaces":[{"name":"caliname"}]}}`)

	// A namespace path that pins another namespace than the veth's peer:
	// the entry is about that one, even though the pair it records is
	// this veth's.
	netnstest.NamedNetns(t, "elsewhere")
	netnstest.NamedNetns(t, "cni-other")
	netnstest.Veth(t, "calielse", "elsewhere", "")
	entry("s-else", "else", "calielse", hostMAC(t, "calielse"), peerMAC(t, "elsewhere"), "/run/netns/cni-other")

	inv := invtest.New(t, inventory.Config{Annotators: []inventory.Annotator{New("", cacheDir)}})
	s := invtest.Snapshot(t, inv)

	pod := func(name string) *inventory.Owner {
		return &inventory.Owner{Kind: inventory.OwnerPod, ID: "s-" + name, Name: name, PodNamespace: "default", PodName: name, PodUID: "uid-" + name}
	}
	tests := []struct {
		device    string
		verdict   inventory.Verdict
		reason    inventory.Reason
		lastOwner *inventory.Owner
	}{
		{"calilost", inventory.Orphaned, inventory.ReasonNetnsEmpty, pod("lost")},
		{"calilive", inventory.Owned, inventory.ReasonPod, nil},
		// Named, yet not orphaned on the cache's word: the entry is
		// there for live pods too.
		{"calistray", inventory.Unknown, inventory.ReasonNoKnownOwner, pod("stray")},
		{"calireused", inventory.Unknown, inventory.ReasonNoKnownOwner, nil},
		{"caliname", inventory.Orphaned, inventory.ReasonNetnsEmpty, nil},
		{"calielse", inventory.Orphaned, inventory.ReasonNetnsEmpty, nil},
	}
	for _, tt := range tests {
		v := invtest.MustVeth(t, s, tt.device)
		invtest.WantVerdict(t, v, tt.verdict, tt.reason)
		if tt.verdict == inventory.Owned {
			continue
		}
		if (v.LastOwner == nil) != (tt.lastOwner == nil) || v.LastOwner != nil && *v.LastOwner != *tt.lastOwner {
			t.Errorf("%s: last owner %+v, want %+v", tt.device, v.LastOwner, tt.lastOwner)
		}
	}
	view, _ := s.View(Name).(*View)
	if view == nil || !view.CacheRead || view.CacheEntries != 6 {
		t.Fatalf("CNI view %+v, want 6 cache entries read", view)
	}
	var stale []string
	for _, a := range view.Stale {
		stale = append(stale, a.Device+"="+a.PodName)
	}
	if want := []string{"calilost=lost", "calistray=stray"}; !slices.Equal(stale, want) {
		t.Errorf("stale attachments %v, want %v", stale, want)
	}
}
