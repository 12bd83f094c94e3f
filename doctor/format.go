package doctor

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// verdict makes a result; reasons are one line, so a format never holds
// a newline.
func verdict(g Grade, evidence map[string]any, format string, args ...any) Result {
	return Result{Grade: g, Reason: fmt.Sprintf(format, args...), Evidence: evidence}
}

// plural counts things in words: "1 member", "3 members".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// size writes a byte count for a person.
func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// span writes a duration for a person: "45s", "30m", "1h30m", "12 days".
func span(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	if r := d.Round(time.Second); r < time.Minute {
		return r.String()
	}
	// A rounded minute prints as "1h30m0s".
	s := strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// seconds turns a count of seconds from a report into a duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func round1(f float64) float64 { return math.Round(f*10) / 10 }
