// Package collector exposes inventory snapshots as Prometheus metrics: one
// snapshot per scrape, shared with the scrapes that run at the same time,
// turned into metric families.
//
// A node can hold ten thousand veths and each has a dozen series, so the
// families are built directly as a prometheus.Gatherer, with label pairs
// shared between series, instead of through const metrics that client_golang
// would validate, copy and hash one by one: that path cost more than the
// netlink dump itself. Device names are unique in a snapshot, which is the
// consistency the registry would otherwise check. In the text format,
// which Prometheus asks for unless told to scrape protobuf, the per-veth
// families are not built at all but written straight from the snapshot
// ([TextGatherer]): the same text for a fraction of the cost
// (BenchmarkScrape).
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
	helpResolver      = "Whether each registered runtime resolver runs (1) or is off (0: no socket at its address at start-up, or --no-collector.<resolver>); while it is off, namespaces pinned where its runtime pins them are unknown, reason resolver_off."
	helpPartialView   = "Whether the inventory could not see every process that can hold a network namespace (not root, unreadable processes, not the host's PID namespace): 1 means no veth with a peer in another namespace can be called orphaned."
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
	return c.build(false).result(), nil
}

// GatherText implements [TextGatherer]: the families of Gather, the
// per-veth ones left to write themselves in the text format.
func (c *Collector) GatherText() ([]TextFamily, error) {
	return c.build(true).textResult(), nil
}

// build takes one snapshot and makes its families; with text, the
// per-veth families are not built as data but kept to be written as text.
func (c *Collector) build(text bool) *builder {
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
	b.text = text
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
	resolvers := slices.SortedFunc(slices.Values(snap.Resolvers), func(a, b inventory.RuntimeSetup) int { return strings.Compare(a.Name, b.Name) })
	enabled := b.family("veth_resolver_enabled", helpResolver, len(resolvers))
	for _, r := range resolvers {
		b.gauge(enabled, boolValue(r.Enabled), b.label("resolver", r.Name))
	}
	// Each runtime resolver exposes what only it knows. Its request
	// counters are there even when the snapshot failed; a failed snapshot
	// has no veths for its other families to describe.
	for _, f := range runtimeFamilies(snap) {
		b.runtimeFamily(f)
	}
	if err == nil {
		b.counts(snap.Veths)
		b.gauge(b.family("veth_inventory_partial_view", helpPartialView, 1), boolValue(snap.PartialView))
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
			if b.text {
				b.vethText(veths)
			} else {
				b.veths(veths)
			}
		}
	}
	return b
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
	// text: the per-veth families go to vethFamilies to be written as
	// text, not built as data.
	text         bool
	vethFamilies []TextFamily
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

// vethFamily is a family with one series per veth at most. The table
// below says which veths have a series and its value once, for the
// families built as data and for those written as text.
type vethFamily struct {
	name, help string
	labels     labelSet
	// value is the value of v's series; ok is false when v has none.
	value func(v *inventory.Veth) (value float64, ok bool)
}

// labelSet is which labels a per-veth family's series carry.
type labelSet uint8

const (
	deviceLabel     labelSet = iota // device
	infoLabels                      // device, ifindex, master, peer_ifindex, peer_netnsid
	ownerLabels                     // device and the owner's id, kind, name, pod_name, pod_namespace, pod_uid
	lastOwnerLabels                 // the same of the last owner
	verdictLabels                   // device, reason, verdict
)

var vethFamilies = []vethFamily{
	{"veth_info", helpInfo, infoLabels, func(*inventory.Veth) (float64, bool) { return 1, true }},
	{"veth_up", helpUp, deviceLabel, func(v *inventory.Veth) (float64, bool) { return boolValue(v.OperState == "up"), true }},
	{"veth_peer_netns_alive", helpPeerAlive, deviceLabel, func(v *inventory.Veth) (float64, bool) {
		if v.PeerNetns == nil {
			return 0, false
		}
		return boolValue(!v.PeerNetns.Empty()), true
	}},
	{"veth_peer_netns_processes", helpPeerProcesses, deviceLabel, func(v *inventory.Veth) (float64, bool) {
		// A count not taken is absent, not zero.
		if v.PeerNetns == nil || v.PeerNetns.Uncounted {
			return 0, false
		}
		return float64(len(v.PeerNetns.PIDs)), true
	}},
	{"veth_owner_info", helpOwner, ownerLabels, func(v *inventory.Veth) (float64, bool) { return 1, v.Owner != nil }},
	{"veth_last_owner_info", helpLastOwner, lastOwnerLabels, func(v *inventory.Veth) (float64, bool) {
		return 1, v.LastOwner != nil && v.Verdict == inventory.Orphaned
	}},
	{"veth_orphaned", helpOrphaned, deviceLabel, func(v *inventory.Veth) (float64, bool) {
		return boolValue(v.Verdict == inventory.Orphaned), true
	}},
	{"veth_verdict_info", helpVerdict, verdictLabels, func(*inventory.Veth) (float64, bool) { return 1, true }},
	{"veth_first_seen_timestamp_seconds", helpFirstSeen, deviceLabel, func(v *inventory.Veth) (float64, bool) {
		return unixSeconds(v.FirstSeen), !v.FirstSeen.IsZero()
	}},
	{"veth_orphaned_since_timestamp_seconds", helpOrphanedSince, deviceLabel, func(v *inventory.Veth) (float64, bool) {
		return unixSeconds(v.OrphanedSince), v.Verdict == inventory.Orphaned && !v.OrphanedSince.IsZero()
	}},
}

func (b *builder) veths(veths []*inventory.Veth) {
	families := make([]*family, len(vethFamilies))
	for i, vf := range vethFamilies {
		families[i] = b.family(vf.name, vf.help, len(veths))
	}
	for _, v := range veths {
		// One pair and one list for every series that carries only it.
		device := []*dto.LabelPair{pair(&lDevice, v.Name)}
		for i := range vethFamilies {
			vf := &vethFamilies[i]
			if value, ok := vf.value(v); ok {
				b.gauge(families[i], value, b.vethLabels(vf.labels, v, device)...)
			}
		}
	}
}

// vethLabels are the labels of v's series in a family with the set,
// sorted by name; device is v's device label alone.
func (b *builder) vethLabels(set labelSet, v *inventory.Veth, device []*dto.LabelPair) []*dto.LabelPair {
	switch set {
	case infoLabels:
		return []*dto.LabelPair{device[0], pair(&lIfindex, strconv.Itoa(v.Index)), b.label(lMaster, v.Master),
			pair(&lPeerIfindex, strconv.Itoa(v.PeerIndex)), b.label(lPeerNetnsid, peerNetnsid(v))}
	case ownerLabels:
		return b.ownerLabels(device[0], v.Owner)
	case lastOwnerLabels:
		return b.ownerLabels(device[0], v.LastOwner)
	case verdictLabels:
		return []*dto.LabelPair{device[0], b.label("reason", string(v.Reason)), b.label("verdict", string(v.Verdict))}
	}
	return device
}

// peerNetnsid is the peer_netnsid label: empty when the peer is on the
// host or its namespace has no id.
func peerNetnsid(v *inventory.Veth) string {
	if v.PeerNetNSID < 0 {
		return ""
	}
	return strconv.Itoa(v.PeerNetNSID)
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
	errs = append(errs, sortFamilies(all, (*dto.MetricFamily).GetName)...)
	return all, errs.MaybeUnwrap()
}

// sortFamilies sorts families by name and returns an error for each name
// that comes twice.
func sortFamilies[F any](families []F, name func(F) string) []error {
	slices.SortFunc(families, func(a, b F) int { return strings.Compare(name(a), name(b)) })
	var errs []error
	for i := 1; i < len(families); i++ {
		if n := name(families[i]); n == name(families[i-1]) {
			errs = append(errs, &duplicateFamilyError{n})
		}
	}
	return errs
}

type duplicateFamilyError struct{ name string }

func (e *duplicateFamilyError) Error() string {
	return "metric family " + e.name + " gathered twice"
}
