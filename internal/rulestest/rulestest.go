// Package rulestest edits Prometheus rule files for tests: the alert
// rules' own promtool tests break them on purpose, and the end-to-end test
// shortens their durations, both from the shipped file rather than from a
// hand-written copy.
package rulestest

import (
	"fmt"
	"strings"
)

// Rewrite replaces old by repl, which must occur exactly once, within the
// rule of the named alert in file.
func Rewrite(file, alert, old, repl string) (string, error) {
	start := strings.Index(file, "- alert: "+alert+"\n")
	if start < 0 {
		return "", fmt.Errorf("no rule %s", alert)
	}
	end := strings.Index(file[start+1:], "- alert: ")
	if end < 0 {
		end = len(file)
	} else {
		end += start + 1
	}
	block := file[start:end]
	if n := strings.Count(block, old); n != 1 {
		return "", fmt.Errorf("%q occurs %d times in %s, want once", old, n, alert)
	}
	return file[:start] + strings.Replace(block, old, repl, 1) + file[end:], nil
}
