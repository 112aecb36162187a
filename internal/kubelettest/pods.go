package kubelettest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/veth-exporter/veth_exporter/internal/critest"
	"github.com/veth-exporter/veth_exporter/internal/fixturesys"
)

// Pod is what the kubelet's read-only port says of a pod: the fields of
// a v1.Pod the tests read.
type Pod struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	Status struct {
		Phase      string `json:"phase"`
		PodIP      string `json:"podIP"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		ContainerStatuses []ContainerStatus `json:"containerStatuses"`
	} `json:"status"`
}

// ContainerStatus is a container's entry in a pod's status.
type ContainerStatus struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restartCount"`
	// ContainerID is "containerd://<id>".
	ContainerID string                     `json:"containerID"`
	State       map[string]json.RawMessage `json:"state"`
}

// Ready reports whether the pod is Running with condition Ready true.
func (p *Pod) Ready() bool {
	if p.Status.Phase != "Running" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// ContainerID returns the CRI ID of the pod's container name, or "".
func (p *Pod) ContainerID(name string) string {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == name {
			return strings.TrimPrefix(c.ContainerID, "containerd://")
		}
	}
	return ""
}

// String is the pod's name and state, for messages.
func (p *Pod) String() string {
	var cs []string
	for _, c := range p.Status.ContainerStatuses {
		var state string
		for s := range c.State {
			state = s
		}
		cs = append(cs, fmt.Sprintf("%s %s ready=%v restarts=%d", c.Name, state, c.Ready, c.RestartCount))
	}
	return fmt.Sprintf("%s/%s %s ready=%v [%s]", p.Metadata.Namespace, p.Metadata.Name, p.Status.Phase, p.Ready(), strings.Join(cs, "; "))
}

// StaticName is the name the kubelet gives the static pod name: name-<node>.
func StaticName(name string) string {
	return name + "-" + NodeName
}

// WritePod writes the manifest of a static pod as <file>.yaml to the
// kubelet's manifest directory (written aside and renamed: the kubelet
// never reads half a file), replacing the one of that file name.
func (n *Node) WritePod(t testing.TB, file string, manifest []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(n.dir, "pod-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(manifest); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(n.ManifestDir, file+".yaml")); err != nil {
		t.Fatal(err)
	}
}

// RemovePod removes the manifest <file>.yaml: the kubelet stops the pod
// and removes its sandbox (CNI DEL).
func (n *Node) RemovePod(t testing.TB, file string) {
	t.Helper()
	if err := os.Remove(filepath.Join(n.ManifestDir, file+".yaml")); err != nil {
		t.Fatal(err)
	}
}

// Pods returns the pods the kubelet runs (GET /pods on its read-only port).
func (n *Node) Pods() ([]*Pod, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/pods", ReadOnlyPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /pods: %s", resp.Status)
	}
	var list struct {
		Items []*Pod `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("GET /pods: %w", err)
	}
	return list.Items, nil
}

// WaitPod waits until the kubelet lists the static pod name (as written,
// without the node's suffix) in namespace and cond holds for it, and
// returns it; it fails t after timeout, with the pods' states and the
// kubelet's log.
func (n *Node) WaitPod(t testing.TB, namespace, name string, timeout time.Duration, cond func(*Pod) bool) *Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pods, err := n.Pods()
		for _, p := range pods {
			if p.Metadata.Namespace == namespace && p.Metadata.Name == StaticName(name) && cond(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			var states []string
			for _, p := range pods {
				states = append(states, p.String())
			}
			t.Fatalf("kubelettest: pod %s/%s not as wanted after %v (%v); pods:\n%s\nkubelet log:\n%s",
				namespace, StaticName(name), timeout, err, strings.Join(states, "\n"), n.KubeletLog(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WaitReady waits until the static pod is Running and Ready.
func (n *Node) WaitReady(t testing.TB, namespace, name string, timeout time.Duration) *Pod {
	t.Helper()
	return n.WaitPod(t, namespace, name, timeout, (*Pod).Ready)
}

// Sandbox returns the ready sandbox of the pod (CRI lists it by the pod's
// UID), as critest knows it: pause process, namespace mount, host veth.
func (n *Node) Sandbox(t testing.TB, p *Pod) *critest.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := n.Runtime.Client().ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{"io.kubernetes.pod.uid": p.Metadata.UID},
	}})
	if err != nil {
		t.Fatalf("kubelettest: ListPodSandbox: %v", err)
	}
	if len(resp.GetItems()) != 1 {
		t.Fatalf("kubelettest: %d ready sandboxes for pod %s, want 1", len(resp.GetItems()), p)
	}
	return n.Runtime.Sandbox(t, resp.GetItems()[0].GetId())
}

// Exec runs cmd in the container (CRI ExecSync, what `crictl exec` and
// `kubectl exec` without a terminal come to) and returns its standard
// output, standard error and exit code.
func (n *Node) Exec(t testing.TB, containerID string, cmd ...string) (stdout, stderr string, exit int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := n.Runtime.Client().ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: containerID, Cmd: cmd, Timeout: 90})
	if err != nil {
		t.Fatalf("kubelettest: exec %q in %s: %v", cmd, containerID, err)
	}
	return string(resp.GetStdout()), string(resp.GetStderr()), int(resp.GetExitCode())
}

// ContainerPID returns the PID of the container's first process, in the
// test binary's PID namespace (CRI's verbose container status).
func (n *Node) ContainerPID(t testing.TB, containerID string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := n.Runtime.Client().ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: containerID, Verbose: true})
	if err != nil {
		t.Fatalf("kubelettest: ContainerStatus %s: %v", containerID, err)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.GetInfo()["info"]), &info); err != nil || info.PID <= 0 {
		t.Fatalf("kubelettest: container %s: no PID in its verbose status (%v)", containerID, err)
	}
	return info.PID
}

// LosePod makes the pod's sandbox the leftover of a node that lost its
// runtime's state while the kubelet was down, as after a runtime crash or
// a node restart: with the kubelet stopped (running, it would stop the
// sandbox, CNI DEL included, and start a new one within a second), it
// kills containerd, the sandbox's shim and pause process and the pod's
// containers, starts containerd, removes their records, restarts it, and
// starts the kubelet, which then runs a new sandbox for the pod. It
// returns the lost sandbox, as it was: its veth stays on the bridge, its
// namespace mounted with no process in it.
func (n *Node) LosePod(t testing.TB, p *Pod) *critest.Pod {
	t.Helper()
	return n.lose(t, false, p)[0]
}

// Reboot loses the pods' sandboxes as a node restart does: LosePod for
// all of them at once, and, as /run starts empty after a boot, their
// /run/netns mounts are gone too, so the kernel frees their namespaces and
// veths. What a boot keeps stays: /var/lib/cni, the host-local leases
// and libcni's cache entries of attachments no DEL ever released. The
// kubelet then runs a new sandbox for each pod, with a new address. It
// returns the lost sandboxes, in the order of pods.
func (n *Node) Reboot(t testing.TB, pods ...*Pod) []*critest.Pod {
	t.Helper()
	return n.lose(t, true, pods...)
}

func (n *Node) lose(t testing.TB, boot bool, pods ...*Pod) []*critest.Pod {
	t.Helper()
	sbs := make([]*critest.Pod, len(pods))
	var ids []string
	pids := map[int]*critest.Pod{}
	for i, p := range pods {
		sbs[i] = n.Sandbox(t, p)
		for _, c := range p.Status.ContainerStatuses {
			if id := strings.TrimPrefix(c.ContainerID, "containerd://"); id != "" {
				ids = append(ids, id)
				pids[n.ContainerPID(t, id)] = sbs[i]
			}
		}
		ids = append(ids, sbs[i].ID)
	}
	n.StopKubelet(t)
	n.Runtime.KillRuntime(t)
	for _, sb := range sbs {
		n.Runtime.KillSandbox(t, sb)
	}
	for pid, sb := range pids {
		if !n.inPod(pid, sb.UID) {
			t.Fatalf("kubelettest: process %d is not in pod %s's cgroup", pid, sb.Name)
		}
	}
	if err := fixturesys.KillAll(slices.Collect(maps.Keys(pids))); err != nil {
		t.Fatalf("kubelettest: %v", err)
	}
	if boot {
		for _, sb := range sbs {
			critest.Unpin(t, sb)
		}
	}
	n.Runtime.Restart(t)
	n.Runtime.Ctr(t, append([]string{"containers", "rm"}, ids...)...)
	n.Runtime.Restart(t)
	n.StartKubelet(t)
	return sbs
}

// inPod reports whether pid is in a cgroup of the pod uid.
func (n *Node) inPod(pid int, uid string) bool {
	for _, cg := range fixturesys.CgroupPaths(pid) {
		if strings.Contains(cg+"/", "/pod"+uid+"/") {
			return true
		}
	}
	return false
}
