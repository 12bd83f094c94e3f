package restore

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/etcdserver/cindex"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// memberData says how to turn a snapshot db into one member's data dir.
// It carries what `etcdutl snapshot restore` takes as flags.
type memberData struct {
	DataDir        string // holds the snapshot at member/snap/db
	Name           string
	InitialCluster string // name=peerURL,...
	Token          string
	RevisionBump   uint64
	// MinRevision is a revision the snapshot is known to hold (the one
	// recorded before it was taken): the search for the newest revision
	// starts there instead of walking every key, and a bump already made
	// by an interrupted run is recognised from it.
	MinRevision int64
}

// dbPath is where etcd keeps a member's database.
func dbPath(dataDir string) string { return filepath.Join(dataDir, "member", "snap", "db") }

// takeSnapshot makes the snapshot file the member's database. On one
// filesystem it is renamed, so the bytes decrypt wrote and synced are not
// written a second time; across filesystems it is copied and then renamed,
// so the database is either whole or absent.
func takeSnapshot(ctx context.Context, snapshot, dataDir string) error {
	db := dbPath(dataDir)
	if err := os.MkdirAll(filepath.Dir(db), 0o700); err != nil {
		return err
	}
	err := os.Rename(snapshot, db)
	if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	tmp := db + ".copying"
	os.Remove(tmp)
	if err := CopyFile(ctx, snapshot, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, db)
}

// writeMemberData turns the snapshot at DataDir/member/snap/db into a
// member's data dir the way `etcdutl snapshot restore --bump-revision N
// --mark-compacted` does (TestWriteMemberDataMatchesEtcdutl holds it to
// that), in place and in one open of the database: etcdutl copies the file
// and reads every key to find the newest revision, most of its time on a
// large snapshot. Run again after an interruption, it finishes the same
// data dir: the membership and index writes repeat harmlessly, the WAL is
// written anew, and a bump already made is not made twice.
func writeMemberData(ctx context.Context, d memberData) error {
	lg := zap.NewNop()
	urls, err := types.NewURLsMap(d.InitialCluster)
	if err != nil {
		return fmt.Errorf("initial cluster %q: %w", d.InitialCluster, err)
	}
	cl, err := membership.NewClusterFromURLsMap(lg, d.Token, urls)
	if err != nil {
		return err
	}
	self := cl.MemberByName(d.Name)
	if self == nil {
		return fmt.Errorf("member %q is not in the initial cluster %q", d.Name, d.InitialCluster)
	}
	if d.RevisionBump > math.MaxInt64/2 {
		return fmt.Errorf("revision bump %d is too large", d.RevisionBump)
	}
	db := dbPath(d.DataDir)
	if err := PrepareSnapshotDB(db); err != nil {
		return err
	}
	snapDir := filepath.Dir(db)
	walDir := filepath.Join(d.DataDir, "member", "wal")
	old, _ := filepath.Glob(filepath.Join(snapDir, "*.snap"))
	for _, p := range append(old, walDir) {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	be := backend.NewDefaultBackend(lg, db)
	defer be.Close()
	mb := schema.NewMembershipBackend(lg, be)
	if err := mb.TrimMembershipFromBackend(); err != nil {
		return fmt.Errorf("clear the old membership: %w", err)
	}
	if d.RevisionBump > 0 {
		bumpRevision(be, d.MinRevision, int64(d.RevisionBump))
	}
	cl.SetBackend(mb)
	for _, m := range cl.Members() {
		cl.AddMember(m, true)
	}
	commit, term, err := writeWALAndSnap(lg, cl, self.ID, walDir, snapDir)
	if err != nil {
		return err
	}
	cindex.UpdateConsistentIndexForce(be.BatchTx(), commit, term)
	be.ForceCommit()
	return nil
}

// bumpRevision writes an empty key revision bump past the newest one and
// marks it compacted, in one transaction. Every record etcd writes to
// its key bucket is a marshalled KeyValue (never empty, even for an empty
// value), so an empty record at floor+bump or beyond is this bump, made
// by an interrupted run.
func bumpRevision(be backend.Backend, floor, bump int64) {
	tx := be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()
	latest, empty := latestRevision(tx, floor)
	if floor > 0 && empty && latest.Main >= floor+bump {
		return
	}
	latest.Main += bump
	latest.Sub = 0
	tx.UnsafePut(schema.Key, mvcc.RevToBytes(latest, mvcc.NewRevBytes()), []byte{})
	mvcc.UnsafeSetScheduledCompact(tx, latest.Main)
}

// latestRevision returns the newest revision in the key bucket, or floor
// when every key at or above it has been compacted away, and whether the
// newest key holds an empty value. A floor of zero means unknown, and
// every key is read.
func latestRevision(tx backend.UnsafeReader, floor int64) (latest mvcc.Revision, empty bool) {
	latest = mvcc.Revision{Main: floor}
	see := func(k, v []byte) {
		if rev := mvcc.BytesToRev(k); rev.GreaterThan(latest) {
			latest, empty = rev, len(v) == 0
		}
	}
	if floor <= 0 {
		tx.UnsafeForEach(schema.Key, func(k, v []byte) error { see(k, v); return nil })
		return latest, empty
	}
	start := mvcc.RevToBytes(latest, mvcc.NewRevBytes())
	end := mvcc.RevToBytes(mvcc.Revision{Main: math.MaxInt64, Sub: math.MaxInt64}, mvcc.NewRevBytes())
	keys, vals := tx.UnsafeRange(schema.Key, start, end, 0)
	for i := range keys {
		see(keys[i], vals[i])
	}
	return latest, empty
}

// writeWALAndSnap writes the WAL and raft snapshot a fresh member of cl
// starts from: one committed ConfChange per member, as etcdutl writes.
func writeWALAndSnap(lg *zap.Logger, cl *membership.RaftCluster, self types.ID, walDir, snapDir string) (commit, term uint64, err error) {
	md, err := proto.Marshal(&etcdserverpb.Metadata{NodeID: new(uint64(self)), ClusterID: new(uint64(cl.ID()))})
	if err != nil {
		return 0, 0, err
	}
	w, err := wal.Create(lg, walDir, md)
	if err != nil {
		return 0, 0, fmt.Errorf("create wal: %w", err)
	}
	defer w.Close()

	ids := cl.MemberIDs()
	ents := make([]*raftpb.Entry, len(ids))
	voters := make([]uint64, len(ids))
	for i, id := range ids {
		ctx, err := json.Marshal(cl.Member(id))
		if err != nil {
			return 0, 0, err
		}
		cc, err := proto.Marshal(&raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: new(uint64(id)), Context: ctx})
		if err != nil {
			return 0, 0, err
		}
		voters[i] = uint64(id)
		ents[i] = &raftpb.Entry{Type: raftpb.EntryConfChange.Enum(), Term: new(uint64(1)), Index: new(uint64(i + 1)), Data: cc}
	}
	commit, term = uint64(len(ents)), 1
	hs := raftpb.HardState{Term: new(term), Vote: new(voters[0]), Commit: new(commit)}
	if err := w.Save(&hs, ents); err != nil {
		return 0, 0, fmt.Errorf("write wal: %w", err)
	}
	cs := &raftpb.ConfState{Voters: voters}
	rs := raftpb.Snapshot{
		Data:     etcdserver.GetMembershipInfoInV2Format(lg, cl),
		Metadata: &raftpb.SnapshotMetadata{Index: new(commit), Term: new(term), ConfState: cs},
	}
	if err := snap.New(lg, snapDir).SaveSnap(&rs); err != nil {
		return 0, 0, fmt.Errorf("write raft snapshot: %w", err)
	}
	if err := w.SaveSnapshot(&walpb.Snapshot{Index: new(commit), Term: new(term), ConfState: cs}); err != nil {
		return 0, 0, fmt.Errorf("write wal snapshot: %w", err)
	}
	return commit, term, nil
}

// PrepareSnapshotDB makes a snapshot file one etcd's storage opens: etcd's
// trailing hash cut off, and the file proved a bbolt database, since
// etcd's backend panics on one bbolt cannot open (a read-only open reads
// only the meta pages).
func PrepareSnapshotDB(path string) error {
	if err := dropTrailingHash(path); err != nil {
		return err
	}
	return checkBolt(path)
}

func checkBolt(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("%s is not an etcd database: %w", path, err)
	}
	return db.Close()
}

// dropTrailingHash truncates etcd's sha256 from the end of a snapshot:
// bbolt files are whole pages, so a size 32 past a 512 multiple has one.
func dropTrailingHash(db string) error {
	fi, err := os.Stat(db)
	if err != nil {
		return err
	}
	if fi.Size()%512 == sha256.Size {
		return os.Truncate(db, fi.Size()-sha256.Size)
	}
	return nil
}

// CopyFile copies src to a new file dst and syncs it. Between two files
// the kernel copies (copy_file_range, a reflink where the filesystem has
// them); chunks keep it cancellable.
func CopyFile(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	const chunk = 256 << 20
	for {
		if err := ctx.Err(); err != nil {
			out.Close()
			return err
		}
		n, err := io.CopyN(out, in, chunk)
		if err != nil && !errors.Is(err, io.EOF) {
			out.Close()
			return fmt.Errorf("copy %s: %w", src, err)
		}
		if n < chunk {
			break
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
