package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
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
		Instance:       Instance{Label: "instance", Pattern: regexp.MustCompile(`^node1$`)},
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
	r.inHostMounts = func(fn func() error) error { return fn() }
	return r
}

// alert is a firing alert for device on this node (node1), with an
// ifindex label unless index is 0.
func alert(device string, index int, firingFor time.Duration) Alert {
	a := Alert{Status: StatusFiring, Labels: map[string]string{"device": device, "instance": "node1"},
		StartsAt: now.Add(-firingFor), Fingerprint: "fp-" + device}
	if index != 0 {
		a.Labels["ifindex"] = strconv.Itoa(index)
	}
	return a
}

// withLabel returns a with one more label.
func withLabel(a Alert, name, value string) Alert {
	a.Labels = maps.Clone(a.Labels)
	a.Labels[name] = value
	return a
}

// resolvedAlert is an alert for device on this node that fired an hour
// ago and no longer fires.
func resolvedAlert(device, fingerprint string) Alert {
	a := alert(device, 0, time.Hour)
	a.Status, a.Fingerprint = StatusResolved, fingerprint
	return a
}

func payloadOf(alerts ...Alert) *Payload {
	return &Payload{Version: PayloadVersion, Status: StatusFiring, Alerts: alerts}
}

func TestAlertGates(t *testing.T) {
	old := time.Hour
	resolved := alert("vleak", 10, old)
	resolved.Status, resolved.Fingerprint = StatusResolved, ""
	badIfindex := withLabel(alert("vleak", 0, old), "ifindex", "-1")
	badIfindex.Fingerprint = ""
	noStartsAt := alert("vleak", 10, old)
	noStartsAt.StartsAt, noStartsAt.Fingerprint = time.Time{}, ""
	bigFingerprint := alert("vleak", 10, old)
	bigFingerprint.Fingerprint = strings.Repeat("f", 1<<20)
	bigInstance := withLabel(alert("vleak", 10, old), "instance", "node1"+strings.Repeat(" ", 300))
	bigInstance.Fingerprint = ""
	bigOtherLabel := withLabel(alert("vleak", 10, old), "team", strings.Repeat("x", 257))
	bigOtherLabel.Fingerprint = ""
	bigLabelName := withLabel(alert("vleak", 10, old), strings.Repeat("l", 257), "x")
	bigLabelName.Fingerprint = ""
	tests := []struct {
		name         string
		alert        Alert
		wantResult   Result
		wantReason   string
		inventoryErr error
	}{
		{"old orphan, old alert", alert("vleak", 10, old), ResultWouldDelete, "netns_empty", nil},
		{"no ifindex in the alert", alert("vleak2", 0, old), ResultWouldDelete, "netns_empty", nil},
		{"resolved alert", resolved, ResultSkipped, ReasonResolved, nil},
		{"path in the device", alert("../x", 0, old), ResultRefused, ReasonInvalidDevice, nil},
		{"16-byte device", alert("vethabcdefghijkl", 0, old), ResultRefused, ReasonInvalidDevice, nil},
		{"no device label", alert("", 0, old), ResultRefused, ReasonInvalidDevice, nil},
		{"bad ifindex", badIfindex, ResultRefused, ReasonInvalidIfindex, nil},
		{"another node", withLabel(alert("vleak", 10, old), "instance", "node2"), ResultSkipped, ReasonOtherNode, nil},
		{"alert from the future", alert("vleak", 10, -time.Minute), ResultRefused, ReasonStartsInFuture, nil},
		{"alert too young", alert("vleak", 10, 5*time.Minute), ResultRefused, ReasonAlertTooYoung, nil},
		{"no startsAt", noStartsAt, ResultRefused, ReasonAlertTooYoung, nil},
		{"gone since recorded", alert("vgone", 31, old), ResultGone, "", nil},
		{"never recorded, not there", alert("vnothere", 30, old), ResultNotFound, "", nil},
		{"fingerprint of 1 MB", bigFingerprint, ResultRefused, ReasonInvalidAlert, nil},
		{"instance label of 305 bytes", bigInstance, ResultRefused, ReasonInvalidAlert, nil},
		{"any label value of 257 bytes", bigOtherLabel, ResultRefused, ReasonInvalidAlert, nil},
		{"a label name of 257 bytes", bigLabelName, ResultRefused, ReasonInvalidAlert, nil},
		{"device label of 1 MB", alert(strings.Repeat("v", 1<<20), 0, old), ResultRefused, ReasonInvalidAlert, nil},
		// lo is not in the snapshot's veths but exists: never "gone".
		{"not a veth", alert("lo", 1, old), ResultRefused, ReasonNotVeth, nil},
		{"ifindex reused", alert("vleak", 99, old), ResultRefused, ReasonIfindexMismatch, nil},
		{"live veth", alert("vlive", 20, old), ResultRefused, ReasonNotOrphaned, nil},
		{"reason not allowed", alert("vexited", 13, old), ResultRefused, ReasonReasonNotAllowed, nil},
		{"orphan young here", alert("vyoung", 12, old), ResultRefused, ReasonOrphanTooYoung, nil},
		{"master not allowed", alert("vodd", 14, old), ResultRefused, ReasonMasterNotAllowed, nil},
		{"device excluded", alert("vkeep", 15, old), ResultRefused, ReasonDeviceExcluded, nil},
		{"inventory fails", alert("vleak", 10, old), ResultFailed, ReasonInventoryFailed, errors.New("netlink: boom")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := &fakeInventory{snap: testNode(), err: tt.inventoryErr}
			r := newTestRemediator(testConfig(), inv)
			answers := mustHandleAlerts(t, r, tt.alert)
			if got := answers[0]; got.Result != tt.wantResult || got.Reason != tt.wantReason {
				t.Errorf("HandleAlerts(%+v) = %s/%s (%s), want %s/%s", tt.alert, got.Result, got.Reason, got.Detail, tt.wantResult, tt.wantReason)
			}
		})
	}
}

// TestDeviceGates: the clean command has no alert, so no alert gates,
// the rest the same.
func TestDeviceGates(t *testing.T) {
	tests := []struct {
		name       string
		device     Device
		wantResult Result
		wantReason string
	}{
		{"clean: orphan", Device{Name: "vleak"}, ResultWouldDelete, "netns_empty"},
		{"clean: live veth", Device{Name: "vlive"}, ResultRefused, ReasonNotOrphaned},
		// The README's table: a name given to clean that cannot be an
		// interface name is invalid_device, whatever its length.
		{"clean: a name of 300 bytes", Device{Name: strings.Repeat("v", 300)}, ResultRefused, ReasonInvalidDevice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRemediator(testConfig(), &fakeInventory{snap: testNode()})
			answers := mustHandleDevices(t, r, tt.device)
			if got := answers[0]; got.Result != tt.wantResult || got.Reason != tt.wantReason {
				t.Errorf("HandleDevices(%+v) = %s/%s (%s), want %s/%s", tt.device, got.Result, got.Reason, got.Detail, tt.wantResult, tt.wantReason)
			}
		})
	}
}

func TestGatesBlastRadius(t *testing.T) {
	t.Run("too many orphans", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxOrphanRatio = 0.4 // 6 of 12 look orphaned
		r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
		a := mustHandleAlerts(t, r, alert("vleak", 10, time.Hour))[0]
		if a.Result != ResultRefused || a.Reason != ReasonTooManyOrphans {
			t.Errorf("got %s/%s, want refused/%s", a.Result, a.Reason, ReasonTooManyOrphans)
		}
	})
	t.Run("per request", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxPerRequest = 1
		r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
		answers := mustHandleAlerts(t, r, alert("vleak", 10, time.Hour), alert("vleak2", 11, time.Hour))
		if answers[0].Result != ResultWouldDelete || answers[1].Reason != ReasonRequestLimit {
			t.Errorf("got %+v, want the first allowed and the second refused for %s", answers, ReasonRequestLimit)
		}
	})
	t.Run("no permission", func(t *testing.T) {
		cfg := testConfig()
		cfg.Mode = ModeEnforce
		r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
		r.capable = func() bool { return false }
		a := mustHandleAlerts(t, r, alert("vleak", 10, time.Hour))[0]
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
	first := mustHandleAlerts(t, r, req)[0]
	again := mustHandleAlerts(t, r, req)[0]
	if first != again || inv.calls != 1 {
		t.Errorf("second answer %+v after %+v with %d inventories, want the same answer from 1 inventory", again, first, inv.calls)
	}
	// A new firing of the same alert (a new startsAt) is a new request.
	req.StartsAt = req.StartsAt.Add(time.Minute)
	mustHandleAlerts(t, r, req)
	if inv.calls != 2 {
		t.Errorf("a new startsAt took %d inventories in all, want 2", inv.calls)
	}
}

// TestGatesCacheKeyStatusAndNode: a cached answer is for the same
// alert in the same status naming the same node. An alert that resolved
// and fires again with the same fingerprint and startsAt (Alertmanager
// keeps startsAt across a flap shorter than its resolve timeout) is
// decided, not answered skipped/resolved from the cache for an hour; an
// alert answered other_node is decided again when it names this node.
func TestGatesCacheKeyStatusAndNode(t *testing.T) {
	inv := &fakeInventory{snap: testNode()}
	r := newTestRemediator(testConfig(), inv)
	firing := alert("vleak", 10, time.Hour)
	resolved := firing
	resolved.Status = StatusResolved
	if a := mustHandleAlerts(t, r, resolved)[0]; a.Reason != ReasonResolved {
		t.Fatalf("resolved alert: %+v, want %s", a, ReasonResolved)
	}
	if a := mustHandleAlerts(t, r, firing)[0]; a.Result != ResultWouldDelete {
		t.Errorf("the same alert firing again: %+v, want would_delete, not the cached resolved answer", a)
	}

	elsewhere := withLabel(alert("vleak2", 11, time.Hour), "instance", "node2")
	if a := mustHandleAlerts(t, r, elsewhere)[0]; a.Reason != ReasonOtherNode {
		t.Fatalf("alert for node2: %+v, want %s", a, ReasonOtherNode)
	}
	here := alert("vleak2", 11, time.Hour)
	here.Fingerprint = elsewhere.Fingerprint
	if a := mustHandleAlerts(t, r, here)[0]; a.Result != ResultWouldDelete {
		t.Errorf("the same fingerprint naming this node: %+v, want would_delete, not the cached other_node answer", a)
	}
}

// TestGatesNoStartsAt: an alert without startsAt is too young, and the
// refusal says its age is unknown rather than a made-up duration.
func TestGatesNoStartsAt(t *testing.T) {
	r := newTestRemediator(testConfig(), &fakeInventory{snap: testNode()})
	a := alert("vleak", 10, time.Hour)
	a.StartsAt = time.Time{}
	got := mustHandleAlerts(t, r, a)[0]
	if got.Reason != ReasonAlertTooYoung || !strings.Contains(got.Detail, "no startsAt") || strings.Contains(got.Detail, "2562047") {
		t.Errorf("alert without startsAt: %+v, want %s saying it has no startsAt", got, ReasonAlertTooYoung)
	}
}

// TestGatesUnicodeSpaceName: a name the kernel accepts is decided like any
// other, a Unicode space in it included (U+2003: the kernel takes it as
// plain bytes); the answer is not a cached invalid_device.
func TestGatesUnicodeSpaceName(t *testing.T) {
	snap := testNode()
	snap.Veths = append(snap.Veths, orphan("v\u2003x", 40, "docker0", inventory.ReasonNetnsEmpty, time.Hour))
	r := newTestRemediator(testConfig(), &fakeInventory{snap: snap})
	for range 2 {
		if a := mustHandleAlerts(t, r, alert("v\u2003x", 40, time.Hour))[0]; a.Result != ResultWouldDelete {
			t.Errorf("alert for %q: %+v, want would_delete", "v\u2003x", a)
		}
	}
}

func TestAuditFile(t *testing.T) {
	cfg := testConfig()
	cfg.AuditFile = t.TempDir() + "/audit.jsonl"
	r := newTestRemediator(cfg, &fakeInventory{snap: testNode()})
	mustHandleAlerts(t, r, alert("vleak", 10, time.Hour), alert("vlive", 20, time.Hour))
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
	if a := mustHandleAlerts(t, r, req)[0]; a.Reason != ReasonOrphanTooYoung {
		t.Fatalf("first answer %+v, want %s", a, ReasonOrphanTooYoung)
	}
	now = now.Add(time.Hour)
	defer func() { now = now.Add(-time.Hour) }()
	r.now = func() time.Time { return now }
	if a := mustHandleAlerts(t, r, req)[0]; a.Result != ResultWouldDelete {
		t.Errorf("an hour later: %+v, want would_delete", a)
	}
}

func mustHandleAlerts(t *testing.T, r *Remediator, alerts ...Alert) []Answer {
	t.Helper()
	answers, err := r.HandleAlerts(context.Background(), payloadOf(alerts...))
	if err != nil {
		t.Fatal(err)
	}
	return answers
}

func mustHandleDevices(t *testing.T, r *Remediator, devices ...Device) []Answer {
	t.Helper()
	answers, err := r.HandleDevices(context.Background(), devices)
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
	if a := mustHandleAlerts(t, r, alert("vleak", 10, time.Hour))[0]; a.Reason != ReasonHourlyLimit {
		t.Errorf("two deletions in the last hour, limit 2: %+v, want %s", a, ReasonHourlyLimit)
	}
	r.deletions = []time.Time{now.Add(-61 * time.Minute), now.Add(-time.Minute)}
	if a := mustHandleAlerts(t, r, alert("vleak", 10, time.Hour))[0]; a.Result != ResultWouldDelete {
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
			if a := mustHandleDevices(t, r, Device{Name: "vleak"})[0]; a.Reason != ReasonNotRecorded || a.Ifindex != 10 {
				t.Errorf("HandleDevices(vleak) = %+v, want refused/%s with ifindex 10", a, ReasonNotRecorded)
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
			a := mustHandleDevices(t, r, Device{Name: "vleak"})[0]
			if a.Result != tt.want || (tt.want == ResultRefused && a.Reason != ReasonStaleState) {
				t.Errorf("HandleDevices(vleak) = %+v, want %s (%s when refused)", a, tt.want, ReasonStaleState)
			}
		})
	}
}

// TestGatesRatioDetail: the ratio guard's refusal says what it saw (how
// many of how many veths, for which reasons, which resolvers answered and
// which failed) and which flag, at which value, lets them through.
func TestGatesRatioDetail(t *testing.T) {
	cfg := testConfig()
	cfg.MaxOrphanRatio = 0.4 // 6 of 12 look orphaned
	steps := []inventory.Step{{Name: inventory.StepLinks}, {Name: inventory.StepNetns}, {Name: "docker"},
		{Name: "cri", Err: errors.New("connection refused")}, {Name: "cni"}, {Name: inventory.StepState}}
	for _, tt := range []struct {
		name      string
		resolvers []string
		want      []string
	}{
		{"a resolver down", []string{"docker", "cri", "podman"}, []string{"runtime resolvers up: docker;", "down: cri (connection refused), podman (not asked)"}},
		{"no resolver", nil, []string{"no runtime resolver is on"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := testNode()
			snap.Steps = steps
			cfg := cfg
			cfg.Resolvers = tt.resolvers
			a := mustHandleDevices(t, newTestRemediator(cfg, &fakeInventory{snap: snap}), Device{Name: "vleak"})[0]
			want := append([]string{"6 of 12 veths look orphaned (5 netns_empty, 1 owner_exited)", "more than --remediation.max-orphan-ratio=0.4",
				"--remediation.max-orphan-ratio=0.5 lets them through"}, tt.want...)
			for _, w := range want {
				if a.Reason != ReasonTooManyOrphans || !strings.Contains(a.Detail, w) {
					t.Errorf("HandleDevices(vleak) = %s (%s), want %s naming %q", a.Reason, a.Detail, ReasonTooManyOrphans, w)
				}
			}
			cfg.MaxOrphanRatio = 0.5
			if a := mustHandleDevices(t, newTestRemediator(cfg, &fakeInventory{snap: snap}), Device{Name: "vleak"})[0]; a.Result != ResultWouldDelete {
				t.Errorf("with the ratio the detail names: %+v, want would_delete", a)
			}
		})
	}
}

// TestGatesDurationsReadTrue: a duration compared with a bound is printed
// so that the comparison reads true: 59.6 s is not "1m0s, less than 1m0s".
func TestGatesDurationsReadTrue(t *testing.T) {
	cfg := testConfig()
	cfg.MinAge = time.Minute
	snap := testNode()
	snap.Veths[0].OrphanedSince = now.Add(-59600 * time.Millisecond)
	young := alert("vleak", 10, 59600*time.Millisecond)
	r := newTestRemediator(cfg, &fakeInventory{snap: snap})
	if a := mustHandleAlerts(t, r, young)[0]; !strings.Contains(a.Detail, "firing for 59s, less than 1m0s") {
		t.Errorf("alert firing 59.6 s, min-age 1m: %s (%s), want 59s, less than 1m0s", a.Reason, a.Detail)
	}
	if a := mustHandleDevices(t, r, Device{Name: "vleak"})[0]; !strings.Contains(a.Detail, "orphaned for 59s here, less than 1m0s") {
		t.Errorf("orphaned 59.6 s, min-age 1m: %s (%s), want 59s, less than 1m0s", a.Reason, a.Detail)
	}
	snap.Veths[0].OrphanedSince = now.Add(-300 * time.Millisecond)
	cfg.MinAge = 500 * time.Millisecond
	if a := mustHandleDevices(t, newTestRemediator(cfg, &fakeInventory{snap: snap}), Device{Name: "vleak"})[0]; !strings.Contains(a.Detail, "orphaned for 300ms here, less than 500ms") {
		t.Errorf("orphaned 0.3 s, min-age 0.5s: %s (%s), want 300ms, less than 500ms", a.Reason, a.Detail)
	}
	snap.HistoryObserved = now.Add(-5*time.Minute - 400*time.Millisecond)
	if a := mustHandleDevices(t, r, Device{Name: "vleak"})[0]; !strings.Contains(a.Detail, "refreshed 5m1s ago, more than 5m0s") {
		t.Errorf("state 5m0.4s old, max gap 5m: %s (%s), want 5m1s, more than 5m0s", a.Reason, a.Detail)
	}
}

// TestGatesNotOrphanedSays: a veth still settling, or unknown on a
// partial view, is not_orphaned with a detail that says why.
func TestGatesNotOrphanedSays(t *testing.T) {
	snap := testNode()
	snap.Veths = append(snap.Veths,
		inventory.Veth{Name: "vsettle", Index: 40, Master: "docker0", Verdict: inventory.Unknown, Reason: inventory.ReasonSettling, OrphanedSince: now.Add(-2 * time.Second)},
		inventory.Veth{Name: "vblind", Index: 41, Master: "docker0", Verdict: inventory.Unknown, Reason: inventory.ReasonPartialView})
	snap.Warnings = []string{"not running as root: run as root for a full view"}
	cfg := testConfig()
	cfg.MinAge = 0
	r := newTestRemediator(cfg, &fakeInventory{snap: snap})
	for device, want := range map[string]string{
		"vsettle": "looked orphaned for 2s, less than the settle time (--inventory.settle-time)",
		"vblind":  "vblind is unknown (partial_view); the inventory's view is partial: not running as root: run as root for a full view",
	} {
		if a := mustHandleDevices(t, r, Device{Name: device})[0]; a.Reason != ReasonNotOrphaned || !strings.Contains(a.Detail, want) {
			t.Errorf("HandleDevices(%s) = %s (%s), want %s naming %q", device, a.Reason, a.Detail, ReasonNotOrphaned, want)
		}
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
	for _, a := range mustHandleDevices(t, r, Device{Name: "vleak"}, Device{Name: "vleak2"}) {
		if a.Result != ResultWouldDelete {
			t.Errorf("%s: %+v, want would_delete: the host pair does not count", a.Device, a)
		}
	}
	snap.Veths[4].Verdict, snap.Veths[4].Reason = inventory.Orphaned, inventory.ReasonOwnerExited
	snap.Veths[4].OrphanedSince = now.Add(-time.Hour)
	if a := mustHandleDevices(t, r, Device{Name: "vleak"})[0]; a.Reason != ReasonTooManyOrphans {
		t.Errorf("3 of 5 orphaned by netns_empty/owner_exited: %+v, want %s", a, ReasonTooManyOrphans)
	}
}

// TestGatesAnswerCacheBounded: hostile alerts cannot grow the memory of
// answers: oversized ones are not kept, and kept ones expire.
func TestGatesAnswerCacheBounded(t *testing.T) {
	r := newTestRemediator(testConfig(), &fakeInventory{snap: testNode()})
	big := strings.Repeat("f", 1<<20)
	for i := range 50 {
		q := alert("vleak", 0, time.Hour+time.Duration(i))
		q.Fingerprint = big
		mustHandleAlerts(t, r, q)
	}
	if n := r.answers.len(); n != 0 {
		t.Errorf("%d answers kept for oversized alerts, want 0", n)
	}
	for i := range 20000 {
		mustHandleAlerts(t, r, resolvedAlert("vnope", fmt.Sprintf("%016x", i)))
	}
	if n := r.answers.len(); n > 10000 {
		t.Errorf("%d answers kept, want at most 10000", n)
	}
	now = now.Add(2 * time.Hour)
	defer func() { now = now.Add(-2 * time.Hour) }()
	mustHandleAlerts(t, r, resolvedAlert("vnope", "x"))
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
	if _, err := r.HandleAlerts(ctx, payloadOf(alert("vleak", 10, time.Hour))); !errors.Is(err, ErrBusy) {
		t.Errorf("HandleAlerts while busy = %v, want ErrBusy", err)
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
			go func() { done <- mustHandleDevices(t, r, Device{Name: "vleak"})[0] }()
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
	mustHandleDevices(t, r, Device{Name: "vleak"})
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
	if a := mustHandleDevices(t, r, Device{Name: "vA"})[0]; a.Reason != ReasonMasterNotAllowed || !strings.Contains(a.Detail, "keepB") {
		t.Errorf("vA, whose peer keepB is on br-infra: %+v, want %s naming keepB", a, ReasonMasterNotAllowed)
	}
	cfg.MasterInclude = nil
	cfg.DeviceExclude = regexp.MustCompile(`^(?:keep.*)$`)
	r = newTestRemediator(cfg, &fakeInventory{snap: pair()})
	if a := mustHandleDevices(t, r, Device{Name: "vA"})[0]; a.Reason != ReasonDeviceExcluded {
		t.Errorf("vA, whose peer keepB is excluded: %+v, want %s", a, ReasonDeviceExcluded)
	}
	cfg.DeviceExclude, cfg.MaxPerRequest = nil, 1
	r = newTestRemediator(cfg, &fakeInventory{snap: pair()})
	if a := mustHandleDevices(t, r, Device{Name: "vA"})[0]; a.Reason != ReasonRequestLimit {
		t.Errorf("a pair with at most 1 deletion per request: %+v, want %s", a, ReasonRequestLimit)
	}
	cfg.MaxPerRequest = 2
	r = newTestRemediator(cfg, &fakeInventory{snap: pair()})
	answers := mustHandleDevices(t, r, Device{Name: "vA"}, Device{Name: "keepB"})
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
	answers := mustHandleDevices(t, r, Device{Name: "vleak"}, Device{Name: "vleak"})
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
			a := mustHandleAlerts(t, r, alert(tt.device, tt.index, time.Hour))[0]
			if a.Result != tt.wantResult || a.Reason != tt.wantReason {
				t.Errorf("HandleAlerts(%s) = %s/%s (%s), want %s/%s", tt.device, a.Result, a.Reason, a.Detail, tt.wantResult, tt.wantReason)
			}
		})
	}
}

// TestGateOrder: a request that several gates would stop gets the reason
// of the first of them, in the order the gates are listed.
func TestGateOrder(t *testing.T) {
	t.Run("alerts", func(t *testing.T) {
		old := time.Hour
		other := func(a Alert) Alert { return withLabel(a, "instance", "node2") }
		resolved := other(alert("../x", 0, old))
		resolved.Status = StatusResolved
		future := alert("vleak", 10, -time.Minute) // too young as well
		for _, tt := range []struct {
			name  string
			alert Alert
			want  string
		}{
			{"resolved, another node, invalid device", resolved, ReasonResolved},
			{"invalid device and ifindex", withLabel(alert("../x", 0, old), "ifindex", "-1"), ReasonInvalidDevice},
			{"invalid ifindex, another node", other(withLabel(alert("vleak", 0, old), "ifindex", "x")), ReasonInvalidIfindex},
			{"another node, from the future", other(future), ReasonOtherNode},
			{"from the future, too young", future, ReasonStartsInFuture},
		} {
			r := newTestRemediator(testConfig(), &fakeInventory{snap: testNode()})
			if a := mustHandleAlerts(t, r, tt.alert)[0]; a.Reason != tt.want {
				t.Errorf("%s: HandleAlerts = %+v, want %s", tt.name, a, tt.want)
			}
		}
	})
	t.Run("veths", func(t *testing.T) {
		node := func(cniDown bool) *inventory.Snapshot {
			young := 2 * time.Minute
			unrecorded := orphan("vm2", 42, "odd0", inventory.ReasonNetnsEmpty, 0)
			unrecorded.OrphanedSince = time.Time{}
			pA := orphan("vpA", 50, "docker0", inventory.ReasonPeerOnHost, time.Hour)
			pB := orphan("vpB", 51, "docker0", inventory.ReasonPeerOnHost, time.Hour)
			pC := orphan("vpC", 52, "odd0", inventory.ReasonPeerOnHost, time.Hour)
			pA.PeerOnHost, pA.PeerName, pB.PeerOnHost, pB.PeerName = true, "vpB", true, "vpA"
			pC.PeerOnHost, pC.PeerName = true, "vpmissing"
			s := &inventory.Snapshot{Taken: now, HistoryObserved: now.Add(-time.Minute), Veths: []inventory.Veth{
				{Name: "vlive", Index: 20, Master: "odd0", Verdict: inventory.Owned, Reason: inventory.ReasonContainer},
				orphan("vm1", 41, "odd0", inventory.ReasonOwnerExited, young),
				unrecorded,
				orphan("vm3", 43, "odd0", inventory.ReasonNetnsEmpty, young),
				orphan("vm4", 44, "odd0", inventory.ReasonNetnsEmpty, time.Hour),
				orphan("vm5", 45, "docker0", inventory.ReasonNetnsEmpty, time.Hour),
				orphan("vn6", 46, "docker0", inventory.ReasonNetnsEmpty, time.Hour),
				pA, pB, pC,
			}}
			if cniDown {
				s.Views = []inventory.NamedView{{Name: "cni", View: nodeAgent{agent: "the CNI calico (calico-node)", down: true}}}
			}
			return s
		}
		base := testConfig()
		base.Reasons = []inventory.Reason{inventory.ReasonNetnsEmpty, inventory.ReasonPeerOnHost}
		base.DeviceExclude = regexp.MustCompile(`^vm.*$`)
		base.MaxOrphanRatio = 0.1
		for _, tt := range []struct {
			name    string
			device  Device
			cniDown bool
			config  func(*Config)
			want    string
		}{
			{"ifindex reused, owned, master", Device{Name: "vlive", Index: 99}, true, nil, ReasonIfindexMismatch},
			{"owned, master", Device{Name: "vlive"}, true, nil, ReasonNotOrphaned},
			{"reason, young, master, excluded", Device{Name: "vm1"}, true, nil, ReasonReasonNotAllowed},
			{"unrecorded, master, excluded", Device{Name: "vm2"}, true, nil, ReasonNotRecorded},
			{"young, master, excluded", Device{Name: "vm3"}, true, nil, ReasonOrphanTooYoung},
			{"peer missing, master", Device{Name: "vpC"}, true, nil, ReasonChanged},
			{"master, excluded, CNI", Device{Name: "vm4"}, true, nil, ReasonMasterNotAllowed},
			{"excluded, CNI, ratio", Device{Name: "vm5"}, true, nil, ReasonDeviceExcluded},
			{"CNI, ratio", Device{Name: "vn6"}, true, nil, ReasonCNINotReady},
			{"ratio, limits, permission", Device{Name: "vpA"}, false, func(c *Config) { c.MaxPerRequest, c.MaxPerHour = 1, 1 }, ReasonTooManyOrphans},
			{"request and hourly limits, permission", Device{Name: "vpA"}, false, func(c *Config) {
				c.MaxOrphanRatio, c.MaxPerRequest, c.MaxPerHour = 1, 1, 1
			}, ReasonRequestLimit},
			{"hourly limit, permission", Device{Name: "vpA"}, false, func(c *Config) { c.MaxOrphanRatio, c.MaxPerHour = 1, 1 }, ReasonHourlyLimit},
			{"permission", Device{Name: "vpA"}, false, func(c *Config) { c.MaxOrphanRatio = 1 }, ReasonNoPermission},
		} {
			cfg := base
			cfg.Mode = ModeEnforce
			if tt.config != nil {
				tt.config(&cfg)
			}
			r := newTestRemediator(cfg, &fakeInventory{snap: node(tt.cniDown)})
			r.capable = func() bool { return false }
			r.remover = func(*netlink.Handle) *remover {
				t.Fatalf("%s: passed every gate", tt.name)
				return nil
			}
			if a := mustHandleDevices(t, r, tt.device)[0]; a.Reason != tt.want {
				t.Errorf("%s: HandleDevices(%+v) = %+v, want %s", tt.name, tt.device, a, tt.want)
			}
		}
	})
}

// nodeAgent is the view of a node agent that cleans up its own leftovers
// (a CNI's daemon), up or down.
type nodeAgent struct {
	agent string
	down  bool
}

func (a nodeAgent) AgentDown() (string, bool)                     { return a.agent, a.down }
func (nodeAgent) Families(*inventory.Snapshot) []inventory.Family { return nil }
