package cri

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI is a CRI runtime service on a unix socket in a temporary
// directory that answers the calls the resolver makes (Version,
// ListPodSandbox, PodSandboxStatus) from its sandboxes, and counts them.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	socket string

	mu        sync.Mutex
	sandboxes []fakeSandbox
	calls     map[string]int
	server    *grpc.Server
}

type fakeSandbox struct {
	id, namespace, name, uid string
	ready                    bool
	netns                    string
	pid                      int
	hostNetwork              bool
}

func newFakeCRI(t *testing.T, sandboxes ...fakeSandbox) *fakeCRI {
	t.Helper()
	// Socket paths are limited to 108 bytes: t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "cri")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeCRI{socket: filepath.Join(dir, "cri.sock"), sandboxes: sandboxes, calls: map[string]int{}}
	f.start(t, true)
	t.Cleanup(f.stop)
	return f
}

// start serves on the socket; without the runtime service when runtime is
// false (a containerd whose CRI plugin is disabled).
func (f *fakeCRI) start(t *testing.T, runtime bool) {
	t.Helper()
	os.Remove(f.socket)
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	// A server stopped before its Serve began closes the listener then:
	// it must not unlink the socket of the one started after it.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	s := grpc.NewServer()
	if runtime {
		runtimeapi.RegisterRuntimeServiceServer(s, f)
	}
	f.mu.Lock()
	f.server = s
	f.mu.Unlock()
	go s.Serve(l)
}

func (f *fakeCRI) stop() {
	f.mu.Lock()
	s := f.server
	f.server = nil
	f.mu.Unlock()
	if s != nil {
		s.Stop()
	}
}

func (f *fakeCRI) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *fakeCRI) set(sandboxes ...fakeSandbox) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sandboxes = sandboxes
}

func (f *fakeCRI) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["Version"]++
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "containerd", RuntimeVersion: "1.6.20", RuntimeApiVersion: "v1"}, nil
}

func (f *fakeCRI) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ListPodSandbox"]++
	resp := &runtimeapi.ListPodSandboxResponse{}
	for _, sb := range f.sandboxes {
		state := runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		if sb.ready {
			state = runtimeapi.PodSandboxState_SANDBOX_READY
		}
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id:       sb.id,
			Metadata: &runtimeapi.PodSandboxMetadata{Name: sb.name, Namespace: sb.namespace, Uid: sb.uid},
			State:    state, CreatedAt: time.Now().UnixNano(),
		})
	}
	return resp, nil
}

func (f *fakeCRI) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["PodSandboxStatus"]++
	if !req.GetVerbose() {
		return nil, status.Error(codes.InvalidArgument, "the resolver must ask verbose")
	}
	for _, sb := range f.sandboxes {
		if sb.id != req.GetPodSandboxId() {
			continue
		}
		mode := runtimeapi.NamespaceMode_POD
		if sb.hostNetwork {
			mode = runtimeapi.NamespaceMode_NODE
		}
		info := fmt.Sprintf(`{"pid":%d,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":%q}]}}}`, sb.pid, sb.netns)
		return &runtimeapi.PodSandboxStatusResponse{
			Status: &runtimeapi.PodSandboxStatus{Id: sb.id, Linux: &runtimeapi.LinuxPodSandboxStatus{
				Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{Network: mode}}}},
			Info: map[string]string{"info": info},
		}, nil
	}
	return nil, status.Error(codes.NotFound, "no such sandbox")
}

func newTestCRI(t *testing.T, f *fakeCRI) *Resolver {
	t.Helper()
	c, err := New("unix://"+f.socket, 5*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestCRICostsOneListWhenQuiet: the first snapshot asks the runtime's
// version, the list and each sandbox's status; a snapshot where nothing
// changed costs exactly one ListPodSandbox; a new sandbox one status; a
// sandbox listed no more is forgotten.
func TestCRICostsOneListWhenQuiet(t *testing.T) {
	a := fakeSandbox{id: "a", namespace: "default", name: "web", uid: "u-a", ready: true, netns: "/var/run/netns/cni-a"}
	b := fakeSandbox{id: "b", namespace: "kube-system", name: "dns", uid: "u-b", ready: true, netns: "/var/run/netns/cni-b"}
	f := newFakeCRI(t, a, b)
	c := newTestCRI(t, f)
	ctx := context.Background()

	v := c.View(ctx)
	if !v.Up || len(v.Sandboxes) != 2 || v.Runtime != RuntimeContainerd {
		t.Fatalf("first view: up %v, %d sandboxes, runtime %q (%v); want up, 2, containerd", v.Up, len(v.Sandboxes), v.Runtime, v.Err)
	}
	if got := v.Sandboxes[0]; got.Netns != "/run/netns/cni-a" || got.Name != "web" || got.Namespace != "default" || got.UID != "u-a" || got.State != Ready {
		t.Errorf("first sandbox = %+v, want web in default, u-a, ready, /run/netns/cni-a", got)
	}
	if f.count("Version") != 1 || f.count("ListPodSandbox") != 1 || f.count("PodSandboxStatus") != 2 {
		t.Errorf("first view: calls %v, want 1 Version, 1 ListPodSandbox, 2 PodSandboxStatus", f.calls)
	}
	for i := range 3 {
		before := c.Requests()
		c.View(ctx)
		if d := c.Requests() - before; d != 1 {
			t.Errorf("quiet view %d cost %d calls, want 1", i, d)
		}
	}
	if f.count("ListPodSandbox") != 4 || f.count("PodSandboxStatus") != 2 || f.count("Version") != 1 {
		t.Errorf("after 3 quiet views: calls %v, want 4 ListPodSandbox, still 2 PodSandboxStatus and 1 Version", f.calls)
	}
	if got, want := c.Requests(), uint64(1+4+2); got != want {
		t.Errorf("Requests() = %d, want %d (every call counted)", got, want)
	}

	// b stops being ready: the list says so, no status is asked again.
	b.ready = false
	newcomer := fakeSandbox{id: "c", namespace: "default", name: "new", uid: "u-c", ready: true, netns: "/var/run/netns/cni-c"}
	f.set(a, b, newcomer)
	v = c.View(ctx)
	if f.count("PodSandboxStatus") != 3 {
		t.Errorf("a new sandbox: %d status calls in all, want 3", f.count("PodSandboxStatus"))
	}
	if got := v.Sandboxes[1]; got.ID != "b" || got.State != NotReady || got.Netns != "/run/netns/cni-b" {
		t.Errorf("b after it stopped: %+v, want notready with its cached netns", got)
	}
	// a is removed: dropped from the cache, and asked again if it came back.
	f.set(b, newcomer)
	c.View(ctx)
	if _, cached := c.statuses["a"]; cached {
		t.Error("a sandbox listed no more is still cached")
	}
	f.set(a, b, newcomer)
	c.View(ctx)
	if f.count("PodSandboxStatus") != 4 {
		t.Errorf("a sandbox listed again: %d status calls in all, want 4", f.count("PodSandboxStatus"))
	}
}

// TestCRIDownAndBack: a runtime that stops answering makes the view down
// (and forgets the runtime's name); once it answers again the next view is
// up without a new resolver.
func TestCRIDownAndBack(t *testing.T) {
	f := newFakeCRI(t, fakeSandbox{id: "a", name: "web", ready: true, netns: "/var/run/netns/cni-a"})
	c := newTestCRI(t, f)
	ctx := context.Background()
	if v := c.View(ctx); !v.Up {
		t.Fatalf("view down: %v", v.Err)
	}
	f.stop()
	v := c.View(ctx)
	if v.Up || v.Err == nil || v.NoCRI {
		t.Fatalf("runtime stopped: view up %v, err %v, NoCRI %v; want down with an error", v.Up, v.Err, v.NoCRI)
	}
	if !slices.Contains(v.NetnsDirs, "/run/netns") {
		t.Errorf("down view's netns dirs %q lack /run/netns", v.NetnsDirs)
	}
	f.start(t, true)
	waitFor(t, func() bool { return c.View(ctx).Up })
	if f.count("Version") != 2 {
		t.Errorf("%d Version calls, want 2 (asked again after the runtime came back)", f.count("Version"))
	}
}

// TestCRINoRuntimeService: an endpoint that serves gRPC without the CRI
// runtime service (Docker's containerd, whose CRI plugin is disabled)
// decides nothing: its claims are silent, not down.
func TestCRINoRuntimeService(t *testing.T) {
	f := newFakeCRI(t)
	f.stop()
	f.start(t, false)
	c := newTestCRI(t, f)
	o, err := c.Observe(context.Background(), inventory.DefaultPaths)
	if err == nil {
		t.Fatal("Observe of an endpoint without the runtime service: no error")
	}
	if !o.(*criObservation).view.NoCRI {
		t.Fatalf("Observe of an endpoint without the runtime service: %v, not seen as such", err)
	}
	veth := &inventory.Veth{PeerNetns: &inventory.Namespace{Inode: 7, Mounts: []string{"/run/netns/leak"}}}
	if got := o.Claim(context.Background(), veth); got.State != inventory.RuntimeSilent {
		t.Errorf("no CRI service: claim %v, want silent", got.State)
	}
	// Turned on only because the socket exists: nothing to say, no failure.
	c.QuietWithoutCRI()
	if _, err := c.Observe(context.Background(), inventory.DefaultPaths); err != nil {
		t.Errorf("QuietWithoutCRI: Observe of an endpoint without the runtime service: %v, want no error", err)
	}
	// A runtime that is down is down all the same.
	f.stop()
	if _, err := c.Observe(context.Background(), inventory.DefaultPaths); err == nil {
		t.Error("QuietWithoutCRI: Observe of a stopped endpoint: no error")
	}
}

// TestCRIClaims: what the CRI resolver claims about a namespace, and the
// verdict that follows from it alone.
func TestCRIClaims(t *testing.T) {
	self := os.Getpid()
	// This process's namespace stands for a pod's: its ns file is an nsfs
	// inode, as a /run/netns/cni-* mount is.
	nsFile := fmt.Sprintf("/proc/%d/ns/net", self)
	inode, _ := criNetnsOf(inventory.DefaultPaths, &Sandbox{Netns: nsFile})
	if inode == 0 {
		t.Fatal("cannot stat this process's network namespace")
	}
	if got, _ := criNetnsOf(inventory.DefaultPaths, &Sandbox{Netns: "/etc/hostname"}); got != 0 {
		t.Errorf("a plain file as netns path: inode %d, want 0 (not a namespace)", got)
	}
	ready := &Sandbox{ID: "s1", Namespace: "default", Name: "web", UID: "u1", State: Ready, Netns: nsFile}
	notReady := &Sandbox{ID: "s2", Namespace: "shop", Name: "cart", UID: "u2", State: NotReady, Netns: nsFile}
	hostNet := &Sandbox{ID: "s3", Name: "node-agent", State: Ready, HostNetwork: true, Pid: self}
	// A PID whose process is not in the sandbox's cgroup (reused, or
	// never the pause) says nothing.
	stalePID := &Sandbox{ID: "s4", Name: "old", State: Ready, Pid: self}
	dirs := inventory.NetnsDirs{"/run/netns"}
	view := func(up bool, sbs ...*Sandbox) *View {
		return &View{Up: up, Runtime: RuntimeContainerd, Sandboxes: sbs, NetnsDirs: dirs}
	}
	ours := func() *inventory.Namespace {
		return &inventory.Namespace{Inode: inode, Mounts: []string{"/run/netns/cni-1"}}
	}
	empty := func() *inventory.Namespace {
		return &inventory.Namespace{Inode: 2, Mounts: []string{"/run/netns/cni-2"}}
	}
	stray := func() *inventory.Namespace { return &inventory.Namespace{Inode: 3, PIDs: []int{4242}} }
	dockers := func() *inventory.Namespace {
		return &inventory.Namespace{Inode: 4, Mounts: []string{"/run/docker/netns/abc"}}
	}
	webOwner := &inventory.Owner{Kind: inventory.OwnerPod, ID: "s1", Name: "web", PodNamespace: "default", PodName: "web", PodUID: "u1", Runtime: RuntimeContainerd}
	cartOwner := &inventory.Owner{Kind: inventory.OwnerPod, ID: "s2", Name: "cart", PodNamespace: "shop", PodName: "cart", PodUID: "u2", Runtime: RuntimeContainerd}
	gonePod := &inventory.Owner{Kind: inventory.OwnerPod, ID: "s9", Name: "gone", PodNamespace: "default", PodName: "gone", PodUID: "u9", Runtime: RuntimeContainerd}
	container := &inventory.Owner{Kind: inventory.OwnerContainer, ID: "c1", Name: "db", Runtime: runtimeDocker}

	tests := []struct {
		name        string
		view        *View
		netns       *inventory.Namespace
		owner, last *inventory.Owner
		want        inventory.RuntimeClaim
		wantOwner   *inventory.Owner
		wantVerdict inventory.Verdict
		wantReason  inventory.Reason
	}{
		{"ready sandbox", view(true, ready), ours(), nil, nil, inventory.RuntimeRunning, webOwner, inventory.Owned, inventory.ReasonPod},
		{"notready sandbox whose namespace is there", view(true, notReady), ours(), nil, nil, inventory.RuntimeRunning, cartOwner, inventory.Owned, inventory.ReasonPod},
		{"ready beats notready in one namespace", view(true, notReady, ready), ours(), nil, nil, inventory.RuntimeRunning, webOwner, inventory.Owned, inventory.ReasonPod},
		{"unlisted, mount only", view(true, ready), empty(), nil, gonePod, inventory.RuntimeSilent, nil, inventory.Orphaned, inventory.ReasonNetnsEmpty},
		{"unlisted, a stray in a pod's namespace", view(true, ready), stray(), &inventory.Owner{Kind: inventory.OwnerProcess, ID: "4242"}, gonePod, inventory.RuntimeSilent, &inventory.Owner{Kind: inventory.OwnerProcess, ID: "4242"}, inventory.Orphaned, inventory.ReasonOwnerExited},
		{"host-network sandbox owns nothing", view(true, hostNet), ours(), nil, nil, inventory.RuntimeSilent, nil, inventory.Orphaned, inventory.ReasonNetnsEmpty},
		{"a PID outside the sandbox's cgroup", view(true, stalePID), ours(), nil, nil, inventory.RuntimeSilent, nil, inventory.Orphaned, inventory.ReasonNetnsEmpty},
		{"no path or PID: the pause's cgroup names a listed sandbox", view(true, &Sandbox{ID: "s1", Namespace: "default", Name: "web", UID: "u1", State: Ready}), stray(), &inventory.Owner{Kind: inventory.OwnerPod, ID: "s1", PodUID: "u1"}, nil, inventory.RuntimeRunning, webOwner, inventory.Owned, inventory.ReasonPod},
		{"no path or PID: a cgroup ID CRI does not list", view(true, ready), stray(), &inventory.Owner{Kind: inventory.OwnerPod, ID: "s8", PodUID: "u8"}, nil, inventory.RuntimeSilent, &inventory.Owner{Kind: inventory.OwnerPod, ID: "s8", PodUID: "u8"}, inventory.Owned, inventory.ReasonPod},
		{"a host-network sandbox's ID owns nothing", view(true, hostNet), stray(), &inventory.Owner{Kind: inventory.OwnerPod, ID: "s3"}, nil, inventory.RuntimeSilent, &inventory.Owner{Kind: inventory.OwnerPod, ID: "s3"}, inventory.Owned, inventory.ReasonPod},
		{"down: its netns directory", view(false), empty(), nil, nil, inventory.RuntimeDown, nil, inventory.Unknown, inventory.ReasonResolverDown},
		{"down: last owned by a pod", view(false), stray(), &inventory.Owner{Kind: inventory.OwnerProcess, ID: "4242"}, gonePod, inventory.RuntimeDown, &inventory.Owner{Kind: inventory.OwnerProcess, ID: "4242"}, inventory.Unknown, inventory.ReasonResolverDown},
		{"down: a running pod stays owned", view(false), stray(), webOwner, nil, inventory.RuntimeDown, webOwner, inventory.Owned, inventory.ReasonPod},
		{"down: Docker's namespace", view(false), dockers(), nil, container, inventory.RuntimeSilent, nil, inventory.Orphaned, inventory.ReasonNetnsEmpty},
		{"no CRI service", &View{NoCRI: true, NetnsDirs: dirs}, empty(), nil, gonePod, inventory.RuntimeSilent, nil, inventory.Orphaned, inventory.ReasonNetnsEmpty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newCRIObservation(tt.view, inventory.DefaultPaths)
			v := &inventory.Veth{PeerNetns: tt.netns, Owner: tt.owner, LastOwner: tt.last}
			c := o.Claim(context.Background(), v)
			if c.State != tt.want {
				t.Fatalf("claim = %v, want %v", c.State, tt.want)
			}
			verdict, reason := inventory.Judge(v, []inventory.Claim{c})
			if fmt.Sprint(v.Owner) != fmt.Sprint(tt.wantOwner) {
				t.Errorf("owner = %+v, want %+v", v.Owner, tt.wantOwner)
			}
			if verdict != tt.wantVerdict || reason != tt.wantReason {
				t.Errorf("verdict = %s/%s, want %s/%s", verdict, reason, tt.wantVerdict, tt.wantReason)
			}
		})
	}
}

// TestCRIObserveMatchesByInode: through the fake runtime, a sandbox whose
// netns path is an nsfs file owns the veth whose peer is in that
// namespace, whatever the names.
func TestCRIObserveMatchesByInode(t *testing.T) {
	self := os.Getpid()
	nsFile := fmt.Sprintf("/proc/%d/ns/net", self)
	inode, _ := criNetnsOf(inventory.DefaultPaths, &Sandbox{Netns: nsFile})
	// Statuses give /proc paths for namespaces not pinned by a mount:
	// only the PID finds those, and this one's PID is not a pause.
	f := newFakeCRI(t,
		fakeSandbox{id: "s1", namespace: "default", name: "web", uid: "u1", ready: true, netns: "/var/run/netns/cni-x"},
		fakeSandbox{id: "s2", namespace: "default", name: "procpath", uid: "u2", ready: true, netns: nsFile, pid: self})
	c := newTestCRI(t, f)
	o, err := c.Observe(context.Background(), inventory.Paths{Procfs: "/proc", Sysfs: "/sys", Rootfs: "/"})
	if err != nil {
		t.Fatal(err)
	}
	claim := o.Claim(context.Background(), &inventory.Veth{Name: "cni-x", PeerNetns: &inventory.Namespace{Inode: inode}})
	if claim.State != inventory.RuntimeSilent {
		t.Errorf("no sandbox's namespace is this one (names do not count): claim %v by %+v, want silent", claim.State, claim.Owner)
	}
	if v, ok := o.View().(*View); !ok || v.Requests != 4 {
		t.Errorf("recorded view %+v, want one counting 4 calls (Version, list, 2 statuses)", o.View())
	}
}

// TestCRIFamilies: the call counter always; while the runtime answers, a
// veth_pod_info for each pod that owns or last owned a veth, gone ones
// from the remembered owner.
func TestCRIFamilies(t *testing.T) {
	v := &View{Up: true, Runtime: RuntimeContainerd, Requests: 12, Sandboxes: []*Sandbox{
		{ID: "s1", Namespace: "default", Name: "web", UID: "u1", State: Ready},
		{ID: "s2", Namespace: "default", Name: "idle", UID: "u2", State: Ready},
	}}
	s := &inventory.Snapshot{Veths: []inventory.Veth{
		{Name: "veth1", Owner: &inventory.Owner{Kind: inventory.OwnerPod, ID: "s1", PodUID: "u1"}},
		{Name: "veth2", LastOwner: &inventory.Owner{Kind: inventory.OwnerPod, ID: "s9", PodNamespace: "shop", PodName: "cart", PodUID: "u9", Runtime: RuntimeContainerd}},
		{Name: "veth3", Owner: &inventory.Owner{Kind: inventory.OwnerContainer, ID: "c1"}},
	}}
	got := v.Families(s)
	if len(got) != 2 || got[0].Name != "veth_cri_api_requests_total" || !got[0].Counter || got[0].Series[0].Value != 12 {
		t.Fatalf("families %+v, want the call counter (12) first", got)
	}
	var lines []string
	for _, se := range got[1].Series {
		lines = append(lines, fmt.Sprint(se.Labels))
	}
	want := []string{
		"[{pod_name cart} {pod_namespace shop} {pod_uid u9} {runtime containerd} {sandbox_id s9} {state gone}]",
		"[{pod_name web} {pod_namespace default} {pod_uid u1} {runtime containerd} {sandbox_id s1} {state ready}]",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("veth_pod_info = %q, want %q", lines, want)
	}
	down := &View{Requests: 3}
	if got := down.Families(s); len(got) != 1 {
		t.Errorf("down: %d families, want only the call counter", len(got))
	}
}

func TestNewCRIRejectsBadEndpoints(t *testing.T) {
	for _, e := range []string{"tcp://127.0.0.1:1234", "relative/path.sock", "unix://relative.sock"} {
		if _, err := New(e, time.Second, nil); err == nil {
			t.Errorf("New(%q): no error", e)
		}
	}
	c, err := New("/run/containerd/containerd.sock", time.Second, nil)
	if err != nil {
		t.Fatalf("New of a bare path: %v", err)
	}
	defer c.Close()
	if c.Endpoint() != "unix:///run/containerd/containerd.sock" {
		t.Errorf("Endpoint() = %q", c.Endpoint())
	}
}

// waitFor waits up to 5 s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
