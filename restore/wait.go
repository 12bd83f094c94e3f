package restore

import (
	"context"
	"fmt"
	"time"
)

// waitFor polls f until it succeeds, the timeout passes or ctx ends. Its
// error says what it waited for and wraps why the last attempt failed:
// "context deadline exceeded" alone does not tell an operator that etcd's
// certificate does not verify, or that nothing listens. f bounds each
// attempt itself, from ctx: an attempt cut short by this wait's own
// deadline would report only that deadline.
func waitFor(ctx context.Context, what string, timeout time.Duration, f func() error) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-wctx.Done():
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("%s: %w; the last attempt: %w", what, cerr, err)
			}
			return fmt.Errorf("%s after %s: %w", what, timeout, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
