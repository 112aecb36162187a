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
// is treated as unreadable and replaced. Fields added since version 1 was
// first written (last_observed, peer, gone) are optional: a file without
// them is still version 1.
const stateVersion = 1

// refreshInterval bounds how long the state file goes unwritten while an
// exporter observes: at least this often it is rewritten, if only to move
// last_observed (and last-owner-seen times) forward, so that its
// last_observed is never much older than the last observation. Structural
// changes (a new veth, a new orphan, a new owner, a veth gone) are written
// at once. With a max-gap shorter than four intervals the file is
// rewritten at a quarter of it, so that a reader of the file (clean) does
// not find it stale while the exporter observes.
const refreshInterval = time.Minute

// DefaultMaxGap is the default [StateOptions.MaxGap].
const DefaultMaxGap = 5 * time.Minute

// goneRetention is how long a veth that disappeared is remembered as gone.
const goneRetention = time.Hour

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
	// Peer is the other end of the pair as first recorded; nil while it
	// was never found. An ifindex can be given again to a new veth of the
	// same name (ip link add … index N) between two observations: a
	// different peer means a different pair, whose history starts anew.
	Peer *peerIdentity `json:"peer,omitempty"`
}

// peerIdentity identifies the peer of a veth.
type peerIdentity struct {
	// Netns is the inode of the peer's namespace; 0 for a peer on the host.
	Netns uint64 `json:"netns,omitempty"`
	// Index is the peer's ifindex in that namespace (a host ifindex for a
	// peer on the host).
	Index int `json:"ifindex"`
}

// peerOf returns the identity of v's peer, nil when it is not known (its
// namespace was not found).
func peerOf(v *Veth) *peerIdentity {
	switch {
	case v.PeerOnHost:
		return &peerIdentity{Index: v.PeerIndex}
	case v.PeerNetns != nil:
		return &peerIdentity{Netns: v.PeerNetns.Inode, Index: v.PeerIndex}
	}
	return nil
}

// goneState is a tombstone: a recorded veth that disappeared.
type goneState struct {
	Device    string    `json:"device"`
	Index     int       `json:"ifindex"`
	GoneSince time.Time `json:"gone_since"`
	// The last owner of a veth that went: its namespace may live on,
	// leaked, and is named after it (see [observing.nameLeaked]).
	LastOwner      *Owner    `json:"last_owner,omitempty"`
	LastOwnerSeen  time.Time `json:"last_owner_seen,omitzero"`
	LastOwnerNetns uint64    `json:"last_owner_netns,omitempty"`
}

// gone is what the history keeps of a veth that went.
type gone struct {
	since time.Time
	// owner, ownerSeen and netns: its last owner, when and in which
	// namespace it was seen.
	owner     *Owner
	ownerSeen time.Time
	netns     uint64
}

type stateFile struct {
	Version int `json:"version"`
	// BootID is the kernel's boot_id when the file was written.
	// Interfaces do not survive a reboot, while names, ifindexes and
	// namespace inodes are handed out again from the start: a history
	// from an earlier boot describes other interfaces.
	BootID string `json:"boot_id,omitempty"`
	// LastObserved is when a writing exporter last observed the node's
	// veths. The file is rewritten at least every refreshInterval while
	// one does, so an old value means that none has since.
	LastObserved time.Time      `json:"last_observed,omitzero"`
	Devices      []*deviceState `json:"devices"`
	Gone         []*goneState   `json:"gone,omitempty"`
	// Leaked are the leaked namespaces, since when each has been seen so.
	Leaked []*leakedState `json:"leaked_netns,omitempty"`
	// Conditions are the annotators' clocks: since when each condition
	// they watch (a CNI lease leaked) has held (see [Finish.Since]).
	Conditions []*conditionState `json:"conditions,omitempty"`
}

// conditionState is since when an annotator's condition has held, under
// its key ("<annotator>/<key>").
type conditionState struct {
	Key   string    `json:"key"`
	Since time.Time `json:"since"`
}

// leakedState is what the history keeps of a leaked namespace: since
// when it has been seen leaked, held by exactly those mounts. Inodes are
// handed out again once a namespace is freed; another set of mounts, or
// a namespace not seen leaked at one observation, starts anew.
type leakedState struct {
	Inode  uint64    `json:"inode"`
	Mounts []string  `json:"mounts"`
	Since  time.Time `json:"leaked_since"`
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

// StateOptions configure a [State].
type StateOptions struct {
	// ReadOnly: the file is never written; the state only lends the
	// history it holds (the inspect and clean commands read the
	// exporter's history without changing it).
	ReadOnly bool
	// MaxGap is the longest gap between two observations over which an
	// orphan clock keeps running: after a longer one (the exporter was
	// stopped, or nobody scraped) nobody watched the veths meanwhile, and
	// every orphaned-since restarts at the next observation. Zero means
	// [DefaultMaxGap].
	MaxGap time.Duration
	// Logger logs what happens to the file; nil discards.
	Logger *slog.Logger
}

// State is the remembered history of the node's veths, kept in memory and
// in a state file so it survives restarts. It is safe for concurrent use.
//
// The state file (JSON, mode 0600) holds the kernel's boot_id, when a
// writing exporter last observed (last_observed), and for each veth its
// name and ifindex, its peer, first-seen and orphaned-since times and last
// known owner; veths that disappeared stay an hour as gone. A file of
// another boot, without a boot_id, or read when the current boot_id
// cannot be read, counts as empty.
type State struct {
	path     string
	readOnly bool
	maxGap   time.Duration
	bootID   string
	logger   *slog.Logger

	mu      sync.Mutex
	devices map[stateKey]*deviceState
	gone    map[stateKey]gone
	leaked  map[uint64]*leakedState
	// conditions: see [stateFile.Conditions].
	conditions map[string]time.Time
	// lastObserved is the last observation: the file's at load, then
	// (writable) each observe's.
	lastObserved time.Time
	dirty        bool
	lastWrite    time.Time
	// writeErr is the last failure to persist; while set the state lives
	// in memory only.
	writeErr error
	// readErr is why the state file that exists could not be loaded,
	// until a write replaces it.
	readErr error
}

// OpenState loads the state file at path. It never fails: a missing file
// starts an empty history, an unreadable or corrupt one is logged and
// replaced at the next write. An empty path keeps the state in memory only.
func OpenState(path string, opts StateOptions) *State {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	maxGap := opts.MaxGap
	if maxGap <= 0 {
		maxGap = DefaultMaxGap
	}
	s := &State{
		path: path, readOnly: opts.ReadOnly, maxGap: maxGap, logger: logger, bootID: currentBootID(),
		devices: map[stateKey]*deviceState{}, gone: map[stateKey]gone{}, leaked: map[uint64]*leakedState{},
		conditions: map[string]time.Time{},
	}
	if path == "" {
		return s
	}
	f, err := readStateFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		logger.Debug("no state file yet, starting an empty history", "path", path)
		return s
	case err != nil && s.readOnly:
		logger.Warn("cannot read state file, showing no history", "path", path, "err", err)
		s.readErr = err
		return s
	case err != nil:
		logger.Error("cannot read state file, starting an empty history; it will be replaced", "path", path, "err", err)
		s.readErr = err
	case s.bootID == "":
		logger.Warn("cannot read the kernel's boot_id: the state file cannot be tied to this boot; starting an empty history", "path", path, "boot_id_path", bootIDPath)
	case f.BootID == "":
		logger.Info("state file records no boot_id, so it may be from an earlier boot; starting an empty history", "path", path)
	case f.BootID != s.bootID:
		logger.Info("state file is from an earlier boot, whose interfaces are gone; starting an empty history", "path", path)
	default:
		for _, d := range f.Devices {
			s.devices[stateKey{d.Device, d.Index}] = d
		}
		for _, g := range f.Gone {
			s.gone[stateKey{g.Device, g.Index}] = gone{since: g.GoneSince, owner: g.LastOwner, ownerSeen: g.LastOwnerSeen, netns: g.LastOwnerNetns}
		}
		for _, l := range f.Leaked {
			s.leaked[l.Inode] = l
		}
		for _, c := range f.Conditions {
			s.conditions[c.Key] = c.Since
		}
		s.lastObserved = f.LastObserved
		logger.Debug("loaded state file", "path", path, "devices", len(f.Devices), "gone", len(f.Gone), "last_observed", f.LastObserved)
		return s
	}
	// Replace it at the next observe even if that snapshot holds no veth:
	// a file left in place is read again, and rejected again, at every
	// restart.
	s.dirty = true
	return s
}

func readStateFile(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("corrupt state file: %w", err)
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("state file version %d, want %d", f.Version, stateVersion)
	}
	for _, d := range f.Devices {
		if d == nil || d.Device == "" || d.Index <= 0 {
			return nil, fmt.Errorf("corrupt state file: invalid device entry")
		}
	}
	for _, g := range f.Gone {
		if g == nil || g.Device == "" || g.Index <= 0 {
			return nil, fmt.Errorf("corrupt state file: invalid gone entry")
		}
	}
	for _, l := range f.Leaked {
		if l == nil || l.Inode == 0 || l.Since.IsZero() {
			return nil, fmt.Errorf("corrupt state file: invalid leaked namespace entry")
		}
	}
	for _, c := range f.Conditions {
		if c == nil || !strings.Contains(c.Key, "/") || c.Since.IsZero() {
			return nil, fmt.Errorf("corrupt state file: invalid condition entry")
		}
	}
	return &f, nil
}

// observation is what observe tells the snapshot besides its veths.
type observation struct {
	// historyObserved: see [Snapshot.HistoryObserved].
	historyObserved time.Time
	// gone: see [Snapshot.Gone].
	gone []GoneVeth
	// unreadable: see [Snapshot.HistoryUnreadable].
	unreadable string
}

// observing is one observation of the history in progress, from
// [State.begin] to [observing.end], which hold the state's lock: for each
// veth of the snapshot, [observing.recall] lends it what the history
// knows before its verdict is decided (a leftover is recognised by the
// owner it had), and [observing.record] records the verdict's times and
// owner and copies them into the veth. Veths not recorded are gone, and
// remembered as gone for goneRetention.
//
// Orphaned-since equals now exactly when this observation is the first to
// see the veth orphaned: after an orphan verdict, or after a gap longer
// than MaxGap since the previous observation, when every orphan clock
// restarts (nobody watched meanwhile: a process may have come and gone).
//
// A read-only state only lends its history: a veth it does not know gets
// no first-seen or orphaned-since time, rather than a made-up "now".
//
// An orphan verdict must also have held for settle: runtimes build and
// tear down a container's network in steps (Docker creates the pair on the
// host before moving one end, a namespace is pinned and attached before
// its first process starts and after its last one exits), and each step
// looks like a leftover for a moment. Until then the verdict is unknown,
// reason settling, while orphaned-since already counts from the first
// sight.
type observing struct {
	s      *State
	now    time.Time
	settle time.Duration
	seen   map[stateKey]bool
	obs    observation
	// clocked: the conditions asked for this observation; finished: the
	// annotators that asked (their conditions not asked have ended).
	clocked  map[string]bool
	finished map[string]bool
	// ended: end released the state's lock.
	ended bool
}

// begin starts an observation at now: it takes the state's lock, which
// [observing.end] releases (and [observing.release], deferred, should the
// judgement in between panic), and restarts every orphan clock after a
// gap longer than MaxGap.
func (s *State) begin(now time.Time, settle time.Duration) *observing {
	s.mu.Lock()
	prev := s.lastObserved
	o := &observing{s: s, now: now, settle: settle, seen: map[stateKey]bool{}, obs: observation{historyObserved: prev},
		clocked: map[string]bool{}, finished: map[string]bool{}}
	if s.readErr != nil {
		o.obs.unreadable = fmt.Sprintf("state file %s: %v", s.path, s.readErr)
	}
	if s.readOnly || !(prev.IsZero() || now.Sub(prev) > s.maxGap) {
		return o
	}
	restarted := len(s.leaked) + len(s.conditions)
	clear(s.leaked)
	clear(s.conditions)
	for _, d := range s.devices {
		if !d.OrphanedSince.IsZero() {
			d.OrphanedSince = time.Time{}
			restarted++
		}
	}
	if restarted > 0 {
		s.dirty = true
		last := "never"
		if !prev.IsZero() {
			last = now.Sub(prev).Round(time.Second).String() + " ago"
		}
		s.logger.Info("no observation for longer than the maximum gap: orphan clocks restart now",
			"last_observed", last, "max_gap", s.maxGap, "orphans", restarted)
	}
	return o
}

// recall returns the history's record of v, a new one for a veth it does
// not know (or knows with another peer), and lends v its last owner.
func (o *observing) recall(v *Veth) *deviceState {
	s := o.s
	k := stateKey{v.Name, v.Index}
	o.seen[k] = true
	peer := peerOf(v)
	d := s.devices[k]
	if d != nil && d.Peer != nil && peer != nil && *d.Peer != *peer {
		// The same name and ifindex with another peer: another pair
		// (the ifindex was given again), or this one's peer moved.
		// Either way the recorded history is not about it.
		if !s.readOnly {
			s.logger.Info("veth has another peer than recorded: its history starts anew",
				"device", v.Name, "ifindex", v.Index, "recorded_peer_netns", d.Peer.Netns, "recorded_peer_ifindex", d.Peer.Index,
				"peer_netns", peer.Netns, "peer_ifindex", peer.Index)
		}
		d = nil
	}
	if d == nil {
		d = &deviceState{Device: v.Name, Index: v.Index}
		if !s.readOnly {
			d.FirstSeen = o.now
			s.devices[k] = d
			delete(s.gone, k)
			s.dirty = true
		}
	}
	if !s.readOnly && d.Peer == nil && peer != nil {
		d.Peer = peer
		s.dirty = true
	}
	v.LastOwner = nil
	if d.LastOwner != nil && (v.PeerNetns == nil || d.LastOwnerNetns == 0 || d.LastOwnerNetns == v.PeerNetns.Inode) {
		v.LastOwner = d.LastOwner
		v.LastOwnerSeen = d.LastOwnerSeen
	}
	return d
}

// record records v's verdict in d, the record recall returned for it:
// the orphan clock, and the owner while it is a container or pod's;
// it holds an orphan verdict back until it has lasted the settle time,
// and copies the recorded times and owner into v.
//
// A read-only state holds the verdict back as well, by the recorded
// orphaned-since: a reader that acts on it (clean) must not call orphaned
// what the exporter that recorded it still holds back.
func (o *observing) record(v *Veth, d *deviceState) {
	v.FirstSeen = d.FirstSeen
	v.OrphanedSince = d.OrphanedSince
	if !o.s.readOnly {
		switch {
		case v.Verdict == Orphaned && d.OrphanedSince.IsZero():
			d.OrphanedSince = o.now
			o.s.dirty = true
		case v.Verdict != Orphaned && !d.OrphanedSince.IsZero():
			d.OrphanedSince = time.Time{}
			o.s.dirty = true
		}
	}
	// A zero orphaned-since (read-only, never recorded) settles nothing.
	if v.Verdict == Orphaned && !d.OrphanedSince.IsZero() && o.now.Sub(d.OrphanedSince) < o.settle {
		v.Verdict, v.Reason = Unknown, ReasonSettling
	}
	if o.s.readOnly {
		return
	}
	if ow := v.Owner; ow != nil && ow.Kind != OwnerProcess && (v.PeerNetns == nil || !v.PeerNetns.Guest) {
		o.rememberOwner(v, d)
	}
	v.OrphanedSince = d.OrphanedSince
}

// rememberOwner records v's container or pod owner as its last owner.
func (o *observing) rememberOwner(v *Veth, d *deviceState) {
	ow := v.Owner
	var netns uint64
	if v.PeerNetns != nil {
		netns = v.PeerNetns.Inode
	}
	if ow.Name == "" && ow.PodName == "" && ow.ID != "" && d.LastOwner != nil &&
		d.LastOwner.Kind == ow.Kind && d.LastOwner.ID == ow.ID && d.LastOwnerNetns == netns {
		// The cgroups name the container or pod a runtime resolver
		// named before, while that resolver cannot be asked: an ID
		// keeps its names, and a leftover made now must still name
		// its pod.
		named := *d.LastOwner
		ow, v.Owner = &named, &named
	}
	if d.LastOwner == nil || *d.LastOwner != *ow || d.LastOwnerNetns != netns {
		owner := *ow
		d.LastOwner = &owner
		d.LastOwnerNetns = netns
		o.s.dirty = true
	}
	d.LastOwnerSeen = o.now
	v.LastOwner = d.LastOwner
	v.LastOwnerSeen = d.LastOwnerSeen
}

// nameLeaked lends each leaked namespace the last container or pod owner
// the history saw in it: of a veth still there or of one that went within
// goneRetention, the one seen last.
func (o *observing) nameLeaked(leaked []*Namespace) {
	for _, n := range leaked {
		consider := func(owner *Owner, seen time.Time, netns uint64) {
			if owner != nil && netns == n.Inode && seen.After(n.LastOwnerSeen) {
				n.LastOwner, n.LastOwnerSeen = owner, seen
			}
		}
		for _, d := range o.s.devices {
			consider(d.LastOwner, d.LastOwnerSeen, d.LastOwnerNetns)
		}
		for _, g := range o.s.gone {
			consider(g.owner, g.ownerSeen, g.netns)
		}
	}
}

// recordLeaked records since when each leaked namespace has been seen so,
// and lends it that time; leaked is nil on a partial view, which proves
// nothing and changes nothing.
func (o *observing) recordLeaked(leaked []*Namespace) {
	if leaked == nil {
		return
	}
	s := o.s
	seen := make(map[uint64]bool, len(leaked))
	for _, n := range leaked {
		seen[n.Inode] = true
		l := s.leaked[n.Inode]
		if l != nil && sameMounts(l.Mounts, n.Mounts) {
			n.LeakedSince = l.Since
			continue
		}
		if s.readOnly {
			continue
		}
		s.leaked[n.Inode] = &leakedState{Inode: n.Inode, Mounts: slices.Clone(n.Mounts), Since: o.now}
		n.LeakedSince = o.now
		s.dirty = true
	}
	if s.readOnly {
		return
	}
	for inode := range s.leaked {
		if !seen[inode] {
			delete(s.leaked, inode)
			s.dirty = true
		}
	}
}

// since returns since when the condition key of the annotator step has
// held: the time it was first asked for, in an unbroken run of
// observations that asked for it each time, now for a new one. A
// read-only state only lends what it recorded: zero for a condition it
// does not know.
func (o *observing) since(step, key string) time.Time {
	s, full := o.s, step+"/"+key
	o.finished[step] = true
	o.clocked[full] = true
	if t, ok := s.conditions[full]; ok {
		return t
	}
	if s.readOnly {
		return time.Time{}
	}
	s.conditions[full] = o.now
	s.dirty = true
	return o.now
}

// finish marks the annotator step as having finished this observation,
// so that its conditions not asked for are forgotten at the end.
func (o *observing) finish(step string) {
	o.finished[step] = true
}

// endConditions forgets the conditions no longer asked for by the
// annotators that finished.
func (o *observing) endConditions() {
	s := o.s
	for full := range s.conditions {
		step, _, _ := strings.Cut(full, "/")
		if o.finished[step] && !o.clocked[full] {
			delete(s.conditions, full)
			s.dirty = true
		}
	}
}

func sameMounts(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// end finishes the observation: the veths not recorded are gone, and the
// history is persisted when it changed or is due for a refresh. It
// returns the error of persisting, if any; the history in memory is
// updated regardless. It releases the state's lock.
func (o *observing) end() (observation, error) {
	s := o.s
	defer o.release()
	if s.readOnly {
		// Whatever the file holds that the dump does not show is gone;
		// a device it still held as present went after last_observed.
		for k := range s.devices {
			if !o.seen[k] {
				o.obs.gone = append(o.obs.gone, GoneVeth{Device: k.Device, Index: k.Index})
			}
		}
		for k, g := range s.gone {
			if !o.seen[k] {
				o.obs.gone = append(o.obs.gone, GoneVeth{Device: k.Device, Index: k.Index, Since: g.since})
			}
		}
		sortGone(o.obs.gone)
		return o.obs, nil
	}
	o.endConditions()
	for k, d := range s.devices {
		if !o.seen[k] {
			delete(s.devices, k)
			s.gone[k] = gone{since: o.now, owner: d.LastOwner, ownerSeen: d.LastOwnerSeen, netns: d.LastOwnerNetns}
			s.dirty = true
		}
	}
	for k, g := range s.gone {
		if o.now.Sub(g.since) >= goneRetention {
			delete(s.gone, k)
			s.dirty = true
		} else {
			o.obs.gone = append(o.obs.gone, GoneVeth{Device: k.Device, Index: k.Index, Since: g.since})
		}
	}
	sortGone(o.obs.gone)
	if o.now.After(s.lastObserved) {
		s.lastObserved = o.now
	}
	if s.path == "" {
		return o.obs, nil
	}
	if !s.dirty && o.now.Sub(s.lastWrite) < min(refreshInterval, s.maxGap/4) {
		return o.obs, s.writeErr
	}
	return o.obs, s.persist(o.now)
}

// release releases the state's lock unless end did: a build that panics
// between begin and end must not leave every later build waiting for it.
// The history keeps what was recorded before the panic.
func (o *observing) release() {
	if !o.ended {
		o.ended = true
		o.s.mu.Unlock()
	}
}

func sortGone(gone []GoneVeth) {
	slices.SortFunc(gone, func(a, b GoneVeth) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Index, b.Index))
	})
}

// persist writes the history; the caller holds s.mu.
func (s *State) persist(now time.Time) error {
	f := stateFile{Version: stateVersion, BootID: s.bootID, LastObserved: s.lastObserved, Devices: make([]*deviceState, 0, len(s.devices))}
	for _, d := range s.devices {
		f.Devices = append(f.Devices, d)
	}
	slices.SortFunc(f.Devices, func(a, b *deviceState) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Index, b.Index))
	})
	for _, l := range s.leaked {
		f.Leaked = append(f.Leaked, l)
	}
	slices.SortFunc(f.Leaked, func(a, b *leakedState) int { return cmp.Compare(a.Inode, b.Inode) })
	for k, since := range s.conditions {
		f.Conditions = append(f.Conditions, &conditionState{Key: k, Since: since})
	}
	slices.SortFunc(f.Conditions, func(a, b *conditionState) int { return cmp.Compare(a.Key, b.Key) })
	for k, g := range s.gone {
		f.Gone = append(f.Gone, &goneState{Device: k.Device, Index: k.Index, GoneSince: g.since,
			LastOwner: g.owner, LastOwnerSeen: g.ownerSeen, LastOwnerNetns: g.netns})
	}
	slices.SortFunc(f.Gone, func(a, b *goneState) int {
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
		s.readErr = nil
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
	// The history names the node's containers and pods: for root only.
	if err := tmp.Chmod(0o600); err != nil {
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
	// The rename is done; syncing the directory only makes it durable
	// sooner. A file system that cannot sync directories is no error.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
