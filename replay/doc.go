// Package replay brings a full set's etcd snapshot forward to any
// revision its captured log reaches: it applies the log's revisions, one
// etcd write transaction each, through etcd's own storage code (mvcc,
// lease, backend), in process, on the snapshot file itself. No raft, no
// server: the result is the database an etcd member would hold at that
// revision, and restore turns it into a data dir as it does a snapshot.
//
// The replay proves itself as it goes. Every revision must land on the
// revision the source gave it, every put must give its key the create
// revision and version the source's watch reported, every delete must
// delete a key the replay has, and when a segment end recorded etcd's
// HashKV, the replayed keyspace must hash the same at that revision.
//
// Leases are not watch events: the log carries lease records (grants with
// their TTL, revocations), and a replay gives a key back its lease under
// the same ID. The leases at the target revision are what the records and
// the keys say:
//
//   - a lease with keys attached stays, whatever the records say;
//   - a lease without keys is removed when a record says it was revoked
//     at or before the target, or when the segment holding the target
//     records its revocation and its last key was deleted in that
//     segment at or before the target (revoking a lease deletes its keys,
//     and the writer sees revocations only at segment ends);
//   - a lease granted by a record at or before the target and not
//     revoked exists, with the recorded TTL (a record without TTL was
//     written when the lease was already gone, and makes none);
//   - a lease a put names but no record gives a TTL gets [DefaultTTL].
//
// Replay works in place and does not resume: after an interruption its
// caller starts again from a fresh copy of the snapshot.
package replay
