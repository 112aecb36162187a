package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
	return &inventory.Snapshot{Taken: now, HistoryObserved: now.Add(-time.Minute), Gone: []inventory.GoneVeth{{Device: "vgone", Index: 31, Since: now.Add(-time.Minute)}}, Veths: []inventory.Veth{
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
		MaxStateGap:    5 * time.Minute,
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
		{"gone since recorded", alert("vgone", 31, old), false, ResultGone, "", true, nil},
		{"never recorded, not there", alert("vnothere", 30, old), false, ResultNotFound, "", true, nil},
		{"fingerprint of 1 MB", Request{Device: "vleak", Index: 10, StartsAt: now.Add(-old), Fingerprint: strings.Repeat("f", 1<<20)}, false, ResultRefused, ReasonInvalidAlert, true, nil},
		{"device label of 1 MB", alert(strings.Repeat("v", 1<<20), 0, old), false, ResultRefused, ReasonInvalidAlert, true, nil},
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

// TestGatesNeedARecordedOrphan: even with min-age 0, an orphan that no
// observation before the request recorded is not proof: neither one the
// history never saw, nor one the request's own snapshot saw first.
func TestGatesNeedARecordedOrphan(t *testing.T) {
	for _, tt := range []struct {
		name  string
		since time.Time
	}{
		{"never recorded", time.Time{}},
		{"first seen by the request's snapshot", now},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MinAge = 0
			snap := testNode()
			snap.Veths[0].OrphanedSince = tt.since
			r := newTestRemediator(cfg, &fakeInventory{snap: snap})
			if a := mustHandle(t, r, []Request{{Device: "vleak"}}, nil, false)[0]; a.Reason != ReasonNotRecorded || a.Ifindex != 10 {
				t.Errorf("Handle(vleak) = %+v, want refused/%s with ifindex 10", a, ReasonNotRecorded)
			}
		})
	}
}

// TestGatesStaleState: orphan times from a history no observation has
// refreshed lately prove nothing (the exporter was stopped meanwhile, and
// anything may have lived in the namespace).
func TestGatesStaleState(t *testing.T) {
	for _, tt := range []struct {
		name     string
		observed time.Time
		want     Result
	}{
		{"refreshed a minute ago", now.Add(-time.Minute), ResultWouldDelete},
		{"refreshed 6 minutes ago", now.Add(-6 * time.Minute), ResultRefused},
		{"never refreshed", time.Time{}, ResultRefused},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := testNode()
			snap.HistoryObserved = tt.observed
			r := newTestRemediator(testConfig(), &fakeInventory{snap: snap})
			a := mustHandle(t, r, []Request{{Device: "vleak"}}, nil, false)[0]
			if a.Result != tt.want || (tt.want == ResultRefused && a.Reason != ReasonStaleState) {
				t.Errorf("Handle(vleak) = %+v, want %s (%s when refused)", a, tt.want, ReasonStaleState)
			}
		})
	}
}

// TestGatesRatioCountsResolverFailures: a pair left on the host is
// structural; only the orphans a failing resolver produces count towards
// the guard.
func TestGatesRatioCountsResolverFailures(t *testing.T) {
	snap := &inventory.Snapshot{Taken: now, HistoryObserved: now.Add(-time.Minute), Veths: []inventory.Veth{
		orphan("vhostA", 40, "", inventory.ReasonPeerOnHost, time.Hour),
		orphan("vhostB", 41, "", inventory.ReasonPeerOnHost, time.Hour),
		orphan("vleak", 10, "docker0", inventory.ReasonNetnsEmpty, time.Hour),
		orphan("vleak2", 11, "docker0", inventory.ReasonNetnsEmpty, time.Hour),
		{Name: "vlive", Index: 20, Master: "docker0", Verdict: inventory.Owned, Reason: inventory.ReasonContainer},
	}}
	cfg := testConfig()
	cfg.MaxOrphanRatio = 0.5 // 2 of 5 count, 4 of 5 look orphaned
	r := newTestRemediator(cfg, &fakeInventory{snap: snap})
	for _, a := range mustHandle(t, r, []Request{{Device: "vleak"}, {Device: "vleak2"}}, nil, false) {
		if a.Result != ResultWouldDelete {
			t.Errorf("%s: %+v, want would_delete: the host pair does not count", a.Device, a)
		}
	}
	snap.Veths[4].Verdict, snap.Veths[4].Reason = inventory.Orphaned, inventory.ReasonOwnerExited
	snap.Veths[4].OrphanedSince = now.Add(-time.Hour)
	if a := mustHandle(t, r, []Request{{Device: "vleak"}}, nil, false)[0]; a.Reason != ReasonTooManyOrphans {
		t.Errorf("3 of 5 orphaned by netns_empty/owner_exited: %+v, want %s", a, ReasonTooManyOrphans)
	}
}

// TestGatesAnswerCacheBounded: hostile alerts cannot grow the memory of
// answers: oversized ones are not kept, and kept ones expire.
func TestGatesAnswerCacheBounded(t *testing.T) {
	r := newTestRemediator(testConfig(), &fakeInventory{snap: testNode()})
	big := strings.Repeat("f", 1<<20)
	for i := range 50 {
		q := Request{Device: "vleak", StartsAt: now.Add(-time.Hour - time.Duration(i)), Fingerprint: big}
		mustHandle(t, r, []Request{q}, nil, true)
	}
	if n := r.answers.len(); n != 0 {
		t.Errorf("%d answers kept for oversized alerts, want 0", n)
	}
	for i := range 20000 {
		q := Request{Device: "vnope", StartsAt: now.Add(-time.Hour), Fingerprint: fmt.Sprintf("%016x", i), Resolved: true}
		mustHandle(t, r, []Request{q}, nil, true)
	}
	if n := r.answers.len(); n > 10000 {
		t.Errorf("%d answers kept, want at most 10000", n)
	}
	now = now.Add(2 * time.Hour)
	defer func() { now = now.Add(-2 * time.Hour) }()
	mustHandle(t, r, []Request{{Device: "vnope", StartsAt: now.Add(-time.Hour), Fingerprint: "x", Resolved: true}}, nil, true)
	if n := r.answers.len(); n != 1 {
		t.Errorf("two hours later %d answers kept, want 1 (the newest)", n)
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

// TestAuditFailClosed: the audit file is opened without following a
// symbolic link and without blocking; a deletion whose intent cannot be
// written does not happen.
func TestAuditFailClosed(t *testing.T) {
	dir := t.TempDir()
	victim := dir + "/victim"
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := dir + "/audit-link"
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	fifo := dir + "/audit-fifo"
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{link, fifo, dir + "/missing-dir/audit"} {
		t.Run(path, func(t *testing.T) {
			cfg := testConfig()
			cfg.Mode, cfg.AuditFile = ModeEnforce, path
			r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
			deleted := false
			r.remover = func(*netlink.Handle) *remover {
				deleted = true
				return nil
			}
			done := make(chan Answer)
			go func() { done <- mustHandle(t, r, []Request{{Device: "vleak"}}, nil, false)[0] }()
			select {
			case a := <-done:
				if a.Result != ResultRefused || a.Reason != ReasonAuditFailed || deleted {
					t.Errorf("answer %+v (deletion attempted: %v), want refused/%s and no deletion", a, deleted, ReasonAuditFailed)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Handle hangs on the audit file")
			}
		})
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

func TestAuditFileMode(t *testing.T) {
	cfg := testConfig()
	cfg.AuditFile = t.TempDir() + "/audit.jsonl"
	r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
	mustHandle(t, r, []Request{{Device: "vleak"}}, nil, false)
	st, err := os.Stat(cfg.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("audit file mode %v, want 0600", perm)
	}
}

func TestParseReasons(t *testing.T) {
	for _, tt := range []struct {
		in      []string
		want    []inventory.Reason
		wantErr bool
	}{
		{[]string{"netns_empty"}, []inventory.Reason{inventory.ReasonNetnsEmpty}, false},
		{[]string{"netns_empty, owner_exited", "peer_on_host", "netns_empty"}, inventory.OrphanReasons, false},
		{[]string{"settling"}, nil, true}, // an unknown verdict's reason is never remediated
		{[]string{"netns_empty,"}, nil, true},
		{[]string{"container"}, nil, true},
	} {
		got, err := ParseReasons(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("ParseReasons(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestGatesPairOnTheHost: deleting one end of a pair left on the host
// deletes the other: both ends pass the gates on interfaces, and both
// count towards the limits.
func TestGatesPairOnTheHost(t *testing.T) {
	pair := func() *inventory.Snapshot {
		a := orphan("vA", 50, "docker0", inventory.ReasonPeerOnHost, time.Hour)
		b := orphan("keepB", 51, "br-infra", inventory.ReasonPeerOnHost, time.Hour)
		a.PeerOnHost, a.PeerName, b.PeerOnHost, b.PeerName = true, "keepB", true, "vA"
		snap := testNode()
		snap.Veths = append(snap.Veths, a, b)
		return snap
	}
	cfg := testConfig()
	cfg.Reasons = []inventory.Reason{inventory.ReasonPeerOnHost}
	cfg.MasterInclude = regexp.MustCompile(`^(?:docker0)$`)
	cfg.DeviceExclude = nil
	r := newTestRemediator(cfg, &fakeInventory{snap: pair()})
	if a := mustHandle(t, r, []Request{{Device: "vA"}}, nil, false)[0]; a.Reason != ReasonMasterNotAllowed || !strings.Contains(a.Detail, "keepB") {
		t.Errorf("vA, whose peer keepB is on br-infra: %+v, want %s naming keepB", a, ReasonMasterNotAllowed)
	}
	cfg.MasterInclude = nil
	cfg.DeviceExclude = regexp.MustCompile(`^(?:keep.*)$`)
	r = newTestRemediator(cfg, &fakeInventory{snap: pair()})
	if a := mustHandle(t, r, []Request{{Device: "vA"}}, nil, false)[0]; a.Reason != ReasonDeviceExcluded {
		t.Errorf("vA, whose peer keepB is excluded: %+v, want %s", a, ReasonDeviceExcluded)
	}
	cfg.DeviceExclude, cfg.MaxPerRequest = nil, 1
	r = newTestRemediator(cfg, &fakeInventory{snap: pair()})
	if a := mustHandle(t, r, []Request{{Device: "vA"}}, nil, false)[0]; a.Reason != ReasonRequestLimit {
		t.Errorf("a pair with at most 1 deletion per request: %+v, want %s", a, ReasonRequestLimit)
	}
	cfg.MaxPerRequest = 2
	r = newTestRemediator(cfg, &fakeInventory{snap: pair()})
	answers := mustHandle(t, r, []Request{{Device: "vA"}, {Device: "keepB"}}, nil, false)
	if answers[0].Result != ResultWouldDelete || answers[1].Result != ResultWouldDelete || !strings.Contains(answers[1].Detail, "with vA") {
		t.Errorf("both ends asked for, limit 2: %+v, want both would_delete, keepB with vA", answers)
	}
}

// TestGatesDuplicateDevice: a device named twice in one request is one
// deletion, not two.
func TestGatesDuplicateDevice(t *testing.T) {
	cfg := testConfig()
	cfg.MaxPerRequest = 1
	r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
	answers := mustHandle(t, r, []Request{{Device: "vleak"}, {Device: "vleak"}}, nil, false)
	for _, a := range answers {
		if a.Result != ResultWouldDelete {
			t.Errorf("vleak twice, limit 1: %+v, want would_delete for both", answers)
		}
	}
}

// TestGatesCNI: a routed CNI's veths have no master. The default master
// patterns refuse them; an operator who adds the empty alternative opts
// them in, and then they are refused only while the CNI's node agent is
// down (it cleans up itself when it restarts).
func TestGatesCNI(t *testing.T) {
	node := func(running bool) *inventory.Snapshot {
		s := testNode()
		s.Veths = append(s.Veths, orphan("cali0123456789a", 40, "", inventory.ReasonNetnsEmpty, time.Hour))
		s.Views = []inventory.NamedView{{Name: "cni", View: nodeAgent{agent: "the CNI calico (calico-node)", down: !running}}}
		return s
	}
	optIn := regexp.MustCompile(`^(?:docker0|br-[0-9a-f]{12}|cni0|cbr0|)$`)
	tests := []struct {
		name          string
		masterInclude *regexp.Regexp
		device        string
		index         int
		agentRunning  bool
		wantResult    Result
		wantReason    string
	}{
		{"default patterns refuse no master", nil, "cali0123456789a", 40, true, ResultRefused, ReasonMasterNotAllowed},
		{"opted in, agent running", optIn, "cali0123456789a", 40, true, ResultWouldDelete, "netns_empty"},
		{"opted in, agent down", optIn, "cali0123456789a", 40, false, ResultRefused, ReasonCNINotReady},
		{"bridged veth, agent down", nil, "vleak", 10, false, ResultRefused, ReasonCNINotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.masterInclude != nil {
				cfg.MasterInclude = tt.masterInclude
			}
			r := newTestRemediator(cfg, &fakeInventory{snap: node(tt.agentRunning)})
			a := mustHandle(t, r, []Request{alert(tt.device, tt.index, time.Hour)}, nil, true)[0]
			if a.Result != tt.wantResult || a.Reason != tt.wantReason {
				t.Errorf("Handle(%s) = %s/%s (%s), want %s/%s", tt.device, a.Result, a.Reason, a.Detail, tt.wantResult, tt.wantReason)
			}
		})
	}
}

// nodeAgent is the view of a node agent that cleans up its own leftovers
// (a CNI's daemon), up or down.
type nodeAgent struct {
	agent string
	down  bool
}

func (a nodeAgent) AgentDown() (string, bool)                     { return a.agent, a.down }
func (nodeAgent) Families(*inventory.Snapshot) []inventory.Family { return nil }
