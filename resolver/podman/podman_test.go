package podman

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/proctest"
	"github.com/veth-exporter/veth_exporter/inventory"
	"golang.org/x/sys/unix"
)

// Container IDs as Podman writes them.
const (
	ctrA = "88d17d09fac1d2e33669e3ffd2cb558139c9b38d55dad6d3eb3df635c74d1fcb"
	ctrB = "fa67b2da0042cd50ebd9ac25cf4e212679c0f399b864928774e2ee9ea2bfe702"
)

// TestPodmanClaims follows Podman's records through a fake procfs whose
// ns/net files stand for namespaces: a live container and a pod run in
// theirs; a record Podman still calls running whose process is gone is a
// crash, claimed exited by its sandbox mount and by its owner; a process
// of the very container in the namespace outweighs the record; while the
// service is down Podman's netns-* mounts and owners are its to decide.
func TestPodmanClaims(t *testing.T) {
	procfs := t.TempDir()
	inode := func(pid string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(procfs, pid, "ns/net"), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	// Booted at boot; procStat's processes started 5678901 ticks later.
	boot := time.Unix(1_700_000_000, 0)
	processStart := boot.Add(5678901 * time.Second / clockTicks)
	proctest.WriteFile(t, procfs, "stat", "cpu 1 2 3\nbtime 1700000000\nprocesses 9\n")
	started := processStart.Add(time.Second)
	live := &Container{ID: ctrA, Name: "web", State: "running", Pid: 100, StartedAt: started}
	member := &Container{ID: ctrB, Name: "cart", State: "running", Pid: 200, PodID: podmanPodID, PodName: "shop", StartedAt: started}
	crashed := &Container{ID: crashedID, Name: "api", State: "running", Pid: 300, SandboxKey: "/run/netns/netns-dead", StartedAt: processStart.Add(-time.Hour)}
	// --cgroups=disabled: its process is in no cgroup of its own.
	nocgroup := &Container{ID: nocgroupID, Name: "plain", State: "running", Pid: 500, StartedAt: started}
	gone := &Container{ID: goneID, Name: "gone", State: "running", Pid: 600, SandboxKey: "/run/netns/netns-gone", StartedAt: started}
	for pid, id := range map[string]string{"100": ctrA, "200": ctrB} {
		proctest.WriteFile(t, filepath.Join(procfs, pid), "cgroup", "8:pids:/libpod_parent/libpod-"+id+"\n")
	}
	for _, pid := range []string{"100", "200", "300", "500"} {
		proctest.WriteFile(t, filepath.Join(procfs, pid), "stat", proctest.Stat(pid, "sleep"))
		proctest.WriteFile(t, filepath.Join(procfs, pid), "ns/net", "")
	}
	// PID 300 went to a process in no container, which started an hour
	// after the container did; 500 is in no container's cgroup but
	// started before Podman recorded its start; 600 is gone.
	proctest.WriteFile(t, filepath.Join(procfs, "300"), "cgroup", "0::/user.slice\n")
	proctest.WriteFile(t, filepath.Join(procfs, "500"), "cgroup", "0::/user.slice\n")
	view := &View{Up: true, Containers: []*Container{live, member, crashed, nocgroup, gone}}
	c := newPodmanClaims(view, inventory.Paths{Procfs: procfs, Rootfs: "/"})

	running := map[uint64]int{}
	for _, r := range c.Running() {
		running[r.Inode] = r.PID
	}
	if len(running) != 3 || running[inode("100")] != 100 || running[inode("200")] != 200 || running[inode("500")] != 500 {
		t.Errorf("Running() = %v, want the namespaces of PIDs 100, 200 and 500 only", running)
	}
	if !c.crashed[crashedID] || !c.crashed[goneID] || len(c.crashed) != 2 {
		t.Errorf("crashed = %v, want the reused PID's and the gone one's containers only", c.crashed)
	}
	ctx := context.Background()
	if cl := c.Claim(ctx, &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: inode("100")}}); cl.State != inventory.RuntimeRunning || cl.Owner == nil || cl.Owner.Kind != inventory.OwnerContainer || cl.Owner.Name != "web" {
		t.Errorf("live container: claim %+v, want running, owned by container web", cl)
	}
	want := inventory.Owner{Kind: inventory.OwnerPod, ID: podmanPodID, Name: "shop", PodName: "shop", Runtime: Runtime}
	if cl := c.Claim(ctx, &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: inode("200")}}); cl.State != inventory.RuntimeRunning || cl.Owner == nil || *cl.Owner != want {
		t.Errorf("pod: claim %+v, want running, owned by %+v", cl, want)
	}
	leftover := &inventory.Namespace{Inode: 9, Mounts: []string{"/run/netns/netns-dead"}}
	if cl := c.Claim(ctx, &inventory.Veth{PeerNetns: leftover}); cl.State != inventory.RuntimeExited || cl.LastOwner == nil || cl.LastOwner.ID != crashedID {
		t.Errorf("crashed container's namespace: claim %+v, want exited, last owned by %s", cl, crashedID)
	}
	apiOwner := &inventory.Owner{Kind: inventory.OwnerContainer, ID: crashedID, Runtime: Runtime}
	if cl := c.Claim(ctx, &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: 10, PIDs: []int{400}}, LastOwner: apiOwner}); cl.State != inventory.RuntimeExited {
		t.Errorf("namespace last owned by the crashed container: claim %+v, want exited", cl)
	}
	if cl := c.Claim(ctx, &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: 10, PIDs: []int{400}}, Owner: apiOwner}); cl.State != inventory.RuntimeSilent {
		t.Errorf("a process of the crashed container still in the namespace: claim %+v, want silent", cl)
	}
	if cl := c.Claim(ctx, &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: 11, Mounts: []string{"/run/netns/cni-1"}}}); cl.State != inventory.RuntimeSilent {
		t.Errorf("a namespace Podman does not know: claim %+v, want silent", cl)
	}

	// A crash is asked about afresh, once a snapshot, before it makes a
	// leftover: running again (or removed) is no record, no answer is
	// down.
	for _, tc := range []struct {
		name    string
		crashed bool
		err     error
		want    inventory.RuntimeClaim
	}{
		{"still crashed", true, nil, inventory.RuntimeExited},
		{"running again", false, nil, inventory.RuntimeSilent},
		{"no answer", false, errors.New("timeout"), inventory.RuntimeDown},
	} {
		fresh := newPodmanClaims(view, inventory.Paths{Procfs: procfs, Rootfs: "/"})
		calls := 0
		fresh.confirm = func(_ context.Context, pc *Container) (bool, error) {
			calls++
			return tc.crashed, tc.err
		}
		for range 2 {
			if cl := fresh.Claim(ctx, &inventory.Veth{PeerNetns: leftover}); cl.State != tc.want {
				t.Errorf("crash confirmed %s: claim %v, want %v", tc.name, cl.State, tc.want)
			}
		}
		if calls != 1 {
			t.Errorf("crash confirmed %s: asked %d times in one snapshot, want once", tc.name, calls)
		}
	}

	down := newPodmanClaims(&View{}, inventory.Paths{Procfs: procfs, Rootfs: "/"})
	if len(down.Running()) != 0 {
		t.Errorf("down: Running() = %v, want none", down.Running())
	}
	for _, tc := range []struct {
		name string
		v    *inventory.Veth
		want inventory.RuntimeClaim
	}{
		{"netns-* mount", &inventory.Veth{PeerNetns: leftover}, inventory.RuntimeDown},
		{"Podman last owner", &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: 12}, LastOwner: apiOwner}, inventory.RuntimeDown},
		{"a pod's cni-* mount", &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: 13, Mounts: []string{"/run/netns/cni-1"}}}, inventory.RuntimeSilent},
		{"netns-* elsewhere", &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: 14, Mounts: []string{"/run/other/netns-1"}}}, inventory.RuntimeSilent},
	} {
		if cl := down.Claim(ctx, tc.v); cl.State != tc.want {
			t.Errorf("down, %s: claim %v, want %v", tc.name, cl.State, tc.want)
		}
	}
}

const (
	nocgroupID  = "0000000000000000000000000000000000000000000000000000000000000a50"
	goneID      = "0000000000000000000000000000000000000000000000000000000000000a60"
	podmanPodID = "0000000000000000000000000000000000000000000000000000000000000ab1"
	crashedID   = "0000000000000000000000000000000000000000000000000000000000000dea"
)
