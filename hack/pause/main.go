// Command pause is the sandbox process of the test node's pods
// (internal/testenv/node.go): it holds the pod's namespaces open, reaps
// the zombies a shared PID namespace hands it, and exits on SIGINT or
// SIGTERM. It is built static into ./bin and put in an image there, so the
// node needs no registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
