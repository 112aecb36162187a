package remediate

import (
	"os"
	"path/filepath"
	"testing"
)

// TestAuditFollower reads what is appended after it started, a line
// written in two steps once whole, and a truncated file from its start.
func TestAuditFollower(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	write := func(s string, flag int) {
		f, err := os.OpenFile(path, flag|os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write("old\n", os.O_APPEND)
	f := newAuditFollower(path)
	if got := f.next(); len(got) != 0 {
		t.Errorf("next() before anything new = %q, want nothing", got)
	}
	write("one\ntw", os.O_APPEND)
	if got := f.next(); len(got) != 1 || string(got[0]) != "one" {
		t.Errorf("next() = %q, want [one]", got)
	}
	write("o\n", os.O_APPEND)
	if got := f.next(); len(got) != 1 || string(got[0]) != "two" {
		t.Errorf("next() = %q, want [two], the line written in two steps", got)
	}
	write("new\n", os.O_TRUNC)
	if got := f.next(); len(got) != 1 || string(got[0]) != "new" {
		t.Errorf("next() after truncation = %q, want [new]", got)
	}
}
