// Command gen writes dashboards/veth-exporter.json, the Grafana dashboard of
// veth_exporter, from the definition below: the one place the dashboard is
// edited (`make dashboards` regenerates the JSON; a test fails while the
// committed file differs). It lives in a module of its own so that the
// exporter's go.mod never carries the Grafana SDK.
//
// Every query reads only what the exporter exposes; the names and labels
// are the contract documented in the README's Metrics section.
package main

import (
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

const (
	// runbooks is the README's anchor prefix for the alerts' runbooks.
	runbooks = "https://github.com/veth-exporter/veth_exporter#runbook-"
	// node selects the targets the $job and $instance variables pick.
	node = `job=~"$job", instance=~"$instance"`
	// withMaster gives a per-device vector the master of its veth
	// (veth_info), keeping only the masters $master picks. Per-device
	// series carry no master label of their own.
	withMaster = ` * on (job, instance, device) group_left (master) veth_info{` + node + `, master=~"$master"}`
)

// datasource is the $datasource variable: no UID is hard-coded, so the
// dashboard imports into any Grafana.
var datasource = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// query is a range query of $datasource with a legend.
func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Datasource(datasource).Expr(expr).LegendFormat(legend).Range()
}

// tableQuery is an instant query of $datasource whose result is a table.
func tableQuery(expr, refID string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Datasource(datasource).Expr(expr).RefId(refID).
		Instant().Format(prometheus.PromQueryFormatTable)
}

// graph is a time series panel of width span.
func graph(title, description, unit string, span uint32, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().Title(title).Description(description).Unit(unit).Min(0).
		Datasource(datasource).Height(8).Span(span)
	for _, t := range targets {
		p.WithTarget(t)
	}
	return p
}

// single is a stat panel showing the last value of each series.
func single(title, description, unit string, span uint32, target *prometheus.DataqueryBuilder) *stat.PanelBuilder {
	return stat.NewPanelBuilder().Title(title).Description(description).Unit(unit).
		Datasource(datasource).Height(6).Span(span).WithTarget(target).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
}

// grid is a table panel of instant queries.
func grid(title, description, unit string, height uint32) *table.PanelBuilder {
	// Grafana expects a list of reducers, even with the footer hidden.
	return table.NewPanelBuilder().Title(title).Description(description).Unit(unit).
		Datasource(datasource).Height(height).Span(24).
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{}))
}

// valueText maps values to texts in a stat panel.
func valueText(texts map[string]string) []dashboard.ValueMapping {
	options := map[string]dashboard.ValueMappingResult{}
	for value, text := range texts {
		options[value] = dashboard.ValueMappingResult{Text: cog.ToPtr(text)}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{Type: dashboard.MappingTypeValueToText, Options: options}}}
}

// variable is a query variable over the label of veth_interfaces, within
// the selection of the variables before it; All matches every value,
// the empty master of a routed CNI's veths included.
func variable(name, label, selector string) *dashboard.QueryVariableBuilder {
	q := fmt.Sprintf("label_values(veth_interfaces%s, %s)", selector, name)
	return dashboard.NewQueryVariableBuilder(name).Label(label).
		Query(dashboard.StringOrMap{String: &q}).
		Definition(q).Datasource(datasource).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).Sort(dashboard.VariableSortAlphabeticalAsc).
		Multi(true).IncludeAll(true).AllValue(".*")
}

// Dashboard builds the veth_exporter dashboard. It is built on the classic
// dashboard schema (the SDK's dashboard package), which the SDK marks
// deprecated in favour of dashboardv2: v2 imports only into Grafana 12
// and later, and the dashboard must drop into a stock Grafana.
//
//nolint:staticcheck // the classic schema on purpose, see above
func Dashboard() (dashboard.Dashboard, error) {
	b := dashboard.NewDashboardBuilder("veth_exporter").
		Uid("veth-exporter").
		Description("Host-side veths, their owners and orphans, remediation and the exporter's health (veth_exporter).").
		Tags([]string{"veth_exporter", "network"}).
		Editable().
		Refresh("1m").
		Time("now-6h", "now").
		Timezone(common.TimeZoneUtc).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus")).
		WithVariable(variable("job", "Job", "")).
		WithVariable(variable("instance", "Node", `{job=~"$job"}`)).
		WithVariable(variable("master", "Master", `{`+node+`}`)).
		Link(dashboard.NewDashboardLinkBuilder("Runbooks").Type(dashboard.DashboardLinkTypeLink).
			Url(runbooks + "vethorphaned").Icon("doc").
			Tooltip("The README's runbooks: VethOrphaned, VethOrphansAccumulating, VethExporterResolverDown, VethRemediationFailing").
			TargetBlank(true))

	fleetRow(b)
	orphansRow(b)
	ownersRow(b)
	remediationRow(b)
	healthRow(b)

	d, err := b.Build()
	if err != nil {
		return d, err
	}
	// Grafana wants panel IDs unique within the dashboard; the builders
	// leave them unset (0 for every row).
	for i, p := range d.Panels {
		id := uint32(i + 1)
		switch {
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		case p.Panel != nil:
			p.Panel.Id = &id
		}
	}
	return d, nil
}

// fleetRow adds the Fleet row: veths, orphans and leaked namespaces per node.
//
//nolint:staticcheck // the classic schema, as [Dashboard]
func fleetRow(b *dashboard.DashboardBuilder) {
	b.WithRow(dashboard.NewRowBuilder("Fleet")).
		WithPanel(graph("Veths per node", "Host-side veths of each node, every verdict, on the selected masters.", "short", 6,
			query(`sum by (instance) (veth_interfaces{`+node+`, master=~"$master"})`, "{{instance}}"))).
		WithPanel(graph("Orphans per node", "Orphaned veths of each node: nothing live owns them. Runbook: VethOrphaned.", "short", 6,
			query(`sum by (instance) (veth_interfaces{`+node+`, master=~"$master", verdict="orphaned"})`, "{{instance}}")).
			Links(runbookLinks("VethOrphaned", "VethOrphansAccumulating"))).
		WithPanel(graph("Orphans by reason", "netns_empty: the peer namespace has no process; owner_exited: its container or pod is gone but a stray process holds it; peer_on_host: both ends on the host.", "short", 6,
			query(`count by (reason) (veth_verdict_info{`+node+`, verdict="orphaned"}`+withMaster+`)`, "{{reason}}"))).
		WithPanel(graph("Leaked namespaces", "Network namespaces held only by a mount: no process and no host veth leading into them (a missed CNI DEL).", "short", 6,
			query(`sum by (instance) (veth_leaked_netns{`+node+`})`, "{{instance}}"))).
		WithPanel(graph("Pod addresses",
			"Addresses of each host-local pod network per node: free, live (a runtime lists the sandbox) and leaked (leased to sandboxes that are gone: a CNI DEL that never ran). Runbook: VethAddressRangeExhausting.",
			"short", 6,
			query(`sum by (instance, network) (veth_cni_ipam_range_size{`+node+`}) - sum by (instance, network) (veth_cni_ipam_addresses{`+node+`})`, "{{instance}} {{network}} free"),
			query(`sum by (instance, network, state) (veth_cni_ipam_addresses{`+node+`, state=~"live|leaked"})`, "{{instance}} {{network}} {{state}}")).
			Links(runbookLinks("VethAddressRangeExhausting"))).
		WithPanel(grid("Nodes whose resolvers are down",
			"Inventory stages that failed in the last scrape (docker, cri: the runtime cannot be asked, and its namespaces are left unknown). Runbook: VethExporterResolverDown.",
			"none", 6).
			WithTarget(tableQuery(`min by (instance, collector) (veth_scrape_collector_success{`+node+`}) == 0`, "A")).
			Links(runbookLinks("VethExporterResolverDown")).
			WithTransformation(organize(map[string]bool{"Time": true, "Value": true}, nil, nil)))
}

// orphansRow adds the Orphans row: the orphans, one table row each, oldest first.
//
//nolint:staticcheck // the classic schema, as [Dashboard]
func orphansRow(b *dashboard.DashboardBuilder) {
	b.WithRow(dashboard.NewRowBuilder("Orphans")).
		WithPanel(grid("Orphaned veths",
			"One row per orphan, oldest first: its node, device, master, reason, since when it has been orphaned and the container or pod that owned it last (when the exporter saw one).",
			"dateTimeAsIso", 10).
			WithTarget(tableQuery(`max by (instance, device, master, reason) (veth_orphaned_since_timestamp_seconds{`+node+`} * 1000`+withMaster+
				` * on (job, instance, device) group_left (reason) veth_verdict_info{`+node+`, verdict="orphaned"})`, "A")).
			WithTarget(tableQuery(`max by (instance, device, kind, name, pod_namespace, pod_name, id) (veth_last_owner_info{`+node+`}`+withMaster+`)`, "B")).
			Links(runbookLinks("VethOrphaned")).
			WithTransformation(dashboard.DataTransformerConfig{Id: "merge", Options: map[string]any{}}).
			WithTransformation(organize(
				map[string]bool{"Time": true, "Value #B": true},
				map[string]int{"instance": 0, "device": 1, "master": 2, "reason": 3, "Value #A": 4, "kind": 5, "name": 6, "pod_namespace": 7, "pod_name": 8, "id": 9},
				map[string]string{"instance": "Node", "device": "Device", "master": "Master", "reason": "Reason", "Value #A": "Orphaned since",
					"kind": "Last owner kind", "name": "Last owner", "pod_namespace": "Pod namespace", "pod_name": "Pod", "id": "Last owner ID"})).
			SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("Orphaned since").Desc(false)}))
}

// ownersRow adds the Owners row.
//
//nolint:staticcheck // the classic schema, as [Dashboard]
func ownersRow(b *dashboard.DashboardBuilder) {
	b.WithRow(dashboard.NewRowBuilder("Owners")).
		WithPanel(graph("Veths by owner kind", "Owned veths by what holds their peer namespace: a container, a pod sandbox, or a bare process.", "short", 8,
			query(`count by (kind) (veth_owner_info{`+node+`}`+withMaster+`)`, "{{kind}}"))).
		WithPanel(graph("Veths by Docker network / CNI", "Veths per Docker network of their bridge (veth_bridge_info), and per node CNI (veth_cni_info).", "short", 8,
			query(`count by (network, master) (veth_info{`+node+`, master=~"$master"} * on (job, instance, master) group_left (network) veth_bridge_info{`+node+`})`, "docker {{network}} ({{master}})"),
			query(`count by (name, type) (veth_info{`+node+`, master=~"$master"} * on (job, instance) group_left (name, type) veth_cni_info{`+node+`})`, "cni {{name}} ({{type}})"))).
		WithPanel(graph("Veths per pod namespace", "Veths owned by pods, per Kubernetes namespace (named once the CRI resolver runs; empty without it).", "short", 8,
			query(`count by (pod_namespace) (veth_owner_info{`+node+`, kind="pod"}`+withMaster+`)`, "{{pod_namespace}}")))
}

// remediationRow adds the Remediation row.
//
//nolint:staticcheck // the classic schema, as [Dashboard]
func remediationRow(b *dashboard.DashboardBuilder) {
	b.WithRow(dashboard.NewRowBuilder("Remediation")).
		WithPanel(graph("Remediation actions by result", "Answers of the webhook and of clean runs: deleted, would_delete (dry run), gone, not_found, refused, skipped, failed. Runbook: VethRemediationFailing.", "ops", 8,
			query(`sum by (result) (rate(veth_remediation_actions_total{`+node+`}[$__rate_interval]))`, "{{result}}")).
			Links(runbookLinks("VethRemediationFailing"))).
		WithPanel(graph("Refusals by reason", "Why remediation refused or failed: a safety gate (too young, too many orphans, rate limit) or an error.", "ops", 8,
			query(`sum by (reason) (rate(veth_remediation_refusals_total{`+node+`}[$__rate_interval]))`, "{{reason}}"))).
		WithPanel(single("Last deletion", "When remediation last deleted a veth, per node (never: none since the exporter started).", "dateTimeFromNow", 4,
			query(`max by (instance) (veth_remediation_last_deletion_timestamp_seconds{`+node+`}) * 1000`, "{{instance}}")).
			Mappings(valueText(map[string]string{"0": "never"}))).
		WithPanel(single("Capable", "Whether the exporter may delete interfaces (CAP_NET_ADMIN).", "none", 4,
			query(`min by (instance) (veth_remediation_capable{`+node+`})`, "{{instance}}")).
			Mappings(valueText(map[string]string{"0": "no", "1": "yes"})))
}

// healthRow adds the Exporter health row: the exporter's own stages and API requests.
//
//nolint:staticcheck // the classic schema, as [Dashboard]
func healthRow(b *dashboard.DashboardBuilder) {
	b.WithRow(dashboard.NewRowBuilder("Exporter health")).
		WithPanel(graph("Scrape duration per collector", "Time each inventory stage took in the last scrape.", "s", 8,
			query(`max by (instance, collector) (veth_scrape_collector_duration_seconds{`+node+`})`, "{{instance}} {{collector}}"))).
		WithPanel(graph("Collector success", "1 when the stage succeeded in the last scrape.", "none", 8,
			query(`min by (instance, collector) (veth_scrape_collector_success{`+node+`})`, "{{instance}} {{collector}}"))).
		WithPanel(graph("API requests per scrape", "Requests each runtime resolver (Docker, CRI, Podman, any other registered one) made of its runtime's API per scrape of Prometheus (requests in the window / scrapes in the window).", "short", 8,
			query(`sum by (instance, resolver) (increase(label_replace({__name__=~"veth_.+_api_requests_total",`+node+`}, "resolver", "$1", "__name__", "veth_(.+)_api_requests_total")[$__rate_interval:$__interval]))`+
				` / on (instance) group_left () sum by (instance) (count_over_time(up{`+node+`}[$__rate_interval]))`, "{{instance}} {{resolver}}")))
}

// runbookLinks are panel links to the README's runbooks of alerts.
func runbookLinks(alerts ...string) []cog.Builder[dashboard.DashboardLink] {
	var links []cog.Builder[dashboard.DashboardLink]
	for _, a := range alerts {
		links = append(links, dashboard.NewDashboardLinkBuilder("Runbook: "+a).Type(dashboard.DashboardLinkTypeLink).
			Url(runbooks+lower(a)).TargetBlank(true))
	}
	return links
}

// lower is a GitHub heading anchor of an alert name.
func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// organize is Grafana's "Organize fields" transformation.
func organize(exclude map[string]bool, order map[string]int, rename map[string]string) dashboard.DataTransformerConfig {
	options := map[string]any{"excludeByName": exclude}
	if order != nil {
		options["indexByName"] = order
	}
	if rename != nil {
		options["renameByName"] = rename
	}
	return dashboard.DataTransformerConfig{Id: "organize", Options: options}
}

// JSON is the dashboard as committed: indented, with a final newline.
func JSON() ([]byte, error) {
	d, err := Dashboard()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
