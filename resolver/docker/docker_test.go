package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// fakeEngine is a Docker Engine API on a unix socket, with the endpoints
// the resolver uses. Unit tests of the resolver's protocol and caching run
// against it; the real dockerd tests are in the cmd package.
type fakeEngine struct {
	t          *testing.T
	apiVersion string
	socket     string
	srv        *http.Server

	Mu         sync.Mutex
	containers []fakeContainer
	networks   []map[string]any
	paths      []string // every request path, in order
	events     chan string
}

type fakeContainer struct {
	ID, Name, State, NetworkMode, SandboxKey, SandboxID string
	Pid                                                 int
	Labels                                              map[string]string
}

func newFakeEngine(t *testing.T, apiVersion string) *fakeEngine {
	f := &fakeEngine{t: t, apiVersion: apiVersion, events: make(chan string, 16)}
	f.socket = filepath.Join(t.TempDir(), "docker.sock")
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeEngine) start() {
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		f.t.Fatal(err)
	}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve)}
	go f.srv.Serve(l)
}

func (f *fakeEngine) stop() {
	f.srv.Close()
	os.Remove(f.socket)
}

func (f *fakeEngine) requests() []string {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return append([]string(nil), f.paths...)
}

func (f *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	f.Mu.Lock()
	f.paths = append(f.paths, r.URL.Path)
	f.Mu.Unlock()
	if r.URL.Path == "/_ping" {
		w.Header().Set("Api-Version", f.apiVersion)
		w.Write([]byte("OK"))
		return
	}
	version := f.apiVersion
	if versionLess(dockerMaxAPIVersion, version) {
		version = dockerMaxAPIVersion
	}
	prefix := "/v" + version
	p, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		http.Error(w, `{"message":"unexpected version"}`, http.StatusBadRequest)
		return
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	switch {
	case p == "/containers/json":
		var list []map[string]any
		for _, c := range f.containers {
			if c.State != "running" && r.URL.Query().Get("all") != "1" {
				continue
			}
			list = append(list, map[string]any{
				"Id": c.ID, "Names": []string{"/" + c.Name}, "Image": "bb:local", "State": c.State,
				"Labels": c.Labels, "HostConfig": map[string]string{"NetworkMode": c.NetworkMode},
			})
		}
		json.NewEncoder(w).Encode(list)
	case strings.HasPrefix(p, "/containers/") && strings.HasSuffix(p, "/json"):
		id := strings.TrimSuffix(strings.TrimPrefix(p, "/containers/"), "/json")
		for _, c := range f.containers {
			if c.ID == id {
				json.NewEncoder(w).Encode(map[string]any{
					"State":           map[string]any{"Pid": c.Pid},
					"NetworkSettings": map[string]any{"SandboxKey": c.SandboxKey, "SandboxID": c.SandboxID},
				})
				return
			}
		}
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"message":"No such container"}`))
	case p == "/networks":
		json.NewEncoder(w).Encode(f.networks)
	case p == "/events":
		f.Mu.Unlock()
		defer f.Mu.Lock()
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case id := <-f.events:
				fmt.Fprintf(w, `{"Type":"container","Action":"die","Actor":{"ID":%q}}`+"\n", id)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	default:
		http.NotFound(w, r)
	}
}

func newTestDocker(t *testing.T, f *fakeEngine) *Resolver {
	d, err := New("unix://"+f.socket, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func count(paths []string, suffix string) int {
	n := 0
	for _, p := range paths {
		if strings.HasSuffix(p, suffix) {
			n++
		}
	}
	return n
}

func TestDockerNegotiatesVersion(t *testing.T) {
	for _, tt := range []struct {
		server, want string
		up           bool
	}{
		{"1.41", "/v1.41/containers/json", true}, // Debian 12's docker.io 20.10
		{"1.51", "/v" + dockerMaxAPIVersion + "/containers/json", true},
		{"1.12", "", false},
	} {
		t.Run(tt.server, func(t *testing.T) {
			f := newFakeEngine(t, tt.server)
			v := newTestDocker(t, f).View(context.Background())
			if v.Up != tt.up {
				t.Fatalf("View().Up = %v (err %v), want %v", v.Up, v.Err, tt.up)
			}
			if tt.up && !slicesContains(f.requests(), tt.want) {
				t.Errorf("requests %v, want one to %s", f.requests(), tt.want)
			}
		})
	}
}

func slicesContains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// TestDockerCostsNoCallsWhenQuiet: with the events stream connected and
// no event, a snapshot reuses the last view: O(1), in fact zero, calls per
// scrape, whatever the number of containers. An event makes the next view
// fresh, and only the container it names is inspected again.
func TestDockerCostsNoCallsWhenQuiet(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	for i := range 50 {
		f.containers = append(f.containers, fakeContainer{
			ID: fmt.Sprintf("%064x", i+1), Name: fmt.Sprintf("c%d", i), State: "running", NetworkMode: "default", Pid: 1,
		})
	}
	d := newTestDocker(t, f)
	d.Start()
	defer d.Close()
	waitFor(t, func() bool { d.Mu.Lock(); defer d.Mu.Unlock(); return d.Following() })

	if v := d.View(context.Background()); !v.Up || len(v.Containers) != 50 {
		t.Fatalf("first view: up %v, %d containers, err %v", v.Up, len(v.Containers), v.Err)
	}
	first := d.Requests()
	for range 10 {
		d.View(context.Background())
	}
	if got := d.Requests() - first; got != 0 {
		t.Errorf("10 quiet snapshots made %d API requests, want 0", got)
	}

	before := f.requests()
	f.events <- f.containers[7].ID
	waitFor(t, func() bool { d.Mu.Lock(); defer d.Mu.Unlock(); return d.Stale() })
	d.View(context.Background())
	after := f.requests()[len(before):]
	if len(after) != 3 || count(after, "/containers/json") != 1 || count(after, "/networks") != 1 {
		t.Errorf("after one event: requests %v, want a list, one inspect and the networks", after)
	}
	if !slicesContains(after, "/v1.41/containers/"+f.containers[7].ID+"/json") {
		t.Errorf("after an event about %s: requests %v, want it inspected again", f.containers[7].ID, after)
	}
}

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

// TestDockerDownAndBack: a daemon that goes away is a view that is down,
// not an error of the scrape, and its return is noticed without restart.
func TestDockerDownAndBack(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	f.containers = []fakeContainer{{ID: strings.Repeat("a", 64), Name: "api", State: "running", NetworkMode: "default", Pid: 1}}
	d := newTestDocker(t, f)
	if v := d.View(context.Background()); !v.Up {
		t.Fatalf("view with the daemon up: %v", v.Err)
	}
	f.stop()
	if v := d.View(context.Background()); v.Up || v.Err == nil {
		t.Fatalf("view with the daemon gone: up %v err %v, want down with an error", v.Up, v.Err)
	}
	f.start()
	if v := d.View(context.Background()); !v.Up || len(v.Containers) != 1 {
		t.Fatalf("view after the daemon came back: up %v, err %v", v.Up, v.Err)
	}
}

func TestDockerBridges(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	f.networks = []map[string]any{
		{"Id": "0123456789abcdef", "Name": "bridge", "Driver": "bridge", "Options": map[string]string{"com.docker.network.bridge.name": "docker0"}},
		{"Id": "fedcba9876543210aa", "Name": "appnet", "Driver": "bridge", "Options": map[string]string{}},
		{"Id": "1111111111111111", "Name": "host", "Driver": "host"},
	}
	v := newTestDocker(t, f).View(context.Background())
	want := map[string]string{"docker0": "bridge", "br-fedcba987654": "appnet"}
	if fmt.Sprint(v.Bridges) != fmt.Sprint(want) {
		t.Errorf("Bridges = %v, want %v", v.Bridges, want)
	}
}

// TestDockerClaims checks who Docker says owns a namespace: the sandbox of
// containers sharing it, an exited container's record, and nothing while
// the daemon is down except for Docker's own namespaces.
func TestDockerClaims(t *testing.T) {
	self := os.Getpid()
	// This process's namespace stands for a sandbox: its ns file is what
	// a SandboxKey mount shows.
	key := fmt.Sprintf("/proc/%d/ns/net", self)
	inode, _ := netnsOf(inventory.DefaultPaths, &Container{SandboxKey: key})
	if inode == 0 {
		t.Fatal("cannot stat this process's network namespace")
	}
	sandbox := &Container{ID: "s", Name: "web", State: "running", NetworkMode: "default", SandboxKey: key}
	sidecar := &Container{ID: "c", Name: "sidecar", State: "running", NetworkMode: "container:s", Pid: self}
	gone := &Container{ID: "g", Name: "api", State: "exited", NetworkMode: "default", SandboxKey: "/run/docker/netns/abc"}
	up := newDockerClaims(&View{Up: true, Containers: []*Container{sidecar, sandbox, gone}, NetnsDirs: []string{"/run/docker/netns"}}, inventory.DefaultPaths)

	ns := &inventory.Namespace{Inode: inode, PIDs: []int{self}}
	if claim, dc := up.claim(&inventory.Veth{PeerNetns: ns}); claim != inventory.RuntimeRunning || dc != sandbox {
		t.Errorf("shared namespace: claim %v by %+v, want running by the sandbox %+v", claim, dc, sandbox)
	}
	leak := &inventory.Namespace{Inode: 1, Mounts: []string{"/run/docker/netns/abc"}}
	byHistory := &inventory.Namespace{Inode: 2, PIDs: []int{99}}
	if claim, _ := up.claim(&inventory.Veth{PeerNetns: byHistory, LastOwner: &inventory.Owner{Kind: inventory.OwnerContainer, ID: "g"}}); claim != inventory.RuntimeExited {
		t.Errorf("namespace whose last owner exited: claim %v, want exited", claim)
	}
	// A paused container is frozen, not gone.
	paused := newDockerClaims(&View{Up: true, Containers: []*Container{
		{ID: "p", Name: "frozen", State: "paused", NetworkMode: "default", SandboxKey: key},
	}}, inventory.DefaultPaths)
	if claim, _ := paused.claim(&inventory.Veth{PeerNetns: ns, Owner: &inventory.Owner{Kind: inventory.OwnerContainer, ID: "p"}}); claim != inventory.RuntimeRunning {
		t.Errorf("paused container: claim %v, want running", claim)
	}
	// The record against a live process of the container: the record
	// was listed before any process was read, and the container may have
	// started again since. The process wins.
	restarted := &Container{ID: "r", Name: "again", State: "exited", NetworkMode: "default"}
	stale := newDockerClaims(&View{Up: true, Listed: time.Now(), Containers: []*Container{restarted}}, inventory.DefaultPaths)
	if claim, _ := stale.claim(&inventory.Veth{PeerNetns: byHistory, Owner: &inventory.Owner{Kind: inventory.OwnerContainer, ID: "r"}}); claim != inventory.RuntimeSilent {
		t.Errorf("exited record against a live process: claim %v, want silent", claim)
	}
	created := newDockerClaims(&View{Up: true, Containers: []*Container{{ID: "n", State: "created"}}}, inventory.DefaultPaths)
	if claim, _ := created.claim(&inventory.Veth{PeerNetns: byHistory, LastOwner: &inventory.Owner{Kind: inventory.OwnerContainer, ID: "n"}}); claim != inventory.RuntimeSilent {
		t.Errorf("created container: claim %v, want silent", claim)
	}
	other := &inventory.Namespace{Inode: 3, Mounts: []string{"/run/netns/cni-1"}}
	if claim, _ := up.claim(&inventory.Veth{PeerNetns: other}); claim != inventory.RuntimeSilent {
		t.Errorf("a namespace Docker does not know: claim %v, want silent", claim)
	}

	down := newDockerClaims(&View{NetnsDirs: []string{"/run/docker/netns"}}, inventory.DefaultPaths)
	if claim, _ := down.claim(&inventory.Veth{PeerNetns: leak}); claim != inventory.RuntimeDown {
		t.Errorf("Docker's namespace while Docker is down: claim %v, want down", claim)
	}
	if claim, _ := down.claim(&inventory.Veth{PeerNetns: byHistory, LastOwner: &inventory.Owner{Kind: inventory.OwnerContainer, ID: "g", Runtime: "docker"}}); claim != inventory.RuntimeDown {
		t.Errorf("namespace last owned by a Docker container while Docker is down: claim %v, want down", claim)
	}
	// A namespace only a mount holds may be a sandbox in an exec root
	// not learned yet: Docker's to decide while it is down.
	if claim, _ := down.claim(&inventory.Veth{PeerNetns: other}); claim != inventory.RuntimeDown {
		t.Errorf("a mount-held namespace while Docker is down: claim %v, want down", claim)
	}
	cni := &inventory.Namespace{Inode: 4, PIDs: []int{1234}, Mounts: []string{"/run/netns/cni-2"}}
	if claim, _ := down.claim(&inventory.Veth{PeerNetns: cni, Owner: &inventory.Owner{Kind: inventory.OwnerPod, ID: "x", Runtime: "containerd"}}); claim != inventory.RuntimeSilent {
		t.Errorf("a pod's namespace while Docker is down: claim %v, want silent", claim)
	}
	// The same container as current and last owner: the live process wins
	// over the record, whichever owner names it.
	restartedToo := &Container{ID: "r2", State: "exited", NetworkMode: "default"}
	staleToo := newDockerClaims(&View{Up: true, Listed: time.Now(), Containers: []*Container{restartedToo}}, inventory.DefaultPaths)
	both := &inventory.Owner{Kind: inventory.OwnerContainer, ID: "r2"}
	if claim, _ := staleToo.claim(&inventory.Veth{PeerNetns: byHistory, Owner: both, LastOwner: &inventory.Owner{Kind: inventory.OwnerContainer, ID: "r2"}}); claim != inventory.RuntimeSilent {
		t.Errorf("stale exited record, same container as owner and last owner: claim %v, want silent", claim)
	}
}

func TestNewDockerRejectsBadHosts(t *testing.T) {
	for _, host := range []string{"ssh://x", "npipe:////./pipe/docker", "::"} {
		if _, err := New(host, 0, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("New(%q) accepted it", host)
		}
	}
}

// TestDockerSandboxRecord finds the stopped container whose sandbox a
// leftover namespace was, by its SandboxKey or its sandbox ID, inspecting
// each stopped container only once.
func TestDockerSandboxRecord(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	sandboxID := "d4a65f777574a60d1ecf064bf3cd43e08c883fd151de0dfa8e2050d66eca5656"
	f.containers = []fakeContainer{
		{ID: strings.Repeat("a", 64), Name: "api", State: "exited", NetworkMode: "default",
			SandboxKey: "/var/run/docker/netns/d4a65f777574", SandboxID: sandboxID},
		{ID: strings.Repeat("b", 64), Name: "old", State: "exited", NetworkMode: "default"},
		{ID: strings.Repeat("c", 64), Name: "new", State: "created", NetworkMode: "default"},
	}
	d := newTestDocker(t, f)
	v := d.View(context.Background())
	for _, tt := range []struct{ mount, want string }{
		{"/run/docker/netns/d4a65f777574", "api"},      // SandboxKey, /var/run written as /run
		{"/srv/exec/netns/d4a65f777574", "api"},        // another exec root: the sandbox ID
		{"/run/docker/netns/0123456789ab", ""},         // no such sandbox
		{"/run/netns/cni-0f1e2d3c-4b5a-6978-8796", ""}, // not Docker's
	} {
		got := ""
		if dc := d.SandboxRecord(context.Background(), v, tt.mount); dc != nil {
			got = dc.Name
		}
		if got != tt.want {
			t.Errorf("SandboxRecord(%s) = %q, want %q", tt.mount, got, tt.want)
		}
	}
	inspects := count(f.requests(), "a/json") + count(f.requests(), "b/json")
	if inspects != 2 {
		t.Errorf("%d inspects of the two stopped containers, want one each: %v", inspects, f.requests())
	}
	if count(f.requests(), strings.Repeat("c", 64)+"/json") != 0 {
		t.Error("a created container was inspected: it has no sandbox yet")
	}
}
