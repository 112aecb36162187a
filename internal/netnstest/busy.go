package netnstest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// threadedHelper is a program that starts argv[1] idle threads, says "ok"
// and then idles: a JVM or a Go runtime as far as /proc is concerned.
const threadedHelper = `#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
static void *idle(void *arg) { for (;;) pause(); return arg; }
int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 0;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 65536);
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, &attr, idle, 0)) return 1;
	}
	if (write(1, "ok\n", 3) != 3) return 1;
	for (;;) pause();
}
`

// BusyNode is the process table of a busy node: what every pass over
// /proc (an inventory, a last look before a deletion) has to read.
type BusyNode struct {
	// Processes is how many processes to start; the first Threaded of
	// them have Threads idle threads besides their main thread, the
	// others are single-threaded `sleep infinity`.
	Processes, Threaded, Threads int
	// Place, when not nil, says where process i lives: in the cgroup
	// cgroupPath of the hierarchy at [CgroupRoot] ("" for none), which
	// must exist already (a [Holder] made it), and in the network
	// namespace of the process netnsOf (0 for the test's own). The
	// process joins both before it runs its program.
	Place func(i int) (cgroupPath string, netnsOf int)
}

// DefaultBusyNode is the busy node of the benchmarks and the attack
// tests: 2,000 processes with 20,000 threads in all (100 processes of 181
// threads, the rest single-threaded).
func DefaultBusyNode() BusyNode {
	return BusyNode{Processes: 2000, Threaded: 100, Threads: 180}
}

// Start starts the processes and returns once every threaded one has
// started its threads; the threaded helper is compiled with the system's C
// compiler, and t is skipped without one. A cleanup kills and reaps each
// process by PID, before the cleanups registered earlier (a [Holder]'s)
// remove the cgroups.
//
// The processes get no parent-death signal: it would come when the OS
// thread that started one exits, which a test that locks a thread
// ([runtime.LockOSThread]) and lets it end would cause. They die with the
// test binary all the same, as every process of the PID namespace of
// [Main] does.
func (n BusyNode) Start(t testing.TB) {
	t.Helper()
	mustBePrivate(t, "BusyNode.Start")
	bin := threadedBinary(t)
	var root string
	if n.Place != nil {
		root = CgroupRoot(t)
	}
	for i := 0; i < n.Processes; i++ {
		args := []string{"sleep", "infinity"}
		if i < n.Threaded {
			args = []string{bin, strconv.Itoa(n.Threads)}
		}
		cmd := exec.Command(args[0], args[1:]...)
		if n.Place != nil {
			cgroupPath, netnsOf := n.Place(i)
			var script strings.Builder
			if cgroupPath != "" {
				// The shell joins the cgroup, then becomes the program.
				fmt.Fprintf(&script, "echo $$ > %s && ", filepath.Join(root, cgroupPath, "cgroup.procs"))
			}
			script.WriteString("exec ")
			if netnsOf != 0 {
				// nsenter execs the program in the namespace.
				fmt.Fprintf(&script, "nsenter --net=/proc/%d/ns/net ", netnsOf)
			}
			script.WriteString(strings.Join(args, " "))
			cmd = exec.Command("sh", "-c", script.String())
		}
		var out io.ReadCloser
		if i < n.Threaded {
			var err error
			if out, err = cmd.StdoutPipe(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("busy node, process %d of %d: %v", i+1, n.Processes, err)
		}
		t.Cleanup(func() {
			// Our own child, killed and reaped by PID.
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		if out != nil {
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || line != "ok\n" {
				t.Fatalf("threaded helper: %q, %v", line, err)
			}
			// It writes nothing more: no descriptor of this process
			// stays open per helper.
			out.Close()
		}
	}
}

// threadedBinary compiles threadedHelper into t's temporary directory.
func threadedBinary(t testing.TB) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler for the threaded helper")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "threads.c")
	bin := filepath.Join(dir, "threads")
	if err := os.WriteFile(src, []byte(threadedHelper), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-O2", "-pthread", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	return bin
}
