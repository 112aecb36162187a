// Package collector exposes inventory snapshots as Prometheus metrics: one
// snapshot per scrape, shared with the scrapes that run at the same time,
// turned into metric families.
//
// A node can hold ten thousand veths and each has a dozen series, so the
// families are built directly as a prometheus.Gatherer, with label pairs
// shared between series, instead of through const metrics that client_golang
// would validate, copy and hash one by one: that path cost more than the
// netlink dump itself. Device names are unique in a snapshot, which is the
// consistency the registry would otherwise check.
//
// The collector only reads: it never changes an interface, a namespace or
// anything else on the node.
package collector

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// Snapshotter takes inventory snapshots. Concurrent scrapes share one
// build rather than queueing for one each, which would make a scrape
// wait for the builds of all those before it (see
// [inventory.Inventory.SharedSnapshot]).
type Snapshotter interface {
	SharedSnapshot(ctx context.Context) (*inventory.Snapshot, error)
}

// Config chooses which per-device series a scrape exposes. Aggregates and
// self-metrics are always exposed.
type Config struct {
	// PerDevice enables the per-veth families.
	PerDevice bool
	// DeviceInclude and DeviceExclude filter the per-veth families by
	// device name; nil matches everything and nothing respectively.
	DeviceInclude *regexp.Regexp
	DeviceExclude *regexp.Regexp
}

// Help texts of the families; the names and labels are a contract with
// dashboards and alerts.
const (
	helpInfo          = "Host-side veth interface; peer_ifindex is an index in the peer's namespace, peer_netnsid is empty when the peer is on the host (or its namespace has no id)."
	helpUp            = "Whether the veth's operstate is up."
	helpPeerAlive     = "Whether the peer's network namespace holds at least one process, or a container runtime runs a container in it (absent when the peer is on the host or its namespace was not found)."
	helpPeerProcesses = "Number of processes in the peer's network namespace (absent when the peer is on the host, its namespace was not found, or a container runtime runs a container in it and they were not counted)."
	helpOwner         = "Current owner of the veth's peer namespace."
	helpLastOwner     = "Owner an orphaned veth had when the exporter last saw it owned."
	helpOrphaned      = "Whether the veth is orphaned: nothing live owns it."
	helpVerdict       = "The exporter's verdict on the veth (owned, orphaned, unknown) and its reason."
	helpFirstSeen     = "When the exporter first saw the veth (kept across restarts in the state file)."
	helpOrphanedSince = "Since when the veth has been orphaned without interruption."
	helpInterfaces    = "Number of host-side veths by master bridge and verdict."
	helpStageDuration = "Duration of each stage of the inventory in this scrape."
	helpStageSuccess  = "Whether each stage of the inventory succeeded in this scrape."
	helpLeakedNetns   = "Network namespaces held only by a mount: no process in them and no host veth leading into them."
)

// Collector is a prometheus.Gatherer over inventory snapshots.
type Collector struct {
	src    Snapshotter
	cfg    Config
	logger *slog.Logger
}

// New returns a Collector that takes one snapshot from src per Gather.
func New(src Snapshotter, cfg Config, logger *slog.Logger) *Collector {
	return &Collector{src: src, cfg: cfg, logger: logger}
}

// Gather implements prometheus.Gatherer: one snapshot, its families
// sorted by name and their series by device. It never returns an error: a
// failed stage is reported by veth_scrape_collector_success.
func (c *Collector) Gather() ([]*dto.MetricFamily, error) {
	snap, err := c.src.SharedSnapshot(context.Background())
	if err != nil {
		c.logger.Error("inventory failed", "err", err)
	}
	if snap == nil {
		snap = &inventory.Snapshot{}
	}
	for _, w := range snap.Warnings {
		c.logger.Debug("inventory is partial", "warning", w)
	}

	b := newBuilder()
	duration := b.family("veth_scrape_collector_duration_seconds", helpStageDuration, len(snap.Steps))
	success := b.family("veth_scrape_collector_success", helpStageSuccess, len(snap.Steps))
	// By name, as client_golang would sort them, not in the order the
	// inventory happens to run its stages.
	steps := slices.SortedFunc(slices.Values(snap.Steps), func(a, b inventory.Step) int { return strings.Compare(a.Name, b.Name) })
	for _, st := range steps {
		stage := b.label("collector", st.Name)
		b.gauge(duration, st.Duration.Seconds(), stage)
		b.gauge(success, boolValue(st.Err == nil), stage)
	}
	// Each runtime resolver exposes what only it knows. Its request
	// counters are there even when the snapshot failed; a failed snapshot
	// has no veths for its other families to describe.
	for _, f := range runtimeFamilies(snap) {
		b.runtimeFamily(f)
	}
	if err == nil {
		b.counts(snap.Veths)
		if snap.LeakedNetns != nil {
			b.gauge(b.family("veth_leaked_netns", helpLeakedNetns, 1), float64(len(snap.LeakedNetns)))
		}
		if c.cfg.PerDevice {
			veths := make([]*inventory.Veth, 0, len(snap.Veths))
			for i := range snap.Veths {
				if c.wanted(snap.Veths[i].Name) {
					veths = append(veths, &snap.Veths[i])
				}
			}
			slices.SortFunc(veths, func(a, b *inventory.Veth) int { return strings.Compare(a.Name, b.Name) })
			b.veths(veths)
		}
	}
	return b.result(), nil
}

func (c *Collector) wanted(device string) bool {
	if c.cfg.DeviceInclude != nil && !c.cfg.DeviceInclude.MatchString(device) {
		return false
	}
	return c.cfg.DeviceExclude == nil || !c.cfg.DeviceExclude.MatchString(device)
}

// builder makes metric families. Label pairs are immutable once built, so
// one pair (device="veth1", verdict="orphaned", …) serves every series
// that carries it.
type builder struct {
	families []*family
	labels   map[[2]string]*dto.LabelPair
	gauge0   dto.MetricType
}

// family is a metric family whose series are carved from slabs allocated
// once, sized for its capacity: on a node with ten thousand veths that is
// a few allocations per family instead of three per series, and a lighter
// load on the garbage collector during every scrape.
type family struct {
	dto     *dto.MetricFamily
	metrics []dto.Metric
	gauges  []dto.Gauge
	values  []float64
}

func newBuilder() *builder {
	return &builder{labels: map[[2]string]*dto.LabelPair{}, gauge0: dto.MetricType_GAUGE}
}

func (b *builder) family(name, help string, capacity int) *family {
	f := &family{
		dto:     &dto.MetricFamily{Name: &name, Help: &help, Type: &b.gauge0, Metric: make([]*dto.Metric, 0, capacity)},
		metrics: make([]dto.Metric, capacity),
		gauges:  make([]dto.Gauge, capacity),
		values:  make([]float64, capacity),
	}
	b.families = append(b.families, f)
	return f
}

// label returns the shared pair for a value that repeats across series
// (a master, a verdict, a stage).
func (b *builder) label(name, value string) *dto.LabelPair {
	k := [2]string{name, validUTF8(value)}
	p := b.labels[k]
	if p == nil {
		p = &dto.LabelPair{Name: &k[0], Value: &k[1]}
		b.labels[k] = p
	}
	return p
}

// pair returns a new pair for a value unique to one veth.
func pair(name *string, value string) *dto.LabelPair {
	value = validUTF8(value)
	return &dto.LabelPair{Name: name, Value: &value}
}

// validUTF8 makes a label value valid UTF-8, which Prometheus requires of
// every label while the kernel allows any bytes but '/', ':' and white
// space in an interface name: one such name would fail the whole scrape.
// Invalid bytes become U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// gauge adds a series; labels must be sorted by name, as client_golang
// sorts them. Past its capacity a family allocates series one by one.
func (b *builder) gauge(f *family, value float64, labels ...*dto.LabelPair) {
	i := len(f.dto.Metric)
	if i >= len(f.metrics) {
		f.dto.Metric = append(f.dto.Metric, &dto.Metric{Label: labels, Gauge: &dto.Gauge{Value: &value}})
		return
	}
	f.values[i] = value
	f.gauges[i].Value = &f.values[i]
	m := &f.metrics[i]
	m.Label, m.Gauge = labels, &f.gauges[i]
	f.dto.Metric = append(f.dto.Metric, m)
}

// result drops empty families, as the registry does, and sorts by name.
func (b *builder) result() []*dto.MetricFamily {
	var out []*dto.MetricFamily
	for _, f := range b.families {
		if len(f.dto.Metric) > 0 {
			out = append(out, f.dto)
		}
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

var verdicts = []inventory.Verdict{inventory.Orphaned, inventory.Owned, inventory.Unknown}

// counts exposes every verdict for every master seen, zeros included, so
// that alerts and dashboards see a 0 rather than no series.
func (b *builder) counts(veths []inventory.Veth) {
	type key struct {
		master  string
		verdict inventory.Verdict
	}
	counts := map[key]int{}
	var masters []string
	for i := range veths {
		m := veths[i].Master
		if !slices.Contains(masters, m) {
			masters = append(masters, m)
		}
		counts[key{m, veths[i].Verdict}]++
	}
	slices.Sort(masters)
	if len(masters) == 0 {
		// A node without veths still says 0 of each verdict (under "no
		// master"): an absent series would read as "no data" on a dashboard
		// and keep a sum() alert from evaluating at all.
		masters = []string{""}
	}
	f := b.family("veth_interfaces", helpInterfaces, len(masters)*len(verdicts))
	for _, m := range masters {
		for _, v := range verdicts {
			b.gauge(f, float64(counts[key{m, v}]), b.label("master", m), b.label("verdict", string(v)))
		}
	}
}

// runtimeFamily adds a family a runtime resolver exposes.
// runtimeFamilies are the families of every runtime view of snap, those
// that several views expose (veth_bridge_info of Docker and Podman)
// joined into one, a series two of them give kept once.
func runtimeFamilies(snap *inventory.Snapshot) []inventory.Family {
	var families []inventory.Family
	index := map[string]int{}
	for _, view := range snap.Views {
		for _, f := range view.View.Families(snap) {
			i, ok := index[f.Name]
			if !ok {
				index[f.Name] = len(families)
				families = append(families, f)
				continue
			}
			joined := &families[i]
			joined.Series = slices.Concat(joined.Series, f.Series)
			slices.SortStableFunc(joined.Series, func(x, y inventory.Series) int { return slices.Compare(labelKey(x), labelKey(y)) })
			joined.Series = slices.CompactFunc(joined.Series, func(x, y inventory.Series) bool { return slices.Equal(labelKey(x), labelKey(y)) })
		}
	}
	return families
}

// labelKey is a series' labels as one comparable list.
func labelKey(s inventory.Series) []string {
	key := make([]string, 0, 2*len(s.Labels))
	for _, l := range s.Labels {
		key = append(key, l.Name, l.Value)
	}
	return key
}

func (b *builder) runtimeFamily(rf inventory.Family) {
	f := b.family(rf.Name, rf.Help, len(rf.Series))
	if rf.Counter {
		f.dto.Type = dto.MetricType_COUNTER.Enum()
	}
	for _, s := range rf.Series {
		var labels []*dto.LabelPair
		if len(s.Labels) > 0 {
			labels = make([]*dto.LabelPair, len(s.Labels))
			for i, l := range s.Labels {
				labels[i] = b.label(l.Name, l.Value)
			}
			// As client_golang sorts them, whatever the resolver did.
			slices.SortFunc(labels, func(x, y *dto.LabelPair) int { return strings.Compare(x.GetName(), y.GetName()) })
		}
		if rf.Counter {
			f.dto.Metric = append(f.dto.Metric, &dto.Metric{Label: labels, Counter: &dto.Counter{Value: proto.Float64(s.Value)}})
			continue
		}
		b.gauge(f, s.Value, labels...)
	}
}

// Label names, allocated once.
var (
	lDevice, lIfindex, lMaster, lPeerIfindex, lPeerNetnsid = "device", "ifindex", "master", "peer_ifindex", "peer_netnsid"
	lID, lName, lPodName, lPodNamespace, lPodUID           = "id", "name", "pod_name", "pod_namespace", "pod_uid"
)

func (b *builder) veths(veths []*inventory.Veth) {
	n := len(veths)
	var (
		info          = b.family("veth_info", helpInfo, n)
		up            = b.family("veth_up", helpUp, n)
		peerAlive     = b.family("veth_peer_netns_alive", helpPeerAlive, n)
		peerProcesses = b.family("veth_peer_netns_processes", helpPeerProcesses, n)
		owner         = b.family("veth_owner_info", helpOwner, n)
		lastOwner     = b.family("veth_last_owner_info", helpLastOwner, n)
		orphaned      = b.family("veth_orphaned", helpOrphaned, n)
		verdict       = b.family("veth_verdict_info", helpVerdict, n)
		firstSeen     = b.family("veth_first_seen_timestamp_seconds", helpFirstSeen, n)
		orphanedSince = b.family("veth_orphaned_since_timestamp_seconds", helpOrphanedSince, n)
	)
	for _, v := range veths {
		device := []*dto.LabelPair{pair(&lDevice, v.Name)}
		nsid := ""
		if v.PeerNetNSID >= 0 {
			nsid = strconv.Itoa(v.PeerNetNSID)
		}
		b.gauge(info, 1, device[0], pair(&lIfindex, strconv.Itoa(v.Index)), b.label(lMaster, v.Master),
			pair(&lPeerIfindex, strconv.Itoa(v.PeerIndex)), b.label(lPeerNetnsid, nsid))
		b.gauge(up, boolValue(v.OperState == "up"), device...)
		if ns := v.PeerNetns; ns != nil {
			b.gauge(peerAlive, boolValue(!ns.Empty()), device...)
			if !ns.Uncounted {
				// A count not taken is absent, not zero.
				b.gauge(peerProcesses, float64(len(ns.PIDs)), device...)
			}
		}
		if o := v.Owner; o != nil {
			b.gauge(owner, 1, b.ownerLabels(device[0], o)...)
		}
		isOrphan := v.Verdict == inventory.Orphaned
		if o := v.LastOwner; o != nil && isOrphan {
			b.gauge(lastOwner, 1, b.ownerLabels(device[0], o)...)
		}
		b.gauge(orphaned, boolValue(isOrphan), device...)
		b.gauge(verdict, 1, device[0], b.label("reason", string(v.Reason)), b.label("verdict", string(v.Verdict)))
		if !v.FirstSeen.IsZero() {
			b.gauge(firstSeen, unixSeconds(v.FirstSeen), device...)
		}
		if isOrphan && !v.OrphanedSince.IsZero() {
			b.gauge(orphanedSince, unixSeconds(v.OrphanedSince), device...)
		}
	}
}

// ownerLabels are the labels of veth_owner_info and veth_last_owner_info,
// sorted by name.
func (b *builder) ownerLabels(device *dto.LabelPair, o *inventory.Owner) []*dto.LabelPair {
	return []*dto.LabelPair{
		device,
		b.label(lID, o.ID),
		b.label("kind", string(o.Kind)),
		b.label(lName, o.Name),
		b.label(lPodName, o.PodName),
		b.label(lPodNamespace, o.PodNamespace),
		b.label(lPodUID, o.PodUID),
	}
}

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Gatherers joins the families of several gatherers whose metric names do
// not overlap (the registry's Go, process and build metrics, and a
// Collector), without the per-series consistency checks of
// prometheus.Gatherers.
type Gatherers []prometheus.Gatherer

// Gather implements prometheus.Gatherer.
func (gs Gatherers) Gather() ([]*dto.MetricFamily, error) {
	var all []*dto.MetricFamily
	var errs prometheus.MultiError
	for _, g := range gs {
		mfs, err := g.Gather()
		errs.Append(err)
		all = append(all, mfs...)
	}
	slices.SortFunc(all, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	for i := 1; i < len(all); i++ {
		if all[i].GetName() == all[i-1].GetName() {
			errs.Append(&duplicateFamilyError{all[i].GetName()})
		}
	}
	return all, errs.MaybeUnwrap()
}

type duplicateFamilyError struct{ name string }

func (e *duplicateFamilyError) Error() string {
	return "metric family " + e.name + " gathered twice"
}
