package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// openFDs counts the file descriptors process pid has open.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// keepAlive opens a connection to addr, makes one HTTP/1.1 request on it
// and leaves it open and idle, as a client that pools connections does.
func keepAlive(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /-/healthy HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		c.Close()
		return nil, errors.New("no keep-alive answer: " + resp.Status)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// TestIdleConnectionsTimedOut is hole 5: a thousand idle keep-alive
// connections neither block a scrape nor stay open past the idle timeout.
func TestIdleConnectionsTimedOut(t *testing.T) {
	const conns = 1000
	idle := 3 * time.Second
	e := startExporter(t, "--web.idle-timeout="+idle.String(), "--state.path="+t.TempDir()+"/state.json")
	pid := e.cmd.Process.Pid
	addr := strings.TrimPrefix(e.url, "http://")
	goroutines := func() float64 {
		v, _ := sample(e.scrape(t), "go_goroutines")
		return v
	}
	e.scrape(t)
	// Wait for the scrape's own connection to go idle and close, so that
	// the baseline is the listener alone.
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	fdsBefore := openFDs(t, pid)

	var (
		mu     sync.Mutex
		open   []net.Conn
		failed []error
		wg     sync.WaitGroup
		work   = make(chan struct{})
	)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				c, err := keepAlive(addr)
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					open = append(open, c)
				}
				mu.Unlock()
			}
		}()
	}
	opened := time.Now()
	for range conns {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	if len(failed) > 0 {
		t.Fatalf("%d of %d keep-alive connections failed, first: %v", len(failed), conns, failed[0])
	}
	setUp := time.Since(opened)
	fdsDuring := openFDs(t, pid)

	// A scrape on a new connection answers promptly meanwhile.
	start := time.Now()
	goroutinesDuring := goroutines()
	scrapeTook := time.Since(start)
	if scrapeTook > 2*time.Second {
		t.Errorf("scrape with %d idle connections open took %v", conns, scrapeTook)
	}
	if fdsDuring < fdsBefore+conns*9/10 {
		t.Fatalf("exporter has %d fds with %d connections open (%d before): the connections are not being held, the test proves nothing", fdsDuring, conns, fdsBefore)
	}
	if time.Since(opened) > idle {
		t.Fatalf("setting up took %v, longer than the idle timeout %v: use a longer one", time.Since(opened), idle)
	}

	// After the idle timeout the exporter has closed them all.
	var fdsAfter int
	deadline := opened.Add(setUp + idle + 3*time.Second)
	for {
		http.DefaultClient.CloseIdleConnections()
		fdsAfter = openFDs(t, pid)
		if fdsAfter <= fdsBefore+5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	closedAfter := time.Since(opened)
	if fdsAfter > fdsBefore+5 {
		t.Errorf("%v after opening %d idle connections (idle timeout %v), the exporter still has %d fds open, %d before", closedAfter, conns, idle, fdsAfter, fdsBefore)
	}
	// The clients see them closed: a read ends at once with EOF.
	closed := 0
	readBy := time.Now().Add(500 * time.Millisecond)
	for _, c := range open {
		c.SetReadDeadline(readBy)
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			closed++
		}
	}
	if closed != len(open) {
		t.Errorf("%d of %d idle connections closed by the exporter, want all", closed, len(open))
	}
	goroutinesAfter := goroutines()
	t.Logf("%d idle keep-alive connections (opened in %v): exporter fds %d before, %d during, %d after %v; goroutines %.0f during, %.0f after; scrape meanwhile %v",
		conns, setUp.Round(time.Millisecond), fdsBefore, fdsDuring, fdsAfter, closedAfter.Round(100*time.Millisecond),
		goroutinesDuring, goroutinesAfter, scrapeTook.Round(time.Millisecond))
}

// TestServerTimeoutFlags: the timeouts must be positive, and the write
// timeout must leave a remediation request time to answer.
func TestServerTimeoutFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--web.idle-timeout=0s"}, "--web.idle-timeout"},
		{[]string{"--web.read-timeout=-1s"}, "--web.read-timeout"},
		{[]string{"--web.write-timeout=5s", "--remediation.mode=dry-run", "--remediation.instance=node1"}, "--web.write-timeout"},
	} {
		if code, out := exitOf(t, tt.args...); code != 2 || !strings.Contains(out, tt.want) {
			t.Errorf("veth_exporter %s: exit %d, want 2 and a message naming %s\n%s", strings.Join(tt.args, " "), code, tt.want, out)
		}
	}
}
