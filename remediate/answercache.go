package remediate

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// answerKey identifies one alert for one device, in one status, naming
// one node: Alertmanager re-sends a firing alert at its repeat interval
// and HA peers send it twice. The status and the node are part of it: an
// alert that resolved and fires again keeps its fingerprint and startsAt,
// and an answer for an alert naming another node says nothing about one
// naming this node. It is a digest, so a key costs the same whatever the
// alert's labels weigh.
type answerKey [sha256.Size]byte

func keyOf(q request) answerKey {
	h := sha256.New()
	var b [8]byte
	status := "firing"
	if q.Resolved {
		status = "resolved"
	}
	for _, s := range []string{q.Fingerprint, q.Device, status, q.Instance} {
		binary.BigEndian.PutUint64(b[:], uint64(len(s)))
		h.Write(b[:])
		h.Write([]byte(s))
	}
	binary.BigEndian.PutUint64(b[:], uint64(q.StartsAt.UnixNano()))
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(q.Index))
	h.Write(b[:])
	var k answerKey
	h.Sum(k[:0])
	return k
}

// answerCache remembers final answers for a while, in insertion order,
// which is also expiry order: forgetting an answer only costs a second
// decision, which is safe (a deleted veth is then gone).
type answerCache struct {
	ttl     time.Duration
	max     int
	entries map[answerKey]Answer
	order   []cachedAt // oldest first, from head
	head    int
}

type cachedAt struct {
	key answerKey
	at  time.Time
}

func newAnswerCache(ttl time.Duration, limit int) *answerCache {
	return &answerCache{ttl: ttl, max: limit, entries: map[answerKey]Answer{}}
}

func (c *answerCache) get(k answerKey, now time.Time) (Answer, bool) {
	c.expire(now)
	a, ok := c.entries[k]
	return a, ok
}

func (c *answerCache) put(k answerKey, a Answer, now time.Time) {
	if _, ok := c.entries[k]; !ok {
		c.order = append(c.order, cachedAt{k, now})
	}
	c.entries[k] = a
	c.expire(now)
}

func (c *answerCache) len() int { return len(c.entries) }

// expire forgets answers older than the time to live, and the oldest ones
// beyond the size bound.
func (c *answerCache) expire(now time.Time) {
	for c.head < len(c.order) {
		e := c.order[c.head]
		if now.Sub(e.at) < c.ttl && now.Sub(e.at) >= 0 && len(c.entries) <= c.max {
			break
		}
		delete(c.entries, e.key)
		c.order[c.head] = cachedAt{}
		c.head++
	}
	if c.head > 1024 && c.head > len(c.order)/2 {
		c.order = append([]cachedAt(nil), c.order[c.head:]...)
		c.head = 0
	}
}

// final reports whether an answer holds for every re-send of the same
// alert: what was done, and what the alert itself makes impossible. A
// refusal that time or the node may lift (too young, limits, not orphaned
// yet, an inventory that failed) is decided again at the next re-send.
func final(a Answer) bool {
	switch a.Result {
	case ResultDeleted, ResultGone, ResultWouldDelete:
		return true
	case ResultSkipped:
		return a.Reason == ReasonResolved || a.Reason == ReasonOtherNode
	case ResultRefused:
		return a.Reason == ReasonInvalidDevice || a.Reason == ReasonInvalidIfindex
	}
	return false
}

// remember keeps the answers that hold for every re-send of their alert.
// A device a human named has no fingerprint, and its answer is not kept.
func (r *Remediator) remember(reqs []request, answers []Answer, now time.Time) {
	for i, q := range reqs {
		if q.Fingerprint != "" && len(q.Fingerprint) <= maxFingerprint && final(answers[i]) {
			r.answers.put(keyOf(q), answers[i], now)
		}
	}
}
