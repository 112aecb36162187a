package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The CRI resolver's client of the Kubernetes Container Runtime Interface
// (containerd, CRI-O, cri-dockerd), the API the kubelet and crictl use:
// which pod sandboxes the runtime knows, ready or not, and the network
// namespace of each. Its claims about namespaces are in cri.go.
//
// CRI v1 has no events stream that containerd 1.6 serves, so every
// snapshot lists the sandboxes once (ListPodSandbox, which is what the
// kubelet's relist does every second); what a sandbox's status says of its
// namespace never changes for a sandbox ID, so PodSandboxStatus is asked
// once per sandbox, the first time it is listed.
const (
	// criCallTimeout bounds each call when the snapshot's deadline is
	// later: a hung runtime makes veths unknown, not scrapes slow.
	criCallTimeout = 3 * time.Second
	// criMaxMessage is the largest answer accepted; a node's sandbox list
	// is far smaller. The kubelet allows 16 MiB too.
	criMaxMessage = 16 << 20
)

// CRI sandbox states, as [Sandbox.State] and veth_pod_info{state} show
// them.
const (
	Ready    = "ready"
	NotReady = "notready"
	// Gone is the state of a pod that last owned a veth and that the
	// runtime no longer lists.
	Gone = "gone"
)

// Sandbox is the runtime's record of one pod sandbox.
type Sandbox struct {
	ID        string `json:"id"`
	Namespace string `json:"pod_namespace"`
	Name      string `json:"pod_name"`
	UID       string `json:"pod_uid"`
	// State is [Ready] or [NotReady].
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Netns is the path of the sandbox's network namespace, as the host
	// sees it (/run/netns/cni-<uuid>); empty for a pod in the node's
	// namespace (hostNetwork) and when the runtime did not say.
	Netns string `json:"netns,omitempty"`
	// Pid is the pause process when the status was asked; 0 when none.
	Pid int `json:"pid,omitempty"`
	// HostNetwork: the pod runs in the node's namespace and owns no veth.
	HostNetwork bool `json:"host_network,omitempty"`
}

// View is what the CRI runtime said for one snapshot.
type View struct {
	// Up: the runtime answered.
	Up  bool  `json:"up"`
	Err error `json:"-"`
	// Endpoint is the runtime's socket, unix:///path.
	Endpoint string `json:"endpoint"`
	// Runtime is the runtime behind the endpoint, from its Version.
	Runtime inventory.Runtime `json:"runtime,omitempty"`
	// NoCRI: the endpoint answers but serves no CRI runtime service (a
	// containerd whose CRI plugin is disabled, as Docker's is). No runtime
	// there decides any namespace.
	NoCRI bool `json:"no_cri,omitempty"`
	// Sandboxes are every sandbox listed, ready or not.
	Sandboxes []*Sandbox `json:"sandboxes,omitempty"`
	// NetnsDirs are where the runtime pins namespaces: [NetnsDirs] and
	// those its sandboxes' statuses showed.
	NetnsDirs inventory.NetnsDirs `json:"netns_dirs"`
	// Listed is when the sandboxes were listed.
	Listed time.Time `json:"listed,omitzero"`
	// Requests counts the CRI calls made since start, when the view was
	// recorded.
	Requests uint64 `json:"-"`
	// name is the resolver's, which names its families.
	name string
}

// Resolver resolves owners through a Kubernetes CRI runtime: it is the
// [inventory.Resolver] of pod sandboxes. It is safe for concurrent use.
type Resolver struct {
	// name is the resolver's: its step and its key in a snapshot.
	name     string
	endpoint string
	timeout  time.Duration
	logger   *slog.Logger
	conn     *grpc.ClientConn
	client   runtimeapi.RuntimeServiceClient

	requests atomic.Uint64

	mu sync.Mutex
	// runtime is the runtime's name from Version, "" until asked (again
	// after the runtime was unreachable: it may come back another one).
	runtime inventory.Runtime
	// statuses caches what PodSandboxStatus said, by sandbox ID, for the
	// sandboxes listed last.
	statuses  map[string]*Sandbox
	netnsDirs map[string]bool
	// wasUp is whether the last view was up, for logging transitions.
	wasUp, logged bool
	// quietWithoutCRI: see [CRI.QuietWithoutCRI].
	quietWithoutCRI bool
}

// New returns a resolver for the CRI runtime at endpoint, unix:///path
// (or the bare path). It does not contact the runtime: one that is not
// there is an answer ("down"), not an error. timeout bounds what one
// snapshot may spend asking it.
func New(endpoint string, timeout time.Duration, logger *slog.Logger) (*Resolver, error) {
	socket, err := criSocket(endpoint)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = criCallTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// A short reconnect backoff: a runtime that restarts is seen at the
	// next scrape, not after grpc's default of up to two minutes.
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: criCallTimeout,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(criMaxMessage)),
	)
	if err != nil {
		return nil, fmt.Errorf("CRI endpoint %q: %w", endpoint, err)
	}
	c := &Resolver{
		name:      Name,
		endpoint:  "unix://" + socket,
		timeout:   timeout,
		logger:    logger,
		conn:      conn,
		client:    runtimeapi.NewRuntimeServiceClient(conn),
		statuses:  map[string]*Sandbox{},
		netnsDirs: map[string]bool{},
	}
	for _, dir := range NetnsDirs {
		c.netnsDirs[dir] = true
	}
	return c, nil
}

// criSocket returns the socket path of a CRI endpoint.
func criSocket(endpoint string) (string, error) {
	socket := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		socket = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("CRI endpoint %q: only unix:// sockets are supported", endpoint)
	}
	if !path.IsAbs(socket) {
		return "", fmt.Errorf("CRI endpoint %q: the socket path must be absolute", endpoint)
	}
	return socket, nil
}

// QuietWithoutCRI makes an endpoint that answers without a CRI runtime
// service a resolver with nothing to say (its step succeeds, its claims
// are silent) rather than a failing one. It is for a resolver turned on
// only because a socket exists: Docker's containerd has the socket of a
// CRI runtime and its CRI plugin disabled. Call it before the first
// snapshot.
func (c *Resolver) QuietWithoutCRI() { c.quietWithoutCRI = true }

// Endpoint is the runtime's socket, unix:///path.
func (c *Resolver) Endpoint() string { return c.endpoint }

// Start implements [inventory.Resolver]. CRI has no events stream to follow: every
// snapshot lists the sandboxes, and nothing runs between snapshots.
func (c *Resolver) Start() {}

// Close implements [inventory.Resolver]: it closes the connection.
func (c *Resolver) Close() { c.conn.Close() }

// Requests is the number of CRI calls made so far.
func (c *Resolver) Requests() uint64 { return c.requests.Load() }

// View lists the runtime's sandboxes (one call), asks the status of those
// not seen before (one call each) and, once per connection, its Version.
func (c *Resolver) View(ctx context.Context) *View {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := c.fetch(ctx)
	if err != nil {
		v = &View{Err: err, NoCRI: status.Code(err) == codes.Unimplemented}
		c.runtime = ""
		if c.wasUp || !c.logged {
			if v.NoCRI {
				c.logger.Warn("CRI endpoint serves no CRI runtime service (a containerd without its CRI plugin): no pod names from it", "endpoint", c.endpoint, "err", err)
			} else {
				c.logger.Warn("CRI runtime unreachable: veths of pods are unknown until it answers", "endpoint", c.endpoint, "err", err)
			}
		}
	} else if !c.wasUp && c.logged {
		c.logger.Info("CRI runtime reachable again", "endpoint", c.endpoint)
	}
	c.wasUp, c.logged = v.Up, true
	v.Endpoint = c.endpoint
	for dir := range c.netnsDirs {
		v.NetnsDirs = append(v.NetnsDirs, dir)
	}
	return v
}

// fetch builds a fresh view; the caller holds c.mu.
func (c *Resolver) fetch(ctx context.Context) (*View, error) {
	if c.runtime == "" {
		resp, err := criCall(ctx, c, func(ctx context.Context) (*runtimeapi.VersionResponse, error) {
			return c.client.Version(ctx, &runtimeapi.VersionRequest{})
		})
		if err != nil {
			return nil, fmt.Errorf("CRI Version: %w", err)
		}
		c.runtime = criRuntime(resp.GetRuntimeName())
	}
	list, err := criCall(ctx, c, func(ctx context.Context) (*runtimeapi.ListPodSandboxResponse, error) {
		return c.client.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	})
	if err != nil {
		return nil, fmt.Errorf("CRI ListPodSandbox: %w", err)
	}
	v := &View{Up: true, Runtime: c.runtime, Listed: time.Now()}
	listed := make(map[string]bool, len(list.GetItems()))
	for _, item := range list.GetItems() {
		id := item.GetId()
		if id == "" {
			continue
		}
		listed[id] = true
		sb := c.statuses[id]
		if sb == nil {
			sb, err = c.status(ctx, id)
			if status.Code(err) == codes.NotFound {
				continue // removed since the list
			}
			if err != nil {
				return nil, err
			}
			c.statuses[id] = sb
		}
		// The list is the truth about the state; the cached status only
		// about the namespace, which a sandbox ID keeps for its life.
		s := *sb
		s.Namespace, s.Name, s.UID = item.GetMetadata().GetNamespace(), item.GetMetadata().GetName(), item.GetMetadata().GetUid()
		s.State = NotReady
		if item.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			s.State = Ready
		}
		if item.GetCreatedAt() > 0 {
			s.CreatedAt = time.Unix(0, item.GetCreatedAt())
		}
		v.Sandboxes = append(v.Sandboxes, &s)
	}
	for id := range c.statuses {
		if !listed[id] {
			delete(c.statuses, id)
		}
	}
	return v, nil
}

// status asks PodSandboxStatus(verbose) for where the sandbox's network
// namespace is; the caller holds c.mu.
func (c *Resolver) status(ctx context.Context, id string) (*Sandbox, error) {
	resp, err := criCall(ctx, c, func(ctx context.Context) (*runtimeapi.PodSandboxStatusResponse, error) {
		return c.client.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	})
	if err != nil {
		return nil, fmt.Errorf("CRI PodSandboxStatus %s: %w", id, err)
	}
	sb := &Sandbox{ID: id}
	if resp.GetStatus().GetLinux().GetNamespaces().GetOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE {
		sb.HostNetwork = true
		return sb, nil
	}
	info := parseCRIInfo(resp.GetInfo())
	sb.Pid = info.pid
	if info.netns != "" {
		sb.Netns = inventory.HostRunPath(info.netns)
		if strings.HasPrefix(sb.Netns, "/proc/") {
			// A namespace named by a process, not pinned by a mount:
			// only the PID finds it.
			sb.Netns = ""
		} else {
			c.netnsDirs[filepath.Dir(sb.Netns)] = true
		}
	}
	return sb, nil
}

// criCall makes one CRI call within criCallTimeout and counts it.
func criCall[T any](ctx context.Context, c *Resolver, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, criCallTimeout)
	defer cancel()
	c.requests.Add(1)
	return f(ctx)
}

// criInfo is what the verbose status's "info" entry says of the
// namespace: containerd and CRI-O both give the pause PID and the OCI
// runtime spec, whose network namespace entry has the path.
type criInfo struct {
	pid   int
	netns string
}

func parseCRIInfo(info map[string]string) criInfo {
	var raw struct {
		Pid         int `json:"pid"`
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(info["info"]), &raw); err != nil {
		return criInfo{}
	}
	out := criInfo{pid: raw.Pid}
	for _, ns := range raw.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			out.netns = ns.Path
		}
	}
	return out
}

// criRuntime names the runtime a CRI Version reports.
func criRuntime(name string) inventory.Runtime {
	switch strings.ToLower(name) {
	case "containerd":
		return RuntimeContainerd
	case "cri-o", "crio":
		return RuntimeCRIO
	case "docker", "cri-dockerd":
		return runtimeDocker
	case "":
		return "cri"
	}
	return inventory.Runtime(strings.ToLower(name))
}
