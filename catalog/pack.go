package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// PackRef is where a packed segment is: its pack's index and object, and
// the body's place in the object. It keeps the head's stored bytes and
// signature, as the index holds them.
type PackRef struct {
	Index  string
	Key    string
	Offset int64
	Size   int64
	head   []byte
	sig    []byte
}

// logListing is what a chain's directory holds, by first revision.
type logListing struct {
	heads  map[int64]time.Time
	claims map[int64]storage.ObjectInfo
	// loose are the first revisions of every head, signature and body.
	loose map[int64][]string
	packs map[int64]packListed
}

type packListed struct {
	first, last int64
	key         string
	modified    time.Time
}

func listLog(ctx context.Context, t storage.Target, base *manifest.Manifest) (*logListing, error) {
	prefix := manifest.LogPrefix(base.Cluster, base.ID)
	l := &logListing{heads: map[int64]time.Time{}, claims: map[int64]storage.ObjectInfo{}, loose: map[int64][]string{}, packs: map[int64]packListed{}}
	sigs := map[int64]storage.ObjectInfo{}
	err := t.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if first, last, ok := manifest.ParsePackIndexKey(prefix, oi.Key); ok {
			// Two packs from one revision: the longer reaches further.
			if p, seen := l.packs[first]; !seen || last > p.last {
				l.packs[first] = packListed{first: first, last: last, key: oi.Key, modified: oi.Modified}
			}
			return nil
		}
		if first, ok := manifest.ParseHeadKey(prefix, oi.Key); ok {
			l.heads[first] = oi.Modified
			l.loose[first] = append(l.loose[first], oi.Key)
		} else if first, ok := manifest.ParseHeadKey(prefix, trimSig(oi.Key)); ok {
			sigs[first] = oi
			l.loose[first] = append(l.loose[first], oi.Key)
		} else if first, ok := manifest.ParseBodyKey(prefix, oi.Key); ok {
			l.loose[first] = append(l.loose[first], oi.Key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s on target %s: %w", prefix, t.Name(), err)
	}
	for first, oi := range sigs {
		if _, ok := l.heads[first]; !ok {
			l.claims[first] = oi
		}
	}
	return l, nil
}

// firstAfter is the first revision after rev where a loose head or a
// pack starts; 0 when none does.
func (l *logListing) firstAfter(rev int64) int64 {
	var after int64
	for first := range l.heads {
		if first > rev && (after == 0 || first < after) {
			after = first
		}
	}
	for first := range l.packs {
		if first > rev && (after == 0 || first < after) {
			after = first
		}
	}
	return after
}

// overlaps sorts out the loose objects the chain did not read: inside a
// pack it reads, they are leftovers; a head starting inside a loose
// segment of the chain overlaps it, and the chain stops before it.
func (c *Chain) overlaps(l *logListing) {
	used := map[int64]bool{}
	for _, s := range c.Segments {
		if s.Pack == nil {
			used[s.Head.First] = true
		}
	}
	firsts := make([]int64, 0, len(l.loose))
	for first := range l.loose {
		firsts = append(firsts, first)
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	for _, first := range firsts {
		switch {
		case used[first]:
		case c.inPack(first):
			c.Leftovers = append(c.Leftovers, l.loose[first]...)
		case first <= c.End() && l.heads[first] != (time.Time{}):
			key := manifest.SegmentHeadKey(c.Base.Cluster, c.Base.ID, first)
			c.Broken = &Problem{Target: c.Target, Object: key, Reason: fmt.Sprintf("segment starting at %d: overlaps the segment before", first), Err: ErrGap}
			i := sort.Search(len(c.Segments), func(i int) bool { return c.Segments[i].Head.First > first })
			c.Segments = c.Segments[:i]
			return
		}
	}
}

func (c *Chain) inPack(rev int64) bool {
	for _, p := range c.packed {
		if rev >= p[0] && rev <= p[1] {
			return true
		}
	}
	return false
}

// readPack reads a pack's index and the segments it holds, each head
// verified against trust and linked to the one before, starting after
// prev. A pack that is not whole is an error wrapping manifest.ErrInvalid,
// ErrChain or ErrForeign: the caller falls back to loose objects.
func readPack(ctx context.Context, t storage.Target, trust *manifest.Trust, base *manifest.Manifest, baseSum string, p packListed, prev *Segment) ([]Segment, error) {
	data, err := manifest.ReadBounded(ctx, t, p.key, manifest.MaxPackIndex)
	if err != nil {
		return nil, err
	}
	idx, err := manifest.ParsePackIndex(data)
	if err != nil {
		return nil, err
	}
	switch {
	case idx.Cluster != base.Cluster || idx.Set != base.ID:
		return nil, fmt.Errorf("%w: the pack continues %s/%s", ErrForeign, idx.Cluster, idx.Set)
	case idx.First != p.first || idx.Last != p.last:
		return nil, fmt.Errorf("%w: the index of pack %d..%d is stored as pack %d..%d", manifest.ErrInvalid, idx.First, idx.Last, p.first, p.last)
	}
	packKey := manifest.PackKey(base.Cluster, base.ID, p.first, p.last)
	next := p.first
	segs := make([]Segment, 0, len(idx.Segments))
	for _, e := range idx.Segments {
		if _, err := trust.Verify(e.Head, e.Signature, manifest.NamespaceSegment); err != nil {
			return nil, fmt.Errorf("%w: pack %d..%d: segment starting at %d: %w", ErrForeign, p.first, p.last, next, err)
		}
		h, err := manifest.ParseSegmentHead(e.Head)
		if err != nil {
			return nil, fmt.Errorf("pack %d..%d: %w", p.first, p.last, err)
		}
		if h.First != next || h.Body.Size != e.Size {
			return nil, fmt.Errorf("%w: pack %d..%d holds segment %d..%d of %d bytes where %d was due", manifest.ErrInvalid, p.first, p.last, h.First, h.Last, e.Size, next)
		}
		if err := linkSegment(h, base, baseSum, prev); err != nil {
			return nil, fmt.Errorf("pack %d..%d: %w", p.first, p.last, err)
		}
		segs = append(segs, Segment{Key: manifest.SegmentHeadKey(base.Cluster, base.ID, h.First), Head: h, Sum: manifest.Sum(e.Head), Stored: p.modified,
			Pack: &PackRef{Index: p.key, Key: packKey, Offset: e.Offset, Size: e.Size, head: e.Head, sig: e.Signature}})
		prev = &segs[len(segs)-1]
		next = h.Last + 1
	}
	if next != p.last+1 {
		return nil, fmt.Errorf("%w: pack %d..%d ends at %d", manifest.ErrInvalid, p.first, p.last, next-1)
	}
	return segs, nil
}

// SegmentStore reads the objects of segments on one target, loose or
// packed. A segment read as loose that a pack has taken since (a restore
// planned before the pack ran) is found in the pack, by its head's sum.
// It keeps the indexes it reads; safe for one goroutine at a time.
type SegmentStore struct {
	t     storage.Target
	mu    sync.Mutex
	packs map[string]map[string]*PackRef // by chain prefix, then head sum: the packed segments read
}

// NewSegmentStore reads segments on t.
func NewSegmentStore(t storage.Target) *SegmentStore {
	return &SegmentStore{t: t, packs: map[string]map[string]*PackRef{}}
}

// Head returns a segment's head and signature as stored, held to the
// head's sum.
func (st *SegmentStore) Head(ctx context.Context, s Segment) (head, sig []byte, err error) {
	if s.Pack == nil {
		head, err = manifest.ReadBounded(ctx, st.t, s.Key, 64<<10)
		if err == nil {
			sig, err = manifest.ReadBounded(ctx, st.t, manifest.SignatureKey(s.Key), 16<<10)
		}
		if !errors.Is(err, storage.ErrNotExist) {
			return head, sig, st.heldToSum(s, head, err)
		}
		if s, err = st.packed(ctx, s, err); err != nil {
			return nil, nil, err
		}
	}
	return s.Pack.head, s.Pack.sig, st.heldToSum(s, s.Pack.head, nil)
}

func (st *SegmentStore) heldToSum(s Segment, head []byte, err error) error {
	if err == nil && manifest.Sum(head) != s.Sum {
		err = fmt.Errorf("%w: not the head a trusted key signed (sha256 %s)", ErrDamaged, s.Sum)
	}
	if err != nil {
		return fmt.Errorf("segment %d..%d (%s): %w", s.Head.First, s.Head.Last, s.where(s.Key), err)
	}
	return nil
}

// where names the object a segment's part is read from: its loose key,
// or its place in a pack.
func (s Segment) where(loose string) string {
	if s.Pack != nil {
		return fmt.Sprintf("%s at %d", s.Pack.Key, s.Pack.Offset)
	}
	return loose
}

// Body returns a segment's stored body, held to its head's record.
func (st *SegmentStore) Body(ctx context.Context, s Segment) ([]byte, error) {
	h := s.Head
	limit := min(h.Body.Size, maxSegmentRead)
	var stored []byte
	var err error
	if s.Pack == nil {
		key := manifest.SegmentBodyKey(h.Cluster, h.Base.ID, h.First, h.Last)
		stored, err = manifest.ReadBounded(ctx, st.t, key, limit)
		if errors.Is(err, storage.ErrNotExist) {
			if s, err = st.packed(ctx, s, err); err != nil {
				return nil, err
			}
		}
	}
	if s.Pack != nil {
		stored, err = st.readRange(ctx, s.Pack, limit)
	}
	if errors.Is(err, manifest.ErrInvalid) {
		err = fmt.Errorf("%w: more than the %d bytes its head records", ErrDamaged, h.Body.Size)
	}
	if err == nil {
		err = manifest.NewStoredReader(bytes.NewReader(stored), h.Body).Check()
	}
	if err != nil {
		key := manifest.SegmentBodyKey(h.Cluster, h.Base.ID, h.First, h.Last)
		return nil, fmt.Errorf("segment %d..%d (%s) on target %s: %w", h.First, h.Last, s.where(key), st.t.Name(), err)
	}
	return stored, nil
}

func (st *SegmentStore) readRange(ctx context.Context, p *PackRef, limit int64) ([]byte, error) {
	rc, err := st.t.GetRange(ctx, p.Key, p.Offset, min(p.Size, limit+1))
	if errors.Is(err, storage.ErrNotExist) {
		err = fmt.Errorf("%w: %w", ErrMissing, err)
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit+1))
}

// packed finds the pack that holds s, which is missing as a loose
// object: the segment with the same head sum among the chain's packs.
func (st *SegmentStore) packed(ctx context.Context, s Segment, missing error) (Segment, error) {
	h := s.Head
	st.mu.Lock()
	defer st.mu.Unlock()
	refs, err := st.packsOf(ctx, h)
	if err != nil {
		return s, err
	}
	if s.Pack = refs[s.Sum]; s.Pack == nil {
		return s, fmt.Errorf("segment %d..%d: %w: %w", h.First, h.Last, ErrMissing, missing)
	}
	return s, nil
}

// packsOf reads the packs of h's chain, once: those it has when the first
// loose segment is missing. The heads in them need no verification
// here: a segment is taken only by the sum of a head verified before.
func (st *SegmentStore) packsOf(ctx context.Context, h *manifest.SegmentHead) (map[string]*PackRef, error) {
	prefix := manifest.LogPrefix(h.Cluster, h.Base.ID)
	if refs, ok := st.packs[prefix]; ok {
		return refs, nil
	}
	var keys []string
	err := st.t.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if _, _, ok := manifest.ParsePackIndexKey(prefix, oi.Key); ok {
			keys = append(keys, oi.Key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s on target %s: %w", prefix, st.t.Name(), err)
	}
	refs := map[string]*PackRef{}
	for _, key := range keys {
		data, err := manifest.ReadBounded(ctx, st.t, key, manifest.MaxPackIndex)
		if err != nil {
			return nil, err
		}
		idx, err := manifest.ParsePackIndex(data)
		if err != nil || idx.Cluster != h.Cluster || idx.Set != h.Base.ID {
			continue
		}
		packKey := manifest.PackKey(idx.Cluster, idx.Set, idx.First, idx.Last)
		for _, e := range idx.Segments {
			refs[manifest.Sum(e.Head)] = &PackRef{Index: key, Key: packKey, Offset: e.Offset, Size: e.Size, head: e.Head, sig: e.Signature}
		}
	}
	st.packs[prefix] = refs
	return refs, nil
}
