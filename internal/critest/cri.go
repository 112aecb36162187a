package critest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// sandboxID matches a full sandbox ID.
var sandboxID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Pod is a pod sandbox made by [Runtime.RunPod], as it was when RunPod
// returned.
type Pod struct {
	// ID is the sandbox ID (64 hex), the id of the pause container.
	ID string
	// Namespace, Name and UID are the pod's Kubernetes metadata.
	Namespace, Name, UID string
	// PID is the pause process, in the test binary's PID namespace.
	PID int
	// Netns is the pod's network namespace as CRI reports it,
	// /var/run/netns/cni-<uuid>; NetnsName is its base name, for
	// `ip netns`.
	Netns, NetnsName string
	// Veth and VethIndex are the host side of the pod's eth0, on
	// [Bridge].
	Veth      string
	VethIndex int
	// Cgroup is the pause process's cgroup in every hierarchy,
	// /kubepods/besteffort/pod<UID>/<ID>.
	Cgroup string
}

// SandboxInfo is what PodSandboxStatus(verbose) says of a sandbox beyond
// its status: the "info" entry that containerd adds.
type SandboxInfo struct {
	// PID is the pause process, 0 once its task is gone.
	PID int
	// Netns is the path of the network namespace from the runtime spec.
	Netns string
	// NetNamespaceClosed reports that CRI has torn down the namespace.
	NetNamespaceClosed bool
}

// dial returns a CRI runtime client for endpoint. The connection is made
// on first use and again after containerd restarts, with a short backoff
// so that a restart is noticed at once.
func dial(endpoint string) (*grpc.ClientConn, runtimeapi.RuntimeServiceClient, error) {
	conn, err := grpc.NewClient(endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("CRI client for %s: %w", endpoint, err)
	}
	return conn, runtimeapi.NewRuntimeServiceClient(conn), nil
}

// Client returns a CRI runtime client connected to this containerd (as
// the kubelet or crictl would be), for calls the harness does not wrap. It
// stays valid until the next [Runtime.Restart].
func (r *Runtime) Client() runtimeapi.RuntimeServiceClient {
	return r.cri()
}

func (r *Runtime) cri() runtimeapi.RuntimeServiceClient {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.client
}

// NewUID returns a random pod UID in the kubelet's form (a UUID).
func NewUID(t testing.TB) string {
	t.Helper()
	return newUUID()
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// RunPod runs a pod sandbox as the kubelet does for a BestEffort pod (uid
// "" makes a random one): cgroup parent /kubepods/besteffort/pod<UID>, its
// own network, IPC and PID namespaces, the kubelet's labels. It returns
// once CRI reports the sandbox ready, with the pause PID and netns path
// from PodSandboxStatus(verbose) and the host veth found by its peer's
// namespace. RunPodSandbox takes under a second.
func (r *Runtime) RunPod(t testing.TB, namespace, name, uid string) *Pod {
	t.Helper()
	if uid == "" {
		uid = newUUID()
	}
	cgroupParent := podCgroupBase + "/pod" + uid
	// Recorded first: runc creates pod<UID> in every hierarchy even
	// when the sandbox fails later.
	r.mu.Lock()
	r.uids[uid] = true
	r.mu.Unlock()
	config := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Hostname: name,
		Labels: map[string]string{
			"io.kubernetes.pod.name":      name,
			"io.kubernetes.pod.namespace": namespace,
			"io.kubernetes.pod.uid":       uid,
		},
		Annotations: map[string]string{"kubernetes.io/config.source": "api"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_POD,
					Pid:     runtimeapi.NamespaceMode_CONTAINER,
					Ipc:     runtimeapi.NamespaceMode_POD,
				},
			},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := r.cri().RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: config})
	if err != nil {
		t.Fatalf("critest: RunPodSandbox %s/%s: %v\n%s", namespace, name, err, r.logTail(20))
	}
	id := resp.GetPodSandboxId()
	if !sandboxID.MatchString(id) {
		t.Fatalf("critest: RunPodSandbox %s/%s returned ID %q", namespace, name, id)
	}
	status, info := r.PodStatus(t, id)
	if status.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("critest: pod %s/%s (%s) is %v after RunPodSandbox", namespace, name, id, status.GetState())
	}
	if info.PID <= 0 || info.Netns == "" {
		t.Fatalf("critest: pod %s/%s (%s): pause PID %d, netns %q in PodSandboxStatus", namespace, name, id, info.PID, info.Netns)
	}
	// runc has started the sandbox's init, which may not have executed
	// the pause binary yet ("runc:[2:INIT]"): a pod is running once it
	// has, which the failure helpers check before they kill it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, err := fixturesys.ReadStat(info.PID)
		if err == nil && st.Comm == "pause" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("critest: pod %s/%s (%s): process %d never became the pause process (%q, %v)", namespace, name, id, info.PID, st.Comm, err)
		}
	}
	veth, index, err := hostVeth(info.Netns)
	if err != nil {
		t.Fatalf("critest: pod %s/%s (%s): %v", namespace, name, id, err)
	}
	return &Pod{
		ID: id, Namespace: namespace, Name: name, UID: uid,
		PID: info.PID, Netns: info.Netns, NetnsName: filepath.Base(info.Netns),
		Veth: veth, VethIndex: index,
		Cgroup: cgroupParent + "/" + id,
	}
}

// PodStatus returns PodSandboxStatus(verbose) of the sandbox id and what
// its "info" entry says.
func (r *Runtime) PodStatus(t testing.TB, id string) (*runtimeapi.PodSandboxStatus, SandboxInfo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := r.cri().PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatalf("critest: PodSandboxStatus %s: %v", id, err)
	}
	info, err := parseSandboxInfo(resp.GetInfo()["info"])
	if err != nil {
		t.Fatalf("critest: PodSandboxStatus %s: %v", id, err)
	}
	return resp.GetStatus(), info
}

// parseSandboxInfo parses the "info" JSON of a verbose PodSandboxStatus.
func parseSandboxInfo(s string) (SandboxInfo, error) {
	var raw struct {
		PID                int  `json:"pid"`
		NetNamespaceClosed bool `json:"netNamespaceClosed"`
		RuntimeSpec        struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	if s == "" {
		return SandboxInfo{}, fmt.Errorf("no verbose info")
	}
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return SandboxInfo{}, fmt.Errorf("verbose info: %w", err)
	}
	info := SandboxInfo{PID: raw.PID, NetNamespaceClosed: raw.NetNamespaceClosed}
	for _, ns := range raw.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			info.Netns = ns.Path
		}
	}
	return info, nil
}

// StopPod stops the sandbox (StopPodSandbox): CRI kills the pause process
// and runs CNI DEL, which deletes the veth even if something else pins the
// namespace; the sandbox is then NOTREADY.
func (r *Runtime) StopPod(t testing.TB, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := r.cri().StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("critest: StopPodSandbox %s: %v", id, err)
	}
}

// RemovePod removes the sandbox (RemovePodSandbox), stopping it first if
// needed.
func (r *Runtime) RemovePod(t testing.TB, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := r.cri().RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("critest: RemovePodSandbox %s: %v", id, err)
	}
}

// ListPods returns every sandbox CRI lists, ready or not
// (ListPodSandbox without a filter).
func (r *Runtime) ListPods(t testing.TB) []*runtimeapi.PodSandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := r.cri().ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatalf("critest: ListPodSandbox: %v", err)
	}
	return resp.GetItems()
}

// HostVeth returns the name and ifindex, in this network namespace, of the
// veth whose peer is eth0 in the network namespace at nsPath (a pod's
// /var/run/netns/cni-<uuid>, or /proc/PID/ns/net).
func HostVeth(t testing.TB, nsPath string) (name string, index int) {
	t.Helper()
	name, index, err := hostVeth(nsPath)
	if err != nil {
		t.Fatalf("critest: %v", err)
	}
	return name, index
}

// hostVeth finds the host veth whose peer is in the namespace at nsPath:
// the one veth here whose IFLA_LINK_NETNSID is that namespace's nsid, and
// whose peer ifindex is eth0's there. An ifindex names different links in
// different namespaces, so both ends must point at each other.
func hostVeth(nsPath string) (string, int, error) {
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer unix.Close(fd)
	nsid, err := netlink.GetNetNsIdByFd(fd)
	if err != nil {
		return "", 0, fmt.Errorf("nsid of %s: %w", nsPath, err)
	}
	if nsid < 0 {
		return "", 0, fmt.Errorf("%s has no nsid here: no veth of this namespace has its peer there", nsPath)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		return "", 0, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return "", 0, fmt.Errorf("eth0 in %s: %w", nsPath, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return "", 0, fmt.Errorf("list links: %w", err)
	}
	var found []string
	var name string
	var index int
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || a.NetNsID != nsid {
			continue
		}
		found = append(found, a.Name)
		if a.ParentIndex == eth0.Attrs().Index && eth0.Attrs().ParentIndex == a.Index {
			name, index = a.Name, a.Index
		}
	}
	if name == "" || len(found) != 1 {
		return "", 0, fmt.Errorf("veths here with their peer in %s (nsid %d): %q, want exactly the peer of its eth0 (ifindex %d, peer %d)",
			nsPath, nsid, found, eth0.Attrs().Index, eth0.Attrs().ParentIndex)
	}
	return name, index, nil
}

// inPodCgroup reports whether pid is in the cgroup of a pod of one of
// uids, /kubepods/besteffort/pod<UID> or below, in some hierarchy.
func inPodCgroup(pid int, uids []string) bool {
	lines, err := readLines(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range lines {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, uid := range uids {
			dir := podCgroupBase + "/pod" + uid
			if parts[2] == dir || strings.HasPrefix(parts[2], dir+"/") {
				return true
			}
		}
	}
	return false
}
