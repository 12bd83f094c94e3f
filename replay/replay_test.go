package replay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// TestReplay captures a real etcd's revisions the way the agent does
// (a snapshot, a watch from before it, lease records) and replays the
// log onto copies of the snapshot to many revisions, comparing every key
// and lease with the source.
func TestReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := newSource(ctx, t)
	// Every case twice: as it runs, and compacting every few revisions
	// (a long log's own compactions, held back before the proof).
	every := compactEvery
	t.Cleanup(func() { compactEvery = every })
	for _, tc := range []struct {
		name  string
		every int64
	}{{"", every}, {"compacting", 7}} {
		compactEvery = tc.every
		for _, n := range src.targets {
			t.Run(fmt.Sprintf("%sN=%d", tc.name, n), func(t *testing.T) {
				db := src.copySnapshot(t)
				proof := src.proofAt(n)
				var progressed [2]int64
				res, err := Replay(ctx, Options{DB: db, Revision: n, Source: src.chain(), Proof: proof,
					Progress: func(applied, total int64) { progressed = [2]int64{applied, total} }})
				if err != nil {
					t.Fatal(err)
				}
				want := Result{Base: src.base, Revision: n, Applied: n - src.base, Proved: proof}
				want.Leases, want.Dropped = src.leasesAt(n)
				if *res != want {
					t.Errorf("result %+v, want %+v", *res, want)
				}
				if progressed != [2]int64{n - src.base, n - src.base} {
					t.Errorf("last progress %v, want %d of %d", progressed, n-src.base, n-src.base)
				}
				got := readDB(t, db)
				if got.rev != n {
					t.Errorf("database at revision %d, want %d", got.rev, n)
				}
				src.compareKeys(ctx, t, n, got.kvs)
				src.compareLeases(t, n, got.leases)
			})
		}
		if src.proofs[src.compacted] == nil {
			t.Error("no segment ends at the compaction: the proof at a compacted revision went untested")
		}
	}
}

// TestReplayRefuses holds the replay to its sentinels.
func TestReplayRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := newSource(ctx, t)
	segs, end := src.segs, src.end
	// A synthetic segment continuing the snapshot directly.
	oneRevision := func(evs ...manifest.LogEvent) []encoded {
		return []encoded{encode(t, nil, manifest.LogRevision{Revision: src.base + 1, Seen: time.Now(), Events: evs})}
	}
	// The first segment that starts after the snapshot's revision + 1.
	late := slices.IndexFunc(segs, func(s encoded) bool { return s.head.First > src.base+1 })
	proof := src.proofAt(end)
	wrong := *proof
	wrong.Hash++
	for _, c := range []struct {
		name  string
		segs  []encoded
		n     int64
		proof *manifest.LogHash
		want  error
	}{
		{"a segment missing", slices.Delete(slices.Clone(segs), 3, 4), end, nil, ErrGap},
		{"the log ends before the target", segs, end + 5, nil, ErrGap},
		{"the log starts after the snapshot", segs[late:], end, nil, ErrGap},
		{"no log", nil, src.base + 1, nil, ErrGap},
		{"the target before the snapshot", segs, src.base - 1, nil, ErrBeforeBase},
		{"a segment repeated", slices.Insert(slices.Clone(segs), 3, segs[2]), end, nil, ErrGap},
		{"a delete of a key the snapshot lacks", oneRevision(manifest.LogEvent{Delete: true, Key: []byte("nowhere")}), src.base + 1, nil, ErrMismatch},
		{"a put with the wrong version", oneRevision(manifest.LogEvent{Key: []byte("new"), Value: []byte("v"), CreateRevision: src.base + 1, Version: 2}), src.base + 1, nil, ErrMismatch},
		{"a put with the wrong create revision", oneRevision(manifest.LogEvent{Key: []byte(src.snapKey), Value: []byte("v"), CreateRevision: src.base + 1, Version: 2}), src.base + 1, nil, ErrMismatch},
		{"a wrong HashKV", segs, end, &wrong, ErrMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Replay(ctx, Options{DB: src.copySnapshot(t), Revision: c.n, Source: &sliceSource{segs: c.segs}, Proof: c.proof})
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}

	t.Run("the target at the snapshot", func(t *testing.T) {
		db := src.copySnapshot(t)
		res, err := Replay(ctx, Options{DB: db, Revision: src.base})
		if err != nil || res.Applied != 0 || res.Base != src.base {
			t.Fatalf("replay to the snapshot's own revision: %+v, %v", res, err)
		}
		if got := readDB(t, db); got.rev != src.base {
			t.Errorf("database at revision %d, want %d", got.rev, src.base)
		}
	})
	t.Run("a proof older than the snapshot", func(t *testing.T) {
		old := &manifest.LogHash{Revision: src.base - 1, CompactRevision: src.base - 2, Hash: 1}
		res, err := Replay(ctx, Options{DB: src.copySnapshot(t), Revision: end, Source: src.chain(), Proof: old})
		if err != nil || res.Proved != nil {
			t.Fatalf("replay with a proof before the snapshot: %+v, %v", res, err)
		}
	})
}

// leaseFact is what the test knows of one lease in the source.
type leaseFact struct {
	name    string
	id      int64
	ttl     int64 // granted TTL; the replay's when recorded, else DefaultTTL
	granted int64 // header revision of the grant; 0 before the snapshot
	revoked int64 // header revision of the revoke; 0 if never
	put     int64 // first put on it after the snapshot's revision; 0 if none
}

func (f *leaseFact) aliveAt(n int64) bool {
	return f.granted <= n && (f.revoked == 0 || f.revoked > n)
}

type source struct {
	t         *testing.T
	cli       *clientv3.Client
	endpoint  string
	snapshot  string
	base, end int64
	compacted int64
	snapKey   string // a key the snapshot holds
	segs      []encoded
	proofs    map[int64]*manifest.LogHash
	leases    []*leaseFact
	targets   []int64
}

// newSource starts an etcd, loads it, takes a snapshot, captures the
// revisions after it into segments and records the lease facts.
func newSource(ctx context.Context, t *testing.T) *source {
	s := &source{t: t, proofs: map[int64]*manifest.LogHash{}}
	s.cli, s.endpoint = testenv.StartEmbedded(t, testenv.EmbeddedOptions{})
	l := &loader{ctx: ctx, t: t, cli: s.cli, rng: rand.New(rand.NewPCG(7, 11)), live: map[string]bool{}}

	// Before the snapshot: keys, overwrites, a compaction, and leases.
	for range 30 {
		l.random()
	}
	l.compact(l.rev - 10)
	l0 := l.grant("l0", 300)
	l.put("lease/l0/a", "x", l0.id)
	l.put("lease/l0/b", "x", l0.id)
	l1 := l.grant("l1", 300)
	l7 := l.grant("l7", 300)
	l.put("lease/l7/a", "x", l7.id)
	for _, f := range []*leaseFact{l0, l1, l7} {
		f.granted = 0
	}
	s.snapKey = "lease/l0/a"
	r0 := l.rev
	// Revisions after the manifest's lower bound that the snapshot holds.
	for range 3 {
		l.random()
	}
	s.snapshot = takeSnapshot(ctx, t, s.cli)
	w := watch(ctx, t, s.cli, r0+1)
	l.logging = true

	// The log. Leases: l1 revoked without keys; l2 revoked with its keys
	// (recorded at its segment's end, as the agent sees it); l3's key
	// deleted, the lease revoked much later; l4 kept with a key; l5 kept
	// without; l6 granted and revoked without keys; l7 revoked with its
	// key; l8 on a key and never recorded; l0's keys overwritten.
	var l2, l3, l6, l8 *leaseFact
	var revokedWithKeys int64
	for step := range 160 {
		switch step {
		case 4:
			s.compacted = l.rev
		case 8:
			w.waitFor(t, l.rev)
			l.compact(s.compacted)
		case 10:
			l.revoke(l1)
		case 20:
			l2 = l.grant("l2", 300)
			l.txn(clientv3.OpPut("lease/l2/a", "x", clientv3.WithLease(clientv3.LeaseID(l2.id))),
				clientv3.OpPut("lease/l2/b", "x", clientv3.WithLease(clientv3.LeaseID(l2.id))))
			l.onLease(l2.id)
		case 30:
			l3 = l.grant("l3", 300)
			l.put("lease/l3/a", "x", l3.id)
		case 35:
			l.del("lease/l3/a")
		case 40:
			l.put("lease/l4/a", "x", l.grant("l4", 300).id)
		case 45:
			l.grant("l5", 300)
		case 50:
			l6 = l.grant("l6", 300)
		case 70:
			l.revoke(l2)
			revokedWithKeys = l2.revoked
		case 80:
			l.revoke(l7)
		case 90:
			l.revoke(l6)
		case 100:
			l8 = l.grant("l8", 300)
			l8.ttl = DefaultTTL
			l.put("lease/l8/a", "x", l8.id)
		case 110:
			l.put("lease/l0/a", "y", l0.id)
		case 120:
			l.revoke(l3)
		}
		l.random()
	}
	s.leases = l.leases
	s.end = l.rev
	w.waitFor(t, s.end)
	revs := w.stop(t)

	// Segments of irregular length, one ending at the compaction, none
	// at the revocation of l2 (so that its record comes later).
	var lengths []int
	for i := 0; i < len(revs); {
		n := 3 + l.rng.IntN(20)
		for j := i; j < min(i+n, len(revs)); j++ {
			if revs[j].Revision == s.compacted {
				n = j - i + 1
			}
		}
		if k := min(i+n, len(revs)) - 1; revs[k].Revision == revokedWithKeys && k+1 < len(revs) {
			n++
		}
		n = min(n, len(revs)-i)
		lengths = append(lengths, n)
		i += n
	}
	at := 0
	for i, n := range lengths {
		chunk := revs[at : at+n]
		at += n
		first, last := chunk[0].Revision, chunk[len(chunk)-1].Revision
		var recs []manifest.LeaseRecord
		for _, f := range s.leases {
			if f.granted > 0 && f != l8 && (first <= f.granted || i == 0) && f.granted <= last {
				recs = append(recs, manifest.LeaseRecord{ID: f.id, TTL: f.ttl, Revision: f.granted})
			}
			switch {
			case f.revoked == 0 || f.revoked < first || f.revoked > last:
			case f == l2:
				recs = append(recs, manifest.LeaseRecord{ID: f.id, Revoked: true, Revision: last})
			default:
				recs = append(recs, manifest.LeaseRecord{ID: f.id, Revoked: true, Revision: f.revoked})
			}
		}
		s.segs = append(s.segs, encode(t, recs, chunk...))
	}
	for _, sg := range s.segs {
		if last := sg.head.Last; last >= s.compacted {
			resp, err := s.cli.HashKV(ctx, s.endpoint, last)
			if err != nil {
				t.Fatal(err)
			}
			s.proofs[last] = &manifest.LogHash{Revision: last, CompactRevision: resp.CompactRevision, Hash: resp.Hash}
		}
	}
	s.base = readDB(t, s.snapshot).rev
	if s.base != r0+3 {
		t.Fatalf("snapshot at revision %d, want %d", s.base, r0+3)
	}

	// Targets: random ones above the compaction, and the edges of the
	// lease records.
	set := map[int64]bool{s.compacted: true, s.end: true, revokedWithKeys: true, revokedWithKeys - 1: true}
	for _, sg := range s.segs {
		if sg.head.First <= revokedWithKeys && revokedWithKeys <= sg.head.Last {
			set[sg.head.Last-1], set[sg.head.Last] = true, true
		}
	}
	for len(set) < 16 {
		set[s.compacted+l.rng.Int64N(s.end-s.compacted+1)] = true
	}
	for n := range set {
		s.targets = append(s.targets, n)
	}
	slices.Sort(s.targets)
	return s
}

func (s *source) chain() Source { return &sliceSource{segs: s.segs} }

func (s *source) copySnapshot(t *testing.T) string {
	data, err := os.ReadFile(s.snapshot)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(db, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return db
}

// proofAt is the newest HashKV at a segment end at or before n.
func (s *source) proofAt(n int64) *manifest.LogHash {
	var p *manifest.LogHash
	for _, sg := range s.segs {
		if sg.head.Last <= n && s.proofs[sg.head.Last] != nil {
			p = s.proofs[sg.head.Last]
		}
	}
	return p
}

// leasesAt says how many leases exist at n, and how many of those the
// replay met (in the snapshot, or on a put) and had to drop.
func (s *source) leasesAt(n int64) (alive, dropped int) {
	for _, f := range s.leases {
		switch {
		case f.aliveAt(n):
			alive++
		case f.granted == 0 && f.revoked > s.base || f.put > s.base && f.put <= n:
			dropped++
		}
	}
	return alive, dropped
}

func (s *source) compareKeys(ctx context.Context, t *testing.T, n int64, got []*mvccpb.KeyValue) {
	t.Helper()
	resp, err := s.cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(n))
	if err != nil {
		t.Fatal(err)
	}
	want := resp.Kvs
	if len(want) < 10 {
		t.Fatalf("the source holds %d keys at %d: the load did not work", len(want), n)
	}
	if len(got) != len(want) {
		t.Errorf("%d keys at %d, the source has %d", len(got), n, len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || g.CreateRevision != w.CreateRevision ||
			g.ModRevision != w.ModRevision || g.Version != w.Version || g.Lease != w.Lease {
			t.Errorf("key %d at %d:\n got %s=%q create %d mod %d version %d lease %x\nwant %s=%q create %d mod %d version %d lease %x", i, n,
				g.Key, g.Value, g.CreateRevision, g.ModRevision, g.Version, g.Lease,
				w.Key, w.Value, w.CreateRevision, w.ModRevision, w.Version, w.Lease)
		}
	}
}

func (s *source) compareLeases(t *testing.T, n int64, got map[int64]int64) {
	t.Helper()
	want := map[int64]int64{}
	for _, f := range s.leases {
		if f.aliveAt(n) {
			want[f.id] = f.ttl
		}
	}
	for _, f := range s.leases {
		gotTTL, ok := got[f.id]
		if ok != f.aliveAt(n) || ok && gotTTL != want[f.id] {
			t.Errorf("lease %s (%x, granted %d, revoked %d) at %d: present %v with TTL %d, want present %v with TTL %d",
				f.name, f.id, f.granted, f.revoked, n, ok, gotTTL, f.aliveAt(n), want[f.id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d leases at %d, want %d", len(got), n, len(want))
	}
}

// loader writes to the source: every call makes at most one revision
// and notes it.
type loader struct {
	ctx    context.Context
	t      *testing.T
	cli    *clientv3.Client
	rng    *rand.Rand
	rev    int64
	live   map[string]bool
	leases []*leaseFact
	// logging is set once the snapshot is taken.
	logging bool
}

func (l *loader) check(err error) {
	l.t.Helper()
	if err != nil {
		l.t.Fatal(err)
	}
}

func (l *loader) key() string { return fmt.Sprintf("k%02d", l.rng.IntN(30)) }

func (l *loader) value() string {
	if l.rng.IntN(40) == 0 {
		return "" // etcd stores empty values too
	}
	return fmt.Sprintf("%x", l.rng.Uint64())[:1+l.rng.IntN(15)]
}

func (l *loader) liveKey() (string, bool) {
	keys := make([]string, 0, len(l.live))
	for k := range l.live {
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return "", false
	}
	slices.Sort(keys)
	return keys[l.rng.IntN(len(keys))], true
}

// random makes one revision: a put, a delete or a transaction of several.
func (l *loader) random() {
	switch r := l.rng.IntN(10); {
	case r < 5:
		l.put(l.key(), l.value(), 0)
	case r < 7:
		if k, ok := l.liveKey(); ok {
			l.del(k)
		} else {
			l.put(l.key(), l.value(), 0)
		}
	default:
		var ops []clientv3.Op
		used := map[string]bool{}
		for range 2 + l.rng.IntN(3) {
			k := l.key()
			if used[k] {
				continue
			}
			used[k] = true
			if l.live[k] && l.rng.IntN(3) == 0 {
				ops = append(ops, clientv3.OpDelete(k))
			} else {
				ops = append(ops, clientv3.OpPut(k, l.value()))
			}
		}
		l.txn(ops...)
	}
}

func (l *loader) put(key, value string, id int64) {
	l.t.Helper()
	var opts []clientv3.OpOption
	if id != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(id)))
	}
	resp, err := l.cli.Put(l.ctx, key, value, opts...)
	l.check(err)
	l.rev = resp.Header.Revision
	if id == 0 {
		l.live[key] = true
	}
	l.onLease(id)
}

// onLease notes the first put on lease id after the snapshot.
func (l *loader) onLease(id int64) {
	for _, f := range l.leases {
		if f.id == id && f.put == 0 && l.logging {
			f.put = l.rev
		}
	}
}

func (l *loader) del(key string) {
	l.t.Helper()
	resp, err := l.cli.Delete(l.ctx, key)
	l.check(err)
	if resp.Deleted != 1 {
		l.t.Fatalf("delete %s: %d deleted", key, resp.Deleted)
	}
	l.rev = resp.Header.Revision
	delete(l.live, key)
}

func (l *loader) txn(ops ...clientv3.Op) {
	l.t.Helper()
	resp, err := l.cli.Txn(l.ctx).Then(ops...).Commit()
	l.check(err)
	l.rev = resp.Header.Revision
	for _, op := range ops {
		k := string(op.KeyBytes())
		switch {
		case op.IsDelete():
			delete(l.live, k)
		case op.IsPut() && len(op.KeyBytes()) > 0 && k[0] == 'k':
			l.live[k] = true
		}
	}
}

func (l *loader) grant(name string, ttl int64) *leaseFact {
	l.t.Helper()
	resp, err := l.cli.Grant(l.ctx, ttl)
	l.check(err)
	f := &leaseFact{name: name, id: int64(resp.ID), ttl: ttl, granted: resp.Revision}
	l.leases = append(l.leases, f)
	return f
}

func (l *loader) revoke(f *leaseFact) {
	l.t.Helper()
	resp, err := l.cli.Revoke(l.ctx, clientv3.LeaseID(f.id))
	l.check(err)
	l.rev = resp.Header.Revision
	f.revoked = l.rev
}

func (l *loader) compact(rev int64) {
	l.t.Helper()
	_, err := l.cli.Compact(l.ctx, rev, clientv3.WithCompactPhysical())
	l.check(err)
}

// takeSnapshot writes the source's snapshot with etcd's trailing sha256
// cut off, as restore prepares one.
func takeSnapshot(ctx context.Context, t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%512 != sha256.Size {
		t.Fatalf("snapshot of %d bytes has no trailing hash", len(data))
	}
	path := filepath.Join(t.TempDir(), "snapshot.db")
	if err := os.WriteFile(path, data[:len(data)-sha256.Size], 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// captured gathers a watch's events into revisions, as the agent does.
type captured struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	revs   []manifest.LogRevision
	err    error
}

func watch(ctx context.Context, t *testing.T, cli *clientv3.Client, from int64) *captured {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	c := &captured{cancel: cancel, done: make(chan struct{})}
	wch := cli.Watch(clientv3.WithRequireLeader(wctx), "", clientv3.WithPrefix(), clientv3.WithRev(from))
	go func() {
		defer close(c.done)
		for resp := range wch {
			c.mu.Lock()
			if err := resp.Err(); err != nil && wctx.Err() == nil {
				c.err = err
			}
			for _, ev := range resp.Events {
				kv := ev.Kv
				if n := len(c.revs); n == 0 || c.revs[n-1].Revision != kv.ModRevision {
					c.revs = append(c.revs, manifest.LogRevision{Revision: kv.ModRevision, Seen: time.Now()})
				}
				le := manifest.LogEvent{Key: kv.Key}
				if ev.Type == mvccpb.DELETE {
					le.Delete = true
				} else {
					le.Value, le.CreateRevision, le.Version, le.Lease = kv.Value, kv.CreateRevision, kv.Version, kv.Lease
				}
				r := &c.revs[len(c.revs)-1]
				r.Events = append(r.Events, le)
			}
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *captured) waitFor(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		n, err := len(c.revs), c.err
		reached := n > 0 && c.revs[n-1].Revision >= rev
		c.mu.Unlock()
		switch {
		case err != nil:
			t.Fatal(err)
		case reached:
			return
		case time.Now().After(deadline):
			t.Fatalf("watch did not reach revision %d", rev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *captured) stop(t *testing.T) []manifest.LogRevision {
	t.Helper()
	c.cancel()
	<-c.done
	return c.revs
}

// encoded is one segment's head and plaintext body.
type encoded struct {
	head  manifest.SegmentHead
	plain []byte
}

func encode(t testing.TB, recs []manifest.LeaseRecord, revs ...manifest.LogRevision) encoded {
	t.Helper()
	var enc manifest.LogEncoder
	for _, l := range recs {
		enc.AddLease(l)
	}
	for _, r := range revs {
		if err := enc.AddRevision(r); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := enc.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	first, last, seenFirst, seenLast := enc.Range()
	return encoded{head: manifest.SegmentHead{First: first, Last: last, SeenFirst: seenFirst, SeenLast: seenLast, Leases: enc.Leases()}, plain: buf.Bytes()}
}

// sliceSource yields encoded segments, each with a fresh reader.
type sliceSource struct {
	segs []encoded
	i    int
}

func (s *sliceSource) Next(context.Context) (*Segment, error) {
	if s.i == len(s.segs) {
		return nil, io.EOF
	}
	e := s.segs[s.i]
	s.i++
	body, err := manifest.NewLogReader(bytes.NewReader(e.plain), int64(len(e.plain)), e.head.First, e.head.Last)
	if err != nil {
		return nil, err
	}
	return &Segment{Head: &e.head, Body: body}, nil
}

// dbState is what a database holds at its newest revision.
type dbState struct {
	rev    int64
	kvs    []*mvccpb.KeyValue
	leases map[int64]int64 // ID: TTL
}

// readDB opens a database with etcd's storage, as a member would, and
// reads every key and lease; bbolt checks its pages first.
func readDB(t *testing.T, path string) dbState {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatalf("bbolt check of %s: %v", path, err)
	}

	lg := zap.NewNop()
	be := backend.NewDefaultBackend(lg, path)
	defer be.Close()
	le := lease.NewLessor(lg, be, etcdCluster{}, lease.LessorConfig{})
	defer le.Stop()
	kv := mvcc.NewStore(lg, be, le, mvcc.StoreConfig{})
	defer kv.Close()
	txn := kv.Read(mvcc.ConcurrentReadTxMode, traceutil.TODO())
	defer txn.End()
	res, err := txn.Range(context.Background(), []byte{0}, []byte{}, mvcc.RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := dbState{rev: txn.Rev(), kvs: res.KVs, leases: map[int64]int64{}}
	for _, l := range le.Leases() {
		st.leases[int64(l.ID)] = l.TTL()
	}
	return st
}

// emptyDB makes an etcd database holding nothing, at revision 1.
func emptyDB(tb testing.TB) (path string, rev int64) {
	tb.Helper()
	path = filepath.Join(tb.TempDir(), "db")
	e := open(zap.NewNop(), path)
	rev = e.kv.Rev()
	if _, err := e.close(nil); err != nil {
		tb.Fatal(err)
	}
	return path, rev
}

// synthetic encodes n revisions after base, one put of size bytes each,
// over keys keys, in segments of perSegment revisions.
func synthetic(tb testing.TB, base int64, n, size, perSegment, keys int) []encoded {
	tb.Helper()
	value := bytes.Repeat([]byte("v"), size)
	var segs []encoded
	var chunk []manifest.LogRevision
	created := make([]int64, keys)
	versions := make([]int64, keys)
	for i := range n {
		rev := base + 1 + int64(i)
		k := i % keys
		if created[k] == 0 {
			created[k] = rev
		}
		versions[k]++
		chunk = append(chunk, manifest.LogRevision{Revision: rev, Seen: time.Unix(0, rev), Events: []manifest.LogEvent{{
			Key: fmt.Appendf(nil, "/registry/bench/%06d", k), Value: value, CreateRevision: created[k], Version: versions[k]}}})
		if len(chunk) == perSegment || i == n-1 {
			segs = append(segs, encode(tb, nil, chunk...))
			chunk = chunk[:0]
		}
	}
	return segs
}

// TestReplayLong replays more revisions than go between looks at the
// context: progress is reported as it goes, and a cancelled context
// stops the replay.
func TestReplayLong(t *testing.T) {
	const n = 3*checkEvery + 10
	db, base := emptyDB(t)
	segs := synthetic(t, base, n, 16, 5000, 10000)
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Replay(cctx, Options{DB: db, Revision: base + n, Source: &sliceSource{segs: segs}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled replay: %v", err)
	}
	db, _ = emptyDB(t)
	var calls [][2]int64
	res, err := Replay(context.Background(), Options{DB: db, Revision: base + n, Source: &sliceSource{segs: segs},
		Progress: func(applied, total int64) { calls = append(calls, [2]int64{applied, total}) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != n || len(calls) != 4 || calls[0] != [2]int64{checkEvery, n} || calls[3] != [2]int64{n, n} {
		t.Errorf("applied %d, progress %v", res.Applied, calls)
	}
}

// TestReplayRefusesFiles holds Replay to errors, not etcd's panics, on
// files that are no database.
func TestReplayRefusesFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing"), junk, dir} {
		if _, err := Replay(context.Background(), Options{DB: path, Revision: 1}); err == nil {
			t.Errorf("%s: no error", path)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a replay onto a missing file created it: %v", err)
	}
}

// fileSource yields segments written to files, one read at a time, as
// a restore's staging holds them: the replay's heap is its own.
type fileSource struct {
	heads []manifest.SegmentHead
	paths []string
	i     int
}

func onDisk(tb testing.TB, segs []encoded) *fileSource {
	tb.Helper()
	s := &fileSource{}
	for i, e := range segs {
		p := filepath.Join(tb.TempDir(), fmt.Sprint(i))
		if err := os.WriteFile(p, e.plain, 0o600); err != nil {
			tb.Fatal(err)
		}
		s.heads, s.paths = append(s.heads, e.head), append(s.paths, p)
	}
	return s
}

func (s *fileSource) Next(context.Context) (*Segment, error) {
	if s.i == len(s.paths) {
		return nil, io.EOF
	}
	h, p := &s.heads[s.i], s.paths[s.i]
	s.i++
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	body, err := manifest.NewLogReader(f, fi.Size(), h.First, h.Last)
	if err != nil {
		return nil, err
	}
	return &Segment{Head: h, Body: body}, nil
}

// BenchmarkReplay replays b.N revisions of one 1 KiB put each onto an
// empty database, over 10,000 keys and over 200,000 (etcd's key index
// then outgrows kdr's default soft heap cap), reading the segments from
// files. Run it with GOMEMLIMIT unset and the cap set as kdr's main sets
// it (-memlimit), and set to off.
func BenchmarkReplay(b *testing.B) {
	for _, keys := range []int{10_000, 200_000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			db, base := emptyDB(b)
			benchReplay(b, db, base, onDisk(b, synthetic(b, base, b.N, 1024, 30000, keys)))
		})
	}
}

// BenchmarkReplayOntoKeys replays b.N revisions onto a database that
// already holds 200,000 keys of 1 KiB, as a full set of a mid-sized
// cluster does.
func BenchmarkReplayOntoKeys(b *testing.B) {
	const keys, perSegment = 200_000, 20_000
	db, base := emptyDB(b)
	segs := synthetic(b, base, keys+b.N, 1024, perSegment, keys)
	if _, err := Replay(context.Background(), Options{DB: db, Revision: base + keys, Source: onDisk(b, segs[:keys/perSegment])}); err != nil {
		b.Fatal(err)
	}
	benchReplay(b, db, base+keys, onDisk(b, segs[keys/perSegment:]))
}

// BenchmarkReplaySealed is BenchmarkReplayOntoKeys through the path a
// restore takes: segments sealed with age and signed as the capture
// writes them, on a local target, each body read, checked against its
// head and decrypted as the replay asks for it. Values are kube-like
// (a few fields of fresh hex each) so that zstd has the work it has
// on a real log.
func BenchmarkReplaySealed(b *testing.B) {
	const keys, perSegment = 200_000, 5000
	ctx := context.Background()
	db, base := emptyDB(b)
	segs := synthetic(b, base, keys, 1024, 20_000, keys)
	if _, err := Replay(ctx, Options{DB: db, Revision: base + keys, Source: onDisk(b, segs)}); err != nil {
		b.Fatal(err)
	}
	target, err := storage.NewLocal("usb", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	key := testenv.NewSigningKey(b)
	rs, ids := testenv.AgeKeys(b)
	log := testenv.PutSet(b, target, key, rs, time.Now(), base+keys)
	rng := rand.New(rand.NewPCG(1, 2))
	versions := make([]int64, keys)
	var chunk []manifest.LogRevision
	for i := range b.N {
		rev := base + keys + 1 + int64(i)
		k := rng.IntN(keys)
		versions[k]++
		v := fmt.Appendf(nil, `{"kind":"ConfigMap","metadata":{"name":"cm-%06d","uid":"%016x","resourceVersion":"%d"},"data":{`, k, rng.Uint64(), rev)
		for f := 0; len(v) < 1000; f++ {
			v = fmt.Appendf(v, `"key-%d":"value-%x setting=%d",`, f, rng.Uint32(), rng.IntN(100))
		}
		chunk = append(chunk, manifest.LogRevision{Revision: rev, Seen: time.Now(), Events: []manifest.LogEvent{{
			Key: fmt.Appendf(nil, "/registry/bench/%06d", k), Value: append(v, "}}"...), CreateRevision: base + 1 + int64(k), Version: versions[k] + 1}}})
		if len(chunk) == perSegment || i == b.N-1 {
			log.Append(b, chunk, nil, nil)
			chunk = chunk[:0]
		}
	}
	chain, err := catalog.ReadChain(ctx, target, key.Trust, log.Base, log.BaseSum)
	if err != nil {
		b.Fatal(err)
	}
	covering, err := chain.Covering(base + keys + int64(b.N))
	if err != nil {
		b.Fatal(err)
	}
	benchReplay(b, db, base+keys, Segments(target, covering, ids))
}

// benchReplay times the replay of b.N revisions from src onto db, at
// base, under the cap -memlimit sets.
func benchReplay(b *testing.B, db string, base int64, src Source) {
	if *memLimit > 0 {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(*memLimit))
	}
	runtime.GC()
	b.ResetTimer()
	res, err := Replay(context.Background(), Options{DB: db, Revision: base + int64(b.N), Source: src})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Applied != int64(b.N) {
		b.Fatalf("applied %d of %d", res.Applied, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rev/s")
}

// memLimit is the soft heap cap the replay benchmarks run under, as
// kdr's main sets it when GOMEMLIMIT is unset (0: Go's default).
var memLimit = flag.Int64("memlimit", 0, "soft heap cap for the replay benchmarks, in bytes (kdr's default: 100663296)")
