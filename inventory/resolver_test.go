package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// fakeResolver is a runtime resolver that answers what it is told.
type fakeResolver struct {
	step    string
	timeout time.Duration
	err     error

	// running are the namespaces the runtime runs containers in: it
	// claims them running, owned by a container named after the inode.
	running []RunningNetns
	// hang: Observe answers only when its deadline ends, as a wedged
	// daemon's resolver does.
	hang bool
	// panics: the first Claim panics.
	panics bool

	mu        sync.Mutex
	deadlines []time.Time // of the contexts Observe got
	claimed   int         // Claim calls
}

func (r *fakeResolver) Step() string           { return r.step }
func (r *fakeResolver) Timeout() time.Duration { return r.timeout }
func (r *fakeResolver) Start()                 {}
func (r *fakeResolver) Close()                 {}

func (r *fakeResolver) Observe(ctx context.Context, _ Paths) (Observation, error) {
	d, _ := ctx.Deadline()
	r.mu.Lock()
	r.deadlines = append(r.deadlines, d)
	r.mu.Unlock()
	if r.hang {
		<-ctx.Done()
		return fakeObservation{r}, ctx.Err()
	}
	return fakeObservation{r}, r.err
}

type fakeObservation struct{ r *fakeResolver }

func (o fakeObservation) Claim(_ context.Context, v *Veth) Claim {
	o.r.mu.Lock()
	o.r.claimed++
	panics := o.r.panics
	o.r.panics = false
	o.r.mu.Unlock()
	if panics {
		panic("claim panicked")
	}
	for _, r := range o.r.running {
		if v.PeerNetns != nil && v.PeerNetns.Inode == r.Inode {
			return Claim{State: RuntimeRunning, Owner: &Owner{Kind: OwnerContainer, ID: fmt.Sprint(r.Inode), Name: "fake"}}
		}
	}
	return Claim{}
}

func (o fakeObservation) Running() []RunningNetns { return o.r.running }

func (o fakeObservation) View() RuntimeView { return fakeView{Resolver: o.r.step} }

// fakeView is a fake resolver's record.
type fakeView struct {
	Resolver string `json:"resolver"`
}

func (fakeView) Families(*Snapshot) []Family { return nil }

// TestResolversInSnapshot: every resolver of the config is observed once
// per snapshot, under its own deadline, reports its step with its error
// and records its view in the snapshot under its name, which the JSON
// shows as a key of the snapshot.
func TestResolversInSnapshot(t *testing.T) {
	up := &fakeResolver{step: "up", timeout: time.Hour}
	down := &fakeResolver{step: "down", timeout: time.Minute, err: errors.New("connection refused")}
	inv := New(Config{TrustPIDNamespace: true, Resolvers: []Resolver{up, down}})
	before := time.Now()
	s, err := inv.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	steps := map[string]Step{}
	for _, st := range s.Steps {
		steps[st.Name] = st
	}
	if st, ok := steps["up"]; !ok || st.Err != nil {
		t.Errorf("step up = %+v, %v; want a step without error", st, ok)
	}
	if st, ok := steps["down"]; !ok || st.Error != "connection refused" {
		t.Errorf("step down = %+v, %v; want a step with its error", st, ok)
	}
	for _, r := range []*fakeResolver{up, down} {
		if len(r.deadlines) != 1 {
			t.Fatalf("%s observed %d times, want once", r.step, len(r.deadlines))
		}
		if d := r.deadlines[0]; d.Before(before.Add(r.timeout)) || d.After(time.Now().Add(r.timeout)) {
			t.Errorf("%s observed with deadline %v, want its own timeout %v from the snapshot", r.step, d, r.timeout)
		}
		if v, ok := s.View(r.step).(fakeView); !ok || v.Resolver != r.step {
			t.Errorf("%s did not record its view: views %+v", r.step, s.Views)
		}
		if r.claimed != len(s.Veths) {
			t.Errorf("%s asked %d claims for %d veths, want one each", r.step, r.claimed, len(s.Veths))
		}
	}

	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"up", "down"} {
		if string(keys[name]) != `{"resolver":"`+name+`"}` {
			t.Errorf("JSON key %q = %s, want the view of %s", name, keys[name], name)
		}
	}
	if _, ok := keys["veths"]; !ok {
		t.Errorf("JSON %s: no veths key beside the views", b)
	}
}

// TestSnapshotAfterPanickingClaim: a build whose judgement panics fails
// its callers and leaves the history usable: the next snapshot is taken.
func TestSnapshotAfterPanickingClaim(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "panicky")
	netnstest.Veth(t, "vpanic", "panicky", "")
	r := &fakeResolver{step: "panicky", timeout: time.Minute, panics: true}
	inv := New(Config{TrustPIDNamespace: true, Resolvers: []Resolver{r}})
	if s, err := inv.Snapshot(context.Background()); err == nil {
		t.Fatalf("Snapshot with a panicking claim = %v, nil; want an error", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := inv.Snapshot(ctx)
	if err != nil {
		t.Fatalf("the snapshot after a panicked one: %v", err)
	}
	if s.Veth("vpanic") == nil {
		t.Error("the snapshot after a panicked one lacks vpanic")
	}
}

// TestNetnsPin: a pin in a directory only a runtime uses is the
// runtime's whatever its name; in one shared with `ip netns`, only a name
// in the runtime's naming is.
func TestNetnsPin(t *testing.T) {
	own := NetnsPin{Dir: "/run/docker/netns"}
	shared := NetnsPin{Dir: "/run/netns", Name: regexp.MustCompile(`^netns-` + UUIDPattern + `$`)}
	tests := []struct {
		pin   NetnsPin
		mount string
		want  bool
	}{
		{own, "/run/docker/netns/1f2e3d4c5b6a", true},
		{own, "/run/docker/netns/default", true},
		{own, "/run/docker/netns", false},
		{own, "/run/docker/netns/x/y", false},
		{own, "/run/netns/1f2e3d4c5b6a", false},
		{shared, "/run/netns/netns-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", true},
		{shared, "/run/netns/netns-leak", false},
		{shared, "/run/netns/cni-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", false},
		{shared, "/run/netns/x-netns-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", false},
		{shared, "/run/netns/mine", false},
	}
	for _, tt := range tests {
		if got := tt.pin.Pins(tt.mount); got != tt.want {
			t.Errorf("%+v.Pins(%q) = %v, want %v", tt.pin, tt.mount, got, tt.want)
		}
	}
}
