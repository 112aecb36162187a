package kernel

import (
	"path/filepath"
	"testing"

	"github.com/veth-exporter/veth_exporter/internal/proctest"
)

func TestInitialPIDNamespace(t *testing.T) {
	const kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 3 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	for _, tc := range []struct {
		name string
		stat string
		want bool
	}{
		{"host", kthreadd, true},
		{"container shell as PID 2", "2 (sh) S 1 2 1 34816 2 4194560 101 0 0 0 0 0 0 0 20 0 1 0 41250 1683456 230 18446744073709551615\n", false},
		{"command named kthreadd-ish", "2 (kthreadd2) S 1 2 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 41250\n", false},
		{"other PID in the file", "20 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3\n", false},
		{"truncated after the command", "2 (kthreadd)", false},
		{"garbage", "\x00\xff(kthreadd) ", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			procfs := t.TempDir()
			proctest.WriteFile(t, procfs, "2/stat", tc.stat)
			if got := InitialPIDNamespace(procfs); got != tc.want {
				t.Errorf("InitialPIDNamespace(%q) = %v, want %v", tc.stat, got, tc.want)
			}
		})
	}
	for _, procfs := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		if InitialPIDNamespace(procfs) {
			t.Errorf("InitialPIDNamespace(%s) without 2/stat = true, want false", procfs)
		}
	}
}

func TestProcessStartTime(t *testing.T) {
	const fields22 = "1234 (sleep) S 1 1234 1234 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7 5678901"
	for _, tc := range []struct {
		name  string
		stat  string
		want  uint64
		found bool
	}{
		{"plain", proctest.Stat("1234", "sleep"), 5678901, true},
		{"spaces and parentheses in comm", proctest.Stat("1234", "a) b) c"), 5678901, true},
		{"comm that looks like fields", proctest.Stat("1234", "1) S 2 3 4 5 6)"), 5678901, true},
		{"comm in parentheses", proctest.Stat("1234", "(sd-pam)"), 5678901, true},
		{"comm with an open parenthesis", proctest.Stat("1234", "a (b"), 5678901, true},
		{"empty comm", proctest.Stat("1234", ""), 5678901, true},
		{"no trailing newline", fields22, 5678901, true},
		{"largest start time", "1 (init) S 0 1 1 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 0 18446744073709551615 1", 18446744073709551615, true},

		{"one field short", "1234 (sleep) S 1 1234 1234 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7", 0, false},
		{"nothing after comm", "1234 (sleep)", 0, false},
		{"no closing parenthesis", "1234 (sleep S 1 1234 1234 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7 5678901 8572928", 0, false},
		{"start time not a number", "1234 (sleep) S 1 1234 1234 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7 abc 8572928", 0, false},
		{"negative start time", "1234 (sleep) S 1 1234 1234 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7 -5 8572928", 0, false},
		{"start time overflows", "1234 (sleep) S 1 1234 1234 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7 18446744073709551616 1", 0, false},
		{"garbage", "\x00\xff not a stat file", 0, false},
		{"empty", "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			proctest.WriteFile(t, dir, "stat", tc.stat)
			got, found := ProcessStartTime(dir)
			// Without a start time the value means nothing.
			if found != tc.found || (found && got != tc.want) {
				t.Errorf("ProcessStartTime(%q) = %d, %v, want %d, %v", tc.stat, got, found, tc.want, tc.found)
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "4321")
	if got, found := ProcessStartTime(missing); found {
		t.Errorf("ProcessStartTime(%s) = %d, %v, want 0, false for an exited process", missing, got, found)
	}
}
