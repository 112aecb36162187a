package inventory

import (
	"strconv"
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
