package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// ErrGap means the captured log does not reach a revision: a segment is
// missing, or the chain ends before it.
var ErrGap = manifest.ErrGap

// Segment is one trusted segment of a chain.
type Segment struct {
	// Key is the head's key as a loose object, which names the segment
	// even once it is packed.
	Key  string
	Head *manifest.SegmentHead
	// Sum is the sha256 of the head's bytes.
	Sum string
	// Stored is when the target stored the head (or its pack's index).
	Stored time.Time
	// Pack, when set, is where the segment is packed.
	Pack *PackRef
}

// Chain is the captured log that continues one full set on one target,
// as far as it is whole: every segment signed by a trusted key, naming
// the set and the segment before it, with no gap and no overlap.
type Chain struct {
	Target  string
	Base    *manifest.Manifest
	BaseSum string
	// Segments start at Base's revision + 1 and follow each other.
	Segments []Segment
	// Broken, when set, is why the chain stops where it does although the
	// target holds heads beyond: the first missing, unsigned, damaged,
	// foreign or misplaced one, named.
	Broken *Problem
	// Claimed, when set, is a head key whose signature is stored without
	// the head: a writer died between the two, or is writing it now.
	Claimed *storage.ObjectInfo
	// Pruned is set when prune removed the log on purpose (a trusted log
	// tombstone names the set): the chain is empty, and not broken.
	Pruned bool
	// Leftovers are the keys of loose objects that a pack in the chain
	// copies: a pack run that stopped before removing them, or a stale
	// writer's. Readers ignore them; the next pack run removes them.
	Leftovers []string
	// packed are the packs the chain reads, from where it enters each.
	packed []packUse
	// leftover are Leftovers by the first revision of their segment.
	leftover map[int64][]string
}

// End is the last revision the chain reaches.
func (c *Chain) End() int64 {
	if n := len(c.Segments); n > 0 {
		return c.Segments[n-1].Head.Last
	}
	return c.Base.Etcd.Revision
}

// Last is the chain's last segment, nil when it has none.
func (c *Chain) Last() *Segment {
	if n := len(c.Segments); n > 0 {
		return &c.Segments[n-1]
	}
	return nil
}

// Covering returns the segments from the chain's start through the one
// holding rev, or an error wrapping ErrGap when the chain does not reach it.
func (c *Chain) Covering(rev int64) ([]Segment, error) {
	for i, s := range c.Segments {
		if s.Head.Last >= rev {
			return c.Segments[:i+1], nil
		}
	}
	why := ""
	if c.Broken != nil {
		why = " (" + c.Broken.Error() + ")"
	}
	return nil, fmt.Errorf("%w: the log of %s on target %s reaches revision %d, not %d%s", ErrGap, c.Base.ID, c.Target, c.End(), rev, why)
}

// Proof is the newest HashKV recorded at a segment end at or before rev.
func (c *Chain) Proof(rev int64) *manifest.LogHash {
	var p *manifest.LogHash
	for _, s := range c.Segments {
		if s.Head.Last > rev {
			break
		}
		if s.Head.HashKV != nil {
			p = s.Head.HashKV
		}
	}
	return p
}

// ReadChain reads the heads of the log continuing base on t, verifying
// each against trust and linking it to the one before, and stops at the
// first that is not whole, saying why in Chain.Broken. Packed segments
// are read from their pack's index; loose objects a pack copies are left
// out of the chain (Chain.Leftovers). Only a failure to list or read the
// target is an error.
func ReadChain(ctx context.Context, t storage.Target, trust *manifest.Trust, base *manifest.Manifest, baseSum string) (*Chain, error) {
	// A head listed and gone, or its signature gone, before it was read:
	// a pack run removed it since. The listing again finds the pack.
	for tries := 1; ; tries++ {
		c, err := readChain(ctx, t, trust, base, baseSum)
		if !errors.Is(err, errRelist) || tries == 3 {
			return c, err
		}
	}
}

// errRelist means a listed object went while the chain was read.
var errRelist = errors.New("an object listed went before it was read")

func readChain(ctx context.Context, t storage.Target, trust *manifest.Trust, base *manifest.Manifest, baseSum string) (*Chain, error) {
	c := &Chain{Target: t.Name(), Base: base, BaseSum: baseSum}
	switch pruned, err := LogPruned(ctx, t, trust, base, baseSum); {
	case err != nil:
		return nil, err
	case pruned:
		// Removed by prune on purpose: an empty chain, not a broken one.
		c.Pruned = true
		return c, nil
	}
	l, err := listLog(ctx, t, base)
	if err != nil {
		return nil, err
	}
	next := base.Etcd.Revision + 1
	var prev *Segment
	broken := func(key string, err error, format string, args ...any) {
		c.Broken = &Problem{Target: t.Name(), Object: key, Reason: fmt.Sprintf(format, args...), Err: err}
	}
	for c.Broken == nil {
		segs, use, packErr, err := l.packAt(ctx, t, trust, base, baseSum, next, prev)
		if err != nil {
			return nil, err
		}
		if segs != nil {
			c.Segments = append(c.Segments, segs...)
			prev = &c.Segments[len(c.Segments)-1]
			next = prev.Head.Last + 1
			c.packed = append(c.packed, use)
			continue
		}
		if _, ok := l.heads[next]; !ok {
			if packErr != nil {
				c.Broken = packErr
			} else if after := l.firstAfter(next); after > 0 {
				broken(manifest.SegmentHeadKey(base.Cluster, base.ID, after), ErrGap, "segment starting at %d: revisions %d..%d are missing before it", after, next, after-1)
			}
			break
		}
		key := manifest.SegmentHeadKey(base.Cluster, base.ID, next)
		h, sum, err := manifest.ReadSegmentHead(ctx, t, key, trust)
		if errors.Is(err, storage.ErrNotExist) || (errors.Is(err, manifest.ErrUnsigned) && l.listed(next, manifest.SignatureKey(key))) {
			return nil, fmt.Errorf("%w: %w", errRelist, err)
		}
		if err != nil && !IsForeign(err) {
			return nil, err
		}
		if err == nil && h.First != next {
			err = fmt.Errorf("%w: the head of segment %d..%d is stored as the segment starting at %d", manifest.ErrInvalid, h.First, h.Last, next)
		}
		if err == nil {
			err = linkSegment(h, base, c.BaseSum, prev)
		}
		if err != nil {
			broken(key, err, "%v", err)
			break
		}
		c.Segments = append(c.Segments, Segment{Key: key, Head: h, Sum: sum, Stored: l.heads[next]})
		prev = &c.Segments[len(c.Segments)-1]
		next = h.Last + 1
	}
	c.overlaps(l)
	if oi, ok := l.claims[c.End()+1]; ok {
		if _, head := l.heads[c.End()+1]; !head {
			c.Claimed = &oi
		}
	}
	return c, nil
}

func trimSig(key string) string { return key[:len(key)-min(len(key), len(".sig"))] }

// linkSegment checks that a trusted head belongs where it is stored:
// in base's chain, right after prev.
func linkSegment(h *manifest.SegmentHead, base *manifest.Manifest, baseSum string, prev *Segment) error {
	switch {
	case h.Cluster != base.Cluster || h.Base.ID != base.ID:
		return fmt.Errorf("%w: the segment continues %s/%s", ErrForeign, h.Cluster, h.Base.ID)
	case h.Base.SHA256 != baseSum:
		return fmt.Errorf("%w: the segment continues another manifest of %s", ErrChain, base.ID)
	case prev == nil && h.Prev != nil:
		return fmt.Errorf("%w: the chain's first segment names %d..%d before it", ErrChain, h.Prev.First, h.Prev.Last)
	case prev != nil && (h.Prev == nil || *h.Prev != *prev.Head.Link(prev.Sum)):
		return fmt.Errorf("%w: the segment does not name %d..%d before it", ErrChain, prev.Head.First, prev.Head.Last)
	}
	return nil
}

// maxSegmentRead bounds what is read of a body: its head's record bounds
// it further.
const maxSegmentRead = manifest.MaxSegmentPlain * 2

// OpenSegment reads a segment's body whole (it is small, and its stored
// sha256 is checked before any plaintext is used: age proves only that
// someone with the public recipient wrote it), decrypts it and returns
// its decoder, positioned after the lease records. The decoder's io.EOF
// comes only once the plaintext matched the head's record too; a caller
// that stops before it closes the decoder.
func OpenSegment(ctx context.Context, t storage.Target, s Segment, ids []age.Identity) (*manifest.LogReader, error) {
	return NewSegmentStore(t).Open(ctx, s, ids)
}

// Open is OpenSegment through the store.
func (st *SegmentStore) Open(ctx context.Context, s Segment, ids []age.Identity) (*manifest.LogReader, error) {
	h, t := s.Head, st.t
	stored, err := st.Body(ctx, s)
	if err != nil {
		return nil, err
	}
	or, err := manifest.OpenObject(manifest.NewStoredReader(bytes.NewReader(stored), h.Body), ids, manifest.ReadOptions{})
	if err != nil {
		return nil, fmt.Errorf("segment %d..%d on target %s: %w", h.First, h.Last, t.Name(), err)
	}
	// The reader closes the ObjectReader when the body ends or fails.
	lr, err := manifest.NewLogReader(or, h.Body.PlainSize, h.First, h.Last)
	if err != nil {
		return nil, fmt.Errorf("segment %d..%d on target %s: %w", h.First, h.Last, t.Name(), err)
	}
	return lr, nil
}

// ReadSegment decodes a whole segment: every revision, checked to the
// end. Verify and the history reader use it; a replay streams instead.
func ReadSegment(ctx context.Context, t storage.Target, s Segment, ids []age.Identity, fn func(*manifest.LogRevision) error) ([]manifest.LeaseRecord, error) {
	return NewSegmentStore(t).Read(ctx, s, ids, fn)
}

// Read is ReadSegment through the store.
func (st *SegmentStore) Read(ctx context.Context, s Segment, ids []age.Identity, fn func(*manifest.LogRevision) error) ([]manifest.LeaseRecord, error) {
	lr, err := st.Open(ctx, s, ids)
	if err != nil {
		return nil, err
	}
	defer lr.Close()
	for {
		r, err := lr.Next()
		if err == io.EOF {
			return lr.Leases(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("segment %d..%d on target %s: %w", s.Head.First, s.Head.Last, st.t.Name(), err)
		}
		if fn != nil {
			if err := fn(r); err != nil {
				return nil, err
			}
		}
	}
}

// ChainAt finds, on t, the chain to restore rev from: the oldest trusted
// full set at or before rev whose log reaches rev, and returns that
// chain. Not the newest: a set's revision is only a lower bound of its
// snapshot's, which may already hold revisions past rev, while the chain
// before it, which runs on until that set is stored, holds rev exactly.
// Chains are tried from the newest back; once one reaches rev, the search
// stops at the first older one that does not.
func ChainAt(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, rev int64) (*Chain, error) {
	ids, _, err := completeIDs(ctx, t, cluster)
	if err != nil {
		return nil, err
	}
	var found *Chain
	var tried []string
	for i := len(ids) - 1; i >= 0; i-- {
		m, sum, err := LoadManifest(ctx, t, trust, cluster, ids[i])
		if IsForeign(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m.Etcd.Revision > rev {
			continue
		}
		c, err := ReadChain(ctx, t, trust, m, sum)
		if err != nil {
			return nil, err
		}
		if rev == m.Etcd.Revision || c.End() >= rev {
			found = c
			continue
		}
		if found != nil {
			break
		}
		tried = append(tried, fmt.Sprintf("%s (revision %d, log to %d)", m.ID, m.Etcd.Revision, c.End()))
		if c.Broken != nil {
			tried[len(tried)-1] += ": " + c.Broken.Error()
		}
	}
	if found != nil {
		return found, nil
	}
	if len(tried) == 0 {
		return nil, fmt.Errorf("%w: no trusted full set of %s on target %s at or before revision %d", ErrNoBackup, cluster, t.Name(), rev)
	}
	return nil, fmt.Errorf("%w: no log on target %s reaches revision %d; tried %s", ErrGap, t.Name(), rev, strings.Join(tried, "; "))
}

// VerifyLog checks the captured log that continues set id on t: the chain
// of heads, and every body's stored bytes against its head; with
// identities, also each body's plaintext, decoded to its last revision.
// The first segment that is not whole is a problem named by its key: the
// revisions before it stay restorable, and the report says to which.
func VerifyLog(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster, id string, ids []age.Identity) *Report {
	rep := &Report{Target: t.Name(), Cluster: cluster, ID: id, Decrypted: len(ids) > 0}
	m, sum, err := LoadManifest(ctx, t, trust, cluster, id)
	if err != nil {
		// Verify reports the manifest itself.
		return rep
	}
	if checkPrunedLog(ctx, t, trust, m, sum, rep) {
		return rep
	}
	c, err := ReadChain(ctx, t, trust, m, sum)
	if err != nil {
		rep.problem("", err, "log: %v", err)
		return rep
	}
	store := NewSegmentStore(t)
	for i, s := range c.Segments {
		var err error
		if len(ids) > 0 {
			_, err = store.Read(ctx, s, ids, nil)
		} else {
			_, err = store.Body(ctx, s)
		}
		if err != nil {
			rep.problem(segmentObject(s.Key), err, "%v (the log is restorable to revision %d)", err, s.Head.First-1)
			c.Segments = c.Segments[:i]
			break
		}
	}
	if c.Broken != nil {
		rep.problem(segmentObject(c.Broken.Object), c.Broken.Err, "%s (the log is restorable to revision %d)", c.Broken.Reason, c.End())
	}
	if n := len(c.Segments); n > 0 {
		rep.checked("log: revisions %d..%d in %d segments", c.Segments[0].Head.First, c.End(), n)
	}
	return rep
}

// segmentObject names a segment's key within its set, as problems name
// objects.
func segmentObject(key string) string {
	if _, _, object, ok := manifest.SplitKey(key); ok {
		return object
	}
	return key
}
