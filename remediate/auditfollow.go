package remediate

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"time"
)

// The clean command decides in a process of its own, whose counters die
// with it. A serving exporter that shares its audit file counts clean's
// results there, so that veth_remediation_actions_total and the last
// deletion time, which the dashboard shows, cover both.

// AuditByClean and AuditByWebhook name the callers in audit lines.
const (
	AuditByClean   = "clean"
	AuditByWebhook = "webhook"
)

// auditFollower reads the lines appended to an audit file since it was
// opened.
type auditFollower struct {
	path   string
	offset int64
	// partial is a line read before its end was written.
	partial []byte
}

// newAuditFollower starts at the end of the file at path: what was
// decided before the exporter started is not counted again.
func newAuditFollower(path string) *auditFollower {
	f := &auditFollower{path: path}
	if st, err := os.Stat(path); err == nil {
		f.offset = st.Size()
	}
	return f
}

// next returns the whole lines appended since the last call. A file that
// shrank (rotated, truncated) is read again from its start.
func (f *auditFollower) next() [][]byte {
	file, err := os.Open(f.path)
	if err != nil {
		return nil
	}
	defer file.Close()
	if st, err := file.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil
	} else if st.Size() < f.offset {
		f.offset, f.partial = 0, nil
	}
	if _, err := file.Seek(f.offset, io.SeekStart); err != nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(file, 16<<20))
	if err != nil {
		return nil
	}
	f.offset += int64(len(b))
	b = append(f.partial, b...)
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		f.partial = b
		return nil
	}
	f.partial = append([]byte(nil), b[end+1:]...)
	return bytes.Split(b[:end], []byte{'\n'})
}

// FollowAudit counts, every interval until the process ends, the results
// the clean command appends to the audit file at path, as if this
// exporter had answered them.
func (m *Metrics) FollowAudit(path string, interval time.Duration) {
	if m == nil || path == "" {
		return
	}
	f := newAuditFollower(path)
	go func() {
		for range time.Tick(interval) {
			m.countAudit(f.next())
		}
	}()
}

// countAudit counts the clean command's results among lines.
func (m *Metrics) countAudit(lines [][]byte) {
	for _, line := range lines {
		var rec auditRecord
		if json.Unmarshal(line, &rec) != nil || rec.By != AuditByClean || rec.Phase != auditResult {
			continue
		}
		m.action(rec.Answer)
		if rec.Result == ResultDeleted {
			m.lastDeletion(rec.Time)
		}
	}
}
