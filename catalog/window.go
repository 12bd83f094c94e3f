package catalog

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// Point is a revision and when it was seen: a set's revision with the
// set's creation time, or a segment's revision with the time the agent
// received it (an upper bound on its commit time).
type Point struct {
	Revision int64     `json:"revision"`
	Time     time.Time `json:"time"`
}

// Gap is a range of revisions inside a window that no set and its log
// reach: a restore to any of them is refused (ErrGap).
type Gap struct {
	// First and Last are the revisions missing.
	First int64 `json:"first"`
	Last  int64 `json:"last"`
	// After is when the revision before the gap was seen, Before when
	// the one after it was: what etcd committed between is restorable
	// only as the set after the gap holds it.
	After  time.Time `json:"after"`
	Before time.Time `json:"before"`
	// Why says in one line why the log before the gap stops there.
	Why string `json:"why"`
	// Problem is the segment that is not whole where the log before the
	// gap stops although the target holds more of it; nil when it just
	// ends.
	Problem *Problem `json:"problem,omitempty"`
	// Expected marks a gap after a log that prune removed on purpose
	// (retention.keepLog), or before the oldest segment the target holds
	// after a log that is not broken (the log had not run yet there). It
	// is no loss to alert on.
	Expected bool `json:"expected,omitempty"`
}

// Window is what a restore from one target can reach of a cluster, in
// revisions: every trusted complete set restores at its own revision,
// and with the captured log that continues it (its Chain, as far as the
// chain is whole) at every revision up to the chain's end. The window is
// the union of those ranges:
//
//   - From is the oldest set's revision: nothing older restores.
//   - To is the newest revision any set and its log reach, with the time
//     it was seen: the newest durable revision, whose age is the RPO.
//   - Gaps are the revisions between From and To that no range holds.
//     The chain of a set runs until the next set is stored, so
//     consecutive ranges overlap and leave no gap; a set whose log was
//     removed (retention.keepLog) or never captured restores at its own
//     revision alone, a point, with gaps around it.
//   - Contiguous is where the newest stretch without a gap starts (From
//     when there is no gap): any revision from it to To restores, which
//     is what a promised window (agent.capture.window) is held to.
//
// Times are those of the ends of each range, so a gap's times bound what
// it lost. Revisions order the sets: a cluster whose revisions went back
// (rebuilt from nothing) mixes two histories here as ChainAt does.
type Window struct {
	Cluster string `json:"cluster"`
	Target  string `json:"target"`
	// Sets counts the trusted complete sets the window is made of.
	Sets       int   `json:"sets"`
	From       Point `json:"from"`
	To         Point `json:"to"`
	Contiguous Point `json:"contiguousFrom"`
	// LogFrom is the oldest revision a segment holds, with the time it
	// was seen: since when the log has run on the target; nil when the
	// target holds no segment of the cluster.
	LogFrom *Point `json:"logFrom,omitempty"`
	// Gaps are oldest first.
	Gaps []Gap `json:"gaps"`
	// Broken is why the log that reaches To, or else the newest set's
	// log, stops although the target holds segments beyond: nil when
	// both just end.
	Broken *Problem `json:"broken,omitempty"`
}

// Lost is how many gaps are not Expected: revisions the log should hold
// and does not.
func (w *Window) Lost() int {
	n := 0
	for _, g := range w.Gaps {
		if !g.Expected {
			n++
		}
	}
	return n
}

// Length is how long the contiguous stretch ending at To lasted: the
// time between the revisions Contiguous and To were seen.
func (w *Window) Length() time.Duration { return max(w.To.Time.Sub(w.Contiguous.Time), 0) }

// WindowOptions change how ReadWindow reads.
type WindowOptions struct {
	// Sets is the cluster's listing on the target, as Sets returns it,
	// for a caller that has one; nil lists the target.
	Sets []Set
	// Cache, when set, keeps what each set's chain reaches between
	// calls, so that only sets whose objects changed are read again.
	Cache *ChainCache
}

// ReadWindow reads the window of a cluster on t from its trusted complete
// sets and their chains (ReadChain), or returns an error wrapping
// ErrNoBackup when t holds no trusted set. A set not ours (IsForeign) is
// passed over; a failure to read one is an error.
func ReadWindow(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, o WindowOptions) (*Window, error) {
	if !manifest.ValidCluster(cluster) {
		return nil, fmt.Errorf("cluster name %q is not valid", cluster)
	}
	sets := o.Sets
	if sets == nil {
		var err error
		if sets, err = Sets(ctx, t, cluster); err != nil {
			return nil, err
		}
	}
	var spans []span
	listed := map[string]bool{}
	for _, s := range sets {
		if !s.Complete || s.Cluster != cluster {
			continue
		}
		listed[s.ID] = true
		sp, err := o.Cache.read(ctx, t, trust, s)
		if err != nil {
			return nil, err
		}
		if sp != nil {
			spans = append(spans, *sp)
		}
	}
	o.Cache.keepOnly(t.Name(), cluster, listed)
	if len(spans) == 0 {
		return nil, fmt.Errorf("%w of cluster %s on target %s", ErrNoBackup, cluster, t.Name())
	}
	return windowOf(cluster, t.Name(), spans), nil
}

// span is what one set and its chain reach: revisions rev..end.
type span struct {
	id      string
	rev     int64
	created time.Time
	end     int64
	// endSeen is when end was seen: the set's creation when its chain
	// holds no segment.
	endSeen time.Time
	// logFrom is the chain's first revision, nil when it has no segment.
	logFrom *Point
	broken  *Problem
	// claimed is the key of a head whose signature is stored without it.
	claimed string
	// pruned is set when prune removed the set's log on purpose.
	pruned bool
}

func spanOf(c *Chain) span {
	m := c.Base
	s := span{id: m.ID, rev: m.Etcd.Revision, created: m.Created, end: c.End(), endSeen: m.Created, broken: c.Broken, pruned: c.Pruned}
	if last := c.Last(); last != nil {
		s.endSeen = last.Head.SeenLast
		first := c.Segments[0].Head
		s.logFrom = &Point{Revision: first.First, Time: first.SeenFirst}
	}
	if c.Claimed != nil {
		s.claimed = trimSig(c.Claimed.Key)
	}
	return s
}

// windowOf joins the ranges of spans.
func windowOf(cluster, target string, spans []span) *Window {
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].rev != spans[j].rev {
			return spans[i].rev < spans[j].rev
		}
		return spans[i].id < spans[j].id
	})
	first := spans[0]
	w := &Window{Cluster: cluster, Target: target, Sets: len(spans), From: Point{first.rev, first.created}, Gaps: []Gap{}}
	w.Contiguous = w.From
	// reach is the span whose range ends furthest so far.
	reach := first
	for _, s := range spans {
		if s.logFrom != nil && (w.LogFrom == nil || s.logFrom.Revision < w.LogFrom.Revision) {
			lf := *s.logFrom
			w.LogFrom = &lf
		}
		if s.rev > reach.end+1 {
			w.Gaps = append(w.Gaps, Gap{First: reach.end + 1, Last: s.rev - 1, After: reach.endSeen, Before: s.created,
				Why: reach.stopsBefore(s), Problem: reach.broken, Expected: reach.pruned})
			w.Contiguous = Point{s.rev, s.created}
		}
		if s.end > reach.end || s.end == reach.end && s.endSeen.After(reach.endSeen) {
			reach = s
		}
	}
	w.To = Point{reach.end, reach.endSeen}
	// The newest set's log is the one the capture writes: broken, it is
	// why the window ends where it does even when an older log reaches
	// further.
	w.Broken = cmp.Or(reach.broken, spans[len(spans)-1].broken)
	for i := range w.Gaps {
		g := &w.Gaps[i]
		g.Expected = g.Expected || g.Problem == nil && (w.LogFrom == nil || g.Last < w.LogFrom.Revision)
	}
	return w
}

// stopsBefore says in one line why s's range ends before next's set.
func (s span) stopsBefore(next span) string {
	switch {
	case s.broken != nil:
		return fmt.Sprintf("the log of %s stops at revision %d: %v", s.id, s.end, s.broken)
	case s.claimed != "":
		return fmt.Sprintf("the log of %s stops at revision %d: a writer claimed the next head, %s, and never stored it", s.id, s.end, s.claimed)
	case s.pruned:
		return fmt.Sprintf("the log of set %s (revision %d) was removed by prune (retention.keepLog)", s.id, s.rev)
	case s.logFrom == nil:
		return fmt.Sprintf("set %s (revision %d) has no captured log: never captured, or removed", s.id, s.rev)
	}
	return fmt.Sprintf("the log of %s ends at revision %d, before set %s (revision %d)", s.id, s.end, next.id, next.rev)
}

// ChainCache remembers what the chain of each set reached, by the set's
// objects as listed (keys, sizes, times) and the trusted keys: a set
// whose listing did not change is not read again. What it remembers was
// verified when read; a set whose objects change is read and verified
// anew. The zero value is ready; a nil cache remembers nothing. It holds
// a few values per set, not the chains.
type ChainCache struct {
	mu    sync.Mutex
	spans map[string]cachedSpan
}

type cachedSpan struct {
	listing string
	// span is nil for a set that is not ours.
	span *span
}

// read returns what set s and its chain reach, nil when s is not ours.
func (cc *ChainCache) read(ctx context.Context, t storage.Target, trust *manifest.Trust, s Set) (*span, error) {
	key, listing := cacheKey(t.Name(), s.Cluster, s.ID), listingSum(s, trust)
	if cc != nil {
		cc.mu.Lock()
		c, ok := cc.spans[key]
		cc.mu.Unlock()
		if ok && c.listing == listing {
			return c.span, nil
		}
	}
	var sp *span
	m, sum, err := LoadManifest(ctx, t, trust, s.Cluster, s.ID)
	switch {
	case IsForeign(err):
	case err != nil:
		return nil, err
	default:
		c, err := ReadChain(ctx, t, trust, m, sum)
		if err != nil {
			return nil, err
		}
		v := spanOf(c)
		sp = &v
	}
	if cc != nil {
		cc.mu.Lock()
		if cc.spans == nil {
			cc.spans = map[string]cachedSpan{}
		}
		cc.spans[key] = cachedSpan{listing: listing, span: sp}
		cc.mu.Unlock()
	}
	return sp, nil
}

// keepOnly forgets the sets of a cluster on a target that were not
// listed: pruned ones.
func (cc *ChainCache) keepOnly(target, cluster string, listed map[string]bool) {
	if cc == nil {
		return
	}
	prefix := cacheKey(target, cluster, "")
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for k := range cc.spans {
		if id, ok := strings.CutPrefix(k, prefix); ok && !listed[id] {
			delete(cc.spans, k)
		}
	}
}

// cacheKey joins names that hold no "\x00".
func cacheKey(target, cluster, id string) string { return target + "\x00" + cluster + "\x00" + id }

// listingSum is the sha256 of a set's objects as listed and of the
// trusted keys: any change to either reads the set again.
func listingSum(s Set, trust *manifest.Trust) string {
	objs := append([]storage.ObjectInfo(nil), s.Objects...)
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	h := sha256.New()
	for _, fp := range trust.Fingerprints() {
		fmt.Fprintf(h, "key %s\n", fp)
	}
	for _, o := range objs {
		fmt.Fprintf(h, "%s %d %d\n", o.Key, o.Size, o.Modified.UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))
}
