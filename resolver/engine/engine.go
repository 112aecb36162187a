// Package engine is the HTTP client of container engine APIs, Docker's and
// Podman's, shared by their resolvers: the few GET calls and the events
// stream both need, over a unix socket or TCP, with bounded answers, and
// a view cached between snapshots that the events stream marks stale.
// It only reads: it never asks an engine to change anything.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// API is the HTTP API of a container engine, Docker's or Podman's,
// over a unix socket or TCP: the few GET calls and the events stream the
// resolvers of both need. It counts the requests it makes.
type API struct {
	// engine names the engine in errors: "docker", "podman".
	engine   string
	client   *http.Client
	base     string
	requests atomic.Uint64
}

// New returns a client of the engine at host: unix:///path or
// tcp://host:port (the DOCKER_HOST and CONTAINER_HOST forms). It does not
// contact the engine.
func New(engine, host string) (*API, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("%s host %q: %w", engine, host, err)
	}
	a := &API{engine: engine}
	transport := &http.Transport{MaxIdleConns: 2, IdleConnTimeout: time.Minute}
	switch u.Scheme {
	case "unix":
		socket := u.Path
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", socket)
		}
		a.base = "http://" + engine
	case "tcp", "http":
		a.base = "http://" + u.Host
	default:
		return nil, fmt.Errorf("%s host %q: scheme %q not supported (unix:// or tcp://)", engine, host, u.Scheme)
	}
	a.client = &http.Client{Transport: transport}
	return a, nil
}

// engineError is an answer of the engine other than 200 OK.
type engineError struct {
	engine  string
	status  int
	message string
}

func (e *engineError) Error() string {
	return fmt.Sprintf("%s API: %d %s", e.engine, e.status, e.message)
}

// IsNotFound reports whether err is the engine's 404: the container was
// removed since it was listed.
func IsNotFound(err error) bool {
	var ee *engineError
	return errors.As(err, &ee) && ee.status == http.StatusNotFound
}

// Open sends a GET of p (with its API version prefix) and returns the
// response, 200 OK, for the caller to read and close; any other status is
// an *engineError.
func (a *API) Open(ctx context.Context, p string, query url.Values) (*http.Response, error) {
	u := a.base + p
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	a.requests.Add(1)
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", a.engine, p, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var body struct {
			Message string `json:"message"`
		}
		// Best effort: the status alone is the error when the body says nothing.
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
		return nil, &engineError{engine: a.engine, status: resp.StatusCode, message: body.Message}
	}
	return resp, nil
}

// Get calls p within timeout and decodes its JSON answer into out.
func (a *API) Get(ctx context.Context, timeout time.Duration, p string, query url.Values, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := a.Open(ctx, p, query)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(&boundedReader{r: resp.Body, max: maxEngineAnswer}).Decode(out); err != nil {
		return fmt.Errorf("%s %s: %w", a.engine, p, err)
	}
	return nil
}

// followEvents runs stream until ctx ends, again each time it returns,
// after a backoff that doubles up to 30 s while it fails at once and
// starts again at 1 s after a stream that ran. ended is called after each
// stream, with its error.
func followEvents(ctx context.Context, stream func(context.Context) error, ended func(error)) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := stream(ctx)
		ended(err)
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
		if err == nil {
			backoff = time.Second
		}
	}
}

// FollowedView is an engine's view cached between snapshots and the
// events stream that says when it is stale: the view is reused while the
// stream is connected and reports no change and the view is younger than
// the resolver's TTL. Its Mu guards the resolver's own caches too.
type FollowedView[V any] struct {
	Mu     sync.Mutex
	view   V
	have   bool
	up     bool // the cached view is of an engine that answered
	viewAt time.Time
	// eventsUp: the stream is connected; changedGen is bumped by every
	// event and every (re)connection, viewGen is the changedGen the
	// cached view was fetched at.
	eventsUp   bool
	changedGen uint64
	viewGen    uint64

	stop context.CancelFunc
	done chan struct{}
}

// Cached returns the view to reuse, if any, and the generation a new
// fetch starts at; the caller holds mu.
func (f *FollowedView[V]) Cached(ttl time.Duration) (v V, ok bool, gen uint64) {
	if f.have && f.up && f.eventsUp && f.viewGen == f.changedGen && time.Since(f.viewAt) < ttl {
		return f.view, true, f.changedGen
	}
	return v, false, f.changedGen
}

// WasUp reports whether the last view was of an engine that answered,
// or there was none; the caller holds mu.
func (f *FollowedView[V]) WasUp() bool { return !f.have || f.up }

// Store keeps v, fetched at generation gen; the caller holds mu.
func (f *FollowedView[V]) Store(v V, up bool, gen uint64) {
	f.view, f.have, f.up, f.viewAt, f.viewGen = v, true, up, time.Now(), gen
}

// Opened records a connected stream: the events before it were missed,
// so the cached view is stale. The caller does not hold mu.
func (f *FollowedView[V]) Opened() {
	f.Mu.Lock()
	f.eventsUp = true
	f.changedGen++
	f.Mu.Unlock()
}

// Follow runs stream (which reads the events, calling Opened once
// connected) until CloseEvents, reconnecting when it ends.
func (f *FollowedView[V]) Follow(stream func(context.Context) error, logger *slog.Logger, engine string) {
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	f.done = make(chan struct{})
	go func() {
		defer close(f.done)
		followEvents(ctx, stream, func(err error) {
			f.Mu.Lock()
			f.eventsUp = false
			f.changedGen++
			f.Mu.Unlock()
			if ctx.Err() == nil {
				logger.Debug(engine+" events stream ended, reconnecting", "err", err)
			}
		})
	}()
}

// CloseEvents stops following the events.
func (f *FollowedView[V]) CloseEvents() {
	if f.stop != nil {
		f.stop()
		<-f.done
	}
}

// Bounds on what an engine may send: a whole answer, one event.
const (
	maxEngineAnswer = 64 << 20
	maxEngineEvent  = 1 << 20
)

// Event is what both engines' events say that the resolvers use.
type Event struct {
	Type   string
	Action string
	Actor  struct{ ID string }
}

// ReadEvents decodes the events of a stream and passes each to each,
// until the stream ends (an error then, io.EOF included) or one event is
// larger than maxEngineEvent.
func ReadEvents(body io.Reader, each func(Event)) error {
	b := &boundedReader{r: body, max: maxEngineEvent}
	dec := json.NewDecoder(b)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("events stream closed")
			}
			return err
		}
		b.n = 0
		each(ev)
	}
}

// boundedReader fails once more than max bytes were read since n was last
// set to 0.
type boundedReader struct {
	r      io.Reader
	n, max int
}

var errTooLarge = errors.New("engine sent more than the exporter accepts")

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n >= b.max {
		return 0, errTooLarge
	}
	if len(p) > b.max-b.n {
		p = p[:b.max-b.n]
	}
	n, err := b.r.Read(p)
	b.n += n
	return n, err
}

// Requests is the number of requests made so far.
func (a *API) Requests() uint64 { return a.requests.Load() }

// Changed records an event that makes the cached view stale; the caller
// holds Mu.
func (f *FollowedView[V]) Changed() { f.changedGen++ }

// Following reports whether the events stream is connected; the caller
// holds Mu.
func (f *FollowedView[V]) Following() bool { return f.eventsUp }

// Stale reports whether an event came after the cached view was fetched;
// the caller holds Mu.
func (f *FollowedView[V]) Stale() bool { return f.viewGen != f.changedGen }

// helpBridgeInfo is the help of veth_bridge_info, which the resolvers of
// Docker and Podman both expose: the same text, one family.
const helpBridgeInfo = "Container network (Docker's or Podman's) of a bridge that is a veth master (docker0, br-<id>, podman0)."

// BridgeInfo is veth_bridge_info for the bridges (interface → network
// name) that are the master of some veth of s: the container networks of
// engines (Docker's, Podman's), one family for all.
func BridgeInfo(s *inventory.Snapshot, bridges map[string]string) inventory.Family {
	masters := map[string]bool{}
	for i := range s.Veths {
		if m := s.Veths[i].Master; m != "" && bridges[m] != "" {
			masters[m] = true
		}
	}
	f := inventory.Family{Name: "veth_bridge_info", Help: helpBridgeInfo}
	for _, m := range slices.Sorted(maps.Keys(masters)) {
		f.Series = append(f.Series, inventory.Series{Value: 1, Labels: []inventory.Label{{Name: "master", Value: m}, {Name: "network", Value: bridges[m]}}})
	}
	return f
}
