package capture

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/manifest"
)

// leaseBook records what restoring leases needs, since leases are not
// watch events: each lease's granted TTL the first time the capture meets
// it (a put on it, or the list of leases), and each lease that left that
// list. A replay gives a key its lease back under the same ID.
type leaseBook struct {
	cli   *clientv3.Client
	known map[int64]bool
}

func newLeaseBook(cli *clientv3.Client) *leaseBook {
	return &leaseBook{cli: cli, known: map[int64]bool{}}
}

// startChain records every lease alive now in the first segment a watch
// writes: a writer that takes a chain over does not know which ones its
// predecessor recorded, and a grant recorded twice is harmless.
func (b *leaseBook) startChain(ctx context.Context, enc *manifest.LogEncoder) error {
	ids, rev, err := b.list(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := b.grant(ctx, id, rev, enc); err != nil {
			return err
		}
	}
	return nil
}

// seen records the lease of a put the first time it is met.
func (b *leaseBook) seen(ctx context.Context, id, rev int64, enc *manifest.LogEncoder) error {
	if b.known[id] {
		return nil
	}
	return b.grant(ctx, id, rev, enc)
}

// poll compares the leases alive now with those known: new ones are
// recorded with their TTL, missing ones as revoked by now (at or after
// last, the segment's end).
func (b *leaseBook) poll(ctx context.Context, last int64, enc *manifest.LogEncoder) error {
	ids, rev, err := b.list(ctx)
	if err != nil {
		return err
	}
	rev = max(rev, last)
	alive := make(map[int64]bool, len(ids))
	for _, id := range ids {
		alive[id] = true
		if !b.known[id] {
			if err := b.grant(ctx, id, rev, enc); err != nil {
				return err
			}
		}
	}
	for id := range b.known {
		if !alive[id] {
			enc.AddLease(manifest.LeaseRecord{ID: id, Revoked: true, Revision: rev})
			delete(b.known, id)
		}
	}
	return nil
}

// grant records one lease with its granted TTL; a lease already gone has
// none to read, and is recorded with TTL 0.
func (b *leaseBook) grant(ctx context.Context, id, rev int64, enc *manifest.LogEncoder) error {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := b.cli.TimeToLive(cctx, clientv3.LeaseID(id))
	if err != nil {
		return fmt.Errorf("lease %x: %w", id, err)
	}
	ttl := resp.GrantedTTL
	if resp.TTL < 0 {
		ttl = 0
	}
	enc.AddLease(manifest.LeaseRecord{ID: id, TTL: ttl, Revision: rev})
	b.known[id] = true
	return nil
}

func (b *leaseBook) list(ctx context.Context) ([]int64, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := b.cli.Leases(cctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list leases: %w", err)
	}
	ids := make([]int64, len(resp.Leases))
	for i, l := range resp.Leases {
		ids[i] = int64(l.ID)
	}
	var rev int64
	if resp.ResponseHeader != nil {
		rev = resp.ResponseHeader.Revision
	}
	return ids, rev, nil
}
