// Package proctest builds synthetic procfs trees for tests of what the
// exporter reads from /proc: stat lines, cgroup files and namespace links,
// without privileges and without a real process.
package proctest

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile writes data to name under the synthetic procfs dir, making
// the directories it needs.
func WriteFile(t testing.TB, dir, name, data string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// StartTime is the start time, in clock ticks after boot, of the
// processes [Stat] describes.
const StartTime = "5678901"

// Stat is a /proc/PID/stat line of a process started [StartTime] ticks
// after boot. Field 21 (itrealvalue) and field 23 (vsize) differ from it,
// so reading the neighbour of field 22 fails.
func Stat(pid, comm string) string {
	return pid + " (" + comm + ") S 1 " + pid + " " + pid + " 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 7 " + StartTime + " 8572928 224 " +
		"18446744073709551615 94251523641344 94251523658657 140728453632336 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
}
