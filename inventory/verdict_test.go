package inventory

import "testing"

func TestDecide(t *testing.T) {
	empty := &Namespace{Inode: 1, NSID: 0, Mounts: []string{"/run/netns/leak"}}
	withProcess := &Namespace{Inode: 2, NSID: 1, PIDs: []int{42}}
	container := &Owner{Kind: OwnerContainer, ID: "c1", Runtime: "docker"}
	pod := &Owner{Kind: OwnerPod, ID: "c2", PodUID: "u1"}
	process := &Owner{Kind: OwnerProcess, ID: "42", Name: "sleep"}

	tests := []struct {
		name        string
		veth        Veth
		e           evidence
		wantVerdict Verdict
		wantReason  Reason
	}{
		{"pair on the host", Veth{PeerNetNSID: -1, PeerOnHost: true, PeerName: "b"}, evidence{}, Orphaned, ReasonPeerOnHost},
		{"infrastructure pair on the host", Veth{PeerNetNSID: -1, PeerOnHost: true}, evidence{infrastructure: true}, Owned, ReasonInfrastructure},
		{"infrastructure wins over an empty namespace", Veth{PeerNetNSID: 0, PeerNetns: empty}, evidence{infrastructure: true}, Owned, ReasonInfrastructure},
		{"namespace not found", Veth{PeerNetNSID: 7}, evidence{}, Unknown, ReasonNetnsNotFound},
		// The kernel reports nsid -1 for a peer namespace being destroyed;
		// a host peer that does not point back is not proof either.
		{"peer namespace without an id", Veth{PeerNetNSID: -1}, evidence{}, Unknown, ReasonNetnsNotFound},
		{"namespace held only by a mount", Veth{PeerNetNSID: 0, PeerNetns: empty}, evidence{}, Orphaned, ReasonNetnsEmpty},
		{"empty namespace that once had an owner", Veth{PeerNetNSID: 0, PeerNetns: empty, LastOwner: container}, evidence{}, Orphaned, ReasonNetnsEmpty},
		{"empty-looking namespace in a partial view", Veth{PeerNetNSID: 0, PeerNetns: empty}, evidence{partialView: true}, Unknown, ReasonPartialView},
		{"container process", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: container}, evidence{}, Owned, ReasonContainer},
		{"pod process", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: pod}, evidence{}, Owned, ReasonPod},
		{"container process in a partial view", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: container}, evidence{partialView: true}, Owned, ReasonContainer},
		{"unknown process, never seen owned", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: process}, evidence{}, Unknown, ReasonNoKnownOwner},
		{"stray process after the container left", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: process, LastOwner: container}, evidence{}, Orphaned, ReasonOwnerExited},
		{"stray process after the pod left", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: process, LastOwner: pod}, evidence{}, Orphaned, ReasonOwnerExited},
		{"stray process after the container left, partial view", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: process, LastOwner: container}, evidence{partialView: true}, Unknown, ReasonPartialView},
		{"process that was only ever a process", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: process, LastOwner: process}, evidence{}, Unknown, ReasonNoKnownOwner},

		// What a runtime resolver (Docker) says.
		{"runtime: running, no process seen yet", Veth{PeerNetNSID: 0, PeerNetns: empty}, evidence{runtime: RuntimeRunning}, Owned, ReasonContainer},
		{"runtime: running pod", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: pod}, evidence{runtime: RuntimeRunning}, Owned, ReasonPod},
		{"runtime: exited, namespace empty", Veth{PeerNetNSID: 0, PeerNetns: empty, LastOwner: container}, evidence{runtime: RuntimeExited}, Orphaned, ReasonNetnsEmpty},
		{"runtime: exited, a stray process left", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: process}, evidence{runtime: RuntimeExited}, Orphaned, ReasonOwnerExited},
		{"runtime: exited, its own process lingers in the cgroup", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: container}, evidence{runtime: RuntimeExited}, Orphaned, ReasonOwnerExited},
		{"runtime: exited, partial view", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: process}, evidence{runtime: RuntimeExited, partialView: true}, Unknown, ReasonPartialView},
		{"runtime down, namespace empty", Veth{PeerNetNSID: 0, PeerNetns: empty, LastOwner: container}, evidence{runtime: RuntimeDown}, Unknown, ReasonResolverDown},
		{"runtime down, container still running", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: container}, evidence{runtime: RuntimeDown}, Owned, ReasonContainer},
		{"runtime down, stray process after the container", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: process, LastOwner: container}, evidence{runtime: RuntimeDown}, Unknown, ReasonResolverDown},
		{"runtime down, pair on the host", Veth{PeerNetNSID: -1, PeerOnHost: true}, evidence{runtime: RuntimeDown}, Orphaned, ReasonPeerOnHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, r := decide(&tt.veth, tt.e)
			if v != tt.wantVerdict || r != tt.wantReason {
				t.Errorf("decide() = %s/%s, want %s/%s", v, r, tt.wantVerdict, tt.wantReason)
			}
		})
	}
}

func TestInfrastructureMatches(t *testing.T) {
	infra, err := NewInfrastructure(append(DefaultInfrastructurePatterns, `kube-ipvs-.*`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		veth Veth
		want bool
	}{
		{Veth{Name: "cilium_host", PeerNetNSID: -1, PeerOnHost: true, PeerName: "cilium_net"}, true},
		{Veth{Name: "cilium_net", PeerNetNSID: -1, PeerOnHost: true, PeerName: "cilium_host"}, true},
		{Veth{Name: "kube-ipvs-x", PeerNetNSID: 3}, true},
		// Patterns match whole names only.
		{Veth{Name: "xcilium_host", PeerNetNSID: 3}, false},
		{Veth{Name: "cilium_hostx", PeerNetNSID: 3}, false},
		// The peer's name counts only when the peer is on the host: a peer
		// index in another namespace says nothing about host names.
		{Veth{Name: "veth1", PeerNetNSID: -1, PeerOnHost: true, PeerName: "cilium_net"}, true},
		{Veth{Name: "veth1", PeerNetNSID: 2, PeerName: "cilium_net"}, false},
	}
	for _, tt := range tests {
		if got := infra.Matches(&tt.veth); got != tt.want {
			t.Errorf("Matches(%s, peer %s) = %v, want %v", tt.veth.Name, tt.veth.PeerName, got, tt.want)
		}
	}
	if _, err := NewInfrastructure([]string{"("}); err == nil {
		t.Error("NewInfrastructure(\"(\") accepted an invalid regexp")
	}
}
