// Package systemd_test checks that the capabilities the systemd unit keeps
// are enough for the exporter to see every leftover: it runs the real binary
// with exactly the unit's capability bounding set (and those ambient), as
// root, over a fixture in private namespaces.
package systemd_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// unitCaps returns the capabilities of the unit's CapabilityBoundingSet=,
// as setpriv names them (sys_ptrace).
func unitCaps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("veth_exporter.service")
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			for _, c := range strings.Fields(v) {
				caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
	}
	if len(caps) == 0 {
		t.Fatal("veth_exporter.service has no CapabilityBoundingSet=")
	}
	return caps
}

type verdict struct{ Verdict, Reason string }

// inspect runs `veth_exporter inspect -o json` as root with only caps,
// bounding and ambient, and returns each device's verdict.
func inspect(t *testing.T, bin string, caps []string) map[string]verdict {
	t.Helper()
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	cmd := exec.Command("setpriv", "--bounding-set="+set, "--inh-caps="+set, "--ambient-caps="+set, "--",
		bin, "inspect", "-o", "json", "--state.path="+filepath.Join(t.TempDir(), "state.json"),
		"--inventory.trust-pid-namespace", "--no-collector.docker", "--no-collector.cri", "--no-collector.podman", "--cni.conf-dir=", "--cni.cache-dir=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("setpriv --bounding-set=%s veth_exporter inspect: %v", set, err)
	}
	var doc struct {
		Veths []struct {
			Device string
			verdict
		}
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("inspect -o json: %v\n%s", err, out)
	}
	got := map[string]verdict{}
	for _, v := range doc.Veths {
		got[v.Device] = v.verdict
	}
	return got
}

// TestUnitCapabilitiesSuffice: with the unit's capabilities alone, root sees
// into the namespace of another user's process and calls an empty pinned
// namespace's veth orphaned; without them the same fixture is a partial view,
// so the test would notice a capability the unit lacks.
func TestUnitCapabilitiesSuffice(t *testing.T) {
	netnstest.Require(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) not found: %v", err)
	}
	caps := unitCaps(t)
	bin := filepath.Join(t.TempDir(), "veth_exporter")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/veth_exporter").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// A process of another user (nobody) in a namespace of its own, as a
	// container's process whose user the exporter does not share.
	nobody := exec.Command("unshare", "-n", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "infinity")
	nobody.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := nobody.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nobody.Process.Kill(); _ = nobody.Wait() })
	// unshare execs setpriv, which execs sleep: the PID stays; wait until
	// the namespace is a new one.
	self, _ := os.Readlink("/proc/self/ns/net")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ns, err := os.Readlink("/proc/" + strconv.Itoa(nobody.Process.Pid) + "/ns/net")
		if err == nil && ns != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d is not in a network namespace of its own after 5s", nobody.Process.Pid)
		}
	}
	netnstest.Veth(t, "vethnobody", strconv.Itoa(nobody.Process.Pid), "")
	netnstest.NamedNetns(t, "cni-left")
	netnstest.Veth(t, "vethleft", "cni-left", "")

	want := map[string]verdict{
		"vethnobody": {"unknown", "no_known_owner"},
		"vethleft":   {"orphaned", "netns_empty"},
	}
	got := inspect(t, bin, caps)
	for dev, w := range want {
		if got[dev] != w {
			t.Errorf("with the unit's capabilities %v: %s = %+v, want %+v", caps, dev, got[dev], w)
		}
	}
	if got := inspect(t, bin, nil); got["vethleft"] != (verdict{"unknown", "partial_view"}) {
		t.Errorf("with no capability: vethleft = %+v, want unknown/partial_view (else this test proves nothing)", got["vethleft"])
	}
	t.Logf("root with only %v: %v", caps, got)
}
