package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeClock is the retrier's clock and sleep for the unit test: sleeping
// moves the clock and records the wait, so no test waits for real.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
	// cancel, when set, is called on the first sleep, as if ctx ended then.
	cancel context.CancelFunc
}

func (c *fakeClock) retrier(attempts int, base, max, budget time.Duration) retrier {
	return retrier{
		attempts: attempts, base: base, max: max, budget: budget,
		now: func() time.Time { return c.now },
		sleep: func(ctx context.Context, d time.Duration) error {
			c.sleeps = append(c.sleeps, d)
			c.now = c.now.Add(d)
			if c.cancel != nil {
				c.cancel()
			}
			return ctx.Err()
		},
		jitter: func(d time.Duration) time.Duration { return d },
	}
}

// failing returns an op that fails with errs in turn, then succeeds, and
// counts its calls.
func failing(calls *int, errs ...error) func(context.Context) error {
	return func(context.Context) error {
		*calls++
		if *calls <= len(errs) {
			return errs[*calls-1]
		}
		return nil
	}
}

func TestRetry(t *testing.T) {
	transient := errors.New("connection refused")
	permanent := mark(ErrPermanent, errors.New("denied"), "AccessDenied")
	notExist := mark(ErrNotExist, nil, "NoSuchKey")
	locked := mark(ErrLocked, nil, "retained")
	callback := errors.New("callback says stop")
	ms := time.Millisecond
	tests := []struct {
		name       string
		attempts   int
		budget     time.Duration
		errs       []error
		wantErr    error // nil: success
		wantCalls  int
		wantSleeps []time.Duration
		wantMsg    string
	}{
		{"first try", 4, time.Minute, nil, nil, 1, nil, ""},
		{"transient then ok", 4, time.Minute, []error{transient, transient}, nil, 3, []time.Duration{100 * ms, 200 * ms}, ""},
		{"permanent stops", 4, time.Minute, []error{permanent}, ErrPermanent, 1, nil, "AccessDenied"},
		{"not exist stops", 4, time.Minute, []error{notExist}, ErrNotExist, 1, nil, "NoSuchKey"},
		{"locked stops", 4, time.Minute, []error{locked}, ErrLocked, 1, nil, "retained"},
		{"context error stops", 4, time.Minute, []error{fmt.Errorf("put: %w", context.Canceled)}, context.Canceled, 1, nil, ""},
		{"noRetry stops unwrapped", 4, time.Minute, []error{noRetry{callback}}, callback, 1, nil, "callback says stop"},
		{
			"attempts run out", 4, time.Minute,
			[]error{transient, transient, transient, transient, transient}, transient, 4,
			[]time.Duration{100 * ms, 200 * ms, 400 * ms}, "connection refused (gave up after 4 attempts)",
		},
		{
			"backoff is capped", 7, time.Minute,
			[]error{transient, transient, transient, transient, transient, transient, transient}, transient, 7,
			[]time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second}, "gave up after 7 attempts",
		},
		{
			// 100+200+400 = 700 ms; the next wait (800 ms) would pass 1 s.
			"budget runs out", 10, time.Second,
			[]error{transient, transient, transient, transient, transient, transient}, transient, 4,
			[]time.Duration{100 * ms, 200 * ms, 400 * ms}, "gave up after 4 attempts",
		},
		{"one attempt", 1, time.Minute, []error{transient}, transient, 1, nil, "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Unix(1e9, 0)}
			r := clock.retrier(tc.attempts, 100*ms, time.Second, tc.budget)
			calls := 0
			err := r.do(t.Context(), failing(&calls, tc.errs...))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("err %v, want success", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("err %v, want one wrapping %v", err, tc.wantErr)
			case tc.wantErr != nil && !strings.Contains(err.Error(), tc.wantMsg):
				t.Fatalf("message %q, want it to contain %q", err, tc.wantMsg)
			}
			if calls != tc.wantCalls {
				t.Errorf("%d calls, want %d", calls, tc.wantCalls)
			}
			if fmt.Sprint(clock.sleeps) != fmt.Sprint(tc.wantSleeps) {
				t.Errorf("waits %v, want %v", clock.sleeps, tc.wantSleeps)
			}
		})
	}
}

func TestRetryCancelledWhileWaiting(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	clock := &fakeClock{now: time.Unix(1e9, 0), cancel: cancel}
	r := clock.retrier(5, time.Millisecond, time.Second, time.Minute)
	calls := 0
	err := r.do(ctx, failing(&calls, errors.New("reset by peer"), errors.New("reset by peer")))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "reset by peer") {
		t.Fatalf("err %v, want context.Canceled naming the last error", err)
	}
	if calls != 1 {
		t.Fatalf("%d calls after the context ended, want 1", calls)
	}
}

func TestRetryRealWaitStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := retrier{attempts: 3, base: time.Hour, max: time.Hour}
	calls := 0
	op := func(context.Context) error {
		calls++
		// Before or during the hour-long wait that follows, the context
		// ends; either way do must return at once.
		go cancel()
		return errors.New("timeout")
	}
	if err := r.do(ctx, op); !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("err %v after %d calls, want context.Canceled after 1", err, calls)
	}
}

func TestBackoffJitter(t *testing.T) {
	r := retrier{base: 100 * time.Millisecond, max: 2 * time.Second}
	for attempt, full := range map[int]time.Duration{1: 100 * time.Millisecond, 3: 400 * time.Millisecond, 9: 2 * time.Second} {
		for range 200 {
			if d := r.backoff(attempt); d < full/2 || d > full {
				t.Fatalf("attempt %d: wait %v outside [%v, %v]", attempt, d, full/2, full)
			}
		}
	}
}
