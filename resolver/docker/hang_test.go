package docker

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// hangingDocker listens on a unix socket, accepts every connection and
// never answers, as a wedged dockerd does.
func hangingDocker(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "unix://" + path
}

// TestObserveHangingDaemon: a daemon that accepts connections and never
// answers is down for the snapshot once the resolver's deadline ends, not
// a snapshot that waits for it.
func TestObserveHangingDaemon(t *testing.T) {
	d, err := New(hangingDocker(t), time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout())
	defer cancel()
	start := time.Now()
	o, err := d.Observe(ctx, inventory.DefaultPaths)
	took := time.Since(start)
	if err == nil {
		t.Errorf("Observe of a hanging daemon: no error, want the deadline's")
	}
	if v, ok := o.View().(*View); !ok || v.Up {
		t.Errorf("Observe of a hanging daemon: view %+v, want one that is down", o.View())
	}
	if took > 5*time.Second {
		t.Errorf("Observe of a hanging daemon took %v, want about its 1s deadline", took)
	}
}
