package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// callTimeout bounds one lease or hash call to etcd.
const callTimeout = 10 * time.Second

// sealed is a closed segment ready to store: its body's stored bytes and
// its signed head's bytes.
type sealed struct {
	head    *manifest.SegmentHead
	headRaw []byte
	body    []byte
}

// stored is the outcome of storing one segment on every target.
type stored struct {
	s      *sealed
	failed map[string]error
}

// follow watches from ch.next and stores segments until it must stop. It
// holds at most one open segment and one being stored: when the open one
// fills while the other is still being stored, the watch is dropped (the
// etcd client would buffer its events without bound) and follow returns
// errRewatch once nothing is in flight, to watch again from the durable end.
func (c *Capture) follow(ctx context.Context, cli *clientv3.Client, ch *chain) error {
	if ch.pending != nil {
		// The last segment reached no target: the same bytes go again, so
		// that what a failed attempt left on a target is met as ours.
		if err := c.settle(ch, c.storeNow(ctx, ch, ch.pending)); err != nil {
			if errors.Is(err, errRewatch) {
				// Not Pause: a new set announced meanwhile is for run to see.
				ch.retry = min(max(2*ch.retry, time.Second), 3*c.o.Period)
				t := time.NewTimer(ch.retry)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
			return err
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	leases := newLeaseBook(cli)
	enc := &manifest.LogEncoder{}
	if err := leases.startChain(wctx, enc); err != nil {
		return err
	}
	wch := watchAll(wctx, cli, ch.next)
	expect := ch.next
	var inflight *sealed
	done := make(chan stored, 1)
	tick := time.NewTicker(max(c.o.Period/4, 100*time.Millisecond))
	defer tick.Stop()
	// waitStored ends follow: what is in flight is waited for, so that a
	// segment is never stored by two goroutines of one agent.
	waitStored := func(err error) error {
		// No more events are taken: the client must not buffer them.
		cancel()
		if inflight != nil {
			if serr := c.settle(ch, <-done); serr != nil && (err == nil || errors.Is(err, errRewatch)) {
				err = serr
			}
		}
		return err
	}
	// seal closes the open segment and starts storing it.
	seal := func() error {
		s, err := c.seal(wctx, cli, ch, enc, leases)
		if err != nil {
			return err
		}
		inflight = s
		go func() { done <- c.storeNow(ctx, ch, s) }()
		enc = &manifest.LogEncoder{}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return waitStored(nil)
		case <-c.newSet:
			if inflight == nil && enc.Revisions() > 0 {
				if err := seal(); err != nil {
					return waitStored(err)
				}
			}
			return waitStored(nil)
		case r := <-done:
			inflight = nil
			if err := c.settle(ch, r); err != nil {
				return err
			}
		case <-tick.C:
			if inflight != nil || enc.Revisions() == 0 {
				if enc.Revisions() == 0 {
					c.progress(wctx, cli)
				}
				continue
			}
			if _, _, seen, _ := enc.Range(); c.o.Now().Sub(seen) >= c.o.Period {
				if err := seal(); err != nil {
					return waitStored(err)
				}
			}
		case resp, ok := <-wch:
			if !ok {
				return waitStored(ctx.Err())
			}
			if err := c.receive(wctx, resp, &expect, enc, leases); err != nil {
				return waitStored(err)
			}
			if enc.Size() < c.o.MaxBytes {
				continue
			}
			if inflight == nil {
				if err := seal(); err != nil {
					return waitStored(err)
				}
				continue
			}
			c.log.Warn("the targets store segments slower than etcd writes them: watching again from the durable end",
				"durable", ch.next-1, "pending", enc.Revisions())
			cancel()
			return waitStored(errRewatch)
		}
	}
}

// receive adds one watch response to the open segment.
func (c *Capture) receive(ctx context.Context, resp clientv3.WatchResponse, expect *int64, enc *manifest.LogEncoder, leases *leaseBook) error {
	if resp.CompactRevision != 0 {
		return fmt.Errorf("%w: the watch fell behind compaction: revisions up to %d were compacted before they were captured",
			ErrNeedFullSet, resp.CompactRevision)
	}
	if err := resp.Err(); err != nil {
		if errors.Is(err, rpctypes.ErrNoLeader) {
			c.log.Warn("etcd member lost its leader: watching again", "err", err)
			return errRewatch
		}
		return fmt.Errorf("watch: %w", err)
	}
	if resp.IsProgressNotify() {
		if enc.Revisions() == 0 && resp.Header.Revision < *expect {
			c.update(func(s *Status) { s.CaughtUp = c.o.Now() })
		}
		return nil
	}
	now := c.o.Now().UTC()
	var cur *manifest.LogRevision
	flush := func() error {
		if cur == nil {
			return nil
		}
		if cur.Revision != *expect {
			return fmt.Errorf("%w: the watch delivered revision %d where %d was due", ErrNeedFullSet, cur.Revision, *expect)
		}
		if err := enc.AddRevision(*cur); err != nil {
			return err
		}
		*expect = cur.Revision + 1
		return nil
	}
	for _, ev := range resp.Events {
		kv := ev.Kv
		if cur == nil || kv.ModRevision != cur.Revision {
			if err := flush(); err != nil {
				return err
			}
			cur = &manifest.LogRevision{Revision: kv.ModRevision, Seen: now}
		}
		le := manifest.LogEvent{Key: kv.Key}
		if ev.Type == mvccpb.DELETE {
			le.Delete = true
		} else {
			le.Value, le.CreateRevision, le.Version, le.Lease = kv.Value, kv.CreateRevision, kv.Version, kv.Lease
			if kv.Lease != 0 {
				if err := leases.seen(ctx, kv.Lease, kv.ModRevision, enc); err != nil {
					return err
				}
			}
		}
		cur.Events = append(cur.Events, le)
	}
	if err := flush(); err != nil {
		return err
	}
	c.update(func(s *Status) {
		s.Received = *expect - 1
		if s.OldestPending.IsZero() {
			s.OldestPending = now
		}
	})
	return nil
}

// progress asks etcd to confirm that the watch has every revision, so a
// quiet cluster shows a capture that is caught up, not stalled.
func (c *Capture) progress(ctx context.Context, cli *clientv3.Client) {
	pctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := cli.RequestProgress(clientv3.WithRequireLeader(pctx)); err != nil && ctx.Err() == nil {
		c.log.Debug("progress request failed", "err", err)
	}
}

// seal closes the open segment: the lease facts seen since the last one,
// etcd's HashKV at its end when one is due, the body compressed and
// encrypted, and the head that names it and the segment before.
func (c *Capture) seal(ctx context.Context, cli *clientv3.Client, ch *chain, enc *manifest.LogEncoder, leases *leaseBook) (*sealed, error) {
	first, last, seenFirst, seenLast := enc.Range()
	if err := leases.poll(ctx, last, enc); err != nil {
		return nil, err
	}
	h := &manifest.SegmentHead{
		FormatVersion: manifest.FormatVersion,
		KdrVersion:    c.o.KdrVersion,
		Cluster:       c.o.Cluster,
		Base:          manifest.Link{ID: ch.base.ID, SHA256: ch.baseSum},
		First:         first,
		Last:          last,
		Prev:          ch.prev,
		SeenFirst:     seenFirst,
		SeenLast:      seenLast,
		Leases:        enc.Leases(),
		Writer:        c.o.Writer,
	}
	if c.o.HashEvery > 0 && c.o.Now().Sub(ch.hashed) >= c.o.HashEvery {
		h.HashKV = c.hashKV(ctx, cli, last)
		if h.HashKV != nil {
			ch.hashed = c.o.Now()
		}
	}
	for _, r := range c.o.Recipients {
		h.Recipients = append(h.Recipients, r.Fingerprint)
	}
	var body bytes.Buffer
	w, err := manifest.NewObjectWriter(&body, c.o.Recipients, manifest.WriteOptions{Name: manifest.SegmentBodyName(first, last), Kind: manifest.KindLog})
	if err != nil {
		return nil, err
	}
	if _, err := enc.WriteTo(w); err != nil {
		w.Abort()
		return nil, fmt.Errorf("seal segment %d..%d: %w", first, last, err)
	}
	if h.Body, err = w.Close(); err != nil {
		return nil, fmt.Errorf("seal segment %d..%d: %w", first, last, err)
	}
	if h.Body.PlainSize > manifest.MaxSegmentPlain {
		// One revision larger than a segment may be (a huge range delete):
		// no reader would take it, so the log restarts after it.
		return nil, fmt.Errorf("%w: revisions %d..%d take %d bytes, more than a segment may hold (%d)", ErrNeedFullSet,
			first, last, h.Body.PlainSize, manifest.MaxSegmentPlain)
	}
	raw, err := h.Marshal()
	if err != nil {
		return nil, err
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return &sealed{head: h, headRaw: raw, body: body.Bytes()}, nil
}

// hashKV asks the first endpoint for its HashKV at rev. A failure costs
// the segment its proof, not the segment.
func (c *Capture) hashKV(ctx context.Context, cli *clientv3.Client, rev int64) *manifest.LogHash {
	hctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ep := c.o.Etcd.Endpoints[0]
	resp, err := cli.HashKV(hctx, ep, rev)
	if err != nil {
		c.log.Warn("no HashKV for the segment", "revision", rev, "endpoint", ep, "err", err)
		return nil
	}
	return &manifest.LogHash{Revision: rev, CompactRevision: resp.CompactRevision, Hash: resp.Hash}
}

// storeNow stores a sealed segment to the end even when the run is
// cancelled (a lost lease, a shutdown): cut between its signature and its
// head, it would block the chain for every writer.
func (c *Capture) storeNow(ctx context.Context, ch *chain, s *sealed) stored {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.grace()/2)
	defer cancel()
	return c.store(sctx, ch, s)
}

// store writes a sealed segment to every target of the chain: the body,
// then the signed head that makes it part of the chain. One target
// decides a race between two writers, the first that takes the segment:
// a writer that loses there stops before touching the others, so two
// writers never both complete a segment on different targets unnoticed
// (a reader that meets it anyway sees the targets' logs differ). The rest
// are written at once.
func (c *Capture) store(ctx context.Context, ch *chain, s *sealed) stored {
	r := stored{s: s, failed: map[string]error{}}
	var mu sync.Mutex
	one := func(t storage.Target) error {
		err := c.storeOn(ctx, t, s)
		if err != nil {
			mu.Lock()
			r.failed[t.Name()] = err
			mu.Unlock()
			if c.o.Failed != nil {
				c.o.Failed(t.Name(), err)
			}
			return err
		}
		if c.o.Stored != nil {
			c.o.Stored(t.Name(), s.head, int64(len(s.body)+len(s.headRaw)))
		}
		return nil
	}
	rest := ch.targets
	for len(rest) > 0 {
		err := one(rest[0])
		rest = rest[1:]
		if err == nil {
			break
		}
		if errors.Is(err, manifest.ErrLost) {
			return r
		}
	}
	var wg sync.WaitGroup
	for _, t := range rest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one(t)
		}()
	}
	wg.Wait()
	return r
}

func (c *Capture) storeOn(ctx context.Context, t storage.Target, s *sealed) error {
	h := s.head
	bodyKey := manifest.SegmentBodyKey(h.Cluster, h.Base.ID, h.First, h.Last)
	if err := manifest.PutNew(ctx, t, bodyKey, s.body, "application/octet-stream"); err != nil {
		return err
	}
	return manifest.PutSegmentHead(ctx, t, manifest.SegmentHeadKey(h.Cluster, h.Base.ID, h.First), s.headRaw, c.o.Signer)
}

// settle takes the outcome of storing a segment: the chain goes on from
// it on the targets that stored it. A target that failed misses the
// segment for good and leaves the chain (a new full set is asked for);
// another writer's segment ends this one's run; when every target failed,
// nothing is durable and the watch starts again from the durable end.
func (c *Capture) settle(ch *chain, r stored) error {
	h := r.s.head
	var lost error
	for name, err := range r.failed {
		if errors.Is(err, manifest.ErrLost) {
			lost = err
		}
		c.log.Error("segment not stored", "target", name, "first", h.First, "last", h.Last, "err", err)
	}
	if lost != nil {
		return lost
	}
	if len(r.failed) == len(ch.targets) {
		ch.pending = r.s
		return errRewatch
	}
	ch.pending, ch.retry = nil, 0
	if len(r.failed) > 0 {
		var keep []storage.Target
		for _, t := range ch.targets {
			if r.failed[t.Name()] == nil {
				keep = append(keep, t)
			}
		}
		ch.targets = keep
		c.need(ch.base.ID, fmt.Sprintf("segment %d..%d is missing on %d target(s)", h.First, h.Last, len(r.failed)))
	}
	ch.next = h.Last + 1
	ch.prev = h.Link(manifest.Sum(r.s.headRaw))
	c.update(func(s *Status) {
		s.Durable, s.DurableSeen = h.Last, h.SeenLast
		if s.Received <= h.Last {
			s.OldestPending = time.Time{}
		} else {
			s.OldestPending = h.SeenLast
		}
		s.Targets = s.Targets[:0]
		for _, t := range ch.targets {
			s.Targets = append(s.Targets, t.Name())
		}
	})
	return nil
}
