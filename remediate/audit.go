package remediate

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// auditPhase says whether an audit record announces a deletion about to
// happen or tells what became of a request.
type auditPhase string

const (
	// auditIntent is written before a deletion; a deletion whose intent
	// cannot be written does not happen (audit_failed).
	auditIntent auditPhase = "intent"
	auditResult auditPhase = "result"
)

// auditRecord is one line of the audit file.
type auditRecord struct {
	Time time.Time `json:"time"`
	Mode Mode      `json:"mode"`
	// By says who decided: "webhook" or "clean".
	By          string     `json:"by,omitempty"`
	Phase       auditPhase `json:"phase"`
	Fingerprint string     `json:"fingerprint,omitempty"`
	StartsAt    time.Time  `json:"starts_at,omitzero"`
	Answer
}

// appendAudit writes one JSON line to the audit file. The file is opened
// without following a symbolic link (a link planted at the path could
// otherwise make the exporter, root, append to any file), without
// blocking (a FIFO planted there would hang the request), created 0600,
// and must be a regular file. Each line is one write(2) on a file opened
// with O_APPEND, so lines from concurrent writers (clean beside serve)
// never mix.
func appendAudit(path string, now time.Time, mode Mode, by string, phase auditPhase, q request, a Answer) error {
	line, err := json.Marshal(auditRecord{now.UTC(), mode, by, phase, q.Fingerprint, q.StartsAt, a})
	if err != nil {
		return err
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return err
	} else if !st.Mode().IsRegular() {
		return fmt.Errorf("audit file %s is a %s, not a regular file", path, st.Mode().Type())
	}
	_, err = f.Write(append(line, '\n'))
	return err
}
