package inventory

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Container IDs and pod UIDs as the runtimes and the kubelet write them.
const (
	ctrA = "88d17d09fac1d2e33669e3ffd2cb558139c9b38d55dad6d3eb3df635c74d1fcb"
	ctrB = "fa67b2da0042cd50ebd9ac25cf4e212679c0f399b864928774e2ee9ea2bfe702"
	// podUID is a pod UID as the API server assigns it; the systemd
	// cgroup driver writes it with underscores, since "-" separates the
	// levels of a slice name.
	podUID        = "53f56871-4db1-40e3-b758-94b3869f1e8f"
	podUIDSystemd = "53f56871_4db1_40e3_b758_94b3869f1e8f"
	// staticPodUID is the UID the kubelet gives a static pod: a hash of
	// its manifest, 32 hex digits without dashes.
	staticPodUID = "13a2df2f9afe9dcdd91ad6248f727f81"
)

func TestParseCgroup(t *testing.T) {
	besteffortSlice := "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podUIDSystemd + ".slice"
	for _, tc := range []struct {
		name string
		data string
		want CgroupOwner
	}{
		// Docker.
		{"docker systemd v2", "0::/system.slice/docker-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"docker cgroupfs v2", "0::/docker/" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"docker systemd v1 named hierarchy", "1:name=systemd:/system.slice/docker-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"docker cgroupfs v1 pids", "12:pids:/docker/" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"docker with a custom cgroup parent slice", "0::/system.slice/ci.slice/docker-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"docker rootless", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"no trailing newline", "0::/system.slice/docker-" + ctrA + ".scope",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"colon in the path", "0::/odd:name/docker/" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"dockerd itself", "0::/system.slice/docker.service\n", CgroupOwner{}},

		// containerd.
		{"containerd kubepods systemd besteffort", "0::" + besteffortSlice + "/cri-containerd-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "containerd", PodUID: podUID}},
		{"containerd kubepods systemd burstable",
			"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podUIDSystemd + ".slice/cri-containerd-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "containerd", PodUID: podUID}},
		{"containerd kubepods systemd guaranteed",
			"0::/kubepods.slice/kubepods-pod" + podUIDSystemd + ".slice/cri-containerd-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "containerd", PodUID: podUID}},
		{"nerdctl systemd", "0::/system.slice/nerdctl-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "containerd"}},
		{"containerd.service itself", "0::/system.slice/containerd.service\n", CgroupOwner{}},

		// Kubelet cgroupfs driver: the runtime is not named.
		{"kubepods cgroupfs besteffort", "0::/kubepods/besteffort/pod" + podUID + "/" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, PodUID: podUID}},
		{"kubepods cgroupfs burstable", "0::/kubepods/burstable/pod" + podUID + "/" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, PodUID: podUID}},
		{"kubepods cgroupfs guaranteed", "0::/kubepods/pod" + podUID + "/" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, PodUID: podUID}},
		{"pod cgroup without a container", "0::" + besteffortSlice + "\n",
			CgroupOwner{PodUID: podUID}},
		{"pod cgroupfs cgroup without a container", "0::/kubepods/besteffort/pod" + podUID + "\n",
			CgroupOwner{PodUID: podUID}},

		// Static pods.
		{"static pod systemd",
			"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + staticPodUID + ".slice/cri-containerd-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "containerd", PodUID: staticPodUID}},
		{"static pod cgroupfs", "0::/kubepods/burstable/pod" + staticPodUID + "/" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, PodUID: staticPodUID}},

		// CRI-O.
		{"crio systemd", "0::" + besteffortSlice + "/crio-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "crio", PodUID: podUID}},
		{"crio systemd container subgroup", "0::" + besteffortSlice + "/crio-" + ctrA + ".scope/container\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "crio", PodUID: podUID}},
		{"crio conmon in the pod slice", "0::" + besteffortSlice + "/crio-conmon-" + ctrA + ".scope\n",
			CgroupOwner{PodUID: podUID}},
		{"crio conmon in system.slice", "0::/system.slice/crio-conmon-" + ctrA + ".scope\n", CgroupOwner{}},
		{"crio cgroupfs", "0::/kubepods/besteffort/pod" + podUID + "/crio-" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "crio", PodUID: podUID}},
		{"crio cgroupfs conmon", "0::/kubepods/besteffort/pod" + podUID + "/crio-conmon-" + ctrA + "\n",
			CgroupOwner{PodUID: podUID}},

		// podman.
		{"podman systemd", "0::/machine.slice/libpod-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "podman"}},
		{"podman container subgroup", "0::/machine.slice/libpod-" + ctrA + ".scope/container\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "podman"}},
		{"podman conmon", "0::/machine.slice/libpod-conmon-" + ctrA + ".scope\n", CgroupOwner{}},
		{"podman cgroupfs", "0::/libpod_parent/libpod-" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "podman"}},
		{"podman cgroupfs conmon", "0::/libpod_parent/conmon\n", CgroupOwner{}},
		// Podman pods, as Podman 4.3 writes them (v1, every hierarchy the
		// same path; the unified one "/").
		{"podman pod cgroupfs", "8:pids:/libpod_parent/" + ctrB + "/libpod-" + ctrA + "\n1:name=systemd:/libpod_parent/" + ctrB + "/libpod-" + ctrA + "\n0::/\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "podman", Pod: ctrB}},
		{"podman --cgroups=split (Quadlet)", "0::/system.slice/nginx.service/libpod-payload-" + ctrA + "\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "podman"}},
		{"podman pod cgroupfs conmon", "8:pids:/libpod_parent/" + ctrB + "/conmon\n", CgroupOwner{}},
		{"podman pod systemd", "0::/machine.slice/machine-libpod_pod_" + ctrB + ".slice/libpod-" + ctrA + ".scope/container\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "podman", Pod: ctrB}},
		{"podman pod systemd conmon", "0::/machine.slice/machine-libpod_pod_" + ctrB + ".slice/libpod-conmon-" + ctrA + ".scope\n", CgroupOwner{}},
		{"podman pod rootless", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/user-libpod_pod_" + ctrB + ".slice/libpod-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "podman", Pod: ctrB}},
		{"docker under a 64-hex libpod_parent child is no podman pod", "0::/libpod_parent/" + ctrB + "/docker-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},

		// Nesting: the innermost container wins, the pod is kept.
		{"docker in docker cgroupfs", "0::/docker/" + ctrA + "/docker/" + ctrB + "\n",
			CgroupOwner{ContainerID: ctrB, Runtime: "docker"}},
		{"docker in docker with a private cgroupns", "0::/system.slice/docker-" + ctrA + ".scope/docker/" + ctrB + "\n",
			CgroupOwner{ContainerID: ctrB, Runtime: "docker"}},
		{"docker in a systemd container", "0::/system.slice/docker-" + ctrA + ".scope/system.slice/docker-" + ctrB + ".scope\n",
			CgroupOwner{ContainerID: ctrB, Runtime: "docker"}},
		{"outer container's init in a systemd container", "0::/system.slice/docker-" + ctrA + ".scope/init.scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"docker in a pod", "0::" + besteffortSlice + "/cri-containerd-" + ctrA + ".scope/docker/" + ctrB + "\n",
			CgroupOwner{ContainerID: ctrB, Runtime: "docker", PodUID: podUID}},
		{"kind node systemd",
			"0::/system.slice/docker-" + ctrA + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + podUIDSystemd + ".slice/cri-containerd-" + ctrB + ".scope\n",
			CgroupOwner{ContainerID: ctrB, Runtime: "containerd", PodUID: podUID}},
		{"kind node cgroupfs", "0::/docker/" + ctrA + "/kubelet/kubepods/besteffort/pod" + podUID + "/" + ctrB + "\n",
			CgroupOwner{ContainerID: ctrB, PodUID: podUID}},
		{"seen from a private cgroup namespace",
			"0::/../../" + besteffortSlice[1:] + "/cri-containerd-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "containerd", PodUID: podUID}},

		// cgroup v1: the first line naming a container wins; lines
		// without one do not erase it.
		{"v1 mixed lines",
			"12:pids:/docker/" + ctrA + "\n8:rdma:/\n1:name=systemd:/docker/" + ctrA + "\n0::/system.slice/containerd.service\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"v1 root lines before the container", "8:rdma:/\n7:cpuset:/\n6:memory:/system.slice/docker-" + ctrA + ".scope\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},

		// Host processes.
		{"user session", "0::/user.slice/user-1000.slice/session-3.scope\n", CgroupOwner{}},
		{"user service", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service\n", CgroupOwner{}},
		{"init", "0::/init.scope\n", CgroupOwner{}},
		{"root", "0::/\n", CgroupOwner{}},
		{"nsenter shell from a system service", "0::/system.slice/ssh.service\n", CgroupOwner{}},
		{"32 hex outside a pod", "4:memory:/process_api/3835e10422cd0c6233c8d06d99bbd1e7\n0::/\n", CgroupOwner{}},
		{"64 hex under an unknown parent", "0::/custom/" + ctrA + "\n", CgroupOwner{}},
		{"64 hex at the root", "0::/" + ctrA + "\n", CgroupOwner{}},

		// Garbage.
		{"empty", "", CgroupOwner{}},
		{"blank lines", "\n\n\n", CgroupOwner{}},
		{"no colons", "garbage\n", CgroupOwner{}},
		{"path without hierarchy fields", "/docker/" + ctrA + "\n", CgroupOwner{}},
		{"one colon", "0:/docker/" + ctrA + "\n", CgroupOwner{}},
		{"empty path", "0::\n", CgroupOwner{}},
		{"binary junk", "\x00\xff\xfe:\x01:\x02\n\xc3\x28::\x80/\n", CgroupOwner{}},
		{"path not starting with a slash", "0::system.slice/docker-" + ctrA + ".scope\n", CgroupOwner{}},
		{"relative cgroupfs path", "0::docker/" + ctrA + "\n", CgroupOwner{}},
		{"truncated ID, 63 hex", "0::/system.slice/docker-" + ctrA[:63] + ".scope\n", CgroupOwner{}},
		{"truncated ID cgroupfs, 63 hex", "0::/docker/" + ctrA[:63] + "\n", CgroupOwner{}},
		{"ID of 65 hex", "0::/docker/" + ctrA + "0\n", CgroupOwner{}},
		{"uppercase ID", "0::/system.slice/docker-" + strings.ToUpper(ctrA) + ".scope\n", CgroupOwner{}},
		{"uppercase ID cgroupfs", "0::/docker/" + strings.ToUpper(ctrA) + "\n", CgroupOwner{}},
		{"non-hex ID", "0::/docker/" + strings.Repeat("g", 64) + "\n", CgroupOwner{}},
		{"unknown runtime prefix", "0::/system.slice/rkt-" + ctrA + ".scope\n", CgroupOwner{}},
		{"short pod UID", "0::/kubepods/besteffort/pod" + podUID[:35] + "\n", CgroupOwner{}},
		{"uppercase pod UID", "0::/kubepods/besteffort/pod" + strings.ToUpper(podUID) + "\n", CgroupOwner{}},
		{"pod UID in a non-pod slice", "0::/system.slice/foo-pod" + podUIDSystemd + ".slice\n", CgroupOwner{}},
		{"garbage around a valid line",
			"junk\n\x00\x01\n0::/system.slice/docker-" + ctrA + ".scope\n:::\n",
			CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseCgroup(tc.data, testCgroups); got != tc.want {
				t.Errorf("ParseCgroup(%q) = %+v, want %+v", tc.data, got, tc.want)
			}
		})
	}
}

// TestParseCgroupFiles parses whole /proc/PID/cgroup files as cgroup v1
// (and hybrid) hosts write them, one line per hierarchy.
func TestParseCgroupFiles(t *testing.T) {
	for _, tc := range []struct {
		file string
		want CgroupOwner
	}{
		{"v1-docker-cgroupfs.txt", CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"v1-docker-systemd.txt", CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"v1-kubepods-systemd-docker.txt", CgroupOwner{ContainerID: ctrA, Runtime: "docker", PodUID: podUID}},
		{"v1-kubepods-cgroupfs-containerd.txt", CgroupOwner{ContainerID: ctrA, PodUID: podUID}},
		{"v1-dind.txt", CgroupOwner{ContainerID: ctrB, Runtime: "docker"}},
		{"v1-kind-cgroupfs.txt", CgroupOwner{ContainerID: ctrB, PodUID: podUID}},
		{"v1-host-session.txt", CgroupOwner{}},
		{"v1-host-init.txt", CgroupOwner{}},
		{"v2-kubepods-systemd-containerd.txt", CgroupOwner{ContainerID: ctrA, Runtime: "containerd", PodUID: podUID}},
		{"v2-podman-rootless.txt", CgroupOwner{ContainerID: ctrA, Runtime: "podman"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "cgroup", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := ParseCgroup(string(b), testCgroups); got != tc.want {
				t.Errorf("ParseCgroup(%s) = %+v, want %+v", tc.file, got, tc.want)
			}
		})
	}
}

var (
	wantContainerID = regexp.MustCompile(`^[0-9a-f]{64}$`)
	wantPodUID      = regexp.MustCompile(`^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$`)
)

// FuzzParseCgroup checks that whatever a cgroup file holds, parseCgroup
// returns either nothing or well-formed IDs: a container ID is 64
// lowercase hex digits and has a known runtime or none, and a pod UID is
// in the API server's form (dashes, never the systemd underscores).
func FuzzParseCgroup(f *testing.F) {
	f.Add("0::/system.slice/docker-" + ctrA + ".scope\n")
	f.Add("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podUIDSystemd + ".slice/cri-containerd-" + ctrA + ".scope\n")
	f.Add("0::/kubepods/pod" + podUID + "/crio-" + ctrA + "\n")
	f.Add("12:pids:/docker/" + ctrA + "/docker/" + ctrB + "\n1:name=systemd:/\n")
	f.Add("0::/machine.slice/libpod-conmon-" + ctrA + ".scope\n\x00\xff")
	f.Add("8:pids:/libpod_parent/" + ctrB + "/libpod-" + ctrA + "\n0::/\n")
	f.Add("0::/machine.slice/machine-libpod_pod_" + ctrB + ".slice/libpod-" + ctrA + ".scope\n")
	f.Fuzz(func(t *testing.T, data string) {
		got := ParseCgroup(data, testCgroups)
		if got.ContainerID != "" && !wantContainerID.MatchString(got.ContainerID) {
			t.Errorf("ParseCgroup(%q) = %+v, container ID is not 64 lowercase hex", data, got)
		}
		switch got.Runtime {
		case "", "docker", "containerd", "crio", "podman":
		default:
			t.Errorf("ParseCgroup(%q) = %+v, unknown runtime", data, got)
		}
		if got.ContainerID == "" && got.Runtime != "" {
			t.Errorf("ParseCgroup(%q) = %+v, runtime without a container", data, got)
		}
		if got.PodUID != "" && !wantPodUID.MatchString(got.PodUID) {
			t.Errorf("ParseCgroup(%q) = %+v, pod UID is not canonical", data, got)
		}
		if got.Pod != "" && (!wantContainerID.MatchString(got.Pod) || got.Runtime != "podman") {
			t.Errorf("ParseCgroup(%q) = %+v, Podman pod not 64 hex or not with a Podman container", data, got)
		}
	})
}
