package remediate

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxTokenFileSize bounds what [TokenFile] reads: a bearer token is a
// line, not a file of any size someone could put in its place.
const maxTokenFileSize = 64 << 10

// Errors of [TokenFile.Check], for errors.Is.
var (
	// ErrWrongToken: the presented token is not the one in the file.
	ErrWrongToken = errors.New("wrong bearer token")
	// ErrTokenUnavailable: the token file changed into something that
	// cannot be used (unreadable, empty, readable by others); no token is
	// accepted until it is fixed.
	ErrTokenUnavailable = errors.New("the bearer token file is unusable: no token is accepted until it is fixed")
)

// TokenFile is a bearer token kept in a file that may be rotated while the
// exporter runs: each [TokenFile.Check] stats the file and reads it again
// when its identity, size, or modification or change time differ from what
// was read last. A file that becomes unusable (gone, unreadable, empty, or
// accessible by group or others) fails closed: no token is accepted, and an
// error is logged once per change, until the file is fixed.
//
// Only the SHA-256 digest of the token is kept, and tokens are compared by
// digest in constant time: neither the content nor the length of the token
// shows in how long a comparison takes.
type TokenFile struct {
	path   string
	logger *slog.Logger

	mu     sync.Mutex
	seen   fileStamp // of the version last read or found unusable
	digest [sha256.Size]byte
	err    error // non-nil: fail closed
}

// fileStamp tells one version of a file from another without reading it.
// The change time moves on chmod and on every write, even one that keeps
// the size and lands in the same modification-time tick.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime time.Time
	mode         fs.FileMode
}

func stampOf(fi fs.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime(), mode: fi.Mode()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
		s.ctime = time.Unix(st.Ctim.Unix())
	}
	return s
}

// OpenTokenFile reads the token in path. Unlike a later change, a file
// unusable at start-up is an error: the exporter must not start with a
// credential it cannot use or that others can read.
func OpenTokenFile(path string, logger *slog.Logger) (*TokenFile, error) {
	t := &TokenFile{path: path, logger: logger}
	stamp, digest, err := readToken(path)
	if err != nil {
		return nil, err
	}
	t.seen, t.digest = stamp, digest
	return t, nil
}

// Check reports whether presented is the token in the file now: nil, or
// [ErrWrongToken] or [ErrTokenUnavailable].
func (t *TokenFile) Check(presented string) error {
	digest, err := t.current()
	if err != nil {
		return err
	}
	got := sha256.Sum256([]byte(presented))
	if subtle.ConstantTimeCompare(got[:], digest[:]) != 1 {
		return ErrWrongToken
	}
	return nil
}

// current returns the digest of the file's token, reading the file again
// if it changed since it was last read.
func (t *TokenFile) current() ([sha256.Size]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fi, err := os.Stat(t.path)
	if err != nil {
		t.failed(fileStamp{}, err)
		return [sha256.Size]byte{}, ErrTokenUnavailable
	}
	if stamp := stampOf(fi); stamp != t.seen {
		stamp2, digest, err := readToken(t.path)
		if err != nil {
			// Remember the version found unusable, so that it is
			// neither read nor logged again at each request; fixing
			// it (chmod, a rewrite) changes the change time.
			t.failed(stamp, err)
			return [sha256.Size]byte{}, ErrTokenUnavailable
		}
		if t.err != nil {
			t.logger.Info("bearer token file usable again", "file", t.path)
		} else {
			t.logger.Info("bearer token file changed: reloaded", "file", t.path)
		}
		t.seen, t.digest, t.err = stamp2, digest, nil
	}
	if t.err != nil {
		return [sha256.Size]byte{}, ErrTokenUnavailable
	}
	return t.digest, nil
}

// failed records that the file's version stamp is unusable, and logs it
// when that is news.
func (t *TokenFile) failed(stamp fileStamp, err error) {
	if t.err == nil || t.seen != stamp {
		t.logger.Error("bearer token file unusable: every remediation request is refused until it is fixed", "file", t.path, "err", err)
	}
	t.seen, t.err = stamp, err
}

// readToken reads the token in path and returns the stamp of the very
// version it read (from the open file, not the path, which may be replaced
// in between). It opens without blocking: a FIFO put in the file's place
// must not hang every request behind the one that opened it. The file must
// belong to the exporter's user: whoever owns it may rewrite the token. (A
// symbolic link is followed: Kubernetes mounts secrets as links.)
func readToken(path string) (fileStamp, [sha256.Size]byte, error) {
	var zero [sha256.Size]byte
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fileStamp{}, zero, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fileStamp{}, zero, err
	}
	stamp := stampOf(fi)
	if !fi.Mode().IsRegular() {
		return stamp, zero, fmt.Errorf("%s is not a regular file", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return stamp, zero, fmt.Errorf("%s belongs to uid %d, not to the exporter's user (uid %d), who alone may be able to change it", path, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return stamp, zero, fmt.Errorf("%s is accessible by group or others (mode %04o): chmod 600 (or 400) it", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileSize+1))
	if err != nil {
		return stamp, zero, err
	}
	if len(b) > maxTokenFileSize {
		return stamp, zero, fmt.Errorf("%s is larger than %d bytes: not a token", path, maxTokenFileSize)
	}
	token := bytes.TrimSpace(b)
	if len(token) == 0 {
		return stamp, zero, fmt.Errorf("%s is empty", path)
	}
	return stamp, sha256.Sum256(token), nil
}
