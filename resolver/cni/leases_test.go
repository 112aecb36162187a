package cni

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/invtest"
	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/inventory"
)

// conflist is a bridge + host-local network, as the kubelet's containerd
// and Podman's CNI backend configure them.
func conflist(name, dataDir, ranges string) string {
	return fmt.Sprintf(`{"cniVersion":"0.4.0","name":%q,"plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,
"ipam":{"type":"host-local","dataDir":%q,"ranges":%s,"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
		name, dataDir, ranges)
}

func TestParseIPAMConf(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string // subnet start-end gateway size
		dir        string
	}{
		{"ranges", conflist("podnet", "/data", `[[{"subnet":"10.78.0.0/29"}]]`),
			[]string{"10.78.0.0/29 10.78.0.1-10.78.0.6 10.78.0.1 5"}, "/data/podnet"},
		{"a /16, two range sets", conflist("podnet", "", `[[{"subnet":"10.88.0.0/16"}],[{"subnet":"fd00:88::/120","gateway":"fd00:88::ff"}]]`),
			[]string{"10.88.0.0/16 10.88.0.1-10.88.255.254 10.88.0.1 65533", "fd00:88::/120 fd00:88::1-fd00:88::ff fd00:88::ff 254"},
			"/var/lib/cni/networks/podnet"},
		{"start and end, gateway outside", conflist("n", "", `[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.100","rangeEnd":"10.1.0.109","gateway":"10.1.0.254"}]]`),
			[]string{"10.1.0.0/24 10.1.0.100-10.1.0.109 10.1.0.254 10"}, "/var/lib/cni/networks/n"},
		// The old single-range form, in a .conf.
		{"legacy subnet", `{"cniVersion":"0.3.1","name":"old","type":"bridge","ipam":{"type":"host-local","subnet":"10.2.0.0/30"}}`,
			[]string{"10.2.0.0/30 10.2.0.1-10.2.0.2 10.2.0.1 1"}, "/var/lib/cni/networks/old"},
	}
	for _, tt := range tests {
		ic, err := parseIPAMConf("/etc/cni/net.d/x.conflist", []byte(tt.body))
		if err != nil || ic == nil {
			t.Errorf("%s: %v, %v", tt.name, ic, err)
			continue
		}
		var got []string
		for _, r := range ic.ranges {
			got = append(got, fmt.Sprintf("%s %s-%s %s %v", r.Subnet, r.Start, r.End, r.Gateway, r.Size))
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) || ic.dir != tt.dir {
			t.Errorf("%s: ranges %q in %s, want %q in %s", tt.name, got, ic.dir, tt.want, tt.dir)
		}
	}
	for _, body := range []string{
		`{"name":"calico","plugins":[{"type":"calico","ipam":{"type":"calico-ipam"}}]}`,
		`{"name":"x","plugins":[{"type":"bridge","ipam":{"type":"dhcp"}}]}`,
	} {
		if ic, err := parseIPAMConf("f", []byte(body)); ic != nil || err != nil {
			t.Errorf("%s: %+v, %v; want no host-local network", body, ic, err)
		}
	}
	for _, body := range []string{
		conflist("n", "", `[[{"subnet":"10.1.0.0/33"}]]`),
		conflist("n", "", `[[{"subnet":"10.1.0.0/24","rangeStart":"10.2.0.1"}]]`),
		conflist("n", "", `[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.5"}]]`),
	} {
		if _, err := parseIPAMConf("f", []byte(body)); err == nil {
			t.Errorf("%s: parsed, want an error", body)
		}
	}
}

// writeLease writes a lease as host-local does: "<id>\r\n<ifname>".
func writeLease(t testing.TB, dir, ip, id string) {
	t.Helper()
	writeCNIFile(t.(*testing.T), filepath.Join(dir, ip), id+"\r\neth0")
}

// TestLeasesReread: a lease directory is read again only when it changed.
func TestLeasesReread(t *testing.T) {
	data := t.TempDir()
	conf := t.TempDir()
	writeCNIFile(t, filepath.Join(conf, "10-podnet.conflist"), conflist("podnet", data, `[[{"subnet":"10.78.0.0/29"}]]`))
	dir := filepath.Join(data, "podnet")
	writeLease(t, dir, "10.78.0.2", "a")
	writeCNIFile(t, filepath.Join(dir, "last_reserved_ip.0"), "10.78.0.2")
	writeCNIFile(t, filepath.Join(dir, "lock"), "")
	old := time.Now().Add(-time.Minute)
	for _, p := range []string{dir, filepath.Join(dir, "10.78.0.2"), conf, filepath.Join(conf, "10-podnet.conflist")} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	c := New(conf, "")
	networks, err := c.ipamNetworks("/")
	if err != nil || len(networks) != 1 || len(networks[0].Leases) != 1 || networks[0].Leases[0].ContainerID != "a" || networks[0].Leases[0].IfName != "eth0" {
		t.Fatalf("networks %+v, %v; want podnet with a's lease", networks, err)
	}
	// Changed behind the cache's back, the mtime kept: not read again.
	writeLease(t, dir, "10.78.0.3", "b")
	if err := os.Chtimes(dir, old, old); err != nil {
		t.Fatal(err)
	}
	if networks, _ = c.ipamNetworks("/"); len(networks[0].Leases) != 1 {
		t.Errorf("leases read again although the directory's mtime is unchanged: %d", len(networks[0].Leases))
	}
	if err := os.Chtimes(dir, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if networks, _ = c.ipamNetworks("/"); len(networks[0].Leases) != 2 {
		t.Errorf("%d leases after the directory changed, want 2", len(networks[0].Leases))
	}
	// Each snapshot gets its own copies: judging one changes no other.
	networks[0].Leases[0].State = LeaseLeaked
	if again, _ := c.ipamNetworks("/"); again[0].Leases[0].State != "" {
		t.Error("a snapshot's lease is shared with the next")
	}
}

// lister is a runtime resolver that lists sandboxes by ID and claims
// nothing.
type lister struct {
	ids  map[string]bool
	down bool
}

func (l *lister) Step() string           { return "fake" }
func (l *lister) Timeout() time.Duration { return time.Second }
func (l *lister) Start()                 {}
func (l *lister) Close()                 {}
func (l *lister) Observe(context.Context, inventory.Paths) (inventory.Observation, error) {
	return l, nil
}
func (l *lister) Claim(context.Context, *inventory.Veth) inventory.Claim { return inventory.Claim{} }
func (l *lister) View() inventory.RuntimeView                            { return nil }
func (l *lister) Running() []inventory.RunningNetns                      { return nil }
func (l *lister) Answered() bool                                         { return !l.down }
func (l *lister) Lists(id string) bool                                   { return l.ids[id] }

// TestLeaseStates judges every kind of lease on a real node's namespaces:
// live while a runtime lists its sandbox or a namespace of it is left;
// leaked once neither holds for the settle time (the clock kept in the
// history); unknown while a resolver that lists sandboxes is down, or
// none is on.
func TestLeaseStates(t *testing.T) {
	netnstest.Require(t)
	data, conf, cache := t.TempDir(), t.TempDir(), t.TempDir()
	writeCNIFile(t, filepath.Join(conf, "10-podnet.conflist"), conflist("podnet", data, `[[{"subnet":"10.78.0.0/29"}]]`))
	dir := filepath.Join(data, "podnet")
	writeLease(t, dir, "10.78.0.2", "listed")
	writeLease(t, dir, "10.78.0.3", "pinned")
	writeLease(t, dir, "10.78.0.4", "gone")
	writeLease(t, dir, "10.78.0.5", "bare")
	writeCNIFile(t, filepath.Join(dir, "lock"), "")
	// The pinned sandbox's namespace is still mounted (a leftover's);
	// the gone one's path pins nothing any more.
	netnstest.NamedNetns(t, "cni-pinned")
	writeCNIFile(t, filepath.Join(cache, "podnet-pinned-eth0"), cacheEntry("pinned", "shop", "cart", "u1", "vethp", "", "", "/var/run/netns/cni-pinned"))
	writeCNIFile(t, filepath.Join(cache, "podnet-gone-eth0"), cacheEntry("gone", "shop", "web", "u2", "vethg", "", "", "/var/run/netns/cni-gone"))

	start := time.Now()
	now := start
	state := inventory.OpenState("", inventory.StateOptions{MaxGap: 3 * time.Hour})
	runtime := &lister{ids: map[string]bool{"listed": true}}
	snapshot := func(resolvers ...inventory.Resolver) map[string]*Lease {
		t.Helper()
		inv := invtest.New(t, inventory.Config{Annotators: []inventory.Annotator{New(conf, cache)}, Resolvers: resolvers,
			State: state, SettleTime: 30 * time.Second, Now: func() time.Time { return now }})
		view, _ := invtest.Snapshot(t, inv).View(Name).(*View)
		if view == nil || len(view.IPAM) != 1 {
			t.Fatalf("CNI view %+v, want one IPAM network", view)
		}
		leases := map[string]*Lease{}
		for _, l := range view.IPAM[0].Leases {
			leases[l.ContainerID] = l
		}
		if r := view.IPAM[0].Ranges[0]; r.Live+r.Leaked+r.Unknown != 4 || r.Size != 5 {
			t.Errorf("range %+v, want 4 leases of 5 addresses", r)
		}
		return leases
	}
	want := func(leases map[string]*Lease, id string, state LeaseState, reason string) {
		t.Helper()
		if l := leases[id]; l == nil || l.State != state || l.Reason != reason {
			t.Errorf("lease of %s: %+v, want %s/%s", id, l, state, reason)
		}
	}

	leases := snapshot(runtime)
	want(leases, "listed", LeaseLive, "listed")
	want(leases, "pinned", LeaseLive, "namespace_left")
	want(leases, "gone", LeaseUnknown, "settling")
	want(leases, "bare", LeaseUnknown, "settling")
	if l := leases["gone"]; l.PodName != "web" || l.CacheEntry != "podnet-gone-eth0" {
		t.Errorf("gone's lease %+v, want its pod named from the cache entry", l)
	}

	now = start.Add(31 * time.Second)
	leases = snapshot(runtime)
	want(leases, "gone", LeaseLeaked, "no_sandbox")
	want(leases, "bare", LeaseLeaked, "no_sandbox")
	if !leases["gone"].LeakedSince.Equal(start) {
		t.Errorf("leaked since %v, want the first snapshot's %v", leases["gone"].LeakedSince, start)
	}

	// The runtime that might list it is down: nothing is leaked, and the
	// clock goes on (the condition is not asked for, so it ends).
	runtime.down = true
	now = start.Add(time.Minute)
	leases = snapshot(runtime)
	want(leases, "listed", LeaseUnknown, "resolver_down")
	want(leases, "gone", LeaseUnknown, "resolver_down")
	want(leases, "pinned", LeaseLive, "namespace_left")
	leases = snapshot()
	want(leases, "bare", LeaseUnknown, "no_resolver")
	// Back up: the clock starts again, settling first.
	runtime.down = false
	now = start.Add(2 * time.Minute)
	leases = snapshot(runtime)
	want(leases, "bare", LeaseUnknown, "settling")
}
