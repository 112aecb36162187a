package collector

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/resolver/docker"
)

// variedSnapshot is a node of n veths that between them take every
// branch of every per-veth family: no peer namespace, uncounted
// processes, no owner, a last owner on owned and orphaned veths, no
// first-seen time, orphaned with and without a time, peers on the host,
// timestamps with nanoseconds, names that need escaping.
func variedSnapshot(n int) *inventory.Snapshot {
	t0 := time.Unix(1_700_000_000, 123_456_789)
	s := &inventory.Snapshot{Taken: t0, Steps: []inventory.Step{{Name: "links"}, {Name: "netns"}, {Name: "cgroup", Err: errors.New("no")}}}
	names := []string{`q"uote`, `back\slash`, "new\nline", "bad\xff\xfeutf8", "ünï", ""}
	for i := range n {
		v := inventory.Veth{
			Name: fmt.Sprintf("v%d%s", i, names[i%len(names)]), Index: i * 7919, Master: names[(i/3)%len(names)],
			OperState: []string{"up", "down", "lowerlayerdown", ""}[i%4], PeerIndex: i % 13, PeerNetNSID: i%11 - 1,
			Verdict: []inventory.Verdict{inventory.Owned, inventory.Orphaned, inventory.Unknown}[i%3],
			Reason:  []inventory.Reason{inventory.ReasonContainer, inventory.ReasonNetnsEmpty, inventory.ReasonPeerOnHost}[i%3],
		}
		if i%5 != 0 {
			v.PeerNetns = &inventory.Namespace{Inode: uint64(i), NSID: i, PIDs: make([]int, i%4), Uncounted: i%7 == 0}
		}
		owner := &inventory.Owner{Kind: inventory.OwnerPod, ID: fmt.Sprintf("%064x", i), Name: names[i%len(names)],
			PodName: "web-" + names[(i+1)%len(names)], PodNamespace: names[(i+2)%len(names)], PodUID: fmt.Sprint(i)}
		if i%2 == 0 {
			v.Owner = owner
		}
		if i%3 != 2 {
			v.LastOwner = owner
		}
		if i%9 != 4 {
			v.FirstSeen = t0.Add(time.Duration(i) * time.Millisecond)
		}
		if i%4 != 1 {
			v.OrphanedSince = t0.Add(time.Duration(i) * time.Second)
		}
		s.Veths = append(s.Veths, v)
	}
	return s
}

// TestGatherTextMatchesExpfmt: the families written as text are, byte
// for byte, what expfmt writes for the families built as data, merged
// with a registry's in name order.
func TestGatherTextMatchesExpfmt(t *testing.T) {
	failed := testSnapshot()
	withDocker := testSnapshot()
	withDocker.Views = []inventory.NamedView{{Name: "docker", View: &docker.View{Up: true, Bridges: map[string]string{"docker0": "bridge"},
		Containers: []*docker.Container{{ID: "abc", Name: "api", Image: "bb:local", State: "running"}}, Requests: 3}}}
	withDocker.LeakedNetns = []*inventory.Namespace{{Inode: 99}}
	utf8 := testSnapshot()
	utf8.Veths[0].Name = "p\xfe"
	tests := []struct {
		name string
		src  fakeInventory
		cfg  Config
	}{
		{"test snapshot", fakeInventory{snap: testSnapshot()}, Config{PerDevice: true}},
		{"varied", fakeInventory{snap: variedSnapshot(500)}, Config{PerDevice: true}},
		{"one veth", fakeInventory{snap: variedSnapshot(1)}, Config{PerDevice: true}},
		{"invalid UTF-8", fakeInventory{snap: utf8}, Config{PerDevice: true}},
		{"docker", fakeInventory{snap: withDocker}, Config{PerDevice: true}},
		{"filtered", fakeInventory{snap: variedSnapshot(60)}, Config{PerDevice: true,
			DeviceInclude: regexp.MustCompile(`^v[0-9]*[qb]`), DeviceExclude: regexp.MustCompile(`^v1`)}},
		{"nothing left by the filter", fakeInventory{snap: testSnapshot()}, Config{PerDevice: true, DeviceInclude: regexp.MustCompile(`^none$`)}},
		{"per-device off", fakeInventory{snap: variedSnapshot(60)}, Config{}},
		{"link dump failed", fakeInventory{snap: failed, err: errors.New("netlink: EPERM")}, Config{PerDevice: true}},
		{"no snapshot", fakeInventory{err: errors.New("deadline")}, Config{PerDevice: true}},
		{"no veths", fakeInventory{snap: &inventory.Snapshot{}}, Config{PerDevice: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			// Names that sort among the collector's: the merge must keep
			// name order across gatherers.
			reg.MustRegister(versioncollector.NewCollector("veth_exporter"),
				prometheus.NewCounter(prometheus.CounterOpts{Name: "veth_orphaned_removed_total", Help: "A counter."}),
				prometheus.NewGauge(prometheus.GaugeOpts{Name: "veth_a_gauge", Help: "Help with \\ and \n."}))
			g := Gatherers{reg, New(tt.src, tt.cfg, slog.New(slog.DiscardHandler))}
			for _, format := range []expfmt.Format{
				expfmt.NewFormat(expfmt.TypeTextPlain),
				expfmt.NewFormat(expfmt.TypeTextPlain) + "; escaping=allow-utf-8",
				expfmt.NewFormat(expfmt.TypeTextPlain) + "; escaping=underscores",
			} {
				mfs, err := g.Gather()
				if err != nil {
					t.Fatal(err)
				}
				var want bytes.Buffer
				enc := expfmt.NewEncoder(&want, format)
				for _, mf := range mfs {
					if err := enc.Encode(mf); err != nil {
						t.Fatal(err)
					}
				}

				families, err := g.GatherText()
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				w := bufio.NewWriterSize(&got, 256) // small: lines cross its end
				enc = expfmt.NewEncoder(w, format)
				for _, f := range families {
					if err := f.WriteText(w, enc); err != nil {
						t.Fatal(err)
					}
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), want.Bytes()) {
					t.Errorf("format %q: GatherText written:\n%s\nwant expfmt of Gather:\n%s", format, got.Bytes(), want.Bytes())
				}
			}
		})
	}
}

func TestGatherTextRejectsDuplicateFamilies(t *testing.T) {
	c := New(fakeInventory{snap: testSnapshot()}, Config{PerDevice: true}, slog.New(slog.DiscardHandler))
	families, err := Gatherers{c, c}.GatherText()
	if err == nil || !strings.Contains(err.Error(), "veth_info gathered twice") {
		t.Errorf("Gatherers{c, c}.GatherText() error = %v, want a duplicate family error", err)
	}
	if len(families) == 0 {
		t.Error("Gatherers{c, c}.GatherText() returned no families with its error")
	}
}

func TestAppendFloat(t *testing.T) {
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1, 2, 0.5, 1e-9, 1.7000000001234567e+09, 123456789012,
		math.NaN(), math.Inf(1), math.Inf(-1)} {
		name, typ := "x", dto.MetricType_GAUGE
		mf := &dto.MetricFamily{Name: &name, Type: &typ, Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: &f}}}}
		var want bytes.Buffer
		if _, err := expfmt.MetricFamilyToText(&want, mf); err != nil {
			t.Fatal(err)
		}
		line := strings.Split(want.String(), "\n")[1]
		if got := string(appendFloat([]byte("x "), f)); got != line {
			t.Errorf("appendFloat(%v) = %q, want %q", f, got, line)
		}
	}
}
