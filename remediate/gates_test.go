package remediate

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

type fakeInventory struct {
	snap  *inventory.Snapshot
	err   error
	calls int
}

func (f *fakeInventory) Snapshot(context.Context) (*inventory.Snapshot, error) {
	f.calls++
	return f.snap, f.err
}

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func orphan(name string, index int, master string, reason inventory.Reason, since time.Duration) inventory.Veth {
	return inventory.Veth{Name: name, Index: index, Master: master, Verdict: inventory.Orphaned, Reason: reason, OrphanedSince: now.Add(-since)}
}

func testNode() *inventory.Snapshot {
	return &inventory.Snapshot{Veths: []inventory.Veth{
		orphan("vleak", 10, "docker0", inventory.ReasonNetnsEmpty, time.Hour),
		orphan("vleak2", 11, "cni0", inventory.ReasonNetnsEmpty, time.Hour),
		orphan("vyoung", 12, "docker0", inventory.ReasonNetnsEmpty, time.Minute),
		orphan("vexited", 13, "docker0", inventory.ReasonOwnerExited, time.Hour),
		orphan("vodd", 14, "odd0", inventory.ReasonNetnsEmpty, time.Hour),
		orphan("vkeep", 15, "docker0", inventory.ReasonNetnsEmpty, time.Hour),
		{Name: "vlive", Index: 20, Master: "docker0", Verdict: inventory.Owned, Reason: inventory.ReasonContainer},
		{Name: "vlive2", Index: 21, Master: "docker0", Verdict: inventory.Owned, Reason: inventory.ReasonContainer},
		{Name: "vlive3", Index: 22, Master: "docker0", Verdict: inventory.Owned, Reason: inventory.ReasonContainer},
		{Name: "vlive4", Index: 23, Master: "docker0", Verdict: inventory.Owned, Reason: inventory.ReasonContainer},
		{Name: "vlive5", Index: 24, Master: "docker0", Verdict: inventory.Owned, Reason: inventory.ReasonContainer},
		{Name: "vlive6", Index: 25, Master: "docker0", Verdict: inventory.Owned, Reason: inventory.ReasonContainer},
	}}
}

func testConfig() Config {
	return Config{
		Mode:           ModeDryRun,
		MinAge:         15 * time.Minute,
		Reasons:        []inventory.Reason{inventory.ReasonNetnsEmpty},
		MasterInclude:  regexp.MustCompile(`^(?:docker0|br-[0-9a-f]{12}|cni0|cbr0)$`),
		DeviceExclude:  regexp.MustCompile(`^vkeep$`),
		MaxPerRequest:  10,
		MaxPerHour:     60,
		MaxOrphanRatio: 0.6,
	}
}

func newTestRemediator(cfg Config, inv Snapshotter) *Remediator {
	r := New(cfg, inv, nil, slog.New(slog.DiscardHandler))
	r.now = func() time.Time { return now }
	r.capable = func() bool { return true }
	return r
}

func alert(device string, index int, firingFor time.Duration) Request {
	return Request{Device: device, Index: index, StartsAt: now.Add(-firingFor), Fingerprint: "fp-" + device}
}

func TestGates(t *testing.T) {
	old := time.Hour
	tests := []struct {
		name         string
		req          Request
		otherNode    bool
		wantResult   Result
		wantReason   string
		fromAlert    bool
		inventoryErr error
	}{
		{"old orphan, old alert", alert("vleak", 10, old), false, ResultWouldDelete, "netns_empty", true, nil},
		{"no ifindex in the alert", alert("vleak2", 0, old), false, ResultWouldDelete, "netns_empty", true, nil},
		{"resolved alert", Request{Device: "vleak", Index: 10, StartsAt: now.Add(-old), Resolved: true}, false, ResultSkipped, ReasonResolved, true, nil},
		{"path in the device", alert("../x", 0, old), false, ResultRefused, ReasonInvalidDevice, true, nil},
		{"16-byte device", alert("vethabcdefghijkl", 0, old), false, ResultRefused, ReasonInvalidDevice, true, nil},
		{"no device label", alert("", 0, old), false, ResultRefused, ReasonInvalidDevice, true, nil},
		{"bad ifindex", Request{Device: "vleak", BadIndex: "-1", StartsAt: now.Add(-old)}, false, ResultRefused, ReasonInvalidIfindex, true, nil},
		{"another node", alert("vleak", 10, old), true, ResultSkipped, ReasonOtherNode, true, nil},
		{"alert from the future", alert("vleak", 10, -time.Minute), false, ResultRefused, ReasonStartsInFuture, true, nil},
		{"alert too young", alert("vleak", 10, 5*time.Minute), false, ResultRefused, ReasonAlertTooYoung, true, nil},
		{"no startsAt", Request{Device: "vleak", Index: 10}, false, ResultRefused, ReasonAlertTooYoung, true, nil},
		{"gone already", alert("vnothere", 30, old), false, ResultGone, "", true, nil},
		// lo is not in the snapshot's veths but exists: never "gone".
		{"not a veth", alert("lo", 1, old), false, ResultRefused, ReasonNotVeth, true, nil},
		{"ifindex reused", alert("vleak", 99, old), false, ResultRefused, ReasonIfindexMismatch, true, nil},
		{"live veth", alert("vlive", 20, old), false, ResultRefused, ReasonNotOrphaned, true, nil},
		{"reason not allowed", alert("vexited", 13, old), false, ResultRefused, ReasonReasonNotAllowed, true, nil},
		{"orphan young here", alert("vyoung", 12, old), false, ResultRefused, ReasonOrphanTooYoung, true, nil},
		{"master not allowed", alert("vodd", 14, old), false, ResultRefused, ReasonMasterNotAllowed, true, nil},
		{"device excluded", alert("vkeep", 15, old), false, ResultRefused, ReasonDeviceExcluded, true, nil},
		{"inventory fails", alert("vleak", 10, old), false, ResultFailed, ReasonInventoryFailed, true, errors.New("netlink: boom")},
		// The clean command: no alert, so no alert gates, the rest the same.
		{"clean: orphan", Request{Device: "vleak"}, false, ResultWouldDelete, "netns_empty", false, nil},
		{"clean: live veth", Request{Device: "vlive"}, false, ResultRefused, ReasonNotOrphaned, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := &fakeInventory{snap: testNode(), err: tt.inventoryErr}
			r := newTestRemediator(testConfig(), inv)
			answers := mustHandle(t, r, []Request{tt.req}, func(int) bool { return !tt.otherNode }, tt.fromAlert)
			if got := answers[0]; got.Result != tt.wantResult || got.Reason != tt.wantReason {
				t.Errorf("Handle(%+v) = %s/%s (%s), want %s/%s", tt.req, got.Result, got.Reason, got.Detail, tt.wantResult, tt.wantReason)
			}
		})
	}
}

func TestGatesBlastRadius(t *testing.T) {
	t.Run("too many orphans", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxOrphanRatio = 0.4 // 6 of 12 look orphaned
		r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
		a := mustHandle(t, r, []Request{alert("vleak", 10, time.Hour)}, nil, true)[0]
		if a.Result != ResultRefused || a.Reason != ReasonTooManyOrphans {
			t.Errorf("got %s/%s, want refused/%s", a.Result, a.Reason, ReasonTooManyOrphans)
		}
	})
	t.Run("per request", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxPerRequest = 1
		r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
		answers := mustHandle(t, r, []Request{alert("vleak", 10, time.Hour), alert("vleak2", 11, time.Hour)}, nil, true)
		if answers[0].Result != ResultWouldDelete || answers[1].Reason != ReasonRequestLimit {
			t.Errorf("got %+v, want the first allowed and the second refused for %s", answers, ReasonRequestLimit)
		}
	})
	t.Run("no permission", func(t *testing.T) {
		cfg := testConfig()
		cfg.Mode = ModeEnforce
		r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
		r.capable = func() bool { return false }
		a := mustHandle(t, r, []Request{alert("vleak", 10, time.Hour)}, nil, true)[0]
		if a.Result != ResultRefused || a.Reason != ReasonNoPermission {
			t.Errorf("got %s/%s, want refused/%s", a.Result, a.Reason, ReasonNoPermission)
		}
	})
}

// TestGatesIdempotent: Alertmanager re-sends a firing alert and HA peers
// send it twice: the same (fingerprint, startsAt) gets the same answer
// without a second decision.
func TestGatesIdempotent(t *testing.T) {
	inv := &fakeInventory{snap: testNode()}
	r := newTestRemediator(testConfig(), inv)
	req := alert("vleak", 10, time.Hour)
	first := mustHandle(t, r, []Request{req}, nil, true)[0]
	again := mustHandle(t, r, []Request{req}, nil, true)[0]
	if first != again || inv.calls != 1 {
		t.Errorf("second answer %+v after %+v with %d inventories, want the same answer from 1 inventory", again, first, inv.calls)
	}
	// A new firing of the same alert (a new startsAt) is a new request.
	req.StartsAt = req.StartsAt.Add(time.Minute)
	mustHandle(t, r, []Request{req}, nil, true)
	if inv.calls != 2 {
		t.Errorf("a new startsAt took %d inventories in all, want 2", inv.calls)
	}
}

func TestAuditFile(t *testing.T) {
	cfg := testConfig()
	cfg.AuditFile = t.TempDir() + "/audit.jsonl"
	r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
	mustHandle(t, r, []Request{alert("vleak", 10, time.Hour), alert("vlive", 20, time.Hour)}, nil, true)
	b, err := readFile(cfg.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"result":"would_delete"`) || !strings.Contains(lines[1], `"reason":"not_orphaned"`) {
		t.Errorf("audit file:\n%s\nwant a would_delete and a not_orphaned line", b)
	}
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// TestGatesRetryRefusalsTimeMayLift: a refusal that time lifts is not
// cached: Alertmanager's next re-send of the same alert is decided again.
func TestGatesRetryRefusalsTimeMayLift(t *testing.T) {
	inv := &fakeInventory{snap: testNode()}
	r := newTestRemediator(testConfig(), inv)
	req := alert("vyoung", 12, time.Hour)
	if a := mustHandle(t, r, []Request{req}, nil, true)[0]; a.Reason != ReasonOrphanTooYoung {
		t.Fatalf("first answer %+v, want %s", a, ReasonOrphanTooYoung)
	}
	now = now.Add(time.Hour)
	defer func() { now = now.Add(-time.Hour) }()
	r.now = func() time.Time { return now }
	if a := mustHandle(t, r, []Request{req}, nil, true)[0]; a.Result != ResultWouldDelete {
		t.Errorf("an hour later: %+v, want would_delete", a)
	}
}

func mustHandle(t *testing.T, r *Remediator, reqs []Request, instanceOK func(int) bool, fromAlert bool) []Answer {
	t.Helper()
	answers, err := r.Handle(context.Background(), reqs, instanceOK, fromAlert)
	if err != nil {
		t.Fatal(err)
	}
	return answers
}

func TestGatesHourlyLimit(t *testing.T) {
	cfg := testConfig()
	cfg.MaxPerHour = 2
	r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
	r.deletions = []time.Time{now.Add(-59 * time.Minute), now.Add(-time.Minute)}
	if a := mustHandle(t, r, []Request{alert("vleak", 10, time.Hour)}, nil, true)[0]; a.Reason != ReasonHourlyLimit {
		t.Errorf("two deletions in the last hour, limit 2: %+v, want %s", a, ReasonHourlyLimit)
	}
	r.deletions = []time.Time{now.Add(-61 * time.Minute), now.Add(-time.Minute)}
	if a := mustHandle(t, r, []Request{alert("vleak", 10, time.Hour)}, nil, true)[0]; a.Result != ResultWouldDelete {
		t.Errorf("one deletion in the last hour, limit 2: %+v, want would_delete", a)
	}
}

// TestGatesNeedARecordedOrphan: even with min-age 0, an orphan the
// exporter never recorded is not proof.
func TestGatesNeedARecordedOrphan(t *testing.T) {
	cfg := testConfig()
	cfg.MinAge = 0
	snap := testNode()
	snap.Veths[0].OrphanedSince = time.Time{}
	r := newTestRemediator(cfg, &fakeInventory{snap: snap})
	if a := mustHandle(t, r, []Request{{Device: "vleak"}}, nil, false)[0]; a.Reason != ReasonOrphanTooYoung {
		t.Errorf("unrecorded orphan with min-age 0: %+v, want %s", a, ReasonOrphanTooYoung)
	}
}

// TestGatesBusy: a request whose deadline passes while another is handled
// gives up with ErrBusy, deciding nothing.
func TestGatesBusy(t *testing.T) {
	r := newTestRemediator(testConfig(), &fakeInventory{snap: testNode()})
	r.turn <- struct{}{} // another request holds the turn
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := r.Handle(ctx, []Request{alert("vleak", 10, time.Hour)}, nil, true); !errors.Is(err, ErrBusy) {
		t.Errorf("Handle while busy = %v, want ErrBusy", err)
	}
}
