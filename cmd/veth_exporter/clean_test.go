package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/kernel"
)

// clean runs `veth_exporter clean` with the fixture's flags and returns
// its standard output (the result table; usage errors from standard
// error) and exit code.
func clean(t testing.TB, args ...string) (string, int) {
	t.Helper()
	stdout, stderr, code := cleanOutputs(t, args...)
	if code == 2 {
		return stderr, code
	}
	return stdout, code
}

// cleanOutputs runs `veth_exporter clean` and returns both its outputs.
// Unless a test asks for a settle time, clean has none, as the exporter
// that records the orphans ([startExporter]).
func cleanOutputs(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--inventory.settle-time=") }) {
		args = append([]string{"--inventory.settle-time=0s"}, args...)
	}
	return cleanBy(t, exporterBinary(t), args...)
}

// cleanBy is [cleanOutputs] with the exporter binary at path: another
// build of it.
func cleanBy(t testing.TB, path string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCommand(t, exec.Command(path, append([]string{"clean", "--inventory.trust-pid-namespace"}, args...)...))
}

// runCommand runs cmd and returns both its outputs and its exit code.
func runCommand(t testing.TB, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// row returns the table row of device in clean's output, its columns split.
func row(out, device string) []string {
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == device {
			return f
		}
	}
	return nil
}

func TestClean(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vclive", "vc1", "vc2", "vc3")
	statePath := filepath.Join(t.TempDir(), "state.json")
	state := "--state.path=" + statePath
	gates := []string{state, "--remediation.min-age=0s", "--remediation.max-orphan-ratio=1"}

	if out, code := clean(t, state); code != 2 || !strings.Contains(out, "--all-orphans") {
		t.Errorf("clean without devices: exit %d, %q; want 2 and a usage message", code, out)
	}
	// Without a running exporter's record of them, not even min-age 0
	// removes orphans: one look is not proof.
	if out, code := clean(t, append(gates, "vc1")...); code != 1 || row(out, "vc1") == nil || row(out, "vc1")[3] != "stale_state" {
		t.Errorf("clean vc1 with no history: exit %d\n%s\nwant 1 and stale_state", code, out)
	}
	recordOrphans(t, statePath)
	out, code := clean(t, append(gates, "--dry-run", "vc1", "vclive")...)
	if code != 1 || !strings.Contains(out, "would_delete") || !strings.Contains(out, "not_orphaned") {
		t.Errorf("clean --dry-run vc1 vclive: exit %d\n%s\nwant 1, would_delete for vc1, not_orphaned for vclive", code, out)
	}
	if r := row(out, "vclive"); r == nil || r[1] != ifindexOf(t, "vclive") {
		t.Errorf("row of the refused vclive %q, want its ifindex %s", r, ifindexOf(t, "vclive"))
	}
	if _, err := os.Stat("/sys/class/net/vc1"); err != nil {
		t.Error("--dry-run deleted vc1")
	}
	// The exporter saw it orphaned a moment ago: the default min-age refuses.
	if out, code := clean(t, state, "--remediation.max-orphan-ratio=1", "vc1"); code != 1 || !strings.Contains(out, "orphan_too_young") {
		t.Errorf("clean vc1 with the default min-age: exit %d\n%s\nwant 1 and orphan_too_young", code, out)
	}
	// A typo is not a success.
	if out, code := clean(t, append(gates, "vethnope")...); code != 1 || row(out, "vethnope") == nil || row(out, "vethnope")[2] != "not_found" || row(out, "vethnope")[1] != "-" {
		t.Errorf("clean vethnope: exit %d\n%s\nwant 1 and not_found, with no ifindex (-)", code, out)
	}
	vc1 := ifindexOf(t, "vc1")
	stdout, stderr, code := cleanOutputs(t, state, "--remediation.max-orphan-ratio=1", "--min-age=0s", "vc1")
	if code != 0 || !strings.Contains(stdout, "deleted") {
		t.Errorf("clean --min-age=0s vc1: exit %d\n%s\nwant 0 and deleted", code, stdout)
	}
	// Each result once: in the table, not in a log line too.
	if strings.Contains(stderr, "level=") || strings.Contains(stderr, "vc1") || !strings.Contains(stderr, "1 deleted") {
		t.Errorf("clean's standard error:\n%s\nwant only the summary line", stderr)
	}
	if out, code := clean(t, append(gates, "vc1")...); code != 0 || row(out, "vc1") == nil || row(out, "vc1")[2] != "gone" || row(out, "vc1")[1] != vc1 {
		t.Errorf("clean vc1 again: exit %d\n%s\nwant 0 and gone with its old ifindex %s", code, out, vc1)
	}
	if out, code := clean(t, append(gates, "--all-orphans")...); code != 0 || strings.Count(out, "deleted") != 2 {
		t.Errorf("clean --all-orphans: exit %d\n%s\nwant 0 and vc2, vc3 deleted", code, out)
	}
	for _, n := range []string{"vc2", "vc3"} {
		if _, err := os.Stat("/sys/class/net/" + n); err == nil {
			t.Errorf("%s is still there", n)
		}
	}
	if _, err := os.Stat("/sys/class/net/vclive"); err != nil {
		t.Error("clean --all-orphans deleted the live vclive")
	}
}

// TestCleanStaleState: a state file that no running exporter refreshed
// within --state.max-gap proves nothing about the time in between.
func TestCleanStaleState(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vslive", "vs1")
	statePath := filepath.Join(t.TempDir(), "state.json")
	recordOrphans(t, statePath)
	time.Sleep(1500 * time.Millisecond)
	out, code := clean(t, "--state.path="+statePath, "--state.max-gap=1s", "--min-age=0s", "--remediation.max-orphan-ratio=1", "vs1")
	if code != 1 || row(out, "vs1") == nil || row(out, "vs1")[3] != "stale_state" {
		t.Errorf("clean of a state file 1.5 s old with --state.max-gap=1s: exit %d\n%s\nwant 1 and stale_state", code, out)
	}
	if _, err := os.Stat("/sys/class/net/vs1"); err != nil {
		t.Error("vs1 was deleted on a stale record")
	}
}

// TestCleanSettling: a leftover the running exporter recorded orphaned a
// moment ago, less than its settle time, is unknown/settling on its
// /metrics; clean refuses it whatever --min-age, and says so, until the
// settle time has passed; then it removes it.
func TestCleanSettling(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vselive", "vsettle")
	statePath := filepath.Join(t.TempDir(), "state.json")
	e := startExporter(t, "--state.path="+statePath, "--inventory.settle-time=3s")
	wantSample(t, e.scrape(t), verdictSeries("vsettle", "unknown", "settling"), 1)
	flags := []string{"--state.path=" + statePath, "--min-age=0s", "--inventory.settle-time=3s"}
	out, code := clean(t, append(flags, "vsettle")...)
	if r := row(out, "vsettle"); code != 1 || r == nil || r[3] != "not_orphaned" || !strings.Contains(out, "less than the settle time (--inventory.settle-time)") {
		t.Errorf("clean --min-age=0s vsettle while it settles: exit %d\n%s\nwant 1, not_orphaned, still settling", code, out)
	}
	_, stderr, code := cleanOutputs(t, append(flags, "--all-orphans")...)
	if code != 0 || !strings.Contains(stderr, "1 veth skipped: unknown (settling): looked orphaned for less than --inventory.settle-time=3s") {
		t.Errorf("clean --all-orphans while vsettle settles: exit %d\n%s\nwant 0 and the settling veth named as skipped", code, stderr)
	}
	if !netnstest.LinkExists("vsettle") {
		t.Fatal("vsettle was removed while it settled")
	}
	e.scrapeUntil(t, "vsettle orphaned", func(m string) bool {
		v, ok := sample(m, verdictSeries("vsettle", "orphaned", "netns_empty"))
		return ok && v == 1
	})
	if out, code := clean(t, append(flags, "vsettle")...); code != 0 || row(out, "vsettle") == nil || row(out, "vsettle")[2] != "deleted" {
		t.Errorf("clean --min-age=0s vsettle after the settle time: exit %d\n%s\nwant 0 and deleted", code, out)
	}
}

// TestCleanAllOrphansSaysWhatItSkips: --all-orphans takes the orphans of
// the allowed reasons and says on standard error which others it
// skipped, and the flag that would take them.
func TestCleanAllOrphansSaysWhatItSkips(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vsklive", "vsk1")
	netnstest.HostPair(t, "vskpairA", "vskpairB")
	statePath := filepath.Join(t.TempDir(), "state.json")
	recordOrphans(t, statePath)
	stdout, stderr, code := cleanOutputs(t, "--state.path="+statePath, "--min-age=0s", "--dry-run", "--all-orphans")
	want := "2 orphans skipped: peer_on_host (not in --remediation.reasons; add --remediation.reasons=netns_empty,peer_on_host)"
	if code != 0 || row(stdout, "vsk1") == nil || row(stdout, "vskpairA") != nil || !strings.Contains(stderr, want) {
		t.Errorf("clean --all-orphans: exit %d\n%s%s\nwant 0, vsk1 in the table and on standard error %q", code, stdout, stderr, want)
	}
}

// TestCleanBlind: a clean that cannot see every process says so and what
// would let it: --all-orphans exits 1 instead of reporting nothing to do,
// and a named leftover is refused naming what the inventory misses.
func TestCleanBlind(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vbllive", "vbl1")
	bin := exporterBinary(t)
	// nobody must be able to execute the binary and read the state file
	// in their temporary directories.
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	recordOrphans(t, statePath)
	for path, mode := range map[string]os.FileMode{filepath.Dir(bin): 0o755, filepath.Dir(dir): 0o755, dir: 0o755, statePath: 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	for _, tt := range []struct {
		name  string
		trust bool
		attr  *syscall.SysProcAttr
		// missing is what the inventory says it cannot see; hint what
		// clean says would help.
		missing, hint string
	}{
		{"as nobody", true, nobody, "not running as root", "run clean as root"},
		{"outside the host's PID namespace", false, nil, "is not the host's PID namespace", "say so with --inventory.trust-pid-namespace"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			run := func(args ...string) (string, string, int) {
				flags := []string{"clean", "--inventory.settle-time=0s", "--state.path=" + statePath, "--min-age=0s"}
				if tt.trust {
					flags = append(flags, "--inventory.trust-pid-namespace")
				}
				cmd := exec.Command(bin, append(flags, args...)...)
				cmd.SysProcAttr = tt.attr
				return runCommand(t, cmd)
			}
			stdout, stderr, code := run("--all-orphans")
			if code != 1 || !strings.Contains(stderr, tt.missing) || !strings.Contains(stderr, tt.hint) || strings.Contains(stderr, "0 veths") {
				t.Errorf("clean --all-orphans: exit %d\n%s%s\nwant 1, naming %q and %q", code, stdout, stderr, tt.missing, tt.hint)
			}
			stdout, stderr, code = run("vbl1")
			if r := row(stdout, "vbl1"); code != 1 || r == nil || r[3] != "not_orphaned" || !strings.Contains(stdout, tt.missing) || !strings.Contains(stderr, tt.hint) {
				t.Errorf("clean vbl1: exit %d\n%s%s\nwant 1, not_orphaned naming %q, and %q", code, stdout, stderr, tt.missing, tt.hint)
			}
			if !netnstest.LinkExists("vbl1") {
				t.Fatal("vbl1 was removed on a partial view")
			}
		})
	}
}

// TestCleanRatioGuard: when most of the node's veths look orphaned, clean
// refuses, saying how many of how many, which runtime resolvers answered,
// and the --remediation.max-orphan-ratio that lets them through; with it
// they go.
func TestCleanRatioGuard(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vrglive", "vrg1", "vrg2", "vrg3", "vrg4")
	statePath := filepath.Join(t.TempDir(), "state.json")
	recordOrphans(t, statePath)
	out, code := clean(t, "--state.path="+statePath, "--min-age=0s", "vrg1")
	for _, want := range []string{"4 of 5 veths look orphaned (4 netns_empty)", "more than --remediation.max-orphan-ratio=0.5",
		"no runtime resolver is on", "--remediation.max-orphan-ratio=0.8 lets them through"} {
		if r := row(out, "vrg1"); code != 1 || r == nil || r[3] != "too_many_orphans" || !strings.Contains(out, want) {
			t.Errorf("clean vrg1 with 4 of 5 veths orphaned: exit %d\n%s\nwant 1 and too_many_orphans naming %q", code, out, want)
		}
	}
	if out, code := clean(t, "--state.path="+statePath, "--min-age=0s", "--remediation.max-orphan-ratio=0.8", "vrg1"); code != 0 || row(out, "vrg1") == nil || row(out, "vrg1")[2] != "deleted" {
		t.Errorf("clean vrg1 with the ratio the refusal named: exit %d\n%s\nwant 0 and deleted", code, out)
	}
}

// TestCleanHostPairIsNotAResolverFailure: both ends of a pair left on the
// host look orphaned, but are not what a failing resolver produces; they
// do not make the ratio guard refuse the real leftovers.
func TestCleanHostPairIsNotAResolverFailure(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vhlive", "vh1", "vh2")
	netnstest.HostPair(t, "vhpairA", "vhpairB")
	statePath := filepath.Join(t.TempDir(), "state.json")
	recordOrphans(t, statePath)
	out, code := clean(t, "--state.path="+statePath, "--min-age=0s", "--all-orphans")
	if code != 0 || strings.Count(out, " deleted ") != 2 || strings.Contains(out, "too_many_orphans") {
		t.Errorf("clean --all-orphans on 2 leftovers, a host pair (not allowed by default) and a live veth: exit %d\n%s\nwant the 2 leftovers deleted", code, out)
	}
}

// TestCleanReleaseHeld: besides its pin, something else holds a
// leftover's namespace: a copy of the mount in another mount namespace (a
// process that made its own after the pin was mounted), or a descriptor
// a process holds open on it. The release removes the pin and leaves the
// rest to the kernel, which keeps the namespace and its veth; the answer
// is still_held, naming what holds it.
func TestCleanReleaseHeld(t *testing.T) {
	netnstest.Require(t)
	held := []struct {
		name string
		// hold holds the namespace of l, and returns what the answer
		// must name.
		hold func(t *testing.T, l leftover) string
	}{
		{"a mount in another mount namespace", func(t *testing.T, l leftover) string {
			// unshare makes a private copy of every mount, the pin too.
			pid := startSleeper(t, "unshare", "-m", "--propagation", "private", "sleep", "infinity")
			return fmt.Sprintf("mount /run/netns/%s in the mount namespace of process %d (sleep)", l.netns, pid)
		}},
		{"an open descriptor", func(t *testing.T, l leftover) string {
			pid := startSleeper(t, "sh", "-c", "exec sleep infinity 3</run/netns/"+l.netns)
			return fmt.Sprintf("fd 3 of process %d (sleep)", pid)
		}},
	}
	ls := leftovers(t, len(held), 1)
	statePath := filepath.Join(t.TempDir(), "state.json")
	recordOrphans(t, statePath)
	for i, h := range held {
		t.Run(h.name, func(t *testing.T) {
			l := ls[i]
			want := h.hold(t, l)
			out, code := clean(t, append(attackFlags(statePath), "--remediation.method=release", "--remediation.release-timeout=1s", l.device)...)
			if r := row(out, l.device); code != 1 || r == nil || r[2] != "refused" || r[3] != "still_held" || !strings.Contains(strings.Join(r, " "), want) {
				t.Errorf("clean %s: exit %d\n%s\nwant 1, refused still_held naming %q", l.device, code, out, want)
			}
			if !netnstest.LinkExists(l.device) {
				t.Errorf("%s is gone although its namespace is held", l.device)
			}
			if _, err := os.Stat("/run/netns/" + l.netns); err != nil {
				t.Errorf("the mount point of the held namespace was removed: %v", err)
			}
		})
	}
}

// startSleeper starts a command that ends up as `sleep` (through exec)
// and returns its PID once it is; the test's end kills and reaps it.
func startSleeper(t *testing.T, args ...string) int {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "sleep" {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not sleep after 10 s", strings.Join(args, " "))
		}
	}
}

// BenchmarkClean measures decision and removal by `clean --all-orphans`,
// by each method, against `ip -batch` deleting the same number of
// leftovers one by one, in one run: 20 veths into each namespace, held
// only by its `ip netns add` mount. Each reports ms/deletion, and
// ip-batch how many times slower than each method it is (x-release,
// x-delete). Most of a deletion is the kernel's, which all pay.
func BenchmarkClean(b *testing.B) {
	netnstest.Require(b)
	exporterBinary(b) // built before any timing
	for _, n := range []int{1, 1000} {
		if n > 1 && testing.Short() {
			continue
		}
		perDeletion := map[string]float64{}
		for _, method := range []string{"release", "delete"} {
			b.Run(fmt.Sprintf("orphans=%d/%s", n, method), func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					ls := leftovers(b, n, 20)
					statePath := filepath.Join(b.TempDir(), "state.json")
					recordOrphans(b, statePath)
					b.StartTimer()
					out, code := clean(b, "--state.path="+statePath, "--all-orphans", "--remediation.method="+method,
						"--remediation.min-age=0s", "--remediation.max-orphan-ratio=1",
						"--remediation.max-per-request=100000", "--remediation.max-per-hour=0", "--remediation.master-include=lb[0-9]+br")
					b.StopTimer()
					released, wantReleased := strings.Count(out, " released /run/netns/"), 0
					if method == "release" {
						wantReleased = len(ls)
					}
					if code != 0 || strings.Count(out, " deleted ") != len(ls) || released != wantReleased {
						b.Fatalf("clean: exit %d, %d deleted, %d released, want %d by %s:\n%.2000s",
							code, strings.Count(out, " deleted "), released, len(ls), method, out)
					}
					b.StartTimer()
				}
				perDeletion[method] = float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N*n)
				b.ReportMetric(perDeletion[method], "ms/deletion")
			})
		}
		b.Run(fmt.Sprintf("orphans=%d/ip-batch", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				var batch strings.Builder
				for _, l := range leftovers(b, n, 20) {
					fmt.Fprintf(&batch, "link del %s\n", l.device)
				}
				path := filepath.Join(b.TempDir(), "del")
				if err := os.WriteFile(path, []byte(batch.String()), 0o644); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if out, err := exec.Command("ip", "-batch", path).CombinedOutput(); err != nil {
					b.Fatalf("ip -batch: %v\n%s", err, out)
				}
			}
			ms := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N*n)
			b.ReportMetric(ms, "ms/deletion")
			for method, by := range perDeletion {
				b.ReportMetric(ms/by, "x-"+method)
			}
		})
	}
}

// leftover is a veth whose peer sits in a namespace that only its mount
// /run/netns/<netns> holds.
type leftover struct{ device, netns string }

// leftovers makes n leftovers on a bridge of their own, perNetns of them
// into each namespace, and returns them. A cleanup deletes what is left of
// their namespaces and the bridge, and waits until the kernel has freed
// the namespaces, with their veths: the tests that follow see none of
// them. It runs after the cleanups registered later, which end whatever
// else held a namespace.
func leftovers(t testing.TB, n, perNetns int) []leftover {
	t.Helper()
	var batch, undo strings.Builder
	var ls []leftover
	prefix := fmt.Sprintf("lb%d", time.Now().UnixNano()%100000)
	fmt.Fprintf(&batch, "link add %sbr type bridge\nlink set %sbr up\n", prefix, prefix)
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("%sn%d", prefix, i/perNetns)
		if i%perNetns == 0 {
			fmt.Fprintf(&batch, "netns add %s\n", ns)
			fmt.Fprintf(&undo, "netns del %s\n", ns)
		}
		name := fmt.Sprintf("%sx%d", prefix, i)
		fmt.Fprintf(&batch, "link add %s type veth peer name eth%d netns %s\nlink set %s master %sbr up\n", name, i%perNetns, ns, name, prefix)
		ls = append(ls, leftover{device: name, netns: ns})
	}
	fmt.Fprintf(&undo, "link del %sbr\n", prefix)
	dir := t.TempDir()
	add, del := filepath.Join(dir, "add"), filepath.Join(dir, "del")
	if err := os.WriteFile(add, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(del, []byte(undo.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	inodes := map[string]uint64{}
	t.Cleanup(func() {
		// Most are gone by then: -force goes past each that is.
		_ = exec.Command("ip", "-force", "-batch", del).Run()
		// The kernel frees namespaces in one workqueue, for the whole
		// machine: seconds when every package's fixtures come and go.
		deadline := time.Now().Add(30 * time.Second)
		for _, l := range ls {
			for netnstest.LinkExists(l.device) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !netnstest.LinkExists(l.device) {
				continue
			}
			// Something of the test still holding it is a fault of the
			// test; nothing visible, a kernel behind. Either way the veth
			// goes, so that the tests that follow do not see it.
			if hs := kernel.Holders("/proc", map[uint64]bool{inodes[l.netns]: true})[inodes[l.netns]]; len(hs) > 0 {
				t.Errorf("leftover %s still there 30 s after its namespace was let go, held by %v", l.device, hs)
			} else {
				t.Logf("leftover %s still there 30 s after its namespace was let go, nothing visible holds it", l.device)
			}
			_ = exec.Command("ip", "link", "del", l.device).Run()
		}
	})
	if out, err := exec.Command("ip", "-force", "-batch", add).CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v\n%s", err, out)
	}
	for _, l := range ls {
		if _, ok := inodes[l.netns]; !ok {
			inodes[l.netns] = kernel.NsfsInode("/run/netns/" + l.netns)
		}
	}
	return ls
}

// recordOrphans runs the exporter once on the state file, as on a node
// where it runs: the orphans it sees get their orphaned-since times.
func recordOrphans(t testing.TB, statePath string) {
	t.Helper()
	e := startExporter(t, "--state.path="+statePath)
	e.scrape(t)
	e.stop(t)
}
