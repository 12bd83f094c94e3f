package doctor

import (
	"fmt"
	"strings"
)

// rpoFail is how many times agent.capture.rpo the newest durable revision
// may be old before the log fails rather than warns: past it the capture
// is not late but stopped.
const rpoFail = 10

// gradeLogRPO holds the newest revision the captured log holds on each
// target, by when it was seen, to agent.capture.rpo. A target that holds
// no segment while the capture is on fails: no agent writes the log.
func gradeLogRPO(f *facts) Result {
	if !f.capture.On() {
		return verdict(Pass, map[string]any{"capture": false}, "agent.capture is off: no captured log is promised")
	}
	rpo := f.capture.RPO
	perTarget := map[string]any{}
	ev := map[string]any{"rpoSeconds": rpo.Seconds(), "targets": perTarget}
	if len(f.stores) == 0 {
		return verdict(Fail, ev, "no targets in the config")
	}
	worst := Pass
	var parts []string
	for _, s := range f.stores {
		g, w := Fail, s.window
		var part string
		switch {
		case w == nil:
			part = noWindow(s)
			perTarget[s.name] = map[string]any{"error": part}
		case w.LogFrom == nil:
			part = fmt.Sprintf("target %s holds no captured log: is kdr agent running, with agent.capture on?", s.name)
			perTarget[s.name] = map[string]any{"error": part}
		default:
			age := max(f.now.Sub(w.To.Time), 0)
			switch {
			case age <= rpo:
				g = Pass
			case age <= rpoFail*rpo:
				g = Warn
			}
			part = fmt.Sprintf("the log on %s reaches revision %d, seen %s ago", s.name, w.To.Revision, span(age))
			if w.Broken != nil {
				part += fmt.Sprintf(", and stops there: %v", w.Broken)
			}
			perTarget[s.name] = map[string]any{"revision": w.To.Revision, "seen": w.To.Time, "ageSeconds": age.Seconds()}
		}
		worst = max(worst, g)
		parts = append(parts, part)
	}
	return verdict(worst, ev, "%s (agent.capture.rpo %s: up to %s old passes, up to %s warns)",
		strings.Join(parts, "; "), span(rpo), span(rpo), span(rpoFail*rpo))
}

// gradeLogWindow holds the contiguous window on each target, the newest
// stretch of revisions that all restore, to agent.capture.window when it
// promises one; a shorter one warns, saying how long it is and what cut
// it short.
func gradeLogWindow(f *facts) Result {
	promise := f.capture.Window
	perTarget := map[string]any{}
	ev := map[string]any{"windowSeconds": promise.Seconds(), "targets": perTarget}
	worst := Pass
	var parts []string
	for _, s := range f.stores {
		w := s.window
		if w == nil {
			part := noWindow(s)
			perTarget[s.name] = map[string]any{"error": part}
			if promise > 0 {
				worst = Warn
			}
			parts = append(parts, part)
			continue
		}
		length := w.Length()
		part := fmt.Sprintf("on %s every revision from %d to %d restores (%s)", s.name, w.Contiguous.Revision, w.To.Revision, span(length))
		if n := len(w.Gaps); n > 0 {
			part += fmt.Sprintf(", after a gap at %d..%d: %s", w.Gaps[n-1].First, w.Gaps[n-1].Last, w.Gaps[n-1].Why)
		}
		if promise > 0 && length < promise {
			worst = Warn
		}
		perTarget[s.name] = map[string]any{"contiguousFrom": w.Contiguous.Revision, "to": w.To.Revision,
			"lengthSeconds": length.Seconds(), "gaps": w.Lost()}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		parts = append(parts, "no targets in the config")
		if promise > 0 {
			worst = Warn
		}
	}
	if promise == 0 {
		return verdict(worst, ev, "no window promised (agent.capture.window): %s", strings.Join(parts, "; "))
	}
	return verdict(worst, ev, "%s (agent.capture.window promises %s)", strings.Join(parts, "; "), span(promise))
}

// noWindow says why a target has no window.
func noWindow(s storeFacts) string {
	switch {
	case s.err != nil:
		return fmt.Sprintf("target %s cannot be listed: %v", s.name, s.err)
	case s.windowErr != nil:
		return fmt.Sprintf("the log on %s cannot be read: %v", s.name, s.windowErr)
	}
	return fmt.Sprintf("target %s holds no complete backup", s.name)
}
