// Package collector exposes inventory snapshots as Prometheus metrics: one
// fresh snapshot per scrape, turned into const metrics.
//
// The collector only reads: it never changes an interface, a namespace or
// anything else on the node.
package collector

import (
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// Snapshotter takes a fresh inventory snapshot.
type Snapshotter interface {
	Snapshot(ctx context.Context) (*inventory.Snapshot, error)
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
	// Timeout bounds one snapshot.
	Timeout time.Duration
}

var (
	ownerLabels = []string{"device", "kind", "id", "name", "pod_namespace", "pod_name", "pod_uid"}

	infoDesc = prometheus.NewDesc("veth_info",
		"Host-side veth interface; peer_ifindex is an index in the peer's namespace, peer_netnsid is empty when the peer is on the host.",
		[]string{"device", "ifindex", "master", "peer_ifindex", "peer_netnsid"}, nil)
	upDesc = prometheus.NewDesc("veth_up",
		"Whether the veth's operstate is up.", []string{"device"}, nil)
	peerAliveDesc = prometheus.NewDesc("veth_peer_netns_alive",
		"Whether the peer's network namespace holds at least one process (absent when the peer is on the host or its namespace was not found).", []string{"device"}, nil)
	peerProcessesDesc = prometheus.NewDesc("veth_peer_netns_processes",
		"Number of processes in the peer's network namespace (absent when the peer is on the host or its namespace was not found).", []string{"device"}, nil)
	ownerDesc = prometheus.NewDesc("veth_owner_info",
		"Current owner of the veth's peer namespace.", ownerLabels, nil)
	lastOwnerDesc = prometheus.NewDesc("veth_last_owner_info",
		"Owner an orphaned veth had when the exporter last saw it owned.", ownerLabels, nil)
	orphanedDesc = prometheus.NewDesc("veth_orphaned",
		"Whether the veth is orphaned: nothing live owns it.", []string{"device"}, nil)
	verdictDesc = prometheus.NewDesc("veth_verdict_info",
		"The exporter's verdict on the veth (owned, orphaned, unknown) and its reason.", []string{"device", "verdict", "reason"}, nil)
	firstSeenDesc = prometheus.NewDesc("veth_first_seen_timestamp_seconds",
		"When the exporter first saw the veth (kept across restarts in the state file).", []string{"device"}, nil)
	orphanedSinceDesc = prometheus.NewDesc("veth_orphaned_since_timestamp_seconds",
		"Since when the veth has been orphaned without interruption.", []string{"device"}, nil)
	interfacesDesc = prometheus.NewDesc("veth_interfaces",
		"Number of host-side veths by master bridge and verdict.", []string{"master", "verdict"}, nil)
	durationDesc = prometheus.NewDesc("veth_scrape_collector_duration_seconds",
		"Duration of each stage of the inventory in this scrape.", []string{"collector"}, nil)
	successDesc = prometheus.NewDesc("veth_scrape_collector_success",
		"Whether each stage of the inventory succeeded in this scrape.", []string{"collector"}, nil)
)

// Collector is a prometheus.Collector over inventory snapshots.
type Collector struct {
	src    Snapshotter
	cfg    Config
	logger *slog.Logger
}

// New returns a Collector that takes one snapshot from src per scrape.
func New(src Snapshotter, cfg Config, logger *slog.Logger) *Collector {
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &Collector{src: src, cfg: cfg, logger: logger}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		infoDesc, upDesc, peerAliveDesc, peerProcessesDesc, ownerDesc, lastOwnerDesc,
		orphanedDesc, verdictDesc, firstSeenDesc, orphanedSinceDesc, interfacesDesc,
		durationDesc, successDesc,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	snap, err := c.src.Snapshot(ctx)
	if err != nil {
		c.logger.Error("inventory failed", "err", err)
	}
	for _, w := range snap.Warnings {
		c.logger.Debug("inventory is partial", "warning", w)
	}
	for _, st := range snap.Steps {
		ch <- prometheus.MustNewConstMetric(durationDesc, prometheus.GaugeValue, st.Duration.Seconds(), st.Name)
		ch <- prometheus.MustNewConstMetric(successDesc, prometheus.GaugeValue, boolValue(st.Err == nil), st.Name)
	}
	if err != nil {
		return
	}
	c.collectCounts(ch, snap.Veths)
	if !c.cfg.PerDevice {
		return
	}
	for i := range snap.Veths {
		if v := &snap.Veths[i]; c.wanted(v.Name) {
			collectVeth(ch, v)
		}
	}
}

func (c *Collector) wanted(device string) bool {
	if c.cfg.DeviceInclude != nil && !c.cfg.DeviceInclude.MatchString(device) {
		return false
	}
	return c.cfg.DeviceExclude == nil || !c.cfg.DeviceExclude.MatchString(device)
}

// collectCounts exposes every verdict for every master seen, zeros
// included, so that alerts and dashboards see a 0 rather than no series.
func (c *Collector) collectCounts(ch chan<- prometheus.Metric, veths []inventory.Veth) {
	type key struct {
		master  string
		verdict inventory.Verdict
	}
	counts := map[key]int{}
	masters := map[string]bool{}
	for i := range veths {
		counts[key{veths[i].Master, veths[i].Verdict}]++
		masters[veths[i].Master] = true
	}
	for m := range masters {
		for _, v := range []inventory.Verdict{inventory.Owned, inventory.Orphaned, inventory.Unknown} {
			ch <- prometheus.MustNewConstMetric(interfacesDesc, prometheus.GaugeValue, float64(counts[key{m, v}]), m, string(v))
		}
	}
}

func collectVeth(ch chan<- prometheus.Metric, v *inventory.Veth) {
	gauge := func(d *prometheus.Desc, value float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, value, append([]string{v.Name}, labels...)...)
	}
	nsid := ""
	if !v.PeerOnHost() {
		nsid = strconv.Itoa(v.PeerNetNSID)
	}
	gauge(infoDesc, 1, strconv.Itoa(v.Index), v.Master, strconv.Itoa(v.PeerIndex), nsid)
	gauge(upDesc, boolValue(v.OperState == "up"))
	if n := v.PeerNetns; n != nil {
		gauge(peerAliveDesc, boolValue(len(n.PIDs) > 0))
		gauge(peerProcessesDesc, float64(len(n.PIDs)))
	}
	if o := v.Owner; o != nil {
		gauge(ownerDesc, 1, ownerLabelValues(o)...)
	}
	orphaned := v.Verdict == inventory.Orphaned
	if o := v.LastOwner; o != nil && orphaned {
		gauge(lastOwnerDesc, 1, ownerLabelValues(o)...)
	}
	gauge(orphanedDesc, boolValue(orphaned))
	gauge(verdictDesc, 1, string(v.Verdict), string(v.Reason))
	if !v.FirstSeen.IsZero() {
		gauge(firstSeenDesc, unixSeconds(v.FirstSeen))
	}
	if orphaned && !v.OrphanedSince.IsZero() {
		gauge(orphanedSinceDesc, unixSeconds(v.OrphanedSince))
	}
}

func ownerLabelValues(o *inventory.Owner) []string {
	return []string{string(o.Kind), o.ID, o.Name, o.PodNamespace, o.PodName, o.PodUID}
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
