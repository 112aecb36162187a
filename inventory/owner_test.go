package inventory

import (
	"path/filepath"
	"testing"
)

// procStat is a /proc/PID/stat line of a process started 5678901 ticks
// after boot. Field 21 (itrealvalue) and field 23 (vsize) differ from it,
// so reading the neighbour of field 22 fails.
func procStat(pid, comm string) string {
	return pid + " (" + comm + ") S 1 " + pid + " " + pid + " 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7 5678901 8572928 224 " +
		"18446744073709551615 94251523641344 94251523658657 140728453632336 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
}

func TestProcessStartTime(t *testing.T) {
	const fields22 = "1234 (sleep) S 1 1234 1234 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7 5678901"
	for _, tc := range []struct {
		name  string
		stat  string
		want  uint64
		found bool
	}{
		{"plain", procStat("1234", "sleep"), 5678901, true},
		{"spaces and parentheses in comm", procStat("1234", "a) b) c"), 5678901, true},
		{"comm that looks like fields", procStat("1234", "1) S 2 3 4 5 6)"), 5678901, true},
		{"comm in parentheses", procStat("1234", "(sd-pam)"), 5678901, true},
		{"comm with an open parenthesis", procStat("1234", "a (b"), 5678901, true},
		{"empty comm", procStat("1234", ""), 5678901, true},
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
			writeProcFile(t, dir, "stat", tc.stat)
			got, found := processStartTime(dir)
			// Without a start time the value means nothing.
			if found != tc.found || (found && got != tc.want) {
				t.Errorf("processStartTime(%q) = %d, %v, want %d, %v", tc.stat, got, found, tc.want, tc.found)
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "4321")
	if got, found := processStartTime(missing); found {
		t.Errorf("processStartTime(%s) = %d, %v, want 0, false for an exited process", missing, got, found)
	}
}
