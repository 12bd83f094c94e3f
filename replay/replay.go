package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/coreos/go-semver/semver"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/manifest"
)

// DefaultTTL is the TTL, in seconds, a lease gets when a put names it and
// no lease record gives its TTL.
const DefaultTTL = 60

const (
	// checkEvery is how many revisions are read between looks at the
	// context and calls of Options.Progress.
	checkEvery = 4096
	// batchLimit is how many puts the backend gathers before it commits,
	// and commitBytes how many bytes of keys and values the replay lets
	// it gather; batchInterval is long enough that only those and Close
	// commit. What a batch gathers stays on the heap (twice: bbolt's
	// pages and the backend's read buffer) until it commits, and kdr's
	// heap is capped softly (96 MiB by default): larger batches make the
	// collector run without pause. Nothing is synced before the end: an
	// interrupted replay is started again from a fresh copy.
	batchLimit    = 5000
	commitBytes   = 8 << 20
	batchInterval = 24 * time.Hour
	// compactionBatch is how many keys a compaction (made for a proof)
	// deletes per backend transaction; it rests compactionRest between.
	compactionBatch = 10000
	compactionRest  = time.Microsecond
)

// Errors callers branch on. Each is wrapped with the segment (its
// First..Last) and the revision concerned.
var (
	// ErrGap means the log does not hold every revision from the
	// snapshot's to the target: a segment is missing, the log starts
	// after the snapshot, or it ends before the target. It is the
	// format's own sentinel, which catalog's chain reader gives too.
	ErrGap = manifest.ErrGap
	// ErrMismatch means the replay does not arrive where the source did:
	// a revision, a create revision or version, a delete of a key the
	// replay does not have, or the HashKV proof.
	ErrMismatch = errors.New("replay does not match the source")
	// ErrBeforeBase means the target revision is older than the snapshot.
	ErrBeforeBase = errors.New("target revision is before the snapshot")
)

// Segment is one captured segment as read from a target: its verified
// head and its body's decoder, positioned after the lease records
// (Body.Leases() gives them).
type Segment struct {
	Head *manifest.SegmentHead
	Body *manifest.LogReader
}

// Source yields a chain's segments in order; io.EOF after the last.
type Source interface {
	Next(ctx context.Context) (*Segment, error)
}

// Options says what to replay.
type Options struct {
	// DB is an etcd database file: a decrypted snapshot with etcd's
	// trailing sha256 cut off. It is replayed in place.
	DB string
	// Revision is the target: every revision up to and including it is
	// applied, none after.
	Revision int64
	// Source yields the chain from its first segment on. Nil is a chain
	// without segments, enough only for the snapshot's own revision.
	Source Source
	// Proof, when set, is the newest HashKV recorded at a segment end at
	// or before Revision: the replay compacts to its compaction when it
	// reaches its revision, and must hash the same. A proof older than
	// the snapshot, or one the snapshot is compacted past, is skipped
	// (Result.Proved stays nil).
	Proof *manifest.LogHash
	// Logger gets the replay's summary and etcd's warnings; nil discards.
	Logger *slog.Logger
	// Progress, when set, is called every few thousand revisions and at
	// the end with the revisions applied and the number to apply.
	Progress func(applied, total int64)
}

// Result is what a replay did.
type Result struct {
	// Base is the snapshot's own revision, read from the database (the
	// manifest's is only a lower bound).
	Base int64
	// Revision is the target, the database's revision now.
	Revision int64
	// Applied counts the revisions applied: Revision - Base.
	Applied int64
	// Proved is the proof that matched; nil when none was given or it
	// could not apply.
	Proved *manifest.LogHash
	// Leases counts the leases in the database at Revision.
	Leases int
	// Dropped counts the leases removed because they were revoked by
	// Revision.
	Dropped int
}

// Replay applies the captured revisions after the snapshot in o.DB up to
// o.Revision, through etcd's storage, and leaves o.DB an etcd database at
// that revision. The segment holding the target is decoded to its end
// without applying the rest, so that its body is checked whole before
// Replay reports success; later segments are not read. On an error the
// file is unusable and must be discarded.
func Replay(ctx context.Context, o Options) (res *Result, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if p := o.Proof; p != nil && (p.Revision > o.Revision || p.CompactRevision > p.Revision) {
		return nil, fmt.Errorf("proof at revision %d (compacted %d) does not fit a replay to %d", p.Revision, p.CompactRevision, o.Revision)
	}
	if err := checkDB(o.DB); err != nil {
		return nil, err
	}
	// etcd's storage panics (and is made to panic instead of exiting) on
	// what it cannot handle. The panic becomes an error; the database is
	// left as it is, perhaps with its locks held, and must be discarded.
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("etcd storage failed on %s: %v", o.DB, p)
		}
	}()
	return replay(ctx, o)
}

func replay(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	room := newHeapRoom()
	defer room.release()
	e := open(newZap(o.Logger), o.DB)
	room.fit()
	r := &run{o: o, e: e, room: room, base: e.kv.Rev(), book: newLeaseBook(o.Revision)}
	r.next = r.base + 1
	if o.Revision < r.base {
		e.close(nil)
		return nil, fmt.Errorf("%w: revision %d, the snapshot holds %d", ErrBeforeBase, o.Revision, r.base)
	}
	if err := r.replay(ctx); err != nil {
		e.close(nil)
		return nil, err
	}
	grant, drop := r.book.final(e.le, r.segFirst())
	for _, g := range grant {
		if _, err := e.le.Grant(g.id, g.ttl); err != nil {
			e.close(nil)
			return nil, fmt.Errorf("grant lease %x, granted by revision %d: %w", int64(g.id), o.Revision, err)
		}
	}
	leases, err := e.close(drop)
	if err != nil {
		return nil, err
	}
	if err := syncFile(o.DB); err != nil {
		return nil, err
	}
	res := &Result{Base: r.base, Revision: o.Revision, Applied: o.Revision - r.base, Proved: r.proved, Leases: leases, Dropped: len(drop)}
	took := time.Since(start)
	o.Logger.Info("replayed the captured log", "base", res.Base, "revision", res.Revision, "applied", res.Applied,
		"proved", res.Proved != nil, "leases", res.Leases, "dropped", res.Dropped, "took", took.Round(time.Millisecond),
		"perSecond", int64(float64(res.Applied)/max(took.Seconds(), 1e-9)))
	return res, nil
}

// engine is etcd's storage on one database file.
type engine struct {
	be backend.Backend
	le lease.Lessor
	kv mvcc.KV
	// hashes answers HashByRev without the cache of compaction hashes,
	// which were computed from this store's compactions, not the
	// source's.
	hashes mvcc.HashStorage
}

func open(lg *zap.Logger, path string) *engine {
	cfg := backend.DefaultBackendConfig(lg)
	cfg.Path = path
	cfg.BatchLimit = batchLimit
	cfg.BatchInterval = batchInterval
	cfg.UnsafeNoFsync = true
	cfg.Timeout = time.Second
	be := backend.New(cfg)
	le := lease.NewLessor(lg, be, etcdCluster{}, lease.LessorConfig{})
	st := mvcc.NewStore(lg, be, le, mvcc.StoreConfig{CompactionBatchLimit: compactionBatch, CompactionSleepInterval: compactionRest})
	return &engine{be: be, le: le, kv: st, hashes: mvcc.NewHashStorage(lg, st)}
}

// close stops the store and the lessor, removes the leases in drop from
// the database, commits and closes it, and counts the leases left.
func (e *engine) close(drop []lease.LeaseID) (leases int, err error) {
	e.kv.Close()
	e.le.Stop()
	tx := e.be.BatchTx()
	tx.LockOutsideApply()
	for _, id := range drop {
		schema.UnsafeDeleteLease(tx, &leasepb.Lease{ID: int64(id)})
	}
	leases = len(schema.MustUnsafeGetAllLeases(tx))
	tx.Unlock()
	e.be.ForceCommit()
	if err := e.be.Close(); err != nil {
		return 0, fmt.Errorf("close the replayed database: %w", err)
	}
	return leases, nil
}

// etcdCluster is what the lessor asks the cluster: its version.
type etcdCluster struct{}

func (etcdCluster) Version() *semver.Version { return semver.Must(semver.NewVersion(version.Version)) }

// run is one replay's progress.
type run struct {
	o    Options
	e    *engine
	base int64
	next int64 // the revision due next
	book *leaseBook
	room *heapRoom
	seg  *manifest.SegmentHead // the segment being read
	read int64                 // revisions decoded
	// pending counts the bytes of keys and values applied since the
	// replay last made the backend commit.
	pending int
	// proved is the proof that matched.
	proved *manifest.LogHash
}

func (r *run) segFirst() int64 {
	if r.seg == nil {
		return r.base + 1
	}
	return r.seg.First
}

func (r *run) replay(ctx context.Context) error {
	n := r.o.Revision
	if p := r.o.Proof; p != nil && p.Revision <= r.base {
		if p.Revision < r.base {
			r.o.Logger.Info("the proof is older than the snapshot; not checked", "proof", p.Revision, "base", r.base)
		} else if err := r.prove(ctx, p); err != nil {
			return err
		}
	}
	var prev *manifest.SegmentHead
	if r.o.Source != nil {
		chain := readChain(ctx, r.o.Source, n)
		defer chain.close()
		for prev == nil || prev.Last < n {
			seg := chain.next()
			if errors.Is(seg.err, io.EOF) {
				break
			}
			if seg.err != nil {
				if prev == nil {
					return fmt.Errorf("read the log's first segment: %w", seg.err)
				}
				return fmt.Errorf("read the segment after %d..%d: %w", prev.First, prev.Last, seg.err)
			}
			h := seg.head
			var err error
			switch {
			case prev != nil && h.First != prev.Last+1:
				err = fmt.Errorf("%w: segment %d..%d follows %d..%d", ErrGap, h.First, h.Last, prev.First, prev.Last)
			case prev == nil && h.First > r.base+1 && n > r.base:
				err = fmt.Errorf("%w: the log starts at segment %d..%d, the snapshot holds up to revision %d", ErrGap, h.First, h.Last, r.base)
			default:
				err = r.segment(ctx, seg)
			}
			// The body's decoder holds goroutines and buffers: they are
			// released when the body ends, and here when it did not.
			seg.revs.close()
			if err != nil {
				return err
			}
			prev = h
		}
	}
	if r.next <= n {
		reached := r.base
		if prev != nil {
			reached = max(reached, prev.Last)
		}
		return fmt.Errorf("%w: the log reaches revision %d, not %d", ErrGap, reached, n)
	}
	r.progress()
	return nil
}

// segment reads one segment to its end and applies its revisions from
// the snapshot's on, up to the target.
func (r *run) segment(ctx context.Context, seg opened) error {
	h := seg.head
	r.seg = h
	recs := seg.leases
	if len(recs) != h.Leases {
		return fmt.Errorf("%w: segment %d..%d holds %d lease records, its head says %d", manifest.ErrLogBody, h.First, h.Last, len(recs), h.Leases)
	}
	r.book.segment(recs)
	last := h.First - 1
	for {
		rev, err := seg.revs.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("segment %d..%d after revision %d: %w", h.First, h.Last, last, err)
		}
		if rev.Revision != last+1 || rev.Revision > h.Last {
			return fmt.Errorf("%w: segment %d..%d holds revision %d after %d", manifest.ErrLogBody, h.First, h.Last, rev.Revision, last)
		}
		last = rev.Revision
		if rev.Revision > r.base && rev.Revision <= r.o.Revision {
			if err := r.step(ctx, rev); err != nil {
				return err
			}
		}
		if r.read++; r.read%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			r.room.fit()
			r.progress()
		}
	}
	if last != h.Last {
		return fmt.Errorf("%w: segment %d..%d ends at revision %d", manifest.ErrLogBody, h.First, h.Last, last)
	}
	return nil
}

// step applies the revision due next, and proves the replay there when
// the proof is at it.
func (r *run) step(ctx context.Context, rev *manifest.LogRevision) error {
	if rev.Revision != r.next {
		h := r.seg
		return fmt.Errorf("%w: segment %d..%d gives revision %d where %d is due", ErrGap, h.First, h.Last, rev.Revision, r.next)
	}
	if err := r.apply(rev); err != nil {
		return err
	}
	r.next++
	if p := r.o.Proof; p != nil && p.Revision == rev.Revision {
		return r.prove(ctx, p)
	}
	if (rev.Revision-r.base)%compactEvery == 0 {
		return r.compact(ctx, rev.Revision)
	}
	return nil
}

// compactEvery is how many revisions the replay applies between its own
// compactions. etcd's index holds every revision since the last
// compaction, so without them a long log grows the heap with every
// revision replayed; the restored member is marked compacted at its
// bumped revision anyway, so no history it could serve is lost. A
// variable, so that tests compact often.
var compactEvery int64 = 100_000

// compact compacts the store to rev, as etcd's own compaction would,
// to keep the index's memory to what it holds now. Before the proof it
// stops at the proof's compaction: the proof hashes with the source's.
func (r *run) compact(ctx context.Context, rev int64) error {
	if p := r.o.Proof; p != nil && r.proved == nil && p.Revision > r.base {
		rev = min(rev, p.CompactRevision)
	}
	if rev <= r.e.kv.FirstRev() {
		return nil
	}
	return r.compactTo(ctx, rev)
}

// compactTo compacts the store to rev and waits for it.
func (r *run) compactTo(ctx context.Context, rev int64) error {
	// A revision already compacted gives a channel that closes once
	// earlier compactions are done (the snapshot's may resume).
	ch, err := r.e.kv.Compact(traceutil.TODO(), rev)
	if err != nil && !errors.Is(err, mvcc.ErrCompacted) {
		return fmt.Errorf("compact to %d: %w", rev, err)
	}
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (r *run) progress() {
	if r.o.Progress != nil {
		r.o.Progress(r.next-1-r.base, r.o.Revision-r.base)
	}
}

// apply makes one revision: one write transaction, its events in order,
// each checked against what the source's watch reported.
func (r *run) apply(rev *manifest.LogRevision) error {
	// A put on a lease the lessor does not know panics in mvcc, and
	// granting takes the backend's lock the transaction holds: grant
	// first.
	for i := range rev.Events {
		if ev := &rev.Events[i]; !ev.Delete && ev.Lease != 0 {
			if err := r.ensureLease(rev.Revision, lease.LeaseID(ev.Lease)); err != nil {
				return err
			}
		}
	}
	txn := r.e.kv.Write(traceutil.TODO())
	if at := txn.Rev(); at != rev.Revision-1 {
		txn.End()
		return r.mismatch(rev.Revision, "the replay is at revision %d", at)
	}
	for i := range rev.Events {
		ev := &rev.Events[i]
		if !ev.Delete {
			txn.Put(ev.Key, ev.Value, lease.LeaseID(ev.Lease))
			continue
		}
		id := r.e.le.GetLease(lease.LeaseItem{Key: string(ev.Key)})
		if n, _ := txn.DeleteRange(ev.Key, nil); n != 1 {
			txn.End()
			return r.mismatch(rev.Revision, "the source deletes key %q, which the replay does not have", ev.Key)
		}
		if id != lease.NoLease {
			r.book.deleted[int64(id)] = rev.Revision
		}
	}
	// Each event made one change, in order: the store's own record of
	// what it wrote is the per-event proof.
	changes := txn.Changes()
	for i := range rev.Events {
		ev, kv := &rev.Events[i], changes[i]
		if !ev.Delete && (kv.CreateRevision != ev.CreateRevision || kv.Version != ev.Version) {
			txn.End()
			return r.mismatch(rev.Revision, "key %q has create revision %d and version %d in the replay, %d and %d in the source",
				ev.Key, kv.CreateRevision, kv.Version, ev.CreateRevision, ev.Version)
		}
	}
	txn.End()
	for i := range rev.Events {
		r.pending += len(rev.Events[i].Key) + len(rev.Events[i].Value)
	}
	if r.pending >= commitBytes {
		r.e.be.ForceCommit()
		r.pending = 0
	}
	if at := r.e.kv.Rev(); at != rev.Revision {
		return r.mismatch(rev.Revision, "the replay arrived at revision %d", at)
	}
	return nil
}

// ensureLease grants a lease a put names when the lessor does not know
// it, with the TTL its records give.
func (r *run) ensureLease(rev int64, id lease.LeaseID) error {
	if r.e.le.Lookup(id) != nil {
		return nil
	}
	ttl := r.book.ttl[int64(id)]
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if _, err := r.e.le.Grant(id, ttl); err != nil {
		h := r.seg
		return fmt.Errorf("segment %d..%d, revision %d: grant lease %x with TTL %d: %w", h.First, h.Last, rev, int64(id), ttl, err)
	}
	return nil
}

func (r *run) mismatch(rev int64, format string, args ...any) error {
	h := r.seg
	return fmt.Errorf("%w: segment %d..%d, revision %d: %s", ErrMismatch, h.First, h.Last, rev, fmt.Sprintf(format, args...))
}

// prove compacts the store to the proof's compaction, as the source was
// when it answered, and compares the keyspace's hash at the proof's
// revision with the source's HashKV.
func (r *run) prove(ctx context.Context, p *manifest.LogHash) error {
	if p.CompactRevision > 0 {
		if err := r.compactTo(ctx, p.CompactRevision); err != nil {
			return fmt.Errorf("for the proof at %d: %w", p.Revision, err)
		}
	}
	if first := r.e.kv.FirstRev(); first > p.CompactRevision {
		r.o.Logger.Warn("the snapshot is compacted past the proof's compaction; proof not checked",
			"proof", p.Revision, "proofCompacted", p.CompactRevision, "compacted", first)
		return nil
	}
	h, _, err := r.e.hashes.HashByRev(p.Revision)
	if err != nil {
		return fmt.Errorf("hash the replayed keyspace at %d: %w", p.Revision, err)
	}
	if h.Hash != p.Hash {
		where := "the snapshot"
		if s := r.seg; s != nil {
			where = fmt.Sprintf("segment %d..%d", s.First, s.Last)
		}
		return fmt.Errorf("%w: %s, revision %d: replayed keyspace at %d (compacted at %d) hashes %08x, the source's HashKV %08x",
			ErrMismatch, where, p.Revision, p.Revision, p.CompactRevision, h.Hash, p.Hash)
	}
	r.proved = p
	return nil
}

// checkDB refuses what etcd's backend would panic on or create: a
// missing file, or one bbolt cannot open (a read-only open reads only
// the meta pages).
func checkDB(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a file", path)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("%s is not an etcd database: %w", path, err)
	}
	return db.Close()
}

// syncFile makes the replayed database durable: the backend ran without
// fsync.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}
