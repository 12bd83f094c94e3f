package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
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
	// loose are the keys of every head, signature and body, by first
	// revision.
	loose map[int64][]string
	packs []packListed
}

type packListed struct {
	first, last int64
	key         string
	modified    time.Time
}

// packUse is a pack a chain reads, from where it enters it.
type packUse struct {
	from, last int64
	index      string
}

func listLog(ctx context.Context, t storage.Target, base *manifest.Manifest) (*logListing, error) {
	prefix := manifest.LogPrefix(base.Cluster, base.ID)
	l := &logListing{heads: map[int64]time.Time{}, claims: map[int64]storage.ObjectInfo{}, loose: map[int64][]string{}}
	sigs := map[int64]storage.ObjectInfo{}
	err := t.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if first, last, ok := manifest.ParsePackIndexKey(prefix, oi.Key); ok {
			l.packs = append(l.packs, packListed{first: first, last: last, key: oi.Key, modified: oi.Modified})
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

// listed reports whether key was listed among the loose objects of the
// segment starting at first.
func (l *logListing) listed(first int64, key string) bool {
	for _, k := range l.loose[first] {
		if k == key {
			return true
		}
	}
	return false
}

// firstAfter is the first revision after rev where a loose head or a
// pack starts; 0 when none does.
func (l *logListing) firstAfter(rev int64) int64 {
	var after int64
	consider := func(first int64) {
		if first > rev && (after == 0 || first < after) {
			after = first
		}
	}
	for first := range l.heads {
		consider(first)
	}
	for _, p := range l.packs {
		consider(p.first)
	}
	return after
}

// packAt reads the segments from next on out of a pack that holds the
// segment starting there, linked to prev. Packs are tried starting there
// first, longest first, then those that hold next inside (two packers
// that grouped differently); the first whole one wins. When none is,
// problem names the last tried. Only a failure to read the target is an
// error.
func (l *logListing) packAt(ctx context.Context, t storage.Target, trust *manifest.Trust, base *manifest.Manifest, baseSum string,
	next int64, prev *Segment) (segs []Segment, use packUse, problem *Problem, err error) {
	var cands []packListed
	for _, p := range l.packs {
		if p.first <= next && next <= p.last {
			cands = append(cands, p)
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if a, b := cands[i].first == next, cands[j].first == next; a != b {
			return a
		}
		return cands[i].last > cands[j].last
	})
	for _, p := range cands {
		segs, err := readPack(ctx, t, trust, base, baseSum, p, next, prev)
		if err == nil {
			return segs, packUse{from: next, last: p.last, index: p.key}, nil, nil
		}
		if !unusable(err) {
			return nil, packUse{}, nil, err
		}
		problem = &Problem{Target: t.Name(), Object: p.key, Reason: err.Error(), Err: err}
	}
	return nil, packUse{}, problem, nil
}

// unusable reports whether err says an object is not to be trusted or
// is gone, rather than that the target failed.
func unusable(err error) bool {
	return IsForeign(err) || errors.Is(err, manifest.ErrInvalid) || errors.Is(err, ErrChain) || errors.Is(err, ErrForeign) ||
		errors.Is(err, ErrDamaged) || errors.Is(err, storage.ErrNotExist)
}

// overlaps sorts out the loose objects the chain did not read: inside a
// pack it reads, they are leftovers (each segment's head first, then its
// signature, then its body, so that a reader that lists meanwhile finds
// the head gone rather than unsigned); a head starting inside a loose
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
		_, head := l.heads[first]
		switch {
		case used[first]:
		case c.inPack(first):
			keys := append([]string(nil), l.loose[first]...)
			sort.Slice(keys, func(i, j int) bool { return looseOrder(keys[i]) < looseOrder(keys[j]) })
			c.Leftovers = append(c.Leftovers, keys...)
			if c.leftover == nil {
				c.leftover = map[int64][]string{}
			}
			c.leftover[first] = keys
		case first <= c.End() && head:
			key := manifest.SegmentHeadKey(c.Base.Cluster, c.Base.ID, first)
			c.Broken = &Problem{Target: c.Target, Object: key, Reason: fmt.Sprintf("segment starting at %d: overlaps the segment before", first), Err: ErrGap}
			i := sort.Search(len(c.Segments), func(i int) bool { return c.Segments[i].Head.First > first })
			c.Segments = c.Segments[:i]
			return
		}
	}
}

// looseOrder orders a segment's loose objects for removal: head,
// signature, body.
func looseOrder(key string) int {
	switch {
	case strings.HasSuffix(key, ".json"):
		return 0
	case strings.HasSuffix(key, ".sig"):
		return 1
	}
	return 2
}

func (c *Chain) inPack(rev int64) bool {
	for _, p := range c.packed {
		if rev >= p.from && rev <= p.last {
			return true
		}
	}
	return false
}

// readIndex reads and parses a pack's index, pinned to its key and set.
func readIndex(ctx context.Context, t storage.Target, base *manifest.Manifest, p packListed) (*manifest.PackIndex, error) {
	data, err := manifest.ReadBounded(ctx, t, p.key, manifest.MaxPackIndex)
	if err != nil {
		return nil, err
	}
	idx, err := manifest.ParsePackIndex(data)
	switch {
	case err != nil:
		return nil, err
	case idx.Cluster != base.Cluster || idx.Set != base.ID:
		return nil, fmt.Errorf("%w: the pack continues %s/%s", ErrForeign, idx.Cluster, idx.Set)
	case idx.First != p.first || idx.Last != p.last:
		return nil, fmt.Errorf("%w: the index of pack %d..%d is stored as pack %d..%d", manifest.ErrInvalid, idx.First, idx.Last, p.first, p.last)
	}
	return idx, nil
}

// readPack reads a pack's index and the segments it holds from the one
// starting at from on, each head verified against trust and linked to the
// one before, the first to prev. Every head in the index must verify and
// follow the one before it. A pack that is not whole is an error for
// which unusable is true: the caller tries another pack, or loose
// objects.
func readPack(ctx context.Context, t storage.Target, trust *manifest.Trust, base *manifest.Manifest, baseSum string, p packListed, from int64, prev *Segment) ([]Segment, error) {
	idx, err := readIndex(ctx, t, base, p)
	if err != nil {
		return nil, err
	}
	packKey := manifest.PackKey(base.Cluster, base.ID, p.first, p.last)
	next := p.first
	var segs []Segment
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
		next = h.Last + 1
		if h.First < from {
			continue
		}
		if h.First == from || len(segs) > 0 {
			if err := linkSegment(h, base, baseSum, prev); err != nil {
				return nil, fmt.Errorf("pack %d..%d: %w", p.first, p.last, err)
			}
		}
		segs = append(segs, Segment{Key: manifest.SegmentHeadKey(base.Cluster, base.ID, h.First), Head: h, Sum: manifest.Sum(e.Head), Stored: p.modified,
			Pack: &PackRef{Index: p.key, Key: packKey, Offset: e.Offset, Size: e.Size, head: e.Head, sig: e.Signature}})
		prev = &segs[len(segs)-1]
	}
	switch {
	case next != p.last+1:
		return nil, fmt.Errorf("%w: pack %d..%d ends at %d", manifest.ErrInvalid, p.first, p.last, next-1)
	case len(segs) == 0 || segs[0].Head.First != from:
		return nil, fmt.Errorf("%w: pack %d..%d holds no segment starting at %d", manifest.ErrInvalid, p.first, p.last, from)
	}
	return segs, nil
}

// SegmentStore reads the objects of segments on one target, loose or
// packed. A segment read as loose that a pack has taken since (a restore
// planned before the pack ran) is found in the pack by its head's sum; a
// packed segment whose pack cannot be read is read loose where it still
// is. It keeps the pack indexes it read; safe for concurrent use.
type SegmentStore struct {
	t  storage.Target
	mu sync.Mutex
	// packs holds, by chain prefix then head sum, the packed segments
	// the store found after a loose segment was missing.
	packs map[string]map[string][]*PackRef
}

// NewSegmentStore reads segments on t.
func NewSegmentStore(t storage.Target) *SegmentStore {
	return &SegmentStore{t: t, packs: map[string]map[string][]*PackRef{}}
}

// Head returns a segment's head and signature as stored, held to the
// head's sum.
func (st *SegmentStore) Head(ctx context.Context, s Segment) (head, sig []byte, err error) {
	refs := st.located(ctx, s)
	if len(refs) == 0 {
		head, err = manifest.ReadBounded(ctx, st.t, s.Key, manifest.MaxHeadRead)
		if err == nil {
			sig, err = manifest.ReadBounded(ctx, st.t, manifest.SignatureKey(s.Key), manifest.MaxSignatureRead)
		}
		if !errors.Is(err, storage.ErrNotExist) {
			return head, sig, heldToSum(s, s.Key, head, err)
		}
		if refs, err = st.packed(ctx, s, err); err != nil {
			return nil, nil, err
		}
	}
	p := refs[0]
	return p.head, p.sig, heldToSum(s, p.Index, p.head, nil)
}

func heldToSum(s Segment, from string, head []byte, err error) error {
	if err == nil && manifest.Sum(head) != s.Sum {
		err = fmt.Errorf("%w: not the head a trusted key signed (sha256 %s)", ErrDamaged, s.Sum)
	}
	if err != nil {
		return fmt.Errorf("segment %d..%d (%s): %w", s.Head.First, s.Head.Last, from, err)
	}
	return nil
}

// Body returns a segment's stored body, held to its head's record: from
// its pack, or loose, whichever holds it whole.
func (st *SegmentStore) Body(ctx context.Context, s Segment) ([]byte, error) {
	h := s.Head
	loose := manifest.SegmentBodyKey(h.Cluster, h.Base.ID, h.First, h.Last)
	var err error
	for _, p := range st.located(ctx, s) {
		var stored []byte
		if stored, err = st.fromPack(ctx, s, p); err == nil {
			return stored, nil
		}
		if !unusable(err) && !errors.Is(err, ErrMissing) {
			return nil, err
		}
	}
	stored, lerr := st.loose(ctx, s, loose)
	if errors.Is(lerr, storage.ErrNotExist) && err == nil {
		var refs []*PackRef
		if refs, err = st.packed(ctx, s, lerr); err == nil {
			for _, p := range refs {
				if stored, err = st.fromPack(ctx, s, p); err == nil {
					return stored, nil
				}
			}
		}
	}
	if lerr == nil {
		return stored, nil
	}
	if err == nil {
		err = lerr
	}
	return nil, err
}

// located are the places a segment is known packed: its own, then those
// the store found.
func (st *SegmentStore) located(ctx context.Context, s Segment) []*PackRef {
	var refs []*PackRef
	if s.Pack != nil {
		refs = append(refs, s.Pack)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, p := range st.packs[manifest.LogPrefix(s.Head.Cluster, s.Head.Base.ID)][s.Sum] {
		if s.Pack == nil || p.Index != s.Pack.Index || p.Offset != s.Pack.Offset {
			refs = append(refs, p)
		}
	}
	return refs
}

func (st *SegmentStore) loose(ctx context.Context, s Segment, key string) ([]byte, error) {
	h := s.Head
	stored, err := manifest.ReadBounded(ctx, st.t, key, min(h.Body.Size, maxSegmentRead))
	if errors.Is(err, manifest.ErrInvalid) {
		err = fmt.Errorf("%w: more than the %d bytes its head records", ErrDamaged, h.Body.Size)
	}
	if err == nil {
		err = manifest.NewStoredReader(bytes.NewReader(stored), h.Body).Check()
	}
	if err != nil {
		return nil, bodyError(st.t, s, key, err)
	}
	return stored, nil
}

// fromPack reads a segment's body out of a pack, held to its head.
func (st *SegmentStore) fromPack(ctx context.Context, s Segment, p *PackRef) ([]byte, error) {
	h := s.Head
	limit := min(h.Body.Size, maxSegmentRead)
	rc, err := st.t.GetRange(ctx, p.Key, p.Offset, min(p.Size, limit+1))
	if errors.Is(err, storage.ErrNotExist) {
		err = fmt.Errorf("%w: %w", ErrMissing, err)
	}
	var stored []byte
	if err == nil {
		stored, err = io.ReadAll(io.LimitReader(rc, limit+1))
		rc.Close()
	}
	if err == nil {
		err = manifest.NewStoredReader(bytes.NewReader(stored), h.Body).Check()
	}
	if err != nil {
		return nil, bodyError(st.t, s, fmt.Sprintf("%s at %d", p.Key, p.Offset), err)
	}
	return stored, nil
}

func bodyError(t storage.Target, s Segment, from string, err error) error {
	return fmt.Errorf("segment %d..%d (%s) on target %s: %w", s.Head.First, s.Head.Last, from, t.Name(), err)
}

// packed finds the packs that hold s, which is missing as a loose
// object: the segments with the same head sum among the chain's packs,
// listed again if the store's list is older than this call.
func (st *SegmentStore) packed(ctx context.Context, s Segment, missing error) ([]*PackRef, error) {
	h := s.Head
	prefix := manifest.LogPrefix(h.Cluster, h.Base.ID)
	st.mu.Lock()
	defer st.mu.Unlock()
	refs := st.packs[prefix][s.Sum]
	if len(refs) == 0 {
		byHead, err := listPacks(ctx, st.t, h)
		if err != nil {
			return nil, err
		}
		st.packs[prefix] = byHead
		refs = byHead[s.Sum]
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("segment %d..%d: %w: %w", h.First, h.Last, ErrMissing, missing)
	}
	return refs, nil
}

// listPacks reads the packs of h's chain, by head sum. An index that
// cannot be read whole is passed over. The heads in them need no
// verification here: a segment is taken only by the sum of a head
// verified before.
func listPacks(ctx context.Context, t storage.Target, h *manifest.SegmentHead) (map[string][]*PackRef, error) {
	prefix := manifest.LogPrefix(h.Cluster, h.Base.ID)
	var packs []packListed
	err := t.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if first, last, ok := manifest.ParsePackIndexKey(prefix, oi.Key); ok {
			packs = append(packs, packListed{first: first, last: last, key: oi.Key})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s on target %s: %w", prefix, t.Name(), err)
	}
	base := &manifest.Manifest{Cluster: h.Cluster, ID: h.Base.ID}
	byHead := map[string][]*PackRef{}
	for _, p := range packs {
		idx, err := readIndex(ctx, t, base, p)
		if unusable(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		packKey := manifest.PackKey(idx.Cluster, idx.Set, idx.First, idx.Last)
		for _, e := range idx.Segments {
			sum := manifest.Sum(e.Head)
			byHead[sum] = append(byHead[sum], &PackRef{Index: p.key, Key: packKey, Offset: e.Offset, Size: e.Size, head: e.Head, sig: e.Signature})
		}
	}
	return byHead, nil
}
