// Command pause is the sandbox image of the critest harness: the process
// that holds a pod's namespaces, as registry.k8s.io/pause does. It blocks
// until SIGINT or SIGTERM and reaps every child that exits meanwhile, which
// is PID 1's duty in the pod's PID namespace.
//
// It uses the standard library only, so that the harness builds it with
// CGO_ENABLED=0 into a static binary without the module proxy.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	// As PID 1 of a PID namespace the process would ignore SIGTERM
	// without a handler of its own.
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
