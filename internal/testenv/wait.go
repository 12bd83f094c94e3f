package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond every 50ms until it holds, and fails the test when
// it still does not after within: every wait in the tests is bounded.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
