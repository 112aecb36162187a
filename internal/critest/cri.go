package critest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
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
	// PID is the pause process, in the test binary's PID namespace: the
	// one process in the sandbox's cgroup.
	PID int
	// Netns is the mount of the pod's network namespace, the one of the
	// pause process, as containerd makes it: /var/run/netns/cni-<uuid>
	// (through the /var/run symlink). NetnsName is its base name, for
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
// once CRI reports the sandbox ready and the pause process runs, with
// what the kernel says of it: the pause PID from the sandbox's cgroup, the
// namespace's mount in /var/run/netns and the host veth whose peer is
// there (what containerd's verbose status says is the exporter's to read,
// not the harness's). RunPodSandbox takes under a second.
func (r *Runtime) RunPod(t testing.TB, namespace, name, uid string) *Pod {
	t.Helper()
	return r.runPod(t, namespace, name, uid, nil)
}

// RunPodWithHostPort is [Runtime.RunPod] for a pod that publishes its
// TCP port 80 on the node's hostPort, as the kubelet asks for a
// container's hostPort: with [Options.PortMap], portmap's DNAT rules,
// which name the sandbox's ID.
func (r *Runtime) RunPodWithHostPort(t testing.TB, namespace, name string, hostPort int32) *Pod {
	t.Helper()
	return r.runPod(t, namespace, name, "", []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: hostPort}})
}

// Unpin frees the lost pod's namespace as a boot's empty /run does: it
// unmounts its /run/netns mount and removes the mount point, and the
// kernel frees the namespace with its veth once nothing else holds it.
// What a boot keeps stays: the lease, libcni's cache entry, portmap's
// rules.
func Unpin(t testing.TB, p *Pod) {
	t.Helper()
	point := filepath.Join(NetnsDir, p.NetnsName)
	if err := unix.Unmount(point, unix.MNT_DETACH); err != nil {
		t.Fatalf("critest: unmount %s: %v", point, err)
	}
	if err := os.Remove(point); err != nil {
		t.Fatalf("critest: %v", err)
	}
}

func (r *Runtime) runPod(t testing.TB, namespace, name, uid string, ports []*runtimeapi.PortMapping) *Pod {
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
		Annotations:  map[string]string{"kubernetes.io/config.source": "api"},
		PortMappings: ports,
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
		t.Fatalf("critest: RunPodSandbox %s/%s: %v\n%s", namespace, name, err, r.proc.LogTail(20, logNoise...))
	}
	id := resp.GetPodSandboxId()
	if !sandboxID.MatchString(id) {
		t.Fatalf("critest: RunPodSandbox %s/%s returned ID %q", namespace, name, id)
	}
	state, err := r.state(id)
	if err != nil || state != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("critest: pod %s/%s (%s) is %v after RunPodSandbox (%v)", namespace, name, id, state, err)
	}
	cgroup := cgroupParent + "/" + id
	// runc has started the sandbox's init, which may not have executed
	// the pause binary yet ("runc:[2:INIT]"): a pod is running once it
	// has, which the failure helpers check before they kill it.
	var pid int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		pid, err = pauseOf(cgroup)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("critest: pod %s/%s (%s): %v", namespace, name, id, err)
		}
	}
	netns, err := netnsMountOf(pid)
	if err != nil {
		t.Fatalf("critest: pod %s/%s (%s): %v", namespace, name, id, err)
	}
	veth := netnstest.HostVeth(t, netns)
	return &Pod{
		ID: id, Namespace: namespace, Name: name, UID: uid,
		PID: pid, Netns: netns, NetnsName: filepath.Base(netns),
		Veth: veth, VethIndex: netnstest.LinkIndex(t, veth),
		Cgroup: cgroup,
	}
}

// Sandbox returns the ready sandbox id, run by someone else (a kubelet),
// as [Runtime.RunPod] would have: its metadata from PodSandboxStatus, the
// pause process (its PID from the verbose status, checked in the pids
// hierarchy), its namespace's mount and its host veth.
func (r *Runtime) Sandbox(t testing.TB, id string) *Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := r.cri().PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatalf("critest: PodSandboxStatus %s: %v", id, err)
	}
	if resp.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("critest: sandbox %s is %v", id, resp.GetStatus().GetState())
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.GetInfo()["info"]), &info); err != nil || info.PID <= 0 {
		t.Fatalf("critest: sandbox %s: no pause PID in its verbose status (%v)", id, err)
	}
	md := resp.GetStatus().GetMetadata()
	var cgroup string
	for _, cg := range fixturesys.CgroupPaths(info.PID) {
		if inPod(cg, md.GetUid()) {
			cgroup = cg
		}
	}
	if pid, err := pauseOf(cgroup); err != nil || pid != info.PID {
		t.Fatalf("critest: sandbox %s: process %d is not its pause process (%v)", id, info.PID, err)
	}
	netns, err := netnsMountOf(info.PID)
	if err != nil {
		t.Fatalf("critest: sandbox %s: %v", id, err)
	}
	veth := netnstest.HostVeth(t, netns)
	return &Pod{
		ID: id, Namespace: md.GetNamespace(), Name: md.GetName(), UID: md.GetUid(),
		PID: info.PID, Netns: netns, NetnsName: filepath.Base(netns),
		Veth: veth, VethIndex: netnstest.LinkIndex(t, veth),
		Cgroup: cgroup,
	}
}

// state returns the state of the sandbox id (PodSandboxStatus).
func (r *Runtime) state(id string) (runtimeapi.PodSandboxState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := r.cri().PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		return 0, fmt.Errorf("PodSandboxStatus %s: %w", id, err)
	}
	return resp.GetStatus().GetState(), nil
}

// pauseOf returns the one process of the cgroup (in the pids hierarchy)
// once it is the pause process.
func pauseOf(cgroup string) (int, error) {
	procs := filepath.Join(fixturesys.CgroupMountDir, "pids", cgroup, "cgroup.procs")
	b, err := os.ReadFile(procs)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		return 0, fmt.Errorf("%s lists %q, want the pause process alone", procs, f)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, fmt.Errorf("%s: %w", procs, err)
	}
	if st, err := fixturesys.ReadStat(pid); err != nil || st.Comm != "pause" {
		return 0, fmt.Errorf("process %d of %s is not the pause process (%q, %v)", pid, cgroup, st.Comm, err)
	}
	return pid, nil
}

// netnsMountOf returns the path, through /var/run, of the entry of
// [NetnsDir] that is the network namespace of pid.
func netnsMountOf(pid int) (string, error) {
	ns, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return "", err
	}
	for name := range dirNames(NetnsDir) {
		if st, err := os.Stat(filepath.Join(NetnsDir, name)); err == nil && os.SameFile(st, ns) {
			return filepath.Join("/var/run/netns", name), nil
		}
	}
	return "", fmt.Errorf("no mount in %s of the network namespace of %d", NetnsDir, pid)
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

// inPodCgroup reports whether cgroup is that of a pod of this runtime
// (see [inPod]).
func (r *Runtime) inPodCgroup(cgroup string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid := range r.uids {
		if inPod(cgroup, uid) {
			return true
		}
	}
	return false
}

// inPod reports whether cgroup is that of the pod uid, pod<UID>, or below:
// /kubepods/besteffort/pod<UID> for RunPod's pods, wherever a kubelet's
// cgroup root and the pod's QoS class put it for a kubelet's.
func inPod(cgroup, uid string) bool {
	return strings.Contains(cgroup+"/", "/pod"+uid+"/")
}
