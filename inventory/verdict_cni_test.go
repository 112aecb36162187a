package inventory

import (
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// Privileged fixtures of routed CNIs (Calico's cali*, Cilium's lxc*, AWS
// VPC's eni*): the host veth has no master. Verdicts rest on the peer's
// namespace alone, so each routed veth must be judged exactly as its
// bridged twin.
//
// The file sorts after snapshot_test.go on purpose: TestSnapshotVerdicts
// needs the first ifindexes of the test's network namespace.

const (
	routedPod       = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	routedContainer = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
	// bridgedContainer is routedContainer's twin on br0.
	bridgedContainer = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
)

func TestRoutedCNIVerdicts(t *testing.T) {
	netnstest.Require(t)
	netnstest.Bridge(t, "br0")
	type twin struct{ bridged, routed string }
	var exits []func()
	// Each case makes the same fixture twice: on br0, and without a master.
	build := func(name string, mk func(device, master string)) twin {
		tw := twin{"vb" + name, "cali" + name}
		mk(tw.bridged, "br0")
		mk(tw.routed, "")
		return tw
	}
	pod := build("pod", func(device, master string) {
		netnstest.Veth(t, device, strconv.Itoa(netnstest.Holder(t, "/kubepods/besteffort/pod"+testPodUID+"/"+routedPod)), master)
	})
	container := build("ctr", func(device, master string) {
		netnstest.Veth(t, device, strconv.Itoa(netnstest.Holder(t, "/docker/"+routedContainer)), master)
	})
	leak := build("leak", func(device, master string) {
		netnstest.NamedNetns(t, "ns-"+device)
		netnstest.Veth(t, device, "ns-"+device, master)
	})
	stray := build("stray", func(device, master string) {
		netnstest.Veth(t, device, strconv.Itoa(netnstest.Holder(t, "")), master)
	})
	exited := build("exit", func(device, master string) {
		// One container each: a container's cgroup goes when it exits.
		id := routedContainer
		if master != "" {
			id = bridgedContainer
		}
		c, stop := netnstest.StoppableHolder(t, "/system.slice/docker-"+id+".scope")
		netnstest.Join(t, c)
		netnstest.Veth(t, device, strconv.Itoa(c), master)
		exits = append(exits, stop)
	})

	check := func(s *Snapshot, tw twin, verdict Verdict, reason Reason) {
		t.Helper()
		b, r := mustVeth(t, s, tw.bridged), mustVeth(t, s, tw.routed)
		if b.Master != "br0" || r.Master != "" {
			t.Fatalf("masters %q and %q, want br0 and none", b.Master, r.Master)
		}
		wantVerdict(t, b, verdict, reason)
		wantVerdict(t, r, verdict, reason)
		if (b.Owner == nil) != (r.Owner == nil) || b.Owner != nil && b.Owner.Kind != r.Owner.Kind {
			t.Errorf("%s owner %+v, %s owner %+v: want the same kind", b.Name, b.Owner, r.Name, r.Owner)
		}
	}
	inv := newTestInventory(t)
	s := snapshot(t, inv)
	check(s, pod, Owned, ReasonPod)
	check(s, container, Owned, ReasonContainer)
	check(s, leak, Orphaned, ReasonNetnsEmpty)
	check(s, stray, Unknown, ReasonNoKnownOwner)
	check(s, exited, Owned, ReasonContainer)

	for _, stop := range exits {
		stop()
	}
	s = snapshot(t, inv)
	check(s, exited, Orphaned, ReasonOwnerExited)
	for _, tw := range []twin{exited} {
		if v := mustVeth(t, s, tw.routed); v.LastOwner == nil || v.LastOwner.ID != routedContainer {
			t.Errorf("%s: last owner %+v, want container %s", v.Name, v.LastOwner, routedContainer)
		}
	}
}

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
	live := netnstest.Holder(t, "/kubepods/besteffort/pod"+testPodUID+"/"+routedPod)
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

	inv := newTestInventory(t)
	inv.cfg.CNI = NewCNI("", cacheDir)
	s := snapshot(t, inv)

	pod := func(name string) *Owner {
		return &Owner{Kind: OwnerPod, ID: "s-" + name, Name: name, PodNamespace: "default", PodName: name, PodUID: "uid-" + name}
	}
	tests := []struct {
		device    string
		verdict   Verdict
		reason    Reason
		lastOwner *Owner
	}{
		{"calilost", Orphaned, ReasonNetnsEmpty, pod("lost")},
		{"calilive", Owned, ReasonPod, nil},
		// Named, yet not orphaned on the cache's word: the entry is
		// there for live pods too.
		{"calistray", Unknown, ReasonNoKnownOwner, pod("stray")},
		{"calireused", Unknown, ReasonNoKnownOwner, nil},
		{"caliname", Orphaned, ReasonNetnsEmpty, nil},
		{"calielse", Orphaned, ReasonNetnsEmpty, nil},
	}
	for _, tt := range tests {
		v := mustVeth(t, s, tt.device)
		wantVerdict(t, v, tt.verdict, tt.reason)
		if tt.verdict == Owned {
			continue
		}
		if (v.LastOwner == nil) != (tt.lastOwner == nil) || v.LastOwner != nil && *v.LastOwner != *tt.lastOwner {
			t.Errorf("%s: last owner %+v, want %+v", tt.device, v.LastOwner, tt.lastOwner)
		}
	}
	if s.CNI == nil || !s.CNI.CacheRead || s.CNI.CacheEntries != 6 {
		t.Fatalf("CNI view %+v, want 6 cache entries read", s.CNI)
	}
	var stale []string
	for _, a := range s.CNI.Stale {
		stale = append(stale, a.Device+"="+a.PodName)
	}
	if want := []string{"calilost=lost", "calistray=stray"}; !slices.Equal(stale, want) {
		t.Errorf("stale attachments %v, want %v", stale, want)
	}
}
