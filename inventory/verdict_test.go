package inventory

import (
	"slices"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	empty := &Namespace{Inode: 1, NSID: 0, Mounts: []string{"/run/netns/leak"}}
	withProcess := &Namespace{Inode: 2, NSID: 1, PIDs: []int{42}}
	uncounted := &Namespace{Inode: 3, NSID: 2, Uncounted: true}
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
		// Without root the processes holding a container's namespace
		// cannot be read: not found where the exporter could not look.
		{"namespace not found in a partial view", Veth{PeerNetNSID: 7}, evidence{partialView: true}, Unknown, ReasonPartialView},
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
		{"runtime not asked, pinned where it pins", Veth{PeerNetNSID: 0, PeerNetns: empty}, evidence{unasked: true}, Unknown, ReasonResolverOff},
		{"runtime not asked, container still running", Veth{PeerNetNSID: 1, PeerNetns: withProcess, Owner: container}, evidence{unasked: true}, Owned, ReasonContainer},
		{"runtime not asked, another runtime runs it", Veth{PeerNetNSID: 0, PeerNetns: empty}, evidence{unasked: true, runtime: RuntimeRunning}, Owned, ReasonContainer},
		{"runtime not asked, pair on the host", Veth{PeerNetNSID: -1, PeerOnHost: true}, evidence{unasked: true}, Orphaned, ReasonPeerOnHost},
		{"runtime down, pair on the host", Veth{PeerNetNSID: -1, PeerOnHost: true}, evidence{runtime: RuntimeDown}, Orphaned, ReasonPeerOnHost},

		// Processes not counted: only a running claim decides.
		{"uncounted, runtime running", Veth{PeerNetNSID: 2, PeerNetns: uncounted}, evidence{runtime: RuntimeRunning}, Owned, ReasonContainer},
		{"uncounted without a running claim", Veth{PeerNetNSID: 2, PeerNetns: uncounted, LastOwner: container}, evidence{runtime: RuntimeExited}, Unknown, ReasonPartialView},
		{"uncounted, no claim", Veth{PeerNetNSID: 2, PeerNetns: uncounted}, evidence{}, Unknown, ReasonPartialView},
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

// TestWeighClaims combines what several runtime resolvers (Docker, a CRI
// runtime) say about one namespace: the strongest claim wins (running >
// exited > down > silent, the first of equals), its owner facts are
// written into the veth, and the verdict follows from it.
func TestWeighClaims(t *testing.T) {
	empty := func() *Namespace { return &Namespace{Inode: 1, Mounts: []string{"/run/netns/cni-1"}} }
	web := &Owner{Kind: OwnerContainer, ID: "c1", Name: "web", Runtime: Runtime("docker")}
	api := &Owner{Kind: OwnerContainer, ID: "c2", Name: "api", Runtime: Runtime("docker")}
	pod := &Owner{Kind: OwnerPod, ID: "s1", Name: "nginx", PodNamespace: "default", PodName: "nginx", PodUID: "u1", Runtime: Runtime("containerd")}
	remembered := &Owner{Kind: OwnerPod, ID: "s0", PodUID: "u0"}
	finished := t0.Add(-time.Hour)

	running := func(o *Owner, containers ...string) Claim {
		return Claim{State: RuntimeRunning, Owner: o, Containers: containers}
	}
	exited := func(o *Owner) Claim { return Claim{State: RuntimeExited, LastOwner: o, LastOwnerSeen: finished} }
	down, silent := Claim{State: RuntimeDown}, Claim{State: RuntimeSilent}

	tests := []struct {
		name          string
		lastOwner     *Owner
		claims        []Claim
		want          RuntimeClaim
		wantOwner     *Owner
		wantLastOwner *Owner
		wantContainer []string
		wantVerdict   Verdict
		wantReason    Reason
	}{
		{"no resolver", nil, nil, RuntimeSilent, nil, nil, nil, Orphaned, ReasonNetnsEmpty},
		{"all silent", nil, []Claim{silent, silent}, RuntimeSilent, nil, nil, nil, Orphaned, ReasonNetnsEmpty},
		{"running beats down", nil, []Claim{down, running(pod, "nginx")}, RuntimeRunning, pod, nil, []string{"nginx"}, Owned, ReasonPod},
		{"running beats exited", nil, []Claim{exited(api), running(web, "web", "sidecar")}, RuntimeRunning, web, nil, []string{"web", "sidecar"}, Owned, ReasonContainer},
		{"running beats silent", nil, []Claim{running(web, "web"), silent}, RuntimeRunning, web, nil, []string{"web"}, Owned, ReasonContainer},
		{"exited beats down", nil, []Claim{down, exited(api)}, RuntimeExited, nil, api, nil, Orphaned, ReasonNetnsEmpty},
		{"exited beats silent", nil, []Claim{silent, exited(api)}, RuntimeExited, nil, api, nil, Orphaned, ReasonNetnsEmpty},
		{"exited keeps the remembered last owner", remembered, []Claim{exited(api)}, RuntimeExited, nil, remembered, nil, Orphaned, ReasonNetnsEmpty},
		{"down beats silent", nil, []Claim{silent, down}, RuntimeDown, nil, nil, nil, Unknown, ReasonResolverDown},
		{"down keeps the remembered last owner", remembered, []Claim{down, silent}, RuntimeDown, nil, remembered, nil, Unknown, ReasonResolverDown},
		{"first of two running", nil, []Claim{running(web, "web"), running(pod, "nginx")}, RuntimeRunning, web, nil, []string{"web"}, Owned, ReasonContainer},
		{"first of two exited", nil, []Claim{exited(api), exited(web)}, RuntimeExited, nil, api, nil, Orphaned, ReasonNetnsEmpty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &Veth{PeerNetNSID: 0, PeerNetns: empty(), LastOwner: tt.lastOwner}
			got := weigh(v, tt.claims)
			if got != tt.want {
				t.Errorf("weigh(%v) = %v, want %v", tt.claims, got, tt.want)
			}
			if v.Owner != tt.wantOwner {
				t.Errorf("weigh(%v): owner %+v, want %+v", tt.claims, v.Owner, tt.wantOwner)
			}
			if v.LastOwner != tt.wantLastOwner {
				t.Errorf("weigh(%v): last owner %+v, want %+v", tt.claims, v.LastOwner, tt.wantLastOwner)
			}
			if tt.wantLastOwner != nil && tt.wantLastOwner != tt.lastOwner && !v.LastOwnerSeen.Equal(finished) {
				t.Errorf("weigh(%v): last owner seen %v, want %v", tt.claims, v.LastOwnerSeen, finished)
			}
			if !slices.Equal(v.PeerNetns.Containers, tt.wantContainer) {
				t.Errorf("weigh(%v): containers %q, want %q", tt.claims, v.PeerNetns.Containers, tt.wantContainer)
			}
			if verdict, reason := decide(v, evidence{runtime: got}); verdict != tt.wantVerdict || reason != tt.wantReason {
				t.Errorf("decide() after weigh(%v) = %s/%s, want %s/%s", tt.claims, verdict, reason, tt.wantVerdict, tt.wantReason)
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
