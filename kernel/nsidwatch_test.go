package kernel

import (
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// settleWait bounds how long a test waits for the kernel to free the
// namespaces of earlier tests: seconds on a loaded machine.
const settleWait = 30 * time.Second

// TestNSIDWatch: the watch says nothing for an nsid given, and sees one
// freed when a namespace that had one dies.
func TestNSIDWatch(t *testing.T) {
	netnstest.Require(t)
	w, err := WatchNSIDs()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	netnstest.NamedNetns(t, "watched")
	netnstest.Veth(t, "vwatched", "watched", "")
	// Namespaces of earlier tests may still be freed meanwhile: once
	// what the watch saw is read, it says nothing until the next one.
	deadline := time.Now().Add(settleWait)
	for w.Freed() {
		if time.Now().After(deadline) {
			t.Fatalf("nsids still being freed after %v", settleWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
	netnstest.IP(t, "netns", "del", "watched")
	deadline = time.Now().Add(settleWait)
	for !w.Freed() {
		if time.Now().After(deadline) {
			t.Fatalf("no nsid freed %v after the namespace was deleted", settleWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if deletesNSID([]byte{1, 2, 3}) != true {
		t.Error("a truncated message: not counted as freed")
	}
}
