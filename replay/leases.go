package replay

import (
	"cmp"
	"slices"

	"go.etcd.io/etcd/server/v3/lease"

	"github.com/kdr-io/kdr/manifest"
)

// leaseBook gathers what the lease state at the target needs: every
// lease record read, the TTLs they give, the revocations the current
// segment records, and when each lease last had a key deleted.
type leaseBook struct {
	// n is the revision replayed to; newest holds, per lease, the newest
	// record at or before it (one per lease, however long the log).
	n      int64
	newest map[int64]manifest.LeaseRecord
	// ttl is the TTL the newest grant record with one gives each lease.
	ttl map[int64]int64
	// revoked holds the leases the current segment records revoked.
	revoked map[int64]bool
	// deleted is the revision of the last delete of a key on each lease.
	deleted map[int64]int64
}

func newLeaseBook(n int64) *leaseBook {
	return &leaseBook{n: n, newest: map[int64]manifest.LeaseRecord{}, ttl: map[int64]int64{}, revoked: map[int64]bool{}, deleted: map[int64]int64{}}
}

// segment takes in the records of the segment about to be replayed: they
// come before its revisions, and the puts in it may need their TTLs.
func (b *leaseBook) segment(recs []manifest.LeaseRecord) {
	clear(b.revoked)
	for _, l := range recs {
		if cur, ok := b.newest[l.ID]; l.Revision <= b.n && (!ok || l.Revision >= cur.Revision) {
			b.newest[l.ID] = l
		}
		switch {
		case l.Revoked:
			b.revoked[l.ID] = true
		case l.TTL > 0:
			b.ttl[l.ID] = l.TTL
		}
	}
}

type grantLease struct {
	id  lease.LeaseID
	ttl int64
}

// final says which leases to grant and which to drop so that the
// lessor's leases are those at the revision n replayed to, segFirst being
// the first revision of the segment holding n (see the package doc):
//
//   - a lease with keys stays;
//   - one without is dropped when its newest record at or before n is a
//     revocation, or when the current segment records its revocation and
//     one of its keys was deleted in that segment (at or before n, as
//     nothing after n is applied);
//   - a lease whose newest record at or before n is a grant with a TTL is
//     granted if missing. A grant record without TTL says the lease was
//     gone when the writer asked: it makes no lease.
func (b *leaseBook) final(le lease.Lessor, segFirst int64) (grant []grantLease, drop []lease.LeaseID) {
	newest := b.newest
	for _, l := range le.Leases() {
		if len(l.Keys()) > 0 {
			continue
		}
		id := int64(l.ID)
		rec, ok := newest[id]
		if ok && rec.Revoked || b.revoked[id] && b.deleted[id] >= segFirst {
			drop = append(drop, l.ID)
		}
	}
	for id, rec := range newest {
		if !rec.Revoked && rec.TTL > 0 && le.Lookup(lease.LeaseID(id)) == nil {
			grant = append(grant, grantLease{id: lease.LeaseID(id), ttl: rec.TTL})
		}
	}
	slices.Sort(drop)
	slices.SortFunc(grant, func(a, b grantLease) int { return cmp.Compare(a.id, b.id) })
	return grant, drop
}
