package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// fakeInventory hands out a fixed snapshot and counts the requests.
type fakeInventory struct {
	snap  *inventory.Snapshot
	err   error
	calls int
}

func (f *fakeInventory) Snapshot(context.Context) (*inventory.Snapshot, error) {
	f.calls++
	return f.snap, f.err
}

func testSnapshot() *inventory.Snapshot {
	taken := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	return &inventory.Snapshot{
		Taken: taken,
		Veths: []inventory.Veth{
			{
				Name: "vethowned", Index: 5, Master: "docker0", OperState: "up", PeerNetNSID: 0,
				PeerNetns: &inventory.Namespace{Inode: 4026532000, PIDs: []int{42}, Mounts: []string{"/run/docker/netns/abc"}},
				Owner:     &inventory.Owner{Kind: inventory.OwnerContainer, ID: "c0ffee00c0ffee00c0ffee", Name: "<script>alert(1)</script>"},
				Verdict:   inventory.Owned, Reason: inventory.ReasonContainer, FirstSeen: taken.Add(-time.Hour),
			},
			{
				Name: "vethleak", Index: 6, Master: "cni0", OperState: "lowerlayerdown", PeerNetNSID: 1,
				PeerNetns:     &inventory.Namespace{Inode: 4026532001, Mounts: []string{"/run/netns/cni-<b>leak</b>"}},
				LastOwner:     &inventory.Owner{Kind: inventory.OwnerPod, PodNamespace: "default", PodName: "web-0"},
				LastOwnerSeen: taken.Add(-3 * time.Minute),
				Verdict:       inventory.Orphaned, Reason: inventory.ReasonNetnsEmpty,
				FirstSeen: taken.Add(-2 * time.Hour), OrphanedSince: taken.Add(-2 * time.Minute),
			},
			{
				Name: "host$(id)", Index: 7, OperState: "down", PeerNetNSID: -1, PeerOnHost: true, PeerName: "hostB",
				Verdict: inventory.Orphaned, Reason: inventory.ReasonPeerOnHost, FirstSeen: taken.Add(-time.Minute),
			},
			{
				Name: "vethstray", Index: 8, Master: "docker0", OperState: "up", PeerNetNSID: 2,
				PeerNetns: &inventory.Namespace{Inode: 4026532002, PIDs: []int{77, 78}},
				Owner:     &inventory.Owner{Kind: inventory.OwnerProcess, ID: "77", Name: "sleep"},
				Verdict:   inventory.Unknown, Reason: inventory.ReasonNoKnownOwner, FirstSeen: taken.Add(-time.Minute),
			},
		},
		LeakedNetns: []*inventory.Namespace{{Inode: 4026532009, Mounts: []string{"/run/netns/cni-nothing-left"}}},
		Views: []inventory.NamedView{{Name: "cni", View: leases{{Network: "podnet", IP: "10.78.0.4", ContainerID: "5ca1ab1e5ca1ab1e5ca1ab1e",
			Owner: &inventory.Owner{Kind: inventory.OwnerPod, PodNamespace: "shop", PodName: "<i>cart</i>"}, Since: taken.Add(-5 * time.Minute)}}}},
	}
}

// leases is a view that knows of leaked addresses.
type leases []inventory.LeakedAddress

func (l leases) Families(*inventory.Snapshot) []inventory.Family { return nil }
func (l leases) LeakedAddresses() []inventory.LeakedAddress      { return l }
func (l leases) Leases() int                                     { return len(l) }

func newTestServer(t *testing.T, inv Snapshotter, clean *CleanAdvice) *httptest.Server {
	t.Helper()
	h, err := NewRouter(Config{
		TelemetryPath: "/metrics",
		Gatherer:      prometheusRegistry(),
		Inventory:     inv,
		Clean:         clean,
		Sysfs:         t.TempDir(),
		Version:       "1.2.3",
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// rows returns the devices of the table's rows, in order.
func rows(body string) []string {
	var devices []string
	for _, part := range strings.Split(body, `<tr class="veth" data-device="`)[1:] {
		devices = append(devices, part[:strings.IndexByte(part, '"')])
	}
	return devices
}

func TestVethsPage(t *testing.T) {
	inv := &fakeInventory{snap: testSnapshot()}
	srv := newTestServer(t, inv, nil)

	code, hdr, body := get(t, srv.URL+"/veths")
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /veths = %d %s\n%s", code, hdr.Get("Content-Type"), body)
	}
	if inv.calls != 1 {
		t.Errorf("GET /veths took %d snapshots, want 1", inv.calls)
	}
	for _, want := range []string{
		`<span class="verdict verdict-owned">owned</span>`,
		`<span class="verdict verdict-orphaned">orphaned</span>`,
		`<span class="verdict verdict-unknown">unknown</span>`,
		`1h0m`,    // age from the state file
		`4 veths`, // the counts
		`container c0ffee00c0ff (&lt;script&gt;alert(1)&lt;/script&gt;)`, // escaped, as text
		`<code>/run/netns/cni-&lt;b&gt;leak&lt;/b&gt;</code>`,            // evidence: the mount
		`pod default/web-0, last seen 2026-11-27 11:57:00 UTC`,           // evidence: last owner
		`2026-11-27 11:58:00 UTC (2m ago)`,                               // evidence: orphaned since
		`pid 77 &#43;1`,                                                  // held by, in the table
		`/run/netns/cni-nothing-left`,                                    // leaked namespaces
		`<td class="mono">10.78.0.4</td><td class="mono">5ca1ab1e5ca1</td><td>pod shop/&lt;i&gt;cart&lt;/i&gt;</td>`, // leaked addresses
		`2026-11-27 11:55:00 UTC (5m0s ago)`,
		`host (hostB)`,
		`nothing: its peer <code>hostB</code> is in the host namespace too`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /veths lacks %q", want)
		}
	}
	for _, bad := range []string{"<script>", "<b>leak", "veth_exporter clean", "<script src", "http://", "https://"} {
		if strings.Contains(body, bad) {
			t.Errorf("GET /veths contains %q (unescaped markup, a clean command with remediation off, or an external asset)", bad)
		}
	}
	if got, want := rows(body), []string{"vethowned", "vethleak", "host$(id)", "vethstray"}; !slices.Equal(got, want) {
		t.Errorf("GET /veths rows = %q, want %q", got, want)
	}
	if n := strings.Count(body, `<tr class="evidence"`); n != 2 {
		t.Errorf("GET /veths has %d evidence rows, want 2 (one per orphan)", n)
	}
}

func TestVethsPageFilters(t *testing.T) {
	srv := newTestServer(t, &fakeInventory{snap: testSnapshot()}, nil)
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"", []string{"vethowned", "vethleak", "host$(id)", "vethstray"}},
		{"?verdict=orphaned", []string{"vethleak", "host$(id)"}},
		{"?verdict=owned", []string{"vethowned"}},
		{"?master=docker0", []string{"vethowned", "vethstray"}},
		{"?verdict=orphaned&master=docker0", nil},
		{"?verdict=unknown&master=docker0", []string{"vethstray"}},
		{"?master=-", []string{"host$(id)"}},
		{"?verdict=&master=", []string{"vethowned", "vethleak", "host$(id)", "vethstray"}},
	} {
		code, _, body := get(t, srv.URL+"/veths"+tt.query)
		if code != http.StatusOK {
			t.Errorf("GET /veths%s = %d", tt.query, code)
			continue
		}
		if got := rows(body); !slices.Equal(got, tt.want) {
			t.Errorf("GET /veths%s rows = %q, want %q", tt.query, got, tt.want)
		}
		if tt.want == nil && !strings.Contains(body, "No veth matches the filter.") {
			t.Errorf("GET /veths%s does not say that nothing matches", tt.query)
		}
	}
	// The form keeps the filter it shows.
	_, _, body := get(t, srv.URL+"/veths?verdict=orphaned&master=cni0")
	for _, want := range []string{`<option value="orphaned" selected>`, `<option value="cni0" selected>`, `<option value="-">none</option>`} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /veths?verdict=orphaned&master=cni0 lacks %q", want)
		}
	}
	if code, _, _ := get(t, srv.URL+"/veths?verdict=bogus"); code != http.StatusBadRequest {
		t.Errorf("GET /veths?verdict=bogus = %d, want 400", code)
	}
}

// defaultMasters is --remediation.master-include's default.
const defaultMasters = `docker0|br-[0-9a-f]{12}|cni0|cbr0`

// cleanAdvice is the advice of an exporter whose gates are these, clean's
// defaults being netns_empty and defaultMasters.
func cleanAdvice(reasons []inventory.Reason, masters, exclude string, flags ...string) *CleanAdvice {
	a := &CleanAdvice{
		Reasons: reasons, MasterInclude: regexp.MustCompile("^(?:" + masters + ")$"), MasterIncludeFlag: masters,
		MinAge:         15 * time.Minute,
		DefaultReasons: []inventory.Reason{inventory.ReasonNetnsEmpty}, DefaultMasterInclude: regexp.MustCompile("^(?:" + defaultMasters + ")$"),
		Flags: flags,
	}
	if exclude != "" {
		a.DeviceExclude = regexp.MustCompile("^(?:" + exclude + ")$")
	}
	return a
}

// TestVethsPageCleanCommand wants /veths to offer `veth_exporter clean`
// only for orphans the running exporter's gates let through, with the
// flags clean needs to apply them and to read its state file, and the
// flags that would let the others through.
func TestVethsPageCleanCommand(t *testing.T) {
	netnsEmpty := []inventory.Reason{inventory.ReasonNetnsEmpty}
	for _, tt := range []struct {
		name   string
		advice *CleanAdvice
		want   []string
		count  int
	}{
		{
			name:   "default gates",
			advice: cleanAdvice(netnsEmpty, defaultMasters, ""),
			want: []string{
				`<code class="clean">veth_exporter clean vethleak</code>`,
				// Orphaned 2 minutes before the snapshot: clean refuses it for 13 more.
				`(refused as too young until 2026-11-27 12:13:00 UTC: --remediation.min-age)`,
				// A pair on the host, master-less: refused by default, and the flags that would take it.
				`needs <code class="clean-needs">--remediation.reasons=peer_on_host --remediation.master-include=&#39;docker0|br-[0-9a-f]{12}|cni0|cbr0|&#39;</code>`,
			},
			count: 1,
		},
		{
			name: "state path and gates of the running exporter",
			advice: cleanAdvice([]inventory.Reason{inventory.ReasonNetnsEmpty, inventory.ReasonPeerOnHost}, defaultMasters+"|", "",
				"--state.path=/srv/veth state.json", "--remediation.min-age=1m0s"),
			want: []string{
				`<code class="clean">veth_exporter clean --state.path=&#39;/srv/veth state.json&#39; --remediation.min-age=1m0s vethleak</code>`,
				// A name a shell would expand is quoted; the gates clean would refuse it by are given.
				`<code class="clean">veth_exporter clean --state.path=&#39;/srv/veth state.json&#39; --remediation.min-age=1m0s --remediation.reasons=peer_on_host --remediation.master-include=&#39;docker0|br-[0-9a-f]{12}|cni0|cbr0|&#39; &#39;host$(id)&#39;</code>`,
			},
			count: 2,
		},
		{
			name:   "device excluded",
			advice: cleanAdvice(netnsEmpty, defaultMasters, "vethleak"),
			want:   []string{`<dd class="clean-refused">not with this exporter's gates: its name matches --remediation.device-exclude</dd>`},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, &fakeInventory{snap: testSnapshot()}, tt.advice)
			_, _, body := get(t, srv.URL+"/veths")
			for _, want := range tt.want {
				if !strings.Contains(body, want) {
					t.Errorf("GET /veths lacks %s", want)
				}
			}
			if n := strings.Count(body, `<code class="clean">`); n != tt.count {
				t.Errorf("GET /veths shows %d clean commands, want %d", n, tt.count)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"veth1a2b":  "veth1a2b",
		"host$(id)": "'host$(id)'",
		"a'b":       `'a'\''b'`,
		"x;rm":      "'x;rm'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestVethsAPI(t *testing.T) {
	snap := testSnapshot()
	inv := &fakeInventory{snap: snap}
	srv := newTestServer(t, inv, nil)
	code, hdr, body := get(t, srv.URL+"/api/v1/veths")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/v1/veths = %d %s\n%s", code, hdr.Get("Content-Type"), body)
	}
	var want bytes.Buffer
	if err := WriteInventoryJSON(&want, snap); err != nil {
		t.Fatal(err)
	}
	if body != want.String() {
		t.Errorf("GET /api/v1/veths differs from the inventory document:\n%s\nwant\n%s", body, want.String())
	}
	var doc struct {
		Veths []struct {
			Device  string `json:"device"`
			Verdict string `json:"verdict"`
		} `json:"veths"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || len(doc.Veths) != 4 || doc.Veths[0].Device != "vethowned" {
		t.Errorf("GET /api/v1/veths = %+v, %v; want the 4 veths", doc, err)
	}

	// A failed inventory is a 503, never a half document.
	srv = newTestServer(t, &fakeInventory{err: errors.New("netlink dump interrupted")}, nil)
	for _, path := range []string{"/api/v1/veths", "/veths"} {
		if code, _, body := get(t, srv.URL+path); code != http.StatusServiceUnavailable || !strings.Contains(body, "netlink dump interrupted") {
			t.Errorf("GET %s with a failing inventory = %d %q, want 503 with the error", path, code, body)
		}
	}
}

func TestWriteInventoryJSONEmpty(t *testing.T) {
	var b bytes.Buffer
	if err := WriteInventoryJSON(&b, &inventory.Snapshot{LeakedNetns: []*inventory.Namespace{}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"veths": []`) {
		t.Errorf("WriteInventoryJSON of a node without veths = %s, want \"veths\": []", b.String())
	}
}

func TestLandingLinksInventory(t *testing.T) {
	srv := newTestServer(t, &fakeInventory{snap: testSnapshot()}, nil)
	_, _, body := get(t, srv.URL+"/")
	for _, want := range []string{`href="/veths"`, `href="/api/v1/veths"`, `href="/metrics"`} {
		if !strings.Contains(body, want) {
			t.Errorf("GET / lacks %s", want)
		}
	}
	// Without an inventory, neither route nor link.
	h, err := NewRouter(Config{TelemetryPath: "/metrics", Gatherer: prometheusRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	plain := httptest.NewServer(h)
	defer plain.Close()
	if code, _, _ := get(t, plain.URL+"/veths"); code != http.StatusNotFound {
		t.Errorf("GET /veths without an inventory = %d, want 404", code)
	}
	if _, _, body := get(t, plain.URL+"/"); strings.Contains(body, "/veths") {
		t.Errorf("GET / without an inventory links /veths")
	}
}

func prometheusRegistry() *prometheus.Registry { return prometheus.NewRegistry() }
