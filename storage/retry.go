package storage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// retrier runs an operation again after transient failures, with capped
// exponential backoff, a bounded number of attempts and a bounded total time,
// so that an unreachable endpoint fails in seconds rather than minutes.
type retrier struct {
	attempts int           // total attempts, at least 1
	base     time.Duration // wait after the first failure
	max      time.Duration // cap on one wait
	budget   time.Duration // no new attempt starts this long after the first failure

	// Hooks for the unit test; nil means the real clock and randomness.
	sleep  func(context.Context, time.Duration) error
	now    func() time.Time
	jitter func(time.Duration) time.Duration
}

// noRetry marks an error that ends the retry loop at once without being a
// storage sentinel, such as an error returned by a caller's List callback.
type noRetry struct{ err error }

func (e noRetry) Error() string { return e.err.Error() }
func (e noRetry) Unwrap() error { return e.err }

// attemptsError says how many attempts were made; the message stays one line.
type attemptsError struct {
	err error
	n   int
}

func (e *attemptsError) Error() string {
	return fmt.Sprintf("%v (gave up after %d attempts)", e.err, e.n)
}
func (e *attemptsError) Unwrap() error { return e.err }

// do runs op until it succeeds, fails with an error that retrying cannot fix,
// runs out of attempts or time, or ctx ends.
func (r retrier) do(ctx context.Context, op func(context.Context) error) error {
	now := r.now
	if now == nil {
		now = time.Now
	}
	// The clock starts at the first failure, so that a long listing that
	// fails late still gets its retries.
	var failedAt time.Time
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if attempt == 1 {
			failedAt = now()
		}
		var stop noRetry
		if errors.As(err, &stop) {
			return stop.err
		}
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			// Whatever the attempt said, the caller asked to stop.
			return fmt.Errorf("%w (last error: %v)", cerr, err)
		}
		if !retryable(ctx, err) {
			return err
		}
		if attempt >= r.attempts {
			return r.gaveUp(err, attempt)
		}
		wait := r.backoff(attempt)
		if r.budget > 0 && now().Add(wait).Sub(failedAt) > r.budget {
			return r.gaveUp(err, attempt)
		}
		if serr := r.wait(ctx, wait); serr != nil {
			return fmt.Errorf("%w (last error: %v)", serr, err)
		}
	}
}

func (r retrier) gaveUp(err error, attempts int) error {
	if attempts < 2 {
		return err
	}
	return &attemptsError{err: err, n: attempts}
}

// backoff is the wait after the given failed attempt (1-based): base doubled
// per attempt, capped at max, then jittered into [d/2, d] so that many
// clients do not retry in step.
func (r retrier) backoff(attempt int) time.Duration {
	d := r.base
	for i := 1; i < attempt && d < r.max; i++ {
		d *= 2
	}
	d = min(d, r.max)
	if r.jitter != nil {
		return r.jitter(d)
	}
	if half := d / 2; half > 0 {
		return half + rand.N(half+1)
	}
	return d
}

func (r retrier) wait(ctx context.Context, d time.Duration) error {
	if r.sleep != nil {
		return r.sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryable reports whether another attempt could succeed.
func retryable(ctx context.Context, err error) bool {
	switch {
	case ctx.Err() != nil,
		errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrPermanent),
		errors.Is(err, ErrNotExist),
		errors.Is(err, ErrExist),
		errors.Is(err, ErrLocked):
		return false
	}
	return true
}
