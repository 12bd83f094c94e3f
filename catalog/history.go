package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"filippo.io/age"

	"github.com/kdr-io/kdr/internal/kubevalue"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// ErrOutsideLog means a moment is before the captured log's first seen
// revision, after its last, or in the future: no revision of the log is
// known to be the state at that moment.
var ErrOutsideLog = errors.New("outside the captured log")

// eachSegment reads the captured log of the cluster on t as a history:
// the chains of every trusted set, oldest set first, as one sequence of
// segments. It calls fn with each segment that reaches past the ones
// before it, so in the order of their last revisions. Chains overlap
// where a set was taken (the old chain runs on until the new set is
// stored): a segment whose revisions all came before is passed over, and
// the reader of one that overlaps only partly skips what it read already;
// the older chain's seen times, taken as the revisions happened, are the
// ones kept. Only one chain's heads are held at a time. Sets that are not
// ours are passed over, as every reader does; a set that cannot be read
// is an error.
func eachSegment(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, fn func(Segment) error) error {
	ids, _, err := completeIDs(ctx, t, cluster)
	if err != nil {
		return err
	}
	var done int64
	for _, id := range ids {
		m, sum, err := LoadManifest(ctx, t, trust, cluster, id)
		if IsForeign(err) {
			continue
		}
		if err != nil {
			return err
		}
		c, err := ReadChain(ctx, t, trust, m, sum)
		if err != nil {
			return err
		}
		for _, s := range c.Segments {
			if s.Head.Last <= done {
				continue
			}
			if err := fn(s); err != nil {
				return err
			}
			done = s.Head.Last
		}
	}
	return ctx.Err()
}

// PointInTime is the revision a restore to a moment brings etcd to: the
// last revision the writer of the captured log saw at or before the
// moment. Seen times are when the writer received a revision, an upper
// bound of its commit time, so the moment is known to lie between Seen
// and NextSeen: the state at At is Revision's, unless Revision+1, seen
// after At, was committed just before it.
type PointInTime struct {
	At       time.Time `json:"at"`
	Revision int64     `json:"revision"`
	Seen     time.Time `json:"seen"`
	NextSeen time.Time `json:"nextSeen"`
}

// String says which revision a moment is and how precisely, in one line.
func (p *PointInTime) String() string {
	return fmt.Sprintf("revision %d, the last seen at or before %s: the moment lies between revision %d, seen %s, and revision %d, seen %s",
		p.Revision, stamp(p.At), p.Revision, stamp(p.Seen), p.Revision+1, stamp(p.NextSeen))
}

// SeenLayout prints a seen time: RFC 3339 in UTC to the microsecond, so
// that a time printed is one --at and --from take back as it is.
const SeenLayout = "2006-01-02T15:04:05.000000Z07:00"

func stamp(t time.Time) string { return t.UTC().Format(SeenLayout) }

// RevisionAt finds the last revision the captured log of cluster on t saw
// at or before at. The segments' heads narrow the search to one segment;
// its body, decrypted with ids, gives the revision and the seen time of
// the one after it. A moment before the log's first revision, after its
// last or in the future is refused with an error wrapping ErrOutsideLog,
// and one between two chains that do not meet with one wrapping ErrGap;
// each names where the log starts and ends.
func RevisionAt(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, at time.Time, ids []age.Identity) (*PointInTime, error) {
	// cand is the last segment, in log order, seen starting at or before
	// at; after is the segment that follows it.
	var cand, after, first, last *Segment
	err := eachSegment(ctx, t, trust, cluster, func(s Segment) error {
		if first == nil {
			first = &s
		}
		last = &s
		switch {
		case after != nil:
		case !s.Head.SeenFirst.After(at):
			cand = &s
		default:
			after = &s
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if last == nil {
		return nil, fmt.Errorf("%w: no trusted set of cluster %s on target %s has a captured log", ErrOutsideLog, cluster, t.Name())
	}
	window := fmt.Sprintf("the log on target %s holds revisions %d..%d, seen from %s to %s",
		t.Name(), first.Head.First, last.Head.Last, stamp(first.Head.SeenFirst), stamp(last.Head.SeenLast))
	switch {
	case at.After(time.Now()):
		return nil, fmt.Errorf("%w: %s is in the future; the last revision captured, %d, was seen %s",
			ErrOutsideLog, stamp(at), last.Head.Last, stamp(last.Head.SeenLast))
	case cand == nil:
		return nil, fmt.Errorf("%w: %s is before the first revision it saw; %s", ErrOutsideLog, stamp(at), window)
	case at.Before(cand.Head.SeenLast):
		// Inside cand: its body says which revision.
		return pointIn(ctx, t, *cand, at, ids)
	case after == nil:
		return nil, fmt.Errorf("%w: %s is at or after the last revision it saw, %d, seen %s (later ones are not stored yet, or were lost); %s",
			ErrOutsideLog, stamp(at), last.Head.Last, stamp(last.Head.SeenLast), window)
	}
	p := &PointInTime{At: at, Revision: cand.Head.Last, Seen: cand.Head.SeenLast, NextSeen: after.Head.SeenFirst}
	switch next := cand.Head.Last + 1; {
	case after.Head.First > next:
		return nil, fmt.Errorf("%w: %s is in a gap of the captured log: revisions %d..%d are missing between revision %d, seen %s, and revision %d, seen %s; %s",
			ErrGap, stamp(at), next, after.Head.First-1, cand.Head.Last, stamp(cand.Head.SeenLast), after.Head.First, stamp(after.Head.SeenFirst), window)
	case after.Head.First < next:
		// The next chain holds the next revision mid-segment, as seen
		// by the writer of that chain.
		var err error
		if p.NextSeen, err = seenOf(ctx, t, *after, next, ids); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// pointIn reads s, which holds at, for the last revision seen at or
// before at and when the one after it was seen.
func pointIn(ctx context.Context, t storage.Target, s Segment, at time.Time, ids []age.Identity) (*PointInTime, error) {
	p := &PointInTime{At: at}
	_, err := ReadSegment(ctx, t, s, ids, func(r *manifest.LogRevision) error {
		switch {
		case !r.Seen.After(at):
			p.Revision, p.Seen, p.NextSeen = r.Revision, r.Seen, time.Time{}
		case p.Revision > 0 && p.NextSeen.IsZero():
			p.NextSeen = r.Seen
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if p.Revision == 0 || p.NextSeen.IsZero() {
		// The head's seen times, which a trusted key signed, bracket at.
		return nil, fmt.Errorf("segment %d..%d on target %s: %w: its revisions' seen times do not match its head's", s.Head.First, s.Head.Last, t.Name(), ErrDamaged)
	}
	return p, nil
}

// seenOf reads s for when revision rev was seen.
func seenOf(ctx context.Context, t storage.Target, s Segment, rev int64, ids []age.Identity) (time.Time, error) {
	var seen time.Time
	_, err := ReadSegment(ctx, t, s, ids, func(r *manifest.LogRevision) error {
		if r.Revision == rev {
			seen = r.Seen
		}
		return nil
	})
	return seen, err
}

// HistoryQuery says which changes History lists.
type HistoryQuery struct {
	// Key is the key whose changes are listed; with Prefix, every key
	// that starts with it.
	Key    string
	Prefix bool
	// From and To bound the scan; a zero Bound leaves that side open.
	From, To Bound
}

// Bound is one end of a history scan: a revision, or a seen time that
// each revision is held to by when the writer saw it.
type Bound struct {
	Revision int64
	Time     time.Time
}

// after reports whether a revision seen at seen comes after b, read as
// an upper bound.
func (b Bound) after(rev int64, seen time.Time) bool {
	return (b.Revision > 0 && rev > b.Revision) || (!b.Time.IsZero() && seen.After(b.Time))
}

// before reports whether a revision seen at seen comes before b, read as
// a lower bound.
func (b Bound) before(rev int64, seen time.Time) bool {
	return rev < b.Revision || (!b.Time.IsZero() && seen.Before(b.Time))
}

// Change kinds.
const (
	ChangeCreated = "created"
	ChangeUpdated = "updated"
	// ChangeDeleting is an update of a Kubernetes object marked for
	// deletion (metadata.deletionTimestamp set): its finalizers run, and
	// a namespace's empties it, before its key is deleted.
	ChangeDeleting = "deleting"
	ChangeDeleted  = "deleted"
)

// Change is one change of one key in the captured log. It holds the
// value's size, not the value: a history is read by people, and values
// may be secrets.
type Change struct {
	Revision int64     `json:"revision"`
	Seen     time.Time `json:"seen"`
	Key      string    `json:"key"`
	// What is ChangeCreated (a put of a key that did not exist),
	// ChangeUpdated, ChangeDeleting or ChangeDeleted.
	What string `json:"what"`
	// Version is the key's version after the change; 0 once deleted.
	Version int64 `json:"version"`
	// CreateRevision is the revision that created the key (0 once
	// deleted), Lease the lease the key is attached to.
	CreateRevision int64 `json:"createRevision,omitempty"`
	Lease          int64 `json:"lease,omitempty"`
	ValueSize      int   `json:"valueSize"`
}

// RevisionRange is the revisions First..Last.
type RevisionRange struct {
	First int64 `json:"first"`
	Last  int64 `json:"last"`
}

// HistoryScan is what a history read: the revisions it scanned, when
// they were seen, and the revisions inside them that the log does not
// hold, whose changes it could not list.
type HistoryScan struct {
	Scanned             RevisionRange
	SeenFirst, SeenLast time.Time
	Gaps                []RevisionRange
	// Changes is how many changes were listed.
	Changes int
	// Undo, when set, is how to undo the last delete listed.
	Undo *Undo
}

// Undo is the revision to restore to so that a deleted key comes back as
// it was.
type Undo struct {
	Key string `json:"key"`
	// Deleted is the revision that deleted it. Marked, when not 0, is the
	// first of the updates that marked it for deletion right before
	// (ChangeDeleting): what it held (a namespace's objects) may have gone
	// since, so the undo goes back before the mark.
	Deleted int64 `json:"deleted"`
	Marked  int64 `json:"marked,omitempty"`
	// Revision is the revision to restore to: the one before Marked, or
	// before Deleted.
	Revision int64 `json:"revision"`
}

// History lists, in revision order, every change the captured log of
// cluster on t holds of q's key or prefix, within q's bounds. It reads
// every trusted chain, oldest first, decrypting one segment at a time with
// ids, and reports each revision once. A segment that is not whole stops
// the scan with its error: a history that silently skips revisions would
// mislead.
func History(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, ids []age.Identity, q HistoryQuery, fn func(Change) error) (*HistoryScan, error) {
	if q.Key == "" {
		return nil, errors.New("history: no key or prefix")
	}
	key := []byte(q.Key)
	matches := func(k []byte) bool {
		if q.Prefix {
			return bytes.HasPrefix(k, key)
		}
		return bytes.Equal(k, key)
	}
	scan := &HistoryScan{}
	var done int64 // the last revision read
	// marked holds, per key listed, the first revision of the updates that
	// marked it for deletion, until it is deleted or unmarked: a map of
	// keys, never of the log.
	marked := map[string]int64{}
	err := eachSegment(ctx, t, trust, cluster, func(s Segment) error {
		h := s.Head
		if q.From.before(h.Last, h.SeenLast) || q.To.after(h.First, h.SeenFirst) {
			return nil
		}
		_, err := ReadSegment(ctx, t, s, ids, func(r *manifest.LogRevision) error {
			if r.Revision <= done || q.From.before(r.Revision, r.Seen) || q.To.after(r.Revision, r.Seen) {
				return nil
			}
			switch {
			case scan.Scanned.First == 0:
				scan.Scanned.First, scan.SeenFirst = r.Revision, r.Seen
			case r.Revision > done+1:
				scan.Gaps = append(scan.Gaps, RevisionRange{done + 1, r.Revision - 1})
			}
			done = r.Revision
			scan.Scanned.Last, scan.SeenLast = r.Revision, r.Seen
			for _, ev := range r.Events {
				if !matches(ev.Key) {
					continue
				}
				c := changeOf(r, ev)
				scan.Changes++
				switch c.What {
				case ChangeDeleting:
					if _, ok := marked[c.Key]; !ok {
						marked[c.Key] = c.Revision
					}
				case ChangeDeleted:
					u := &Undo{Key: c.Key, Deleted: c.Revision, Marked: marked[c.Key], Revision: c.Revision - 1}
					if u.Marked > 0 {
						u.Revision = u.Marked - 1
					}
					scan.Undo = u
					delete(marked, c.Key)
				default:
					delete(marked, c.Key)
				}
				if err := fn(c); err != nil {
					return err
				}
			}
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return scan, nil
}

// changeOf describes one event of a revision.
func changeOf(r *manifest.LogRevision, ev manifest.LogEvent) Change {
	c := Change{Revision: r.Revision, Seen: r.Seen, Key: string(ev.Key)}
	switch {
	case ev.Delete:
		c.What = ChangeDeleted
	case ev.CreateRevision == r.Revision:
		c.What = ChangeCreated
	case kubevalue.MarkedForDeletion(ev.Value):
		c.What = ChangeDeleting
	default:
		c.What = ChangeUpdated
	}
	if !ev.Delete {
		c.Version, c.CreateRevision, c.Lease, c.ValueSize = ev.Version, ev.CreateRevision, ev.Lease, len(ev.Value)
	}
	return c
}
