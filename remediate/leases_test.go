package remediate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate/cnidel"
)

// leaseView is a view that knows of leaked leases.
type leaseView struct {
	leaked []inventory.LeakedAddress
	total  int
}

func (v *leaseView) Families(*inventory.Snapshot) []inventory.Family { return nil }
func (v *leaseView) LeakedAddresses() []inventory.LeakedAddress      { return v.leaked }
func (v *leaseView) Leases() int                                     { return v.total }

// leaseNode is testNode with a host-local network podnet whose lease
// directory dir holds the leases of leaked (IP: container ID), of 10.
func leaseNode(t *testing.T, dir string, leaked map[string]string, since time.Duration) *inventory.Snapshot {
	t.Helper()
	snap := testNode()
	v := &leaseView{total: 10}
	if err := os.WriteFile(filepath.Join(dir, "lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for ip, id := range leaked {
		if err := os.WriteFile(filepath.Join(dir, ip), []byte(id+"\r\neth0"), 0o600); err != nil {
			t.Fatal(err)
		}
		v.leaked = append(v.leaked, inventory.LeakedAddress{Network: "podnet", IP: ip, ContainerID: id, IfName: "eth0", Dir: dir, Since: now.Add(-since)})
	}
	snap.Views = append(snap.Views, inventory.NamedView{Name: "cni", View: v})
	return snap
}

func leaseAlert(network, rng string, firingFor time.Duration) Alert {
	return Alert{Status: StatusFiring, Labels: map[string]string{"alertname": LeaseAlert, "network": network, "range": rng, "instance": "node1"},
		StartsAt: now.Add(-firingFor), Fingerprint: "fp-" + network + rng}
}

// TestLeaseAlert: the webhook takes VethAddressRangeExhausting for its
// node: past the alert's gates, it releases the leaked leases of that
// network and range that pass the lease gates (recorded for the min-age),
// and answers once for the alert; a lease of another range stays.
func TestLeaseAlert(t *testing.T) {
	dir := t.TempDir()
	snap := leaseNode(t, dir, map[string]string{"10.78.0.4": "sb-a", "10.78.0.5": "sb-b", "10.79.0.4": "sb-other"}, time.Hour)
	cfg := testConfig()
	cfg.Mode = ModeEnforce
	cfg.CNI = &cnidel.Deleter{}
	r := newTestRemediator(cfg, &fakeInventory{snap: snap})
	answers, err := r.HandleAlerts(context.Background(), payloadOf(
		leaseAlert("podnet", "10.78.0.0/28", time.Hour),
		leaseAlert("podnet", "10.78.0.0/28", time.Minute),                               // too young
		withLabel(leaseAlert("podnet", "10.78.0.0/28", time.Hour), "instance", "node2"), // another node's
		leaseAlert("podnet", "10.78.0.0/33", time.Hour),                                 // not a range
		leaseAlert("../x", "10.78.0.0/28", time.Hour),                                   // not a network
		leaseAlert("other", "10.78.0.0/28", time.Hour),                                  // nothing leaked there
	))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		result Result
		reason string
	}{
		{ResultDeleted, leakedLeaseReason},
		{ResultRefused, ReasonAlertTooYoung},
		{ResultSkipped, ReasonOtherNode},
		{ResultRefused, ReasonInvalidAlert},
		{ResultRefused, ReasonInvalidAlert},
		{ResultRefused, ReasonNotOrphaned},
	}
	for i, w := range want {
		if a := answers[i]; a.Result != w.result || a.Reason != w.reason {
			t.Errorf("alert %d: %+v, want %s/%s", i, a, w.result, w.reason)
		}
	}
	if d := answers[0].Detail; !strings.Contains(d, "podnet/10.78.0.4: deleted") || !strings.Contains(d, "podnet/10.78.0.5: deleted") {
		t.Errorf("the alert's detail %q, want both leases of the range released", d)
	}
	for ip, gone := range map[string]bool{"10.78.0.4": true, "10.78.0.5": true, "10.79.0.4": false} {
		if _, err := os.Stat(filepath.Join(dir, ip)); (err == nil) == gone {
			t.Errorf("lease %s: exists %v, want gone %v", ip, err == nil, gone)
		}
	}
}

// TestLeaseGates: each gate a leaked lease passes before it is released.
func TestLeaseGates(t *testing.T) {
	for _, tt := range []struct {
		name   string
		since  time.Duration
		edit   func(*inventory.Snapshot, *Config)
		reason string
	}{
		{"released", time.Hour, nil, ""},
		{"younger than min-age", time.Minute, nil, ReasonOrphanTooYoung},
		{"not recorded before", 0, nil, ReasonNotRecorded},
		{"a stage failed", time.Hour, func(s *inventory.Snapshot, _ *Config) {
			s.Steps = append(s.Steps, inventory.Step{Name: "cri", Err: os.ErrDeadlineExceeded})
		}, ReasonIncompleteView},
		{"stale history", time.Hour, func(s *inventory.Snapshot, _ *Config) { s.HistoryObserved = now.Add(-time.Hour) }, ReasonStaleState},
		{"too many leaked", time.Hour, func(s *inventory.Snapshot, c *Config) { c.MaxOrphanRatio = 0.1 }, ReasonTooManyOrphans},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			snap := leaseNode(t, dir, map[string]string{"10.78.0.4": "sb-a", "10.78.0.5": "sb-b"}, tt.since)
			cfg := testConfig()
			cfg.Mode = ModeEnforce
			cfg.CNI = &cnidel.Deleter{}
			if tt.edit != nil {
				tt.edit(snap, &cfg)
			}
			answers, err := newTestRemediator(cfg, &fakeInventory{snap: snap}).HandleLeases(context.Background(), []string{"10.78.0.4"})
			if err != nil {
				t.Fatal(err)
			}
			if len(answers) != 1 {
				t.Fatalf("answers %+v, want one, for the address asked", answers)
			}
			_, statErr := os.Stat(filepath.Join(dir, "10.78.0.4"))
			switch a := answers[0]; {
			case tt.reason == "" && (a.Result != ResultDeleted || a.Method != MethodReleaseLease || statErr == nil):
				t.Errorf("%+v, lease exists %v; want it released", a, statErr == nil)
			case tt.reason != "" && (a.Reason != tt.reason || statErr != nil):
				t.Errorf("%+v, lease exists %v; want %s and the lease kept", a, statErr == nil, tt.reason)
			}
			if _, err := os.Stat(filepath.Join(dir, "10.78.0.5")); err != nil {
				t.Error("a lease not asked for went")
			}
		})
	}
}

// TestLeaseHourlyLimit: released leases count towards
// --remediation.max-per-hour as deleted veths do.
func TestLeaseHourlyLimit(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.Mode, cfg.MaxPerHour = ModeEnforce, 1
	cfg.CNI = &cnidel.Deleter{}
	r := newTestRemediator(cfg, &fakeInventory{snap: leaseNode(t, dir, map[string]string{"10.78.0.4": "sb-a", "10.78.0.5": "sb-b"}, time.Hour)})
	first, err := r.HandleLeases(context.Background(), []string{"10.78.0.4"})
	if err != nil || len(first) != 1 || first[0].Result != ResultDeleted {
		t.Fatalf("first: %+v, %v; want deleted", first, err)
	}
	second, err := r.HandleLeases(context.Background(), []string{"10.78.0.5"})
	if err != nil || len(second) != 1 || second[0].Reason != ReasonHourlyLimit {
		t.Errorf("second: %+v, %v; want hourly_limit", second, err)
	}
}

// TestLeaseTakenDuringRequest: a pod that starts while a request releases
// leases may take an address the request has just released; the request
// goes on with the others and leaves the new lease alone, and a replay of
// the request, judged by the same (now stale) inventory, finds the file
// naming another container and refuses it (changed), keeping it.
func TestLeaseTakenDuringRequest(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.Mode = ModeEnforce
	cfg.CNI = &cnidel.Deleter{}
	inv := &fakeInventory{snap: leaseNode(t, dir, map[string]string{"10.78.0.4": "sb-a", "10.78.0.5": "sb-b"}, time.Hour)}
	r := newTestRemediator(cfg, inv)
	const newcomer = "sb-new"
	taken := ""
	r.inHostMounts = func(fn func() error) error {
		err := fn()
		// host-local hands the first address released to the next pod.
		if taken == "" {
			for _, ip := range []string{"10.78.0.4", "10.78.0.5"} {
				if _, statErr := os.Stat(filepath.Join(dir, ip)); os.IsNotExist(statErr) {
					taken = ip
					if err := os.WriteFile(filepath.Join(dir, ip), []byte(newcomer+"\r\neth0"), 0o600); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
		}
		return err
	}
	answers, err := r.HandleLeases(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(answers) != 2 || answers[0].Result != ResultDeleted || answers[1].Result != ResultDeleted {
		t.Fatalf("answers %+v, want both leaked leases released", answers)
	}
	owner := func(ip string) string {
		b, err := os.ReadFile(filepath.Join(dir, ip))
		if err != nil {
			return ""
		}
		id, _, _ := strings.Cut(string(b), "\r\n")
		return id
	}
	if taken == "" || owner(taken) != newcomer {
		t.Fatalf("the newcomer's lease %q: owner %q, want it kept", taken, owner(taken))
	}

	// The replay: a new request, the same stale inventory.
	r.answers = newAnswerCache(time.Hour, 10000)
	r.deletions = nil
	answers, err = r.HandleLeases(context.Background(), []string{taken})
	if err != nil {
		t.Fatal(err)
	}
	if len(answers) != 1 || answers[0].Result != ResultRefused || answers[0].Reason != ReasonChanged || owner(taken) != newcomer {
		t.Errorf("replay on %s: %+v, owner %q; want refused %s and the newcomer's lease kept", taken, answers, owner(taken), ReasonChanged)
	}
}
