package inventory

import (
	"context"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
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
	live := &PodmanContainer{ID: ctrA, Name: "web", State: "running", Pid: 100}
	member := &PodmanContainer{ID: ctrB, Name: "cart", State: "running", Pid: 200, PodID: podmanPodID, PodName: "shop"}
	crashed := &PodmanContainer{ID: crashedID, Name: "api", State: "running", Pid: 300, SandboxKey: "/run/netns/netns-dead"}
	for pid, id := range map[string]string{"100": ctrA, "200": ctrB} {
		writeProcFile(t, filepath.Join(procfs, pid), "cgroup", "8:pids:/libpod_parent/libpod-"+id+"\n")
		writeProcFile(t, filepath.Join(procfs, pid), "ns/net", "")
	}
	// PID 300 went to a process in no container.
	writeProcFile(t, filepath.Join(procfs, "300"), "cgroup", "0::/user.slice\n")
	view := &PodmanView{Up: true, Containers: []*PodmanContainer{live, member, crashed}}
	c := newPodmanClaims(view, Paths{Procfs: procfs, Rootfs: "/"})

	running := map[uint64]int{}
	for _, r := range c.Running() {
		running[r.Inode] = r.PID
	}
	if len(running) != 2 || running[inode("100")] != 100 || running[inode("200")] != 200 {
		t.Errorf("Running() = %v, want the namespaces of PIDs 100 and 200 only", running)
	}
	ctx := context.Background()
	if cl := c.Claim(ctx, &Veth{PeerNetns: &Namespace{Inode: inode("100")}}); cl.State != RuntimeRunning || cl.Owner == nil || cl.Owner.Kind != OwnerContainer || cl.Owner.Name != "web" {
		t.Errorf("live container: claim %+v, want running, owned by container web", cl)
	}
	want := Owner{Kind: OwnerPod, ID: podmanPodID, Name: "shop", PodName: "shop", Runtime: RuntimePodman}
	if cl := c.Claim(ctx, &Veth{PeerNetns: &Namespace{Inode: inode("200")}}); cl.State != RuntimeRunning || cl.Owner == nil || *cl.Owner != want {
		t.Errorf("pod: claim %+v, want running, owned by %+v", cl, want)
	}
	leftover := &Namespace{Inode: 9, Mounts: []string{"/run/netns/netns-dead"}}
	if cl := c.Claim(ctx, &Veth{PeerNetns: leftover}); cl.State != RuntimeExited || cl.LastOwner == nil || cl.LastOwner.ID != crashedID {
		t.Errorf("crashed container's namespace: claim %+v, want exited, last owned by %s", cl, crashedID)
	}
	apiOwner := &Owner{Kind: OwnerContainer, ID: crashedID, Runtime: RuntimePodman}
	if cl := c.Claim(ctx, &Veth{PeerNetns: &Namespace{Inode: 10, PIDs: []int{400}}, LastOwner: apiOwner}); cl.State != RuntimeExited {
		t.Errorf("namespace last owned by the crashed container: claim %+v, want exited", cl)
	}
	if cl := c.Claim(ctx, &Veth{PeerNetns: &Namespace{Inode: 10, PIDs: []int{400}}, Owner: apiOwner}); cl.State != RuntimeSilent {
		t.Errorf("a process of the crashed container still in the namespace: claim %+v, want silent", cl)
	}
	if cl := c.Claim(ctx, &Veth{PeerNetns: &Namespace{Inode: 11, Mounts: []string{"/run/netns/cni-1"}}}); cl.State != RuntimeSilent {
		t.Errorf("a namespace Podman does not know: claim %+v, want silent", cl)
	}

	down := newPodmanClaims(&PodmanView{}, Paths{Procfs: procfs, Rootfs: "/"})
	if len(down.Running()) != 0 {
		t.Errorf("down: Running() = %v, want none", down.Running())
	}
	for _, tc := range []struct {
		name string
		v    *Veth
		want RuntimeClaim
	}{
		{"netns-* mount", &Veth{PeerNetns: leftover}, RuntimeDown},
		{"Podman last owner", &Veth{PeerNetns: &Namespace{Inode: 12}, LastOwner: apiOwner}, RuntimeDown},
		{"a pod's cni-* mount", &Veth{PeerNetns: &Namespace{Inode: 13, Mounts: []string{"/run/netns/cni-1"}}}, RuntimeSilent},
		{"netns-* elsewhere", &Veth{PeerNetns: &Namespace{Inode: 14, Mounts: []string{"/run/other/netns-1"}}}, RuntimeSilent},
	} {
		if cl := down.Claim(ctx, tc.v); cl.State != tc.want {
			t.Errorf("down, %s: claim %v, want %v", tc.name, cl.State, tc.want)
		}
	}
}

const (
	podmanPodID = "0000000000000000000000000000000000000000000000000000000000000ab1"
	crashedID   = "0000000000000000000000000000000000000000000000000000000000000dea"
)
