package restore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestWaitForSaysWhy: a wait that gives up says what it waited for and
// wraps the last attempt's error; one whose context ends wraps that too.
func TestWaitForSaysWhy(t *testing.T) {
	cause := errors.New("x509: certificate signed by unknown authority")
	err := waitFor(context.Background(), "etcd not healthy", 10*time.Millisecond, func() error { return cause })
	if !errors.Is(err, cause) || !strings.HasPrefix(err.Error(), "etcd not healthy after 10ms: x509") {
		t.Errorf("timed out: %v, want it to wrap %v", err, cause)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = waitFor(ctx, "etcd not healthy", time.Minute, func() error { return cause })
	if !errors.Is(err, cause) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want it to wrap %v and the cancellation", err, cause)
	}
	if err := waitFor(context.Background(), "etcd not healthy", time.Minute, func() error { return nil }); err != nil {
		t.Errorf("a first attempt that succeeds: %v", err)
	}
}
