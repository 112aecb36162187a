package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

	ownerDocker = &Owner{Kind: OwnerContainer, ID: ctrA, Runtime: "docker"}
	ownerPod    = &Owner{Kind: OwnerPod, ID: ctrB, PodUID: podUID, Runtime: "containerd"}
	ownerShell  = &Owner{Kind: OwnerProcess, ID: "4242", Name: "bash"}
)

// logBuffer collects a logger's output; slog handlers may write from
// several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the log lines that contain msg.
func (b *logBuffer) lines(msg string) []string {
	var out []string
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, msg) {
			out = append(out, line)
		}
	}
	return out
}

func testLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

const (
	msgReadFailed  = "cannot read state file"
	msgWriteFailed = "cannot write state file"
	msgWritable    = "state file writable again"
)

// judgeBy returns a judge that gives each veth the verdict verdicts names
// for it, unknown for the others.
func judgeBy(verdicts map[string]Verdict) func(*Veth) {
	return func(v *Veth) {
		v.Verdict = verdicts[v.Name]
		switch v.Verdict {
		case Owned:
			v.Reason = ReasonContainer
		case Orphaned:
			v.Reason = ReasonNetnsEmpty
		default:
			v.Verdict, v.Reason = Unknown, ReasonNoKnownOwner
		}
	}
}

func veth(name string, index int, owner *Owner) Veth {
	return Veth{Name: name, Index: index, Owner: owner}
}

// find returns the veth called name in veths.
func find(t *testing.T, veths []Veth, name string) *Veth {
	t.Helper()
	for i := range veths {
		if veths[i].Name == name {
			return &veths[i]
		}
	}
	t.Fatalf("no veth %s in %v", name, veths)
	return nil
}

// readState reads the state file at path the way OpenState does and
// fails the test when it does not parse.
func readState(t *testing.T, path string) map[stateKey]*deviceState {
	t.Helper()
	f, err := readStateFile(path)
	if err != nil {
		t.Fatalf("readStateFile(%s): %v", path, err)
	}
	m := map[stateKey]*deviceState{}
	for _, d := range f.Devices {
		m[stateKey{d.Device, d.Index}] = d
	}
	return m
}

// tempFiles lists what writeFileAtomic may have left behind in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func ownerString(o *Owner) string {
	if o == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%+v", *o)
}

func sameOwner(a, b *Owner) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenStateMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lib", "veth_exporter", "state.json")
	logger, logs := testLogger()
	s := OpenState(path, StateOptions{Logger: logger})
	if len(s.devices) != 0 {
		t.Fatalf("OpenState(%s) of a missing file has %d devices, want 0", path, len(s.devices))
	}
	if got := logs.lines("level=ERROR"); len(got) != 0 {
		t.Errorf("OpenState(%s) of a missing file logged errors: %q", path, got)
	}
	if got := logs.lines("level=WARN"); len(got) != 0 {
		t.Errorf("OpenState(%s) of a missing file logged warnings: %q", path, got)
	}

	veths := []Veth{veth("veth1", 7, nil)}
	if _, err := s.observe(t0, veths, 0, judgeBy(map[string]Verdict{"veth1": Orphaned})); err != nil {
		t.Fatalf("observe: %v", err)
	}
	checkTime(t, "FirstSeen", veths[0].FirstSeen, t0)
	checkTime(t, "OrphanedSince", veths[0].OrphanedSince, t0)
	// The directories leading to the state file are created.
	if got := readState(t, path); got[stateKey{"veth1", 7}] == nil {
		t.Errorf("state file %s = %v, want veth1/7", path, got)
	}
}

func TestOpenStateBadFile(t *testing.T) {
	// Every file below names veth1/7, first seen long ago: if OpenState
	// took anything from it, veth1's first-seen would be that time.
	old := "2020-01-01T00:00:00Z"
	for _, tc := range []struct {
		name, data string
	}{
		{"corrupt JSON", `{"version": 1, "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "` + old + `"}`},
		{"truncated", `{"version": 1, "devices": [{"device": "veth1", "ifindex": 7, "first_se`},
		{"empty", ``},
		{"binary", "\x00\x01\x02veth1\xff"},
		{"JSON null", `null`},
		{"no version", `{"devices": [{"device": "veth1", "ifindex": 7, "first_seen": "` + old + `"}]}`},
		{"newer version", `{"version": 2, "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "` + old + `"}]}`},
		{"version 0", `{"version": 0, "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "` + old + `"}]}`},
		{"version as a string", `{"version": "1", "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "` + old + `"}]}`},
		{"bad time", `{"version": 1, "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "yesterday"}]}`},
		{"null device", `{"version": 1, "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "` + old + `"}, null]}`},
		{"device without a name", `{"version": 1, "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "` + old + `"}, {"ifindex": 8}]}`},
		{"device without an ifindex", `{"version": 1, "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "` + old + `"}, {"device": "veth2"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			writeFile(t, path, tc.data)
			logger, logs := testLogger()
			s := OpenState(path, StateOptions{Logger: logger})
			if got := logs.lines(msgReadFailed); len(got) != 1 || !strings.Contains(got[0], "level=ERROR") || !strings.Contains(got[0], path) {
				t.Errorf("OpenState(%q) logged %q, want one error %q naming the path", tc.data, logs.String(), msgReadFailed)
			}
			if len(s.devices) != 0 {
				t.Fatalf("OpenState(%q) has %d devices, want an empty history", tc.data, len(s.devices))
			}

			// Even a snapshot without veths replaces the bad file.
			if _, err := s.observe(t0, nil, 0, judgeBy(nil)); err != nil {
				t.Fatalf("observe: %v", err)
			}
			if got := readState(t, path); len(got) != 0 {
				t.Errorf("state file after an empty snapshot = %v, want no devices", got)
			}

			veths := []Veth{veth("veth1", 7, nil)}
			if _, err := s.observe(t0.Add(time.Second), veths, 0, judgeBy(nil)); err != nil {
				t.Fatalf("observe: %v", err)
			}
			checkTime(t, "FirstSeen", veths[0].FirstSeen, t0.Add(time.Second))
			d := readState(t, path)[stateKey{"veth1", 7}]
			if d == nil {
				t.Fatalf("state file %s has no veth1/7", path)
			}
			checkTime(t, "state file first_seen", d.FirstSeen, t0.Add(time.Second))
			if got := logs.lines(msgWriteFailed); len(got) != 0 {
				t.Errorf("replacing the bad file logged %q", got)
			}
		})
	}
}

func TestOpenStateUnreadable(t *testing.T) {
	// Root reads a chmod 000 file, so the path is made unreadable by
	// putting a directory there.
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	logger, logs := testLogger()
	s := OpenState(path, StateOptions{Logger: logger})
	if got := logs.lines(msgReadFailed); len(got) != 1 || !strings.Contains(got[0], "level=ERROR") {
		t.Errorf("OpenState(%s) on a directory logged %q, want one error %q", path, logs.String(), msgReadFailed)
	}
	if len(s.devices) != 0 {
		t.Errorf("OpenState(%s) on a directory has %d devices, want 0", path, len(s.devices))
	}
	veths := []Veth{veth("veth1", 7, nil)}
	if _, err := s.observe(t0, veths, 0, judgeBy(nil)); err == nil {
		t.Errorf("observe with a directory at %s = nil, want an error", path)
	}
	checkTime(t, "FirstSeen", veths[0].FirstSeen, t0)
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Errorf("the directory at %s was replaced or removed: %v, %v", path, fi, err)
	}
	if got := tempFiles(t, dir); len(got) != 0 {
		t.Errorf("temporary files left in %s: %q", dir, got)
	}
}

func TestStateUnwritable(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup returns the state path, and the directory to check for
		// temporary files or "".
		setup func(t *testing.T) (path, dir string)
		// fix makes the path writable again, or is nil.
		fix func(t *testing.T, path string)
	}{
		{
			name: "directory at the path",
			setup: func(t *testing.T) (string, string) {
				dir := t.TempDir()
				path := filepath.Join(dir, "state.json")
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
				return path, dir
			},
			fix: func(t *testing.T, path string) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "parent is a file",
			setup: func(t *testing.T) (string, string) {
				dir := t.TempDir()
				parent := filepath.Join(dir, "lib")
				writeFile(t, parent, "not a directory\n")
				return filepath.Join(parent, "state.json"), dir
			},
			fix: func(t *testing.T, path string) {
				if err := os.Remove(filepath.Dir(path)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "procfs",
			setup: func(t *testing.T) (string, string) {
				return "/proc/self/veth-exporter-test/state.json", ""
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, dir := tc.setup(t)
			logger, logs := testLogger()
			s := OpenState(path, StateOptions{Logger: logger})
			judge := judgeBy(map[string]Verdict{"veth1": Orphaned, "veth2": Owned})

			steps := []struct {
				now   time.Time
				veths []Veth
			}{
				{t0, []Veth{veth("veth1", 7, nil)}},
				{t0.Add(time.Minute), []Veth{veth("veth1", 7, nil), veth("veth2", 8, ownerDocker)}},
				{t0.Add(2 * time.Minute), []Veth{veth("veth1", 7, nil), veth("veth2", 8, nil)}},
				{t0.Add(3 * time.Minute), []Veth{veth("veth1", 7, nil), veth("veth2", 8, nil)}},
			}
			for i, st := range steps {
				if _, err := s.observe(st.now, st.veths, 0, judge); err == nil {
					t.Errorf("step %d: observe with %s unwritable = nil, want an error", i, path)
				}
			}
			// The history lives on in memory and still reaches the veths.
			last := steps[len(steps)-1].veths
			v1, v2 := find(t, last, "veth1"), find(t, last, "veth2")
			checkTime(t, "veth1 FirstSeen", v1.FirstSeen, t0)
			checkTime(t, "veth1 OrphanedSince", v1.OrphanedSince, t0)
			checkTime(t, "veth2 FirstSeen", v2.FirstSeen, t0.Add(time.Minute))
			if !sameOwner(v2.LastOwner, ownerDocker) {
				t.Errorf("veth2 LastOwner = %s, want %s", ownerString(v2.LastOwner), ownerString(ownerDocker))
			}
			checkTime(t, "veth2 LastOwnerSeen", v2.LastOwnerSeen, t0.Add(time.Minute))

			warnings := logs.lines(msgWriteFailed)
			if len(warnings) != 1 {
				t.Errorf("%d observes logged %d %q lines, want 1: %q", len(steps), len(warnings), msgWriteFailed, warnings)
			} else if !strings.Contains(warnings[0], "level=WARN") || !strings.Contains(warnings[0], path) {
				t.Errorf("warning %q is not a warning naming %s", warnings[0], path)
			}
			if dir != "" {
				if got := tempFiles(t, dir); len(got) != 0 {
					t.Errorf("temporary files left in %s: %q", dir, got)
				}
			}
			if tc.fix == nil {
				return
			}

			tc.fix(t, path)
			veths := []Veth{veth("veth1", 7, nil), veth("veth2", 8, nil)}
			if _, err := s.observe(t0.Add(4*time.Minute), veths, 0, judge); err != nil {
				t.Fatalf("observe after %s became writable: %v", path, err)
			}
			if got := logs.lines(msgWritable); len(got) != 1 {
				t.Errorf("recovery logged %q, want one %q", logs.String(), msgWritable)
			}
			got := readState(t, path)
			d := got[stateKey{"veth1", 7}]
			if d == nil || !d.FirstSeen.Equal(t0) || !d.OrphanedSince.Equal(t0) {
				t.Errorf("state file veth1/7 = %+v, want first seen and orphaned since %v", d, t0)
			}
			if d := got[stateKey{"veth2", 8}]; d == nil || !sameOwner(d.LastOwner, ownerDocker) {
				t.Errorf("state file veth2/8 = %+v, want last owner %s", d, ownerString(ownerDocker))
			}
		})
	}
}

func TestStateReadOnly(t *testing.T) {
	judge := judgeBy(map[string]Verdict{"veth1": Orphaned, "veth2": Owned})

	t.Run("existing file", func(t *testing.T) {
		setBootID(t, "boot-a")
		path := filepath.Join(t.TempDir(), "state.json")
		data := `{"version": 1, "boot_id": "boot-a", "last_observed": "2020-01-01T00:10:00Z", "devices": [{"device": "veth1", "ifindex": 7, "first_seen": "2020-01-01T00:00:00Z"}, {"device": "gone", "ifindex": 9, "first_seen": "2020-01-01T00:00:00Z"}], ` +
			`"gone": [{"device": "tomb", "ifindex": 10, "gone_since": "2020-01-01T00:05:00Z"}]}` + "\n"
		writeFile(t, path, data)
		before, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		logger, logs := testLogger()
		s := OpenState(path, StateOptions{ReadOnly: true, Logger: logger})
		veths := []Veth{veth("veth1", 7, nil), veth("veth2", 8, ownerDocker)}
		obs, err := s.observe(t0, veths, 0, judge)
		if err != nil {
			t.Fatalf("observe: %v", err)
		}
		checkTime(t, "veth1 FirstSeen", veths[0].FirstSeen, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
		// The history is as old as the file's last observation.
		checkTime(t, "HistoryObserved", obs.historyObserved, time.Date(2020, 1, 1, 0, 10, 0, 0, time.UTC))
		// Every device of the file missing from the dump is gone: a
		// tombstone since its time, a record since an unknown moment.
		wantGone := []GoneVeth{{Device: "gone", Index: 9}, {Device: "tomb", Index: 10, Since: time.Date(2020, 1, 1, 0, 5, 0, 0, time.UTC)}}
		if fmt.Sprint(obs.gone) != fmt.Sprint(wantGone) {
			t.Errorf("gone = %v, want %v", obs.gone, wantGone)
		}
		// A read-only state lends the history it has and makes up none:
		// the file never saw veth1 orphaned, nor veth2 at all.
		checkTime(t, "veth1 OrphanedSince", veths[0].OrphanedSince, time.Time{})
		checkTime(t, "veth2 FirstSeen", veths[1].FirstSeen, time.Time{})

		after, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(before, after) || string(b) != data {
			t.Errorf("read-only state rewrote %s: %q", path, b)
		}
		if got := logs.lines(msgWriteFailed); len(got) != 0 {
			t.Errorf("read-only state logged %q", got)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "state.json")
		logger, _ := testLogger()
		s := OpenState(path, StateOptions{ReadOnly: true, Logger: logger})
		for i := range 3 {
			veths := []Veth{veth("veth1", 7, nil), veth(fmt.Sprintf("new%d", i), 10+i, ownerDocker)}
			if _, err := s.observe(t0.Add(time.Duration(i)*time.Hour), veths, 0, judge); err != nil {
				t.Fatalf("observe: %v", err)
			}
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("read-only state created %s: %v", path, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("read-only state wrote into %s: %v", dir, entries)
		}
	})
}

// TestStateConcurrentObserve has many goroutines share one State, as
// concurrent scrapes and the remediation's fresh inventory do, while a
// reader checks that the file is never seen half written.
func TestStateConcurrentObserve(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	logger, logs := testLogger()
	s := OpenState(path, StateOptions{Logger: logger})
	judge := judgeBy(map[string]Verdict{"veth0": Orphaned, "veth2": Owned})

	stop := make(chan struct{})
	readerDone := checkFileAlwaysParses(t, path, stop)

	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 40 {
				// Changing sets of veths keep every observe writing.
				veths := []Veth{veth("veth0", 100, nil), veth(fmt.Sprintf("veth%d", 1+(g+i)%4), 200+(g+i)%4, ownerDocker)}
				if _, err := s.observe(t0.Add(time.Duration(g*100+i)*time.Second), veths, 0, judge); err != nil {
					t.Errorf("observe: %v", err)
					return
				}
				if veths[0].FirstSeen.IsZero() || veths[1].FirstSeen.IsZero() {
					t.Errorf("observe left FirstSeen zero: %+v", veths)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-readerDone

	if got := readState(t, path); len(got) == 0 || got[stateKey{"veth0", 100}] == nil {
		t.Errorf("state file after concurrent observes = %v, want veth0/100", got)
	}
	if got := tempFiles(t, dir); len(got) != 0 {
		t.Errorf("temporary files left in %s: %q", dir, got)
	}
	if got := logs.lines("level=WARN"); len(got) != 0 {
		t.Errorf("concurrent observes logged %q", got)
	}
}

// TestStateConcurrentProcesses has two States write the same file at once,
// as an exporter and an `inspect` run by mistake without read-only would.
func TestStateConcurrentProcesses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	logger, _ := testLogger()
	states := []*State{OpenState(path, StateOptions{Logger: logger}), OpenState(path, StateOptions{Logger: logger})}

	stop := make(chan struct{})
	readerDone := checkFileAlwaysParses(t, path, stop)

	var wg sync.WaitGroup
	for n, s := range states {
		wg.Go(func() {
			for i := range 100 {
				veths := []Veth{veth(fmt.Sprintf("s%d-%d", n, i%5), 10+i%5, nil)}
				if _, err := s.observe(t0.Add(time.Duration(i)*time.Second), veths, 0, judgeBy(nil)); err != nil {
					t.Errorf("state %d: observe: %v", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-readerDone

	got := readState(t, path)
	if len(got) != 1 {
		t.Errorf("state file after concurrent writers = %v, want the last snapshot of one of them", got)
	}
	if got := tempFiles(t, dir); len(got) != 0 {
		t.Errorf("temporary files left in %s: %q", dir, got)
	}
}

// checkFileAlwaysParses reads path in a loop until stop is closed and
// reports any read that is neither "not there yet" nor a valid state file.
func checkFileAlwaysParses(t *testing.T, path string, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, err := readStateFile(path)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("readStateFile(%s) during concurrent writes: %v", path, err)
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	return done
}

func TestStateRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	judge := judgeBy(map[string]Verdict{"owned": Owned, "leftover": Orphaned})

	logger, _ := testLogger()
	s := OpenState(path, StateOptions{Logger: logger})
	veths := []Veth{veth("owned", 7, ownerPod), veth("leftover", 8, nil)}
	if _, err := s.observe(t0, veths, 0, judge); err != nil {
		t.Fatalf("observe: %v", err)
	}

	// A new process: the owner of "owned" is gone meanwhile.
	logger, logs := testLogger()
	s = OpenState(path, StateOptions{Logger: logger})
	if got := logs.lines("level=ERROR"); len(got) != 0 {
		t.Errorf("reopening %s logged %q", path, got)
	}
	var judgedWith *Owner
	// Within the maximum gap: the orphan clocks go on.
	later := t0.Add(DefaultMaxGap - time.Second)
	veths = []Veth{veth("owned", 7, nil), veth("leftover", 8, nil)}
	_, err := s.observe(later, veths, 0, func(v *Veth) {
		if v.Name == "owned" {
			judgedWith = v.LastOwner
		}
		v.Verdict, v.Reason = Orphaned, ReasonNetnsEmpty
	})
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	owned, leftover := find(t, veths, "owned"), find(t, veths, "leftover")
	checkTime(t, "owned FirstSeen", owned.FirstSeen, t0)
	checkTime(t, "owned OrphanedSince", owned.OrphanedSince, later)
	checkTime(t, "owned LastOwnerSeen", owned.LastOwnerSeen, t0)
	if !sameOwner(owned.LastOwner, ownerPod) {
		t.Errorf("owned LastOwner = %s, want %s", ownerString(owned.LastOwner), ownerString(ownerPod))
	}
	if !sameOwner(judgedWith, ownerPod) {
		t.Errorf("judge saw LastOwner %s, want %s", ownerString(judgedWith), ownerString(ownerPod))
	}
	checkTime(t, "leftover FirstSeen", leftover.FirstSeen, t0)
	checkTime(t, "leftover OrphanedSince", leftover.OrphanedSince, t0)
}

func TestStateOrphanedSince(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	logger, _ := testLogger()
	s := OpenState(path, StateOptions{Logger: logger})
	for i, step := range []struct {
		verdict Verdict
		want    time.Time // zero: not orphaned
	}{
		{Owned, time.Time{}},
		{Orphaned, t0.Add(1 * time.Minute)},
		{Orphaned, t0.Add(1 * time.Minute)},
		{Orphaned, t0.Add(1 * time.Minute)},
		{Owned, time.Time{}},
		{Owned, time.Time{}},
		{Orphaned, t0.Add(6 * time.Minute)},
	} {
		now := t0.Add(time.Duration(i) * time.Minute)
		veths := []Veth{veth("veth1", 7, nil)}
		if _, err := s.observe(now, veths, 0, judgeBy(map[string]Verdict{"veth1": step.verdict})); err != nil {
			t.Fatalf("step %d: observe: %v", i, err)
		}
		checkTime(t, fmt.Sprintf("step %d (%s): OrphanedSince", i, step.verdict), veths[0].OrphanedSince, step.want)
		checkTime(t, fmt.Sprintf("step %d (%s): FirstSeen", i, step.verdict), veths[0].FirstSeen, t0)
		d := readState(t, path)[stateKey{"veth1", 7}]
		if d == nil {
			t.Fatalf("step %d: no veth1/7 in the state file", i)
		}
		checkTime(t, fmt.Sprintf("step %d (%s): state file orphaned_since", i, step.verdict), d.OrphanedSince, step.want)
	}
}

func TestStateLastOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	logger, _ := testLogger()
	s := OpenState(path, StateOptions{Logger: logger})
	for i, step := range []struct {
		name      string
		owner     *Owner
		verdict   Verdict
		wantJudge *Owner // LastOwner as judge sees it
		want      *Owner
		wantSeen  time.Time
	}{
		{"never owned", nil, Orphaned, nil, nil, time.Time{}},
		{"a container", ownerDocker, Owned, nil, ownerDocker, t0.Add(1 * time.Minute)},
		{"container gone", nil, Orphaned, ownerDocker, ownerDocker, t0.Add(1 * time.Minute)},
		{"a stray shell is no owner", ownerShell, Unknown, ownerDocker, ownerDocker, t0.Add(1 * time.Minute)},
		{"a pod", ownerPod, Owned, ownerDocker, ownerPod, t0.Add(4 * time.Minute)},
		{"pod gone", nil, Orphaned, ownerPod, ownerPod, t0.Add(4 * time.Minute)},
	} {
		now := t0.Add(time.Duration(i) * time.Minute)
		veths := []Veth{veth("veth1", 7, step.owner)}
		var judged *Owner
		_, err := s.observe(now, veths, 0, func(v *Veth) {
			judged = v.LastOwner
			judgeBy(map[string]Verdict{"veth1": step.verdict})(v)
		})
		if err != nil {
			t.Fatalf("step %d (%s): observe: %v", i, step.name, err)
		}
		if !sameOwner(judged, step.wantJudge) {
			t.Errorf("step %d (%s): judge saw LastOwner %s, want %s", i, step.name, ownerString(judged), ownerString(step.wantJudge))
		}
		if !sameOwner(veths[0].LastOwner, step.want) {
			t.Errorf("step %d (%s): LastOwner = %s, want %s", i, step.name, ownerString(veths[0].LastOwner), ownerString(step.want))
		}
		checkTime(t, fmt.Sprintf("step %d (%s): LastOwnerSeen", i, step.name), veths[0].LastOwnerSeen, step.wantSeen)
		d := readState(t, path)[stateKey{"veth1", 7}]
		if d == nil {
			t.Fatalf("step %d (%s): no veth1/7 in the state file", i, step.name)
		}
		if !sameOwner(d.LastOwner, step.want) {
			t.Errorf("step %d (%s): state file last_owner = %s, want %s", i, step.name, ownerString(d.LastOwner), ownerString(step.want))
		}
	}
}

// TestStateKeepsOwnerNames: while the resolver that named an owner cannot
// be asked, the cgroups still name its ID; the remembered names stay with
// that ID (in the owner and the last owner), not with another one.
func TestStateKeepsOwnerNames(t *testing.T) {
	s := OpenState("", StateOptions{})
	named := &Owner{Kind: OwnerPod, ID: ctrB, Name: "web", PodNamespace: "default", PodName: "web", PodUID: podUID, Runtime: "containerd"}
	ns := func(o *Owner) Veth {
		v := veth("veth1", 7, o)
		v.PeerNetns = &Namespace{Inode: 100}
		return v
	}
	owned := judgeBy(map[string]Verdict{"veth1": Owned})
	for i, step := range []struct {
		name  string
		owner *Owner
		want  *Owner
	}{
		{"named by the runtime", named, named},
		{"the cgroups alone, same ID", ownerPod, named},
		{"another pod", &Owner{Kind: OwnerPod, ID: ctrA, PodUID: "other"}, &Owner{Kind: OwnerPod, ID: ctrA, PodUID: "other"}},
	} {
		veths := []Veth{ns(step.owner)}
		s.observe(t0.Add(time.Duration(i)*time.Minute), veths, 0, owned)
		if !sameOwner(veths[0].Owner, step.want) || !sameOwner(veths[0].LastOwner, step.want) {
			t.Errorf("step %d (%s): owner %s, last owner %s; want both %s", i, step.name,
				ownerString(veths[0].Owner), ownerString(veths[0].LastOwner), ownerString(step.want))
		}
	}
}

// TestStateNameReused: a CNI that names veths after the pod (Calico) gives
// a new pod's veth the old name; it must not inherit the old history.
func TestStateNameReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	logger, _ := testLogger()
	s := OpenState(path, StateOptions{Logger: logger})
	judge := judgeBy(map[string]Verdict{"cali1": Orphaned})

	veths := []Veth{veth("cali1", 10, ownerPod)}
	if _, err := s.observe(t0, veths, 0, judge); err != nil {
		t.Fatalf("observe: %v", err)
	}
	later := t0.Add(time.Hour)
	veths = []Veth{veth("cali1", 11, nil)}
	if _, err := s.observe(later, veths, 0, judge); err != nil {
		t.Fatalf("observe: %v", err)
	}
	v := veths[0]
	checkTime(t, "FirstSeen", v.FirstSeen, later)
	checkTime(t, "OrphanedSince", v.OrphanedSince, later)
	checkTime(t, "LastOwnerSeen", v.LastOwnerSeen, time.Time{})
	if v.LastOwner != nil {
		t.Errorf("LastOwner of a new cali1/11 = %s, want none", ownerString(v.LastOwner))
	}
	got := readState(t, path)
	if len(got) != 1 || got[stateKey{"cali1", 11}] == nil {
		t.Errorf("state file = %v, want only cali1/11", got)
	}
}

func TestStatePrune(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	logger, _ := testLogger()
	s := OpenState(path, StateOptions{Logger: logger})
	judge := judgeBy(nil)

	all := []Veth{veth("a", 1, nil), veth("b", 2, ownerDocker), veth("c", 3, nil)}
	if _, err := s.observe(t0, all, 0, judge); err != nil {
		t.Fatalf("observe: %v", err)
	}
	if got := readState(t, path); len(got) != 3 {
		t.Fatalf("state file = %v, want a, b and c", got)
	}
	if _, err := s.observe(t0.Add(time.Second), []Veth{veth("a", 1, nil)}, 0, judge); err != nil {
		t.Fatalf("observe: %v", err)
	}
	if got := readState(t, path); len(got) != 1 || got[stateKey{"a", 1}] == nil {
		t.Errorf("state file after b and c vanished = %v, want only a", got)
	}
	// A veth that comes back with the same name and index was forgotten.
	veths := []Veth{veth("a", 1, nil), veth("b", 2, nil)}
	if _, err := s.observe(t0.Add(2*time.Second), veths, 0, judge); err != nil {
		t.Fatalf("observe: %v", err)
	}
	checkTime(t, "a FirstSeen", veths[0].FirstSeen, t0)
	checkTime(t, "b FirstSeen", veths[1].FirstSeen, t0.Add(2*time.Second))
	if veths[1].LastOwner != nil {
		t.Errorf("b LastOwner = %s, want none", ownerString(veths[1].LastOwner))
	}
	// An empty snapshot forgets everything.
	if _, err := s.observe(t0.Add(3*time.Second), nil, 0, judge); err != nil {
		t.Fatalf("observe: %v", err)
	}
	if got := readState(t, path); len(got) != 0 {
		t.Errorf("state file after every veth vanished = %v, want none", got)
	}
}

// TestStateRewrite checks when the file is written: at once on a
// structural change, for an unchanged snapshot not at all, and to move
// last-owner-seen forward at most once per refreshInterval.
func TestStateRewrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		// first and next are observed in turn, next after "after".
		first, next   []Veth
		verdicts      map[string]Verdict
		nextVerdicts  map[string]Verdict
		after         time.Duration
		wantRewritten bool
	}{
		{
			name:  "unchanged, no owner, within the interval",
			first: []Veth{veth("a", 1, nil)}, next: []Veth{veth("a", 1, nil)},
			verdicts: map[string]Verdict{"a": Orphaned}, nextVerdicts: map[string]Verdict{"a": Orphaned},
			after: refreshInterval - time.Second,
		},
		{
			// Only last_observed moves.
			name:  "unchanged, no owner, after the interval",
			first: []Veth{veth("a", 1, nil)}, next: []Veth{veth("a", 1, nil)},
			verdicts: map[string]Verdict{"a": Orphaned}, nextVerdicts: map[string]Verdict{"a": Orphaned},
			after: refreshInterval, wantRewritten: true,
		},
		{
			name:  "unchanged, owned, within the interval",
			first: []Veth{veth("a", 1, ownerDocker)}, next: []Veth{veth("a", 1, ownerDocker)},
			verdicts: map[string]Verdict{"a": Owned}, nextVerdicts: map[string]Verdict{"a": Owned},
			after: refreshInterval - time.Second,
		},
		{
			name:  "unchanged, owned, after the interval",
			first: []Veth{veth("a", 1, ownerDocker)}, next: []Veth{veth("a", 1, ownerDocker)},
			verdicts: map[string]Verdict{"a": Owned}, nextVerdicts: map[string]Verdict{"a": Owned},
			after: refreshInterval, wantRewritten: true,
		},
		{
			name:  "new veth",
			first: []Veth{veth("a", 1, nil)}, next: []Veth{veth("a", 1, nil), veth("b", 2, nil)},
			after: time.Second, wantRewritten: true,
		},
		{
			name:  "newly orphaned",
			first: []Veth{veth("a", 1, nil)}, next: []Veth{veth("a", 1, nil)},
			nextVerdicts: map[string]Verdict{"a": Orphaned},
			after:        time.Second, wantRewritten: true,
		},
		{
			name:  "new owner",
			first: []Veth{veth("a", 1, ownerDocker)}, next: []Veth{veth("a", 1, ownerPod)},
			after: time.Second, wantRewritten: true,
		},
		{
			name:  "vanished veth",
			first: []Veth{veth("a", 1, nil), veth("b", 2, nil)}, next: []Veth{veth("a", 1, nil)},
			after: time.Second, wantRewritten: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			logger, _ := testLogger()
			s := OpenState(path, StateOptions{Logger: logger})
			if _, err := s.observe(t0, tc.first, 0, judgeBy(tc.verdicts)); err != nil {
				t.Fatalf("observe: %v", err)
			}
			before, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			now := t0.Add(tc.after)
			if _, err := s.observe(now, tc.next, 0, judgeBy(tc.nextVerdicts)); err != nil {
				t.Fatalf("observe: %v", err)
			}
			after, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			// Every write renames a new file into place, so a rewrite
			// always changes the inode.
			if rewritten := !os.SameFile(before, after); rewritten != tc.wantRewritten {
				t.Errorf("file rewritten = %v, want %v", rewritten, tc.wantRewritten)
			}
			if !tc.wantRewritten {
				if b, _ := os.ReadFile(path); !bytes.Equal(b, data) {
					t.Errorf("state file changed without a rewrite: %q, was %q", b, data)
				}
				return
			}
			if f, err := readStateFile(path); err != nil || !f.LastObserved.Equal(now) {
				t.Errorf("state file last_observed = %v (%v), want %v", f, err, now)
			}
			if tc.next[0].Owner != nil {
				d := readState(t, path)[stateKey{"a", 1}]
				if d == nil {
					t.Fatalf("no a/1 in the state file")
				}
				checkTime(t, "state file last_owner_seen", d.LastOwnerSeen, now)
			}
		})
	}
}

func TestStateInMemory(t *testing.T) {
	logger, logs := testLogger()
	s := OpenState("", StateOptions{Logger: logger})
	veths := []Veth{veth("veth1", 7, ownerDocker)}
	if _, err := s.observe(t0, veths, 0, judgeBy(nil)); err != nil {
		t.Fatalf("observe: %v", err)
	}
	veths = []Veth{veth("veth1", 7, nil)}
	if _, err := s.observe(t0.Add(time.Hour), veths, 0, judgeBy(map[string]Verdict{"veth1": Orphaned})); err != nil {
		t.Fatalf("observe: %v", err)
	}
	checkTime(t, "FirstSeen", veths[0].FirstSeen, t0)
	checkTime(t, "OrphanedSince", veths[0].OrphanedSince, t0.Add(time.Hour))
	if !sameOwner(veths[0].LastOwner, ownerDocker) {
		t.Errorf("LastOwner = %s, want %s", ownerString(veths[0].LastOwner), ownerString(ownerDocker))
	}
	if got := logs.lines("level=WARN"); len(got) != 0 {
		t.Errorf("in-memory state logged %q", got)
	}
}

func TestStateWriteFileAtomic(t *testing.T) {
	data := []byte(`{"version": 1, "devices": []}` + "\n")
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path
		wantErr bool
	}{
		{"new file", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "state.json")
		}, false},
		{"missing directories", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "var", "lib", "veth_exporter", "state.json")
		}, false},
		{"replaces a file", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "state.json")
			// Written by an earlier version, readable by all.
			if err := os.WriteFile(path, []byte("old contents, longer than the new ones\n"+strings.Repeat("x", 4096)), 0o644); err != nil {
				t.Fatal(err)
			}
			return path
		}, false},
		{"directory at the path", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "state.json")
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
			return path
		}, true},
		{"parent is a file", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "lib"), "")
			return filepath.Join(dir, "lib", "state.json")
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tc.setup(t, dir)
			err := writeFileAtomic(path, data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("writeFileAtomic(%s) = %v, want error %v", path, err, tc.wantErr)
			}
			if got := tempFiles(t, dir); len(got) != 0 {
				t.Errorf("temporary files left in %s: %q", dir, got)
			}
			if tc.wantErr {
				return
			}
			if got := tempFiles(t, filepath.Dir(path)); len(got) != 0 {
				t.Errorf("temporary files left in %s: %q", filepath.Dir(path), got)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, data) {
				t.Errorf("%s = %q, want %q", path, b, data)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if mode := fi.Mode(); mode != 0o600 {
				t.Errorf("%s mode = %v, want %v", path, mode, fs.FileMode(0o600))
			}
		})
	}
}

// setBootID makes the state read id as the kernel's boot_id.
func setBootID(t *testing.T, id string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "boot_id")
	writeFile(t, path, id+"\n")
	old := bootIDPath
	bootIDPath = path
	t.Cleanup(func() { bootIDPath = old })
}

// TestStateEarlierBoot: interfaces do not survive a reboot, so a history
// written during another boot is dropped, not applied to new interfaces
// that happen to get the same names and indexes.
func TestStateEarlierBoot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	judge := judgeBy(map[string]Verdict{"veth1": Owned})

	setBootID(t, "boot-a")
	s := OpenState(path, StateOptions{})
	if _, err := s.observe(t0, []Veth{veth("veth1", 7, ownerDocker)}, 0, judge); err != nil {
		t.Fatal(err)
	}

	setBootID(t, "boot-a")
	veths := []Veth{veth("veth1", 7, nil)}
	if _, err := OpenState(path, StateOptions{}).observe(t0.Add(time.Hour), veths, 0, judge); err != nil {
		t.Fatal(err)
	}
	checkTime(t, "same boot: FirstSeen", veths[0].FirstSeen, t0)
	if !sameOwner(veths[0].LastOwner, ownerDocker) {
		t.Errorf("same boot: LastOwner = %v, want %s", veths[0].LastOwner, ownerString(ownerDocker))
	}

	setBootID(t, "boot-b")
	logger, logs := testLogger()
	veths = []Veth{veth("veth1", 7, nil)}
	if _, err := OpenState(path, StateOptions{Logger: logger}).observe(t0.Add(2*time.Hour), veths, 0, judge); err != nil {
		t.Fatal(err)
	}
	checkTime(t, "after a reboot: FirstSeen", veths[0].FirstSeen, t0.Add(2*time.Hour))
	if veths[0].LastOwner != nil {
		t.Errorf("after a reboot: LastOwner = %v, want none", veths[0].LastOwner)
	}
	if !strings.Contains(logs.String(), "earlier boot") {
		t.Errorf("log = %q, want a line about the earlier boot", logs.String())
	}
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), `"boot_id": "boot-b"`) {
		t.Errorf("state file = %s (%v), want it rewritten for boot-b", b, err)
	}
}

// TestStateLastOwnerOfAnotherNamespace: an owner is evidence about the
// namespace it owned; a veth whose peer is now in another namespace does
// not inherit it (and so cannot become owner_exited through it).
func TestStateLastOwnerOfAnotherNamespace(t *testing.T) {
	s := OpenState("", StateOptions{})
	var judged *Owner
	judge := func(v *Veth) { judged = v.LastOwner; v.Verdict, v.Reason = Unknown, ReasonNoKnownOwner }

	v := veth("veth1", 7, ownerDocker)
	v.PeerNetns = &Namespace{Inode: 100}
	s.observe(t0, []Veth{v}, 0, judge)

	same := veth("veth1", 7, nil)
	same.PeerNetns = &Namespace{Inode: 100}
	s.observe(t0.Add(time.Minute), []Veth{same}, 0, judge)
	if !sameOwner(judged, ownerDocker) {
		t.Errorf("same namespace: judge saw LastOwner %v, want %s", judged, ownerString(ownerDocker))
	}

	other := veth("veth1", 7, nil)
	other.PeerNetns = &Namespace{Inode: 200}
	s.observe(t0.Add(2*time.Minute), []Veth{other}, 0, judge)
	if judged != nil || other.LastOwner != nil {
		t.Errorf("other namespace: judge saw LastOwner %v, veth has %v, want none", judged, other.LastOwner)
	}
}

// TestStateSettle: an orphan verdict is given only once it has held for
// the settle time; orphaned-since counts from the first sight, and a veth
// that recovers in between never was an orphan.
func TestStateSettle(t *testing.T) {
	s := OpenState("", StateOptions{})
	orphan := judgeBy(map[string]Verdict{"veth1": Orphaned})
	owned := judgeBy(map[string]Verdict{"veth1": Owned})
	step := func(at time.Duration, judge func(*Veth)) Veth {
		veths := []Veth{veth("veth1", 7, nil)}
		if _, err := s.observe(t0.Add(at), veths, 30*time.Second, judge); err != nil {
			t.Fatal(err)
		}
		return veths[0]
	}
	for _, tt := range []struct {
		at      time.Duration
		judge   func(*Veth)
		verdict Verdict
		reason  Reason
		since   time.Duration // -1: none
	}{
		{0, orphan, Unknown, ReasonSettling, 0},
		{20 * time.Second, orphan, Unknown, ReasonSettling, 0},
		{30 * time.Second, orphan, Orphaned, ReasonNetnsEmpty, 0},
		{40 * time.Second, owned, Owned, ReasonContainer, -1},
		{50 * time.Second, orphan, Unknown, ReasonSettling, 50 * time.Second},
		{79 * time.Second, orphan, Unknown, ReasonSettling, 50 * time.Second},
		{80 * time.Second, orphan, Orphaned, ReasonNetnsEmpty, 50 * time.Second},
	} {
		v := step(tt.at, tt.judge)
		if v.Verdict != tt.verdict || v.Reason != tt.reason {
			t.Errorf("at %v: %s/%s, want %s/%s", tt.at, v.Verdict, v.Reason, tt.verdict, tt.reason)
		}
		want := time.Time{}
		if tt.since >= 0 {
			want = t0.Add(tt.since)
		}
		checkTime(t, fmt.Sprintf("at %v: OrphanedSince", tt.at), v.OrphanedSince, want)
	}
}

// TestStateSettleReadOnly: a reader of the state file (clean) holds an
// orphan back for its settle time by the recorded orphaned-since, as the
// exporter that recorded it does; one never recorded is left to the
// reader's own gates.
func TestStateSettleReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	orphan := judgeBy(map[string]Verdict{"veth1": Orphaned, "veth2": Orphaned})
	if _, err := OpenState(path, StateOptions{}).observe(t0, []Veth{veth("veth1", 7, nil)}, 0, orphan); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		at      time.Duration
		device  string
		verdict Verdict
		reason  Reason
	}{
		{29 * time.Second, "veth1", Unknown, ReasonSettling},
		{30 * time.Second, "veth1", Orphaned, ReasonNetnsEmpty},
		{29 * time.Second, "veth2", Orphaned, ReasonNetnsEmpty},
	} {
		veths := []Veth{veth("veth1", 7, nil), veth("veth2", 8, nil)}
		if _, err := OpenState(path, StateOptions{ReadOnly: true}).observe(t0.Add(tt.at), veths, 30*time.Second, orphan); err != nil {
			t.Fatal(err)
		}
		v := veths[0]
		if tt.device == "veth2" {
			v = veths[1]
		}
		if v.Verdict != tt.verdict || v.Reason != tt.reason {
			t.Errorf("read-only at %v: %s is %s/%s, want %s/%s", tt.at, tt.device, v.Verdict, v.Reason, tt.verdict, tt.reason)
		}
	}
}

// observeAt observes veths at t0+at and fails the test on a write error.
func observeAt(t *testing.T, s *State, at time.Duration, veths []Veth, judge func(*Veth)) observation {
	t.Helper()
	obs, err := s.observe(t0.Add(at), veths, 0, judge)
	if err != nil {
		t.Fatalf("observe at %v: %v", at, err)
	}
	return obs
}

// TestStateGap: after a gap between two observations longer than MaxGap
// nobody watched the veths (the exporter was stopped, or nobody scraped),
// so every orphan clock restarts at the next observation.
func TestStateGap(t *testing.T) {
	judge := judgeBy(map[string]Verdict{"leftover": Orphaned, "owned": Owned})
	veths := func() []Veth { return []Veth{veth("leftover", 7, nil), veth("owned", 8, ownerDocker)} }
	for _, tc := range []struct {
		name   string
		maxGap time.Duration // 0: the default
		second time.Duration // when the second observation comes
		want   time.Duration // leftover's orphaned-since after it
	}{
		{"default, within", 0, DefaultMaxGap, 0},
		{"default, beyond", 0, DefaultMaxGap + time.Second, DefaultMaxGap + time.Second},
		{"one minute, within", time.Minute, time.Minute, 0},
		{"one minute, beyond", time.Minute, 2 * time.Minute, 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			s := OpenState(path, StateOptions{MaxGap: tc.maxGap})
			first := veths()
			obs := observeAt(t, s, 0, first, judge)
			checkTime(t, "first observation: OrphanedSince", first[0].OrphanedSince, t0)
			checkTime(t, "first observation: HistoryObserved", obs.historyObserved, time.Time{})

			second := veths()
			obs = observeAt(t, s, tc.second, second, judge)
			checkTime(t, "second observation: OrphanedSince", second[0].OrphanedSince, t0.Add(tc.want))
			checkTime(t, "second observation: FirstSeen", second[0].FirstSeen, t0)
			checkTime(t, "second observation: HistoryObserved", obs.historyObserved, t0)
			checkTime(t, "owned OrphanedSince", second[1].OrphanedSince, time.Time{})
			if d := readState(t, path)[stateKey{"leftover", 7}]; d == nil || !d.OrphanedSince.Equal(t0.Add(tc.want)) {
				t.Errorf("state file leftover = %+v, want orphaned since %v", d, t0.Add(tc.want))
			}
		})
	}
}

// TestStateGapAcrossRestart: the gap counts from the state file's
// last_observed, and a file without one is a gap.
func TestStateGapAcrossRestart(t *testing.T) {
	setBootID(t, "boot-a")
	judge := judgeBy(map[string]Verdict{"leftover": Orphaned})
	for _, tc := range []struct {
		name         string
		lastObserved string // "" leaves it out
		want         time.Time
	}{
		{"refreshed a minute ago", `"last_observed": "2025-03-01T11:59:00Z", `, t0.Add(-time.Hour)},
		{"refreshed ten minutes ago", `"last_observed": "2025-03-01T11:50:00Z", `, t0},
		{"never refreshed", "", t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			writeFile(t, path, `{"version": 1, "boot_id": "boot-a", `+tc.lastObserved+
				`"devices": [{"device": "leftover", "ifindex": 7, "first_seen": "2025-03-01T10:00:00Z", "orphaned_since": "2025-03-01T11:00:00Z"}]}`)
			veths := []Veth{veth("leftover", 7, nil)}
			observeAt(t, OpenState(path, StateOptions{}), 0, veths, judge)
			checkTime(t, "OrphanedSince", veths[0].OrphanedSince, tc.want)
			checkTime(t, "FirstSeen", veths[0].FirstSeen, t0.Add(-2*time.Hour))
		})
	}
}

// TestStateLastObservedRefreshed: while an exporter observes, the state
// file's last_observed is never more than refreshInterval old, even when
// nothing else changes.
func TestStateLastObservedRefreshed(t *testing.T) {
	for _, tt := range []struct {
		maxGap, every, within time.Duration
	}{
		{DefaultMaxGap, 15 * time.Second, refreshInterval},
		// A max-gap under four intervals: a quarter of it, so that
		// clean never finds the file of a running exporter stale.
		{20 * time.Second, 2 * time.Second, 5 * time.Second},
	} {
		path := filepath.Join(t.TempDir(), "state.json")
		s := OpenState(path, StateOptions{MaxGap: tt.maxGap})
		judge := judgeBy(map[string]Verdict{"leftover": Orphaned})
		for at := time.Duration(0); at <= 10*time.Minute; at += tt.every {
			observeAt(t, s, at, []Veth{veth("leftover", 7, nil)}, judge)
			f, err := readStateFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if age := t0.Add(at).Sub(f.LastObserved); age >= tt.within || age < 0 {
				t.Fatalf("max-gap %v, at %v: last_observed %v is %v old, want less than %v", tt.maxGap, at, f.LastObserved, age, tt.within)
			}
		}
	}
}

// TestStateHistoryObserved: with a writable state, the previous
// observation; with a read-only one, the file's last_observed.
func TestStateHistoryObserved(t *testing.T) {
	setBootID(t, "boot-a")
	path := filepath.Join(t.TempDir(), "state.json")
	s := OpenState(path, StateOptions{})
	judge := judgeBy(nil)
	for i, want := range []time.Time{{}, t0, t0.Add(10 * time.Second)} {
		obs := observeAt(t, s, time.Duration(i)*10*time.Second, []Veth{veth("a", 1, nil)}, judge)
		checkTime(t, fmt.Sprintf("observation %d: HistoryObserved", i), obs.historyObserved, want)
	}
	// Nothing changed after the first observation, so the file was last
	// written then: it is refreshed once per refreshInterval.
	ro := OpenState(path, StateOptions{ReadOnly: true})
	for i := range 2 {
		obs := observeAt(t, ro, time.Hour+time.Duration(i)*time.Minute, []Veth{veth("a", 1, nil)}, judge)
		checkTime(t, fmt.Sprintf("read-only observation %d: HistoryObserved", i), obs.historyObserved, t0)
	}
	observeAt(t, s, refreshInterval, []Veth{veth("a", 1, nil)}, judge)
	obs := observeAt(t, OpenState(path, StateOptions{ReadOnly: true}), time.Hour, []Veth{veth("a", 1, nil)}, judge)
	checkTime(t, "read-only after a refresh: HistoryObserved", obs.historyObserved, t0.Add(refreshInterval))
	obs = observeAt(t, OpenState(filepath.Join(t.TempDir(), "none.json"), StateOptions{ReadOnly: true}), 0, []Veth{veth("a", 1, nil)}, judge)
	checkTime(t, "read-only, no file: HistoryObserved", obs.historyObserved, time.Time{})
}

// TestStateBootID: only a file of this boot is history; one without a
// boot_id, of another boot, or read when this boot's id is unreadable
// counts as empty.
func TestStateBootID(t *testing.T) {
	const device = `"devices": [{"device": "veth1", "ifindex": 7, "first_seen": "2020-01-01T00:00:00Z", "orphaned_since": "2020-01-01T00:00:00Z"}]`
	for _, tc := range []struct {
		name, bootID, file string
		loaded             bool
	}{
		{"same boot", "boot-a", `{"version": 1, "boot_id": "boot-a", ` + device + `}`, true},
		{"another boot", "boot-b", `{"version": 1, "boot_id": "boot-a", ` + device + `}`, false},
		{"no boot_id in the file", "boot-a", `{"version": 1, ` + device + `}`, false},
		{"empty boot_id in the file", "boot-a", `{"version": 1, "boot_id": "", ` + device + `}`, false},
		{"current boot_id unreadable", "", `{"version": 1, "boot_id": "boot-a", ` + device + `}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bootID == "" {
				old := bootIDPath
				bootIDPath = filepath.Join(t.TempDir(), "no-boot-id")
				t.Cleanup(func() { bootIDPath = old })
			} else {
				setBootID(t, tc.bootID)
			}
			for _, readOnly := range []bool{false, true} {
				path := filepath.Join(t.TempDir(), "state.json")
				writeFile(t, path, tc.file)
				s := OpenState(path, StateOptions{ReadOnly: readOnly})
				if loaded := len(s.devices) == 1; loaded != tc.loaded {
					t.Errorf("read-only %v: loaded %v, want %v", readOnly, loaded, tc.loaded)
				}
				if readOnly {
					continue
				}
				// A rejected file is replaced at the next observation.
				veths := []Veth{veth("veth1", 7, nil)}
				observeAt(t, s, 0, veths, judgeBy(nil))
				f, err := readStateFile(path)
				if err != nil || f.BootID != tc.bootID {
					t.Errorf("state file after an observation: %+v, %v; want boot_id %q", f, err, tc.bootID)
				}
			}
		})
	}
}

// withPeer returns veth name/index whose peer is ifindex peer in the
// namespace inode netns (0: on the host).
func withPeer(name string, index int, owner *Owner, netns uint64, peer int) Veth {
	v := veth(name, index, owner)
	v.PeerIndex = peer
	if netns == 0 {
		v.PeerOnHost = true
	} else {
		v.PeerNetns = &Namespace{Inode: netns}
	}
	return v
}

// TestStatePeerChanged: a new veth created with the ifindex and name of
// a recorded one (ip link add … index N) between two observations has
// another peer; it must not inherit the record's orphaned-since, first
// seen or last owner.
func TestStatePeerChanged(t *testing.T) {
	orphan := judgeBy(map[string]Verdict{"veth1": Orphaned})
	for _, tc := range []struct {
		name        string
		first, next Veth
		reset       bool
	}{
		{"same peer", withPeer("veth1", 7, ownerDocker, 100, 2), withPeer("veth1", 7, nil, 100, 2), false},
		{"peer in another namespace", withPeer("veth1", 7, ownerDocker, 100, 2), withPeer("veth1", 7, nil, 200, 2), true},
		{"peer with another ifindex", withPeer("veth1", 7, ownerDocker, 100, 2), withPeer("veth1", 7, nil, 100, 3), true},
		{"peer moved to the host", withPeer("veth1", 7, ownerDocker, 100, 2), withPeer("veth1", 7, nil, 0, 8), true},
		{"another host peer", withPeer("veth1", 7, nil, 0, 8), withPeer("veth1", 7, nil, 0, 9), true},
		{"peer not found now", withPeer("veth1", 7, ownerDocker, 100, 2), veth("veth1", 7, nil), false},
		{"peer not found before", veth("veth1", 7, ownerDocker), withPeer("veth1", 7, nil, 200, 2), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			s := OpenState(path, StateOptions{})
			// Owned first, then orphaned: a last owner and an orphan clock.
			observeAt(t, s, 0, []Veth{tc.first}, judgeBy(map[string]Verdict{"veth1": Owned}))
			orphaned := tc.first
			orphaned.Owner = nil
			observeAt(t, s, time.Minute, []Veth{orphaned}, orphan)
			saved, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			for _, restart := range []bool{false, true} {
				s := s
				if restart {
					// The same through the file, in a new process, and as
					// a read-only reader (clean) sees it.
					path2 := filepath.Join(t.TempDir(), "state.json")
					writeFile(t, path2, string(saved))
					s = OpenState(path2, StateOptions{})
					ro := []Veth{tc.next}
					observeAt(t, OpenState(path2, StateOptions{ReadOnly: true}), 2*time.Minute, ro, orphan)
					wantSince := t0.Add(time.Minute)
					if tc.reset {
						wantSince = time.Time{}
					}
					checkTime(t, "read-only OrphanedSince", ro[0].OrphanedSince, wantSince)
				}
				next := []Veth{tc.next}
				now := 2 * time.Minute
				observeAt(t, s, now, next, orphan)
				v := next[0]
				wantFirst, wantSince, wantOwner := t0, t0.Add(time.Minute), ownerDocker
				if tc.reset {
					wantFirst, wantSince, wantOwner = t0.Add(now), t0.Add(now), nil
				}
				if tc.first.Owner == nil {
					wantOwner = nil
				}
				checkTime(t, fmt.Sprintf("restart %v: FirstSeen", restart), v.FirstSeen, wantFirst)
				checkTime(t, fmt.Sprintf("restart %v: OrphanedSince", restart), v.OrphanedSince, wantSince)
				if !sameOwner(v.LastOwner, wantOwner) {
					t.Errorf("restart %v: LastOwner = %s, want %s", restart, ownerString(v.LastOwner), ownerString(wantOwner))
				}
			}
		})
	}
}

// TestStatePeerNotForgotten: a peer not found for a while does not erase
// the recorded one, so a later change is still seen.
func TestStatePeerNotForgotten(t *testing.T) {
	s := OpenState("", StateOptions{})
	orphan := judgeBy(map[string]Verdict{"veth1": Orphaned})
	observeAt(t, s, 0, []Veth{withPeer("veth1", 7, nil, 100, 2)}, orphan)
	observeAt(t, s, time.Minute, []Veth{veth("veth1", 7, nil)}, orphan)
	v := []Veth{withPeer("veth1", 7, nil, 200, 2)}
	observeAt(t, s, 2*time.Minute, v, orphan)
	checkTime(t, "OrphanedSince", v[0].OrphanedSince, t0.Add(2*time.Minute))
}

// TestStateGone: a veth that disappears is remembered as gone for an hour,
// in memory and in the file; a new veth with its name and ifindex starts a
// fresh record.
func TestStateGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := OpenState(path, StateOptions{})
	orphan := judgeBy(map[string]Verdict{"a": Orphaned, "b": Orphaned})
	observeAt(t, s, 0, []Veth{veth("a", 1, ownerDocker), veth("b", 2, nil)}, orphan)
	obs := observeAt(t, s, time.Minute, []Veth{veth("a", 1, nil)}, orphan)
	wantGone := []GoneVeth{{Device: "b", Index: 2, Since: t0.Add(time.Minute)}}
	if fmt.Sprint(obs.gone) != fmt.Sprint(wantGone) {
		t.Errorf("gone = %v, want %v", obs.gone, wantGone)
	}
	f, err := readStateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Gone) != 1 || f.Gone[0].Device != "b" || f.Gone[0].Index != 2 || !f.Gone[0].GoneSince.Equal(t0.Add(time.Minute)) {
		t.Errorf("state file gone = %+v, want b/2 since %v", f.Gone, t0.Add(time.Minute))
	}
	// A reader of the file sees it gone too, and so does a restart.
	obs = observeAt(t, OpenState(path, StateOptions{ReadOnly: true}), 2*time.Minute, []Veth{veth("a", 1, nil)}, orphan)
	if fmt.Sprint(obs.gone) != fmt.Sprint(wantGone) {
		t.Errorf("read-only gone = %v, want %v", obs.gone, wantGone)
	}
	s = OpenState(path, StateOptions{})

	// a goes too; b comes back with the same ifindex: a new veth.
	back := []Veth{veth("b", 2, nil)}
	obs = observeAt(t, s, 3*time.Minute, back, orphan)
	checkTime(t, "b FirstSeen", back[0].FirstSeen, t0.Add(3*time.Minute))
	checkTime(t, "b OrphanedSince", back[0].OrphanedSince, t0.Add(3*time.Minute))
	wantGone = []GoneVeth{{Device: "a", Index: 1, Since: t0.Add(3 * time.Minute)}}
	if fmt.Sprint(obs.gone) != fmt.Sprint(wantGone) {
		t.Errorf("gone = %v, want %v (b is back)", obs.gone, wantGone)
	}
	// A read-only reader whose dump shows a veth with a tombstone's name
	// and ifindex lends it nothing.
	ro := OpenState(path, StateOptions{ReadOnly: true})
	again := []Veth{veth("a", 1, nil)}
	obs = observeAt(t, ro, 4*time.Minute, again, orphan)
	checkTime(t, "read-only a FirstSeen", again[0].FirstSeen, time.Time{})
	if again[0].LastOwner != nil {
		t.Errorf("read-only a LastOwner = %s, want none", ownerString(again[0].LastOwner))
	}
	wantGone = []GoneVeth{{Device: "b", Index: 2}}
	if fmt.Sprint(obs.gone) != fmt.Sprint(wantGone) {
		t.Errorf("read-only gone = %v, want %v", obs.gone, wantGone)
	}

	// After an hour the tombstone is dropped.
	obs = observeAt(t, s, 3*time.Minute+goneRetention-time.Second, back, orphan)
	if len(obs.gone) != 1 {
		t.Errorf("gone just before an hour = %v, want a", obs.gone)
	}
	obs = observeAt(t, s, 3*time.Minute+goneRetention, back, orphan)
	if len(obs.gone) != 0 {
		t.Errorf("gone after an hour = %v, want none", obs.gone)
	}
	if f, err := readStateFile(path); err != nil || len(f.Gone) != 0 {
		t.Errorf("state file gone after an hour = %+v, %v; want none", f, err)
	}
}

// observe merges one snapshot's veths, taken at now, into the history,
// each judged by judge once the history lent it its last owner: for the
// tests of the history, which judge with a fixed verdict.
func (s *State) observe(now time.Time, veths []Veth, settle time.Duration, judge func(*Veth)) (observation, error) {
	o := s.begin(now, settle)
	defer o.release()
	for i := range veths {
		d := o.recall(&veths[i])
		judge(&veths[i])
		o.record(&veths[i], d)
	}
	return o.end()
}

// TestConditionsPersist: an annotator's condition clocks survive a
// restart in the state file, a read-only history lends only what it
// recorded, and a condition an annotator that finished did not ask for
// again has ended.
func TestConditionsPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	start := time.Now().Truncate(time.Second)
	const key = "podnet/10.78.0.4/sb-gone"
	s := OpenState(path, StateOptions{})
	o := s.begin(start, 0)
	if got := o.since("cni", key); !got.Equal(start) {
		t.Fatalf("a new condition since %v, want now %v", got, start)
	}
	if _, err := o.end(); err != nil {
		t.Fatal(err)
	}

	ro := OpenState(path, StateOptions{ReadOnly: true})
	o = ro.begin(start.Add(time.Minute), 0)
	if got := o.since("cni", key); !got.Equal(start) {
		t.Errorf("read back since %v, want %v", got, start)
	}
	if got := o.since("cni", "podnet/10.78.0.5/sb-new"); !got.IsZero() {
		t.Errorf("a read-only history lends %v for a condition it never recorded, want zero", got)
	}
	o.end()

	// Restarted: the clock goes on.
	s = OpenState(path, StateOptions{})
	o = s.begin(start.Add(time.Minute), 0)
	if got := o.since("cni", key); !got.Equal(start) {
		t.Errorf("after a restart since %v, want %v", got, start)
	}
	o.end()
	// The annotator finished without asking: the condition ended.
	o = s.begin(start.Add(2*time.Minute), 0)
	o.finish("cni")
	o.end()
	o = s.begin(start.Add(3*time.Minute), 0)
	if got := o.since("cni", key); !got.Equal(start.Add(3 * time.Minute)) {
		t.Errorf("a condition that ended and came back is since %v, want the new %v", got, start.Add(3*time.Minute))
	}
	o.end()
}
