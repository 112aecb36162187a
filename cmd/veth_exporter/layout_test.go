package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veth-exporter/veth_exporter/inventory"
)

const module = "github.com/veth-exporter/veth_exporter"

// TestImportGraph holds the layout to its rule: the core (inventory) and
// the kernel access import no runtime resolver; a resolver imports no
// other, except the shared engine API client; and the command is the
// only package that imports the resolvers, through its one list.
func TestImportGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const resolvers = module + "/resolver/"
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, imp := range imports {
			if !strings.HasPrefix(imp, resolvers) {
				continue
			}
			switch {
			case pkg == module+"/cmd/veth_exporter":
			case strings.HasPrefix(pkg, resolvers) && imp == resolvers+"engine":
			default:
				t.Errorf("%s imports %s: only the command imports runtime resolvers, and a resolver only the engine client", pkg, imp)
			}
		}
	}
	deps, err := exec.Command("go", "list", "-deps", module+"/inventory", module+"/kernel").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, deps)
	}
	for dep := range strings.Lines(string(deps)) {
		if strings.HasPrefix(dep, resolvers) {
			t.Errorf("the core depends on %s", strings.TrimSpace(dep))
		}
	}
}

// TestRegisteredCgroupNamings: the runtimes' registrations name the
// cgroups of real /proc/PID/cgroup files as their runtimes write them, as
// the core's own tests expect of their fixtures.
func TestRegisteredCgroupNamings(t *testing.T) {
	const (
		ctrA   = "88d17d09fac1d2e33669e3ffd2cb558139c9b38d55dad6d3eb3df635c74d1fcb"
		ctrB   = "fa67b2da0042cd50ebd9ac25cf4e212679c0f399b864928774e2ee9ea2bfe702"
		podUID = "53f56871-4db1-40e3-b758-94b3869f1e8f"
	)
	var names []inventory.CgroupNaming
	for _, reg := range runtimes {
		names = append(names, reg.Cgroups...)
	}
	for _, tc := range []struct {
		file string
		want inventory.CgroupOwner
	}{
		{"v1-docker-cgroupfs.txt", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"v1-docker-systemd.txt", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "docker"}},
		{"v1-kubepods-systemd-docker.txt", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "docker", PodUID: podUID}},
		{"v1-kubepods-cgroupfs-containerd.txt", inventory.CgroupOwner{ContainerID: ctrA, PodUID: podUID}},
		{"v1-dind.txt", inventory.CgroupOwner{ContainerID: ctrB, Runtime: "docker"}},
		{"v1-kind-cgroupfs.txt", inventory.CgroupOwner{ContainerID: ctrB, PodUID: podUID}},
		{"v1-host-session.txt", inventory.CgroupOwner{}},
		{"v2-kubepods-systemd-containerd.txt", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "containerd", PodUID: podUID}},
		{"v2-podman-rootless.txt", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "podman"}},
	} {
		b, err := os.ReadFile(filepath.Join("..", "..", "inventory", "testdata", "cgroup", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := inventory.ParseCgroup(string(b), names); got != tc.want {
			t.Errorf("%s: ParseCgroup with the registered namings = %+v, want %+v", tc.file, got, tc.want)
		}
	}
	for _, tc := range []struct {
		path string
		want inventory.CgroupOwner
	}{
		{"0::/kubepods/pod" + podUID + "/crio-" + ctrA + "\n", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "crio", PodUID: podUID}},
		{"8:pids:/libpod_parent/" + ctrB + "/libpod-" + ctrA + "\n", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "podman", Pod: ctrB}},
		{"0::/machine.slice/machine-libpod_pod_" + ctrB + ".slice/libpod-" + ctrA + ".scope\n", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "podman", Pod: ctrB}},
		{"0::/user.slice/nerdctl-" + ctrA + ".scope\n", inventory.CgroupOwner{ContainerID: ctrA, Runtime: "containerd"}},
	} {
		if got := inventory.ParseCgroup(tc.path, names); got != tc.want {
			t.Errorf("ParseCgroup(%q) with the registered namings = %+v, want %+v", tc.path, got, tc.want)
		}
	}
}
