package inventory

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/kernel"
)

// benchFixture grows a node-like fixture: veths in groups of 20 per peer
// namespace, 4 of 5 namespaces held by a process and 1 of 5 only by a bind
// mount, host ends spread over bridges of at most 1,000 ports.
type benchFixture struct {
	veths, namespaces int
}

const vethsPerNamespace = 20

func (f *benchFixture) growTo(b *testing.B, veths int) {
	var batch strings.Builder
	for f.veths < veths {
		ns := f.namespaces
		f.namespaces++
		target := ""
		if ns%5 == 4 {
			target = "bench" + strconv.Itoa(ns)
			fmt.Fprintf(&batch, "netns add %s\n", target)
		} else {
			target = strconv.Itoa(netnstest.Holder(b, ""))
		}
		for k := 0; k < vethsPerNamespace && f.veths < veths; k++ {
			bridge := "bbr" + strconv.Itoa(f.veths/1000)
			if f.veths%1000 == 0 {
				fmt.Fprintf(&batch, "link add %s type bridge\nlink set %s up\n", bridge, bridge)
			}
			name := fmt.Sprintf("vb%dx%d", ns, k)
			fmt.Fprintf(&batch, "link add %s type veth peer name eth%d netns %s\n", name, k, target)
			fmt.Fprintf(&batch, "link set %s master %s up\n", name, bridge)
			f.veths++
		}
	}
	path := filepath.Join(b.TempDir(), "batch")
	if err := os.WriteFile(path, []byte(batch.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("ip", "-force", "-batch", path).CombinedOutput(); err != nil {
		b.Fatalf("ip -batch: %v\n%s", err, out)
	}
}

// BenchmarkSnapshot measures one snapshot (what a scrape costs) against the
// bare netlink link dump it starts with, at node-like sizes. The fixture
// grows from one size to the next and lives until the namespace dies with
// the test binary.
func BenchmarkSnapshot(b *testing.B) {
	netnstest.Require(b)
	var f benchFixture
	for _, size := range []int{1000, 10000} {
		if size > 1000 && testing.Short() {
			b.Logf("-short: skipping %d veths", size)
			continue
		}
		f.growTo(b, size)
		// The baseline: the library's own full dump, what any tool
		// listing links with vishvananda/netlink pays.
		b.Run(fmt.Sprintf("veths=%d/linklist", size), func(b *testing.B) {
			for b.Loop() {
				if _, err := netlink.LinkList(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("veths=%d/dump", size), func(b *testing.B) {
			for b.Loop() {
				if _, err := kernel.DumpLinks(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("veths=%d/snapshot", size), func(b *testing.B) {
			inv := New(Config{TrustPIDNamespace: true, State: OpenState(filepath.Join(b.TempDir(), "state.json"), StateOptions{})})
			steps := map[string]time.Duration{}
			for b.Loop() {
				s, err := inv.Snapshot(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				if len(s.Veths) != size {
					b.Fatalf("snapshot has %d veths, want %d", len(s.Veths), size)
				}
				for _, st := range s.Steps {
					steps[st.Name] += st.Duration
				}
			}
			// Where the time goes, per stage of the snapshot.
			for name, d := range steps {
				b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), name+"-ms/op")
			}
		})
	}
}

// busyNode builds a busy node: 250 veths whose peers sit in 25
// namespaces, each held by a process in a container's cgroup, and the
// processes of [netnstest.DefaultBusyNode] (2,000 processes with 20,000
// threads in all), every one in a peer namespace and its container's
// cgroup. Nothing is orphaned. It returns the holders, the processes a
// runtime would name for the namespaces.
func busyNode(b *testing.B) []int {
	const (
		namespaces = 25
		veths      = 250
	)
	holders := make([]int, namespaces)
	cgroups := make([]string, namespaces)
	var batch strings.Builder
	batch.WriteString("link add bbusy type bridge\nlink set bbusy up\n")
	for i := range holders {
		cgroups[i] = fmt.Sprintf("/docker/%064x", 0xb0b0000+i)
		holders[i] = netnstest.Holder(b, cgroups[i])
		for k := 0; k < veths/namespaces; k++ {
			fmt.Fprintf(&batch, "link add vbusy%dx%d type veth peer name eth%d netns %d\n", i, k, k, holders[i])
			fmt.Fprintf(&batch, "link set vbusy%dx%d master bbusy up\n", i, k)
		}
	}
	path := filepath.Join(b.TempDir(), "batch")
	if err := os.WriteFile(path, []byte(batch.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("ip", "-force", "-batch", path).CombinedOutput(); err != nil {
		b.Fatalf("ip -batch: %v\n%s", err, out)
	}
	// The holders are processes too.
	node := netnstest.DefaultBusyNode()
	node.Processes -= namespaces
	node.Place = func(i int) (string, int) { return cgroups[i%namespaces], holders[i%namespaces] }
	node.Start(b)
	return holders
}

// BenchmarkBusyNode compares, on the busy node and in one run, a
// snapshot taken as before (every thread read, every cgroup read on every
// scrape, a scan whatever the runtimes say) with one taken now, and both
// with one bare pass over /proc/*/ns/net: without a runtime resolver, and
// with one that runs a container in every peer namespace (its answers
// made up front: what a resolver itself costs is BenchmarkDockerScrape's
// and BenchmarkCRIScrape's to measure); then again with one leftover
// held by a mount, which makes every process and thread count. Each
// inventory takes one scrape before the timed ones (reported as
// cold-ms): a scrape's steady cost is what a node pays.
func BenchmarkBusyNode(b *testing.B) {
	netnstest.Require(b)
	if testing.Short() {
		b.Skip("2,000 processes and 20,000 threads are no smoke test: run without -short (make bench)")
	}
	holders := busyNode(b)
	runtime := &fakeResolver{step: "runtime"}
	for _, pid := range holders {
		path := "/proc/" + strconv.Itoa(pid) + "/ns/net"
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			b.Fatal(err)
		}
		runtime.running = append(runtime.running, RunningNetns{Inode: st.Ino, Path: path, PID: pid})
	}
	run := func(name string, noShortcuts, withRuntime bool, orphans int) {
		b.Run(name, func(b *testing.B) {
			cfg := Config{TrustPIDNamespace: true, State: OpenState(filepath.Join(b.TempDir(), "state.json"), StateOptions{})}
			if withRuntime {
				cfg.Resolvers = []Resolver{runtime}
			}
			inv := New(cfg)
			inv.noShortcuts = noShortcuts
			scrape := func() *Snapshot {
				s, err := inv.Snapshot(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				orphaned := 0
				for _, v := range s.Veths {
					if v.Verdict == Orphaned || v.Reason == ReasonSettling {
						orphaned++
					}
				}
				if orphaned != orphans || len(s.Warnings) > 0 {
					b.Fatalf("%d orphaned (or settling) veths, want %d; warnings %q", orphaned, orphans, s.Warnings)
				}
				return s
			}
			start := time.Now()
			scrape()
			cold := time.Since(start)
			steps := map[string]time.Duration{}
			for b.Loop() {
				for _, st := range scrape().Steps {
					steps[st.Name] += st.Duration
				}
			}
			for name, d := range steps {
				b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), name+"-ms/op")
			}
			b.ReportMetric(float64(cold.Microseconds())/1000, "cold-ms")
		})
	}
	b.Run("bare-proc-pass", func(b *testing.B) {
		for b.Loop() {
			names, err := kernel.ReadDirNames("/proc")
			if err != nil {
				b.Fatal(err)
			}
			var st unix.Stat_t
			for _, name := range names {
				if name[0] >= '0' && name[0] <= '9' {
					_ = unix.Stat("/proc/"+name+"/ns/net", &st)
				}
			}
		}
	})
	run("before", true, false, 0)
	run("now", false, false, 0)
	run("runtime/before", true, true, 0)
	run("runtime/now", false, true, 0)
	netnstest.IP(b, "netns", "add", "busyleft")
	netnstest.Veth(b, "vbusyleft", "busyleft", "bbusy")
	run("leftover/before", true, false, 1)
	run("leftover/now", false, false, 1)
	run("leftover/runtime/now", false, true, 1)
}
