// Command kdr backs up and restores the control plane of a self-managed
// Kubernetes cluster: etcd and the state that lives outside it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	// The time zones of schedules (CRON_TZ=) and of printed times travel
	// in the binary: the image holds no zoneinfo, and neither may the
	// offline host a recovery kit is used on.
	_ "time/tzdata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			if exit.msg != "" {
				fmt.Fprintln(os.Stderr, "kdr:", exit.msg)
			}
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "kdr:", oneLine(err))
		os.Exit(1)
	}
}

// defaultMemoryLimit is the Go heap's soft limit unless GOMEMLIMIT says
// otherwise: a backup's live memory is a few buffers, and the limit keeps
// garbage from the snapshot stream from growing the heap past them.
const defaultMemoryLimit = 96 << 20

func init() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}
