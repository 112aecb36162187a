package engine

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// endless is a reader that never ends: an engine gone mad.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// TestReadEventsBounded: events are passed on one by one, however many;
// one event larger than the bound ends the stream with an error instead
// of growing without end.
func TestReadEventsBounded(t *testing.T) {
	var stream strings.Builder
	const n = 3000 // well over one bound's worth of events in all
	for range n {
		stream.WriteString(`{"Type":"container","Action":"start","Actor":{"ID":"` + strings.Repeat("a", 400) + `"}}` + "\n")
	}
	got := 0
	err := ReadEvents(strings.NewReader(stream.String()), func(ev Event) {
		if ev.Type == "container" && ev.Action == "start" {
			got++
		}
	})
	if got != n || err == nil || errors.Is(err, errTooLarge) {
		t.Errorf("ReadEvents of %d events: %d passed on, err %v; want all, then the stream's end", n, got, err)
	}
	if err := ReadEvents(io.MultiReader(strings.NewReader(`{"Type":"container"}`+"\n"+`{"Type":"`), endless{}), func(Event) {}); !errors.Is(err, errTooLarge) {
		t.Errorf("an endless event: err %v, want %v", err, errTooLarge)
	}
}
