package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// PackOptions say how Pack groups segments.
type PackOptions struct {
	// Every is a pack's width: the loose segments of a chain first seen
	// in one interval of this length (aligned on the Unix epoch) go to
	// one pack, once the interval is over.
	Every time.Duration
	// Now is when the run is (default time.Now()).
	Now time.Time
}

// PackMade is one pack a run stored.
type PackMade struct {
	Set         string
	First, Last int64
	Segments    int
	Bytes       int64
	// index is the key of the pack's index.
	index string
}

// PackReport says what Pack did on one target.
type PackReport struct {
	Target  string
	Cluster string
	Packs   []PackMade
	// Removed counts the loose objects removed once a pack held them,
	// Locked those a retention kept (readers ignore them).
	Removed int
	Locked  int
	// Errors are what failed; the other chains went on.
	Errors []error
}

// Segments counts the segments the run packed.
func (r *PackReport) Segments() int {
	n := 0
	for _, p := range r.Packs {
		n += p.Segments
	}
	return n
}

// Pack packs the closed loose segments of every trusted chain of cluster
// on t, one pack per chain and interval of o.Every, and then removes the
// loose objects a pack holds. A moment is never unrestorable meanwhile:
// a pack is visible only once its index is stored, its index is read back
// and verified as readers read it before any loose object goes, and a
// reader that finds a loose object gone finds the pack (SegmentStore).
// A chain's newest interval is never packed while the chain may grow.
func Pack(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, o PackOptions) (*PackReport, error) {
	if o.Every <= 0 {
		return nil, errors.New("pack: the interval must be positive")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	rep := &PackReport{Target: t.Name(), Cluster: cluster}
	ids, _, err := completeIDs(ctx, t, cluster)
	if err != nil {
		return rep, err
	}
	for i, id := range ids {
		m, sum, err := LoadManifest(ctx, t, trust, cluster, id)
		if IsForeign(err) {
			continue
		}
		if err != nil {
			return rep, err
		}
		if err := packChain(ctx, t, trust, m, sum, i == len(ids)-1, o, rep); err != nil {
			if ctx.Err() != nil {
				return rep, err
			}
			rep.Errors = append(rep.Errors, fmt.Errorf("set %s: %w", id, err))
		}
	}
	return rep, nil
}

func packChain(ctx context.Context, t storage.Target, trust *manifest.Trust, m *manifest.Manifest, sum string, newest bool, o PackOptions, rep *PackReport) error {
	c, err := ReadChain(ctx, t, trust, m, sum)
	if err != nil {
		return err
	}
	// A chain that is not the newest set's may still grow for a moment
	// after that set is stored; one interval later it is closed.
	closed := !newest && c.Last() != nil && o.Now.Sub(c.Last().Stored) > o.Every
	store := NewSegmentStore(t)
	var made []PackMade
	for _, g := range packGroups(c.Segments, o.Every, closed) {
		p, err := writePack(ctx, t, trust, store, m, g)
		if err != nil {
			return err
		}
		if p != nil {
			made = append(made, *p)
		}
	}
	if len(made) == 0 && len(c.Leftovers) == 0 {
		return nil
	}
	// Read back as every reader reads it before a loose object goes.
	read, err := ReadChain(ctx, t, trust, m, sum)
	if err != nil {
		return err
	}
	for _, p := range made {
		// Its revisions read from a pack: this one, or one another packer
		// made over the same segments.
		if !read.inPack(p.First) || !read.inPack(p.Last) || read.End() < c.End() {
			return fmt.Errorf("pack %d..%d: the chain read back does not take it (%v)", p.First, p.Last, read.Broken)
		}
	}
	rep.Packs = append(rep.Packs, made...)
	// The pack's bytes are read too, not only its index: a loose copy
	// goes only once the pack holds its body whole.
	for _, s := range read.Segments {
		keys := read.leftover[s.Head.First]
		if s.Pack == nil || len(keys) == 0 {
			continue
		}
		if _, err := store.fromPack(ctx, s, s.Pack); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("the loose copy stays: %w", err))
			continue
		}
		rep.removeLoose(ctx, t, keys)
	}
	return nil
}

// packGroups are the runs of loose segments first seen in one interval,
// of two segments or more (at most manifest.MaxPackSegments), whose
// interval is over: a later segment was first seen after it, or the
// chain is closed.
func packGroups(segs []Segment, every time.Duration, closed bool) [][]Segment {
	var groups [][]Segment
	bucket := func(s Segment) int64 { return s.Head.SeenFirst.UnixNano() / int64(every) }
	for i := 0; i < len(segs); {
		j := i + 1
		for j < len(segs) && j-i < manifest.MaxPackSegments && segs[i].Pack == nil && segs[j].Pack == nil && bucket(segs[j]) == bucket(segs[i]) {
			j++
		}
		full := j-i == manifest.MaxPackSegments
		over := closed || (j < len(segs) && (full || bucket(segs[j]) > bucket(segs[i])))
		if segs[i].Pack == nil && j-i >= 2 && over {
			groups = append(groups, segs[i:j])
		}
		i = j
	}
	return groups
}

// indexRoom is how much of manifest.MaxPackIndex a pack's index may
// take: heads and signatures grow by a third in base64.
const indexRoom = manifest.MaxPackIndex / 2

// writePack stores the pack object of g, then its index; nil when g's
// heads would not fit one index. The object is the bodies one after
// another, each held to its head as it is read; one left by an earlier
// run that stopped before its index is checked the same way and kept.
// Every head and signature is verified before it goes into an index. A
// group whose index would outgrow what readers read is cut short; the
// rest waits for the next run.
func writePack(ctx context.Context, t storage.Target, trust *manifest.Trust, store *SegmentStore, m *manifest.Manifest, g []Segment) (*PackMade, error) {
	idx := &manifest.PackIndex{Format: manifest.PackFormat, Cluster: m.Cluster, Set: m.ID}
	room := 0
	for i, s := range g {
		head, sig, err := store.Head(ctx, s)
		if err != nil {
			return nil, err
		}
		if _, err := trust.Verify(head, sig, manifest.NamespaceSegment); err != nil {
			return nil, fmt.Errorf("segment %d..%d: %w", s.Head.First, s.Head.Last, err)
		}
		if room += (len(head)+len(sig))*4/3 + 128; room > indexRoom {
			g = g[:i]
			break
		}
		idx.Segments = append(idx.Segments, manifest.PackedSegment{Head: head, Signature: sig, Offset: idx.Size, Size: s.Head.Body.Size})
		idx.Size += s.Head.Body.Size
	}
	if len(g) < 2 {
		return nil, nil
	}
	idx.First, idx.Last = g[0].Head.First, g[len(g)-1].Head.Last
	key := manifest.PackKey(m.Cluster, m.ID, idx.First, idx.Last)
	h := sha256.New()
	pr, pw := io.Pipe()
	copied := make(chan struct{})
	go func(w io.Writer) {
		defer close(copied)
		pw.CloseWithError(copyBodies(ctx, store, g, w))
	}(io.MultiWriter(pw, h))
	err := t.Put(ctx, key, pr, storage.PutOptions{IfAbsent: true, ContentType: "application/octet-stream"})
	pr.CloseWithError(errors.New("pack stored")) // ends the copy when Put stopped reading
	<-copied
	switch {
	case errors.Is(err, storage.ErrExist):
		if h, err = checkPack(ctx, t, key, g, idx.Size); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("store pack %s on target %s: %w", key, t.Name(), err)
	}
	idx.SHA256 = hex.EncodeToString(h.Sum(nil))
	raw, err := idx.Marshal()
	if err != nil {
		return nil, err
	}
	index := manifest.PackIndexKey(m.Cluster, m.ID, idx.First, idx.Last)
	if err := manifest.PutNew(ctx, t, index, raw, "application/json"); err != nil {
		return nil, err
	}
	return &PackMade{Set: m.ID, First: idx.First, Last: idx.Last, Segments: len(g), Bytes: idx.Size, index: index}, nil
}

func copyBodies(ctx context.Context, store *SegmentStore, g []Segment, w io.Writer) error {
	for _, s := range g {
		body, err := store.Body(ctx, s)
		if err != nil {
			return err
		}
		if _, err := w.Write(body); err != nil {
			return err
		}
	}
	return nil
}

// checkPack holds a stored pack object to the bodies g's heads record,
// in order, and returns its hash.
func checkPack(ctx context.Context, t storage.Target, key string, g []Segment, size int64) (hash.Hash, error) {
	rc, err := t.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	h := sha256.New()
	r := io.TeeReader(io.LimitReader(rc, size+1), h)
	for _, s := range g {
		if err := manifest.NewStoredReader(io.LimitReader(r, s.Head.Body.Size), s.Head.Body).Check(); err != nil {
			return nil, fmt.Errorf("pack %s on target %s, left without its index by an earlier run: segment %d..%d: %w (remove it to pack again)", key, t.Name(), s.Head.First, s.Head.Last, err)
		}
	}
	if n, _ := io.Copy(io.Discard, r); n != 0 {
		return nil, fmt.Errorf("pack %s on target %s, left by an earlier run: %w: longer than its segments", key, t.Name(), ErrDamaged)
	}
	return h, nil
}

// removeLoose removes loose objects a verified pack holds; one under
// retention stays, counted, and readers go on ignoring it.
func (r *PackReport) removeLoose(ctx context.Context, t storage.Target, keys []string) {
	for _, key := range keys {
		switch err := t.Delete(ctx, key); {
		case err == nil:
			r.Removed++
		case errors.Is(err, storage.ErrLocked):
			r.Locked++
		default:
			r.Errors = append(r.Errors, err)
		}
	}
}
