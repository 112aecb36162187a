package inventory

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// stateVersion is the format of the state file; a file of another version
// is treated as unreadable and replaced.
const stateVersion = 1

// lastSeenWriteInterval bounds how often the state file is rewritten only
// to move last-owner-seen times forward; structural changes (a new veth, a
// new orphan, a new owner, a pruned veth) are written at once.
const lastSeenWriteInterval = time.Minute

// stateKey identifies a veth across snapshots. Names are reused (a CNI may
// recreate the same name for a new pod), so the ifindex is part of the key:
// a new interface under an old name starts a new history.
type stateKey struct {
	Device string
	Index  int
}

// deviceState is what the exporter remembers of one veth.
type deviceState struct {
	Device        string    `json:"device"`
	Index         int       `json:"ifindex"`
	FirstSeen     time.Time `json:"first_seen"`
	OrphanedSince time.Time `json:"orphaned_since,omitzero"`
	LastOwner     *Owner    `json:"last_owner,omitempty"`
	LastOwnerSeen time.Time `json:"last_owner_seen,omitzero"`
	// LastOwnerNetns is the inode of the namespace LastOwner owned: the
	// owner is evidence about that namespace only.
	LastOwnerNetns uint64 `json:"last_owner_netns,omitempty"`
}

type stateFile struct {
	Version int `json:"version"`
	// BootID is the kernel's boot_id when the file was written.
	// Interfaces do not survive a reboot, while names, ifindexes and
	// namespace inodes are handed out again from the start: a history
	// from an earlier boot describes other interfaces.
	BootID  string         `json:"boot_id,omitempty"`
	Devices []*deviceState `json:"devices"`
}

// bootIDPath holds the random id the kernel draws at each boot.
var bootIDPath = "/proc/sys/kernel/random/boot_id"

func currentBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// State is the remembered history of the node's veths, kept in memory and
// in a state file so it survives restarts. It is safe for concurrent use.
type State struct {
	path     string
	readOnly bool
	bootID   string
	logger   *slog.Logger

	mu        sync.Mutex
	devices   map[stateKey]*deviceState
	dirty     bool
	lastWrite time.Time
	// writeErr is the last failure to persist; while set the state lives
	// in memory only.
	writeErr error
}

// OpenState loads the state file at path. It never fails: a missing file
// starts an empty history, an unreadable or corrupt one is logged and
// replaced at the next write. With readOnly the file is never written (the
// inspect command reads the exporter's history without changing it). An
// empty path keeps the state in memory only. A nil logger discards logs.
func OpenState(path string, readOnly bool, logger *slog.Logger) *State {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &State{path: path, readOnly: readOnly, logger: logger, bootID: currentBootID(), devices: map[stateKey]*deviceState{}}
	if path == "" {
		return s
	}
	devices, bootID, err := readStateFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		logger.Debug("no state file yet, starting an empty history", "path", path)
	case err != nil && readOnly:
		logger.Warn("cannot read state file, showing no history", "path", path, "err", err)
	case err != nil:
		logger.Error("cannot read state file, starting an empty history; it will be replaced", "path", path, "err", err)
		// Replace it at the next observe even if that snapshot holds no
		// veth: a corrupt file left in place is read again at every restart.
		s.dirty = true
	case bootID != "" && s.bootID != "" && bootID != s.bootID:
		logger.Info("state file is from an earlier boot, whose interfaces are gone; starting an empty history", "path", path)
		s.dirty = true
	default:
		for _, d := range devices {
			s.devices[stateKey{d.Device, d.Index}] = d
		}
		logger.Debug("loaded state file", "path", path, "devices", len(devices))
	}
	return s
}

func readStateFile(path string) (devices []*deviceState, bootID string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, "", fmt.Errorf("corrupt state file: %w", err)
	}
	if f.Version != stateVersion {
		return nil, "", fmt.Errorf("state file version %d, want %d", f.Version, stateVersion)
	}
	for _, d := range f.Devices {
		if d == nil || d.Device == "" || d.Index <= 0 {
			return nil, "", fmt.Errorf("corrupt state file: invalid device entry")
		}
	}
	return f.Devices, f.BootID, nil
}

// observe merges one snapshot's veths into the history. For each veth it
// fills in the last known owner before judge decides the verdict (a
// leftover is recognised by the owner it had), then records first-seen,
// orphaned-since and the owner, and copies those times into the veth.
// Veths that are gone are forgotten. It returns the error of persisting
// the state, if any; the history in memory is updated regardless. A
// read-only state only lends its history: a veth it does not know gets no
// first-seen or orphaned-since time, rather than a made-up "now".
//
// An orphan verdict must also have held for settle: runtimes build and
// tear down a container's network in steps (Docker creates the pair on the
// host before moving one end, a namespace is pinned and attached before
// its first process starts and after its last one exits), and each step
// looks like a leftover for a moment. Until then the verdict is unknown,
// reason settling, while orphaned-since already counts from the first
// sight.
func (s *State) observe(now time.Time, veths []Veth, settle time.Duration, judge func(*Veth)) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	seen := make(map[stateKey]bool, len(veths))
	lastSeenMoved := false
	for i := range veths {
		v := &veths[i]
		k := stateKey{v.Name, v.Index}
		seen[k] = true
		d := s.devices[k]
		if d == nil {
			d = &deviceState{Device: v.Name, Index: v.Index}
			if !s.readOnly {
				d.FirstSeen = now
				s.devices[k] = d
				s.dirty = true
			}
		}
		v.LastOwner = nil
		if d.LastOwner != nil && (v.PeerNetns == nil || d.LastOwnerNetns == 0 || d.LastOwnerNetns == v.PeerNetns.Inode) {
			v.LastOwner = d.LastOwner
			v.LastOwnerSeen = d.LastOwnerSeen
		}
		judge(v)
		v.FirstSeen = d.FirstSeen
		v.OrphanedSince = d.OrphanedSince
		if s.readOnly {
			continue
		}

		switch {
		case v.Verdict == Orphaned && d.OrphanedSince.IsZero():
			d.OrphanedSince = now
			s.dirty = true
		case v.Verdict != Orphaned && !d.OrphanedSince.IsZero():
			d.OrphanedSince = time.Time{}
			s.dirty = true
		}
		if v.Verdict == Orphaned && now.Sub(d.OrphanedSince) < settle {
			v.Verdict, v.Reason = Unknown, ReasonSettling
		}
		if o := v.Owner; o != nil && o.Kind != OwnerProcess {
			var netns uint64
			if v.PeerNetns != nil {
				netns = v.PeerNetns.Inode
			}
			if d.LastOwner == nil || *d.LastOwner != *o || d.LastOwnerNetns != netns {
				owner := *o
				d.LastOwner = &owner
				d.LastOwnerNetns = netns
				s.dirty = true
			}
			d.LastOwnerSeen = now
			lastSeenMoved = true
			v.LastOwner = d.LastOwner
			v.LastOwnerSeen = d.LastOwnerSeen
		}
		v.OrphanedSince = d.OrphanedSince
	}
	if s.readOnly {
		return nil
	}
	for k := range s.devices {
		if !seen[k] {
			delete(s.devices, k)
			s.dirty = true
		}
	}
	if s.path == "" {
		return nil
	}
	if !s.dirty && !(lastSeenMoved && now.Sub(s.lastWrite) >= lastSeenWriteInterval) {
		return s.writeErr
	}
	return s.persist(now)
}

// persist writes the history; the caller holds s.mu.
func (s *State) persist(now time.Time) error {
	f := stateFile{Version: stateVersion, BootID: s.bootID, Devices: make([]*deviceState, 0, len(s.devices))}
	for _, d := range s.devices {
		f.Devices = append(f.Devices, d)
	}
	slices.SortFunc(f.Devices, func(a, b *deviceState) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Index, b.Index))
	})
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	err = writeFileAtomic(s.path, append(b, '\n'))
	switch {
	case err != nil && s.writeErr == nil:
		s.logger.Warn("cannot write state file, keeping history in memory only: first-seen and orphaned-since times will not survive a restart", "path", s.path, "err", err)
	case err == nil && s.writeErr != nil:
		s.logger.Info("state file writable again", "path", s.path)
	}
	s.writeErr = err
	if err == nil {
		s.dirty = false
		s.lastWrite = now
	}
	return err
}

// writeFileAtomic replaces path with data so that a reader, a crash or a
// concurrent writer never sees a partial file: a unique temporary file in
// the same directory, fsync, rename over the old file.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this is a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
