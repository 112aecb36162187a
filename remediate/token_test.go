package remediate

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func writeToken(t *testing.T, path, token string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(token), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTokenFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, content string
		mode          os.FileMode
		want          string // part of the error; "" is none
	}{
		{"owner only", "s3cret\n", 0o600, ""},
		{"read-only", "s3cret", 0o400, ""},
		{"world-readable", "s3cret\n", 0o644, "accessible by group or others (mode 0644)"},
		{"group-readable", "s3cret\n", 0o640, "accessible by group or others (mode 0640)"},
		{"group-writable", "s3cret\n", 0o620, "accessible by group or others"},
		{"empty", "\n \n", 0o600, "is empty"},
		{"too large", strings.Repeat("x", maxTokenFileSize+1), 0o600, "larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			writeToken(t, path, tt.content, tt.mode)
			_, err := OpenTokenFile(path, slog.New(slog.DiscardHandler))
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("OpenTokenFile(%s, mode %04o) = %v, want error containing %q", tt.name, tt.mode, err, tt.want)
			}
		})
	}
	if _, err := OpenTokenFile(filepath.Join(dir, "missing"), slog.New(slog.DiscardHandler)); err == nil {
		t.Error("OpenTokenFile(missing) = nil error")
	}
	if _, err := OpenTokenFile(dir, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("OpenTokenFile(a directory) = nil error")
	}
}

func TestTokenFileCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeToken(t, path, "s3cret-token\n", 0o600)
	tf, err := OpenTokenFile(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		presented string
		want      error
	}{
		{"s3cret-token", nil},
		{"s3cret-toke", ErrWrongToken},
		{"s3cret-token2", ErrWrongToken},
		{"S3cret-token", ErrWrongToken},
		{"", ErrWrongToken},
		{"s", ErrWrongToken},
		{strings.Repeat("s3cret-token", 1000), ErrWrongToken},
		{"s3cret-token\x00", ErrWrongToken},
	} {
		if err := tf.Check(tt.presented); !errors.Is(err, tt.want) {
			t.Errorf("Check(%.20q, %d bytes) = %v, want %v", tt.presented, len(tt.presented), err, tt.want)
		}
	}
}

// TestTokenFileRotation changes the token file under a running TokenFile:
// rewritten in place, replaced by a rename, made readable by others,
// emptied, removed, and fixed again.
func TestTokenFileRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	writeToken(t, path, "old-token\n", 0o600)
	var logs bytes.Buffer
	tf, err := OpenTokenFile(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	check := func(step, presented string, want error) {
		t.Helper()
		if err := tf.Check(presented); !errors.Is(err, want) {
			t.Errorf("%s: Check(%q) = %v, want %v", step, presented, err, want)
		}
	}
	check("start", "old-token", nil)

	// In place, same length: only the times and the content differ.
	writeToken(t, path, "new-token\n", 0o600)
	check("rewritten", "old-token", ErrWrongToken)
	check("rewritten", "new-token", nil)

	// By rename, as Kubernetes and config managers do.
	tmp := filepath.Join(dir, "token.tmp")
	writeToken(t, tmp, "renamed-token-longer\n", 0o600)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	check("renamed", "new-token", ErrWrongToken)
	check("renamed", "renamed-token-longer", nil)

	// Readable by others: fail closed, the right token included.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	check("chmod 644", "renamed-token-longer", ErrTokenUnavailable)
	check("chmod 644, again", "renamed-token-longer", ErrTokenUnavailable)
	if n := strings.Count(logs.String(), "bearer token file unusable"); n != 1 {
		t.Errorf("after two requests with a world-readable token file, %d error lines, want 1:\n%s", n, logs.String())
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	check("chmod 600", "renamed-token-longer", nil)
	if !strings.Contains(logs.String(), "usable again") {
		t.Errorf("no log line saying the token file is usable again:\n%s", logs.String())
	}

	writeToken(t, path, "", 0o600)
	check("emptied", "renamed-token-longer", ErrTokenUnavailable)
	check("emptied", "", ErrTokenUnavailable)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	check("removed", "renamed-token-longer", ErrTokenUnavailable)

	writeToken(t, path, "back-token\n", 0o600)
	check("written again", "renamed-token-longer", ErrWrongToken)
	check("written again", "back-token", nil)
}

// TestTokenFileFIFOAndOwner: a FIFO in the token file's place does not
// hang requests, and a token file another user owns (and may rewrite) is
// refused.
func TestTokenFileFIFOAndOwner(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := OpenTokenFile(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tf.Check("s3cret") }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrTokenUnavailable) {
			t.Errorf("Check with a FIFO as the token file = %v, want ErrTokenUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Check hangs on a FIFO")
	}
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTokenFile(other, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "uid 65534") {
		t.Errorf("OpenTokenFile of a file nobody owns = %v, want an error naming its owner", err)
	}
}
