package inventory

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeBuilds replaces an Inventory's build: each build announces its
// number on started and ends when release lets it.
type fakeBuilds struct {
	started chan uint64
	release chan struct{}
	mu      sync.Mutex
	n       uint64
	ctxErrs []error // ctx.Err() of each build's context when it ended
}

func newFakeBuilds(t *testing.T) (*Inventory, *fakeBuilds) {
	f := &fakeBuilds{started: make(chan uint64, 100), release: make(chan struct{})}
	inv := New(Config{})
	inv.build = func(ctx context.Context) (*Snapshot, error) {
		f.mu.Lock()
		f.n++
		n := f.n
		f.mu.Unlock()
		f.started <- n
		<-f.release
		f.mu.Lock()
		f.ctxErrs = append(f.ctxErrs, ctx.Err())
		f.mu.Unlock()
		return &Snapshot{Taken: t0.Add(time.Duration(n) * time.Second)}, nil
	}
	t.Cleanup(func() {
		// Let every build still blocked end.
		close(f.release)
	})
	return inv, f
}

// waitStarted waits for build n to start.
func (f *fakeBuilds) waitStarted(t *testing.T, n uint64) {
	t.Helper()
	select {
	case got := <-f.started:
		if got != n {
			t.Fatalf("build %d started, want %d", got, n)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("build %d did not start", n)
	}
}

func (f *fakeBuilds) count() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// waitWaiting waits until n callers wait for a build.
func waitWaiting(t *testing.T, inv *Inventory, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		inv.mu.Lock()
		w := inv.waiting
		inv.mu.Unlock()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers waiting, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type result struct {
	snap *Snapshot
	err  error
}

func call(ctx context.Context, f func(context.Context) (*Snapshot, error)) <-chan result {
	ch := make(chan result, 1)
	go func() {
		s, err := f(ctx)
		ch <- result{s, err}
	}()
	return ch
}

func receive(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no answer after 5s")
		return result{}
	}
}

// TestSharedSnapshotSharesOneBuild: concurrent scrapes share one build.
func TestSharedSnapshotSharesOneBuild(t *testing.T) {
	inv, f := newFakeBuilds(t)
	var answers []<-chan result
	for range 6 {
		answers = append(answers, call(context.Background(), inv.SharedSnapshot))
	}
	f.waitStarted(t, 1)
	waitWaiting(t, inv, 6)
	f.release <- struct{}{}
	var first *Snapshot
	for i, ch := range answers {
		r := receive(t, ch)
		if r.err != nil || r.snap == nil {
			t.Fatalf("caller %d: %v, %v", i, r.snap, r.err)
		}
		if first == nil {
			first = r.snap
		}
		if r.snap != first {
			t.Errorf("caller %d got snapshot %v, caller 0 %v: not shared", i, r.snap.Taken, first.Taken)
		}
	}
	if n := f.count(); n != 1 {
		t.Errorf("%d builds for 6 concurrent scrapes, want 1", n)
	}
}

// TestSnapshotIsFresh: Snapshot never returns a build that started
// before the call; fresh callers waiting together share the next build.
func TestSnapshotIsFresh(t *testing.T) {
	inv, f := newFakeBuilds(t)
	scrape := call(context.Background(), inv.SharedSnapshot)
	f.waitStarted(t, 1)
	fresh1 := call(context.Background(), inv.Snapshot)
	fresh2 := call(context.Background(), inv.Snapshot)
	waitWaiting(t, inv, 3)
	f.release <- struct{}{}
	if r := receive(t, scrape); r.err != nil || !r.snap.Taken.Equal(t0.Add(time.Second)) {
		t.Errorf("scrape got %+v, want build 1", r)
	}
	f.waitStarted(t, 2)
	// A scrape arriving now joins the fresh build.
	late := call(context.Background(), inv.SharedSnapshot)
	waitWaiting(t, inv, 3)
	f.release <- struct{}{}
	for name, ch := range map[string]<-chan result{"fresh 1": fresh1, "fresh 2": fresh2, "late scrape": late} {
		if r := receive(t, ch); r.err != nil || !r.snap.Taken.Equal(t0.Add(2*time.Second)) {
			t.Errorf("%s got %+v, want build 2", name, r)
		}
	}
	if n := f.count(); n != 2 {
		t.Errorf("%d builds, want 2", n)
	}
}

// TestSnapshotDeadline: a waiter gives up when its context ends, at once,
// and the build it waited for goes on, uncancelled, for the others.
func TestSnapshotDeadline(t *testing.T) {
	inv, f := newFakeBuilds(t)
	ctx, cancel := context.WithCancel(context.Background())
	starter := call(ctx, inv.SharedSnapshot)
	f.waitStarted(t, 1)
	other := call(context.Background(), inv.SharedSnapshot)
	waitWaiting(t, inv, 2)
	cancel()
	if r := receive(t, starter); !errors.Is(r.err, context.Canceled) || r.snap != nil {
		t.Errorf("cancelled caller got %+v, want context.Canceled", r)
	}

	start := time.Now()
	deadline, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	r := receive(t, call(deadline, inv.Snapshot))
	if took := time.Since(start); !errors.Is(r.err, context.DeadlineExceeded) || took > time.Second {
		t.Errorf("Snapshot with a 100ms deadline: %+v after %v, want DeadlineExceeded after about 100ms", r, took)
	}

	done, cancel3 := context.WithCancel(context.Background())
	cancel3()
	if r := receive(t, call(done, inv.Snapshot)); !errors.Is(r.err, context.Canceled) {
		t.Errorf("Snapshot with a cancelled context: %+v, want context.Canceled", r)
	}

	f.release <- struct{}{}
	if r := receive(t, other); r.err != nil || !r.snap.Taken.Equal(t0.Add(time.Second)) {
		t.Errorf("other caller got %+v, want build 1", r)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ctxErrs) != 1 || f.ctxErrs[0] != nil {
		t.Errorf("build contexts ended with %v, want one build, not cancelled by its starter", f.ctxErrs)
	}
	if f.n != 1 {
		t.Errorf("%d builds, want 1: callers that gave up start none", f.n)
	}
}

// TestSnapshotDeadlineWithHangingRuntime: with a runtime that never
// answers, every build takes the resolver's timeout (2s), and six scrape loops
// keep a build in flight at all times. A fresh snapshot with a 3s deadline
// must answer by its deadline, not after the builds queued before it.
func TestSnapshotDeadlineWithHangingRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("takes seconds")
	}
	hanging := &fakeResolver{step: "hanging", timeout: 2 * time.Second, hang: true}
	inv := New(Config{TrustPIDNamespace: true, Resolvers: []Resolver{hanging}})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := inv.SharedSnapshot(context.Background()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	time.Sleep(500 * time.Millisecond) // a build is in flight

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	snap, err := inv.Snapshot(ctx)
	took := time.Since(start)
	if took > 3500*time.Millisecond {
		t.Errorf("Snapshot with a 3s deadline returned after %v (%v)", took, err)
	}
	switch {
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		t.Errorf("Snapshot: %v, want a snapshot or DeadlineExceeded", err)
	case err == nil && snap.Taken.Before(start):
		t.Errorf("Snapshot returned one taken at %v, before the call at %v", snap.Taken, start)
	}
	t.Logf("Snapshot: %v after %v", err, took)
}

// TestSnapshotBuildPanics: a build that panics fails its waiters with an
// error instead of ending the process, and the next call builds again.
func TestSnapshotBuildPanics(t *testing.T) {
	inv := New(Config{})
	builds := 0
	inv.build = func(context.Context) (*Snapshot, error) {
		builds++
		if builds == 1 {
			panic("boom")
		}
		return &Snapshot{Taken: t0}, nil
	}
	if s, err := inv.SharedSnapshot(context.Background()); err == nil || s != nil {
		t.Errorf("SharedSnapshot after a panic = %v, %v; want an error", s, err)
	}
	if s, err := inv.Snapshot(context.Background()); err != nil || s == nil {
		t.Errorf("Snapshot after a panicked build = %v, %v; want a snapshot", s, err)
	}
}
