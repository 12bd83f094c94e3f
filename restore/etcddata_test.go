package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestWriteMemberDataMatchesEtcdutl restores the same snapshot with
// etcdutl's own restore and with writeMemberData and requires the same data dir: every
// bucket's keys and values, the WAL's metadata, state and entries, and the
// raft snapshot files byte for byte.
func TestWriteMemberDataMatchesEtcdutl(t *testing.T) {
	ctx := context.Background()
	src := testenv.StartEtcd(t, testenv.EtcdOptions{})
	cli := src.Client()
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/k%02d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	floor := mustRevision(t, cli)
	// Keys above the floor, a multi-op transaction (sub-revisions) and a
	// delete last: the newest revision is a tombstone.
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("/registry/a", "1"), clientv3.OpPut("/registry/b", "2")).Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/registry/k07"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	snap := filepath.Join(dir, "snap.db")
	if out, err := exec.Command(testenv.Binary(t, "etcdctl"), "--endpoints", src.Endpoints()[0], "snapshot", "save", snap).CombinedOutput(); err != nil {
		t.Fatalf("etcdctl snapshot save: %v: %s", err, out)
	}
	cluster := "m1=http://127.0.0.1:2380,m2=http://127.0.0.2:2380,m3=http://127.0.0.3:2380"
	want := filepath.Join(dir, "etcdutl")
	err := etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{
		SnapshotPath: snap, OutputDataDir: want, Name: "m2", InitialCluster: cluster, InitialClusterToken: "tok",
		PeerURLs: []string{"http://127.0.0.2:2380"}, RevisionBump: 1000, MarkCompacted: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		floor int64
		runs  int
	}{
		{"from a floor", floor, 1},
		{"no floor", 0, 1},
		// An interrupted run leaves a bumped database; the rerun must not
		// bump it again.
		{"run twice", floor, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := filepath.Join(t.TempDir(), "kdr")
			placeCopy(t, snap, got)
			for range tc.runs {
				err := writeMemberData(ctx, memberData{DataDir: got, Name: "m2", InitialCluster: cluster,
					Token: "tok", RevisionBump: 1000, MinRevision: tc.floor})
				if err != nil {
					t.Fatal(err)
				}
			}
			sameBuckets(t, dbPath(want), dbPath(got))
			sameWAL(t, filepath.Join(want, "member", "wal"), filepath.Join(got, "member", "wal"))
			sameSnapFiles(t, filepath.Join(want, "member", "snap"), filepath.Join(got, "member", "snap"))
		})
	}

	// A backup of a cluster restored a moment before, with no write since:
	// its newest key is the earlier bump, empty, and is bumped again.
	t.Run("snapshot of a restored cluster", func(t *testing.T) {
		again := filepath.Join(t.TempDir(), "again")
		placeCopy(t, dbPath(want), again)
		wantRev := newestRevision(t, dbPath(want)) + 1000
		err := writeMemberData(ctx, memberData{DataDir: again, Name: "m2", InitialCluster: cluster,
			Token: "tok", RevisionBump: 1000, MinRevision: newestRevision(t, dbPath(want))})
		if err != nil {
			t.Fatal(err)
		}
		if got := newestRevision(t, dbPath(again)); got != wantRev {
			t.Fatalf("newest revision %d, want %d", got, wantRev)
		}
	})
}

// placeCopy puts a copy of the snapshot where a data dir's database goes,
// as takeSnapshot does with the original.
func placeCopy(t *testing.T, snap, dataDir string) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "snap.db")
	if err := CopyFile(context.Background(), snap, tmp); err != nil {
		t.Fatal(err)
	}
	if err := takeSnapshot(context.Background(), tmp, dataDir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("the snapshot is still at %s after it was taken", tmp)
	}
}

func newestRevision(t *testing.T, db string) int64 {
	t.Helper()
	var newest int64
	for k := range dumpBolt(t, db) {
		if name, rev, ok := strings.Cut(k, "/"); ok && name == "key" {
			newest = max(newest, mvcc.BytesToRev([]byte(rev)).Main)
		}
	}
	return newest
}

func TestWriteMemberDataRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	os.MkdirAll(filepath.Dir(dbPath(junk)), 0o700)
	os.WriteFile(dbPath(junk), []byte("not a database"), 0o600)
	one := "m1=http://127.0.0.1:2380"
	for _, tc := range []struct {
		name string
		d    memberData
	}{
		{"unknown member", memberData{DataDir: junk, Name: "m9", InitialCluster: one}},
		{"bad initial cluster", memberData{DataDir: junk, Name: "m1", InitialCluster: "m1"}},
		{"no database", memberData{DataDir: filepath.Join(dir, "none"), Name: "m1", InitialCluster: one}},
		{"not a database", memberData{DataDir: junk, Name: "m1", InitialCluster: one}},
		{"huge bump", memberData{DataDir: junk, Name: "m1", InitialCluster: one, RevisionBump: 1 << 63}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := writeMemberData(ctx, tc.d); err == nil {
				t.Fatal("no error")
			}
		})
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := writeMemberData(cancelled, memberData{DataDir: junk, Name: "m1", InitialCluster: one}); err == nil {
		t.Fatal("a cancelled context wrote a member")
	}
	if err := takeSnapshot(ctx, filepath.Join(dir, "missing.db"), filepath.Join(dir, "x")); err == nil {
		t.Fatal("took a snapshot that does not exist")
	}
}

func mustRevision(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	r, err := cli.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

func sameBuckets(t *testing.T, want, got string) {
	t.Helper()
	a, b := dumpBolt(t, want), dumpBolt(t, got)
	if len(a) != len(b) {
		t.Errorf("%d keys, etcdutl has %d", len(b), len(a))
	}
	for k, v := range a {
		if w, ok := b[k]; !ok {
			t.Errorf("missing %q", k)
		} else if !bytes.Equal(v, w) {
			t.Errorf("%q = %x, etcdutl has %x", k, w, v)
		}
	}
}

func dumpBolt(t *testing.T, path string) map[string][]byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = bytes.Clone(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameWAL(t *testing.T, want, got string) {
	t.Helper()
	read := func(dir string) ([]byte, []byte, [][]byte) {
		w, err := wal.OpenForRead(zap.NewNop(), dir, &walpb.Snapshot{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		md, st, ents, err := w.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		stb, _ := proto.Marshal(st)
		var eb [][]byte
		for _, e := range ents {
			b, _ := proto.Marshal(e)
			eb = append(eb, b)
		}
		return md, stb, eb
	}
	md1, st1, e1 := read(want)
	md2, st2, e2 := read(got)
	if !bytes.Equal(md1, md2) || !bytes.Equal(st1, st2) || len(e1) != len(e2) {
		t.Fatalf("wal differs: metadata %x/%x state %x/%x entries %d/%d", md2, md1, st2, st1, len(e2), len(e1))
	}
	for i := range e1 {
		if !bytes.Equal(e1[i], e2[i]) {
			t.Errorf("wal entry %d differs", i)
		}
	}
}

// sameSnapFiles compares the raft snapshot files. Their v2 membership
// store numbers and logs members in map order, which differs from run to
// run of etcdutl itself: only the stored paths and values are compared.
func sameSnapFiles(t *testing.T, want, got string) {
	t.Helper()
	read := func(dir string) (meta []byte, nodes map[string]string) {
		s, err := snap.New(zap.NewNop(), dir).Load()
		if err != nil {
			t.Fatal(err)
		}
		meta, _ = proto.Marshal(s.Metadata)
		var store struct{ Root v2Node }
		if err := json.Unmarshal(s.Data, &store); err != nil {
			t.Fatal(err)
		}
		nodes = map[string]string{}
		store.Root.flatten(nodes)
		return meta, nodes
	}
	m1, n1 := read(want)
	m2, n2 := read(got)
	if !bytes.Equal(m1, m2) {
		t.Errorf("snapshot metadata %x, etcdutl wrote %x", m2, m1)
	}
	if len(n1) < 3 || !reflect.DeepEqual(n1, n2) {
		t.Errorf("snapshot membership %v, etcdutl wrote %v", n2, n1)
	}
}

type v2Node struct {
	Path     string
	Value    string
	Children map[string]v2Node
}

func (n v2Node) flatten(out map[string]string) {
	out[n.Path] = n.Value
	for _, c := range n.Children {
		c.flatten(out)
	}
}
