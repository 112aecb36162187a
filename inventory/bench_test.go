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

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
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
				if _, err := dumpLinks(); err != nil {
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
