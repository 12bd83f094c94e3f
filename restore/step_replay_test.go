package restore

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/etcdutl"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
)

// logFixture is a backup of a real etcd on a local target and the
// captured log after it, two segments written by hand from what a watch
// saw, each with etcd's HashKV at its end.
type logFixture struct {
	cli   *clientv3.Client
	usb   *storage.Local
	dir   string
	key   *testenv.SigningKey
	ids   []age.Identity
	m     *manifest.Manifest
	sum   string
	end   int64 // the log's last revision
	mid   int64 // a revision inside the second segment, after a lease's key
	proof int64 // the first segment's end, where a HashKV is recorded
}

func newLogFixture(t *testing.T) *logFixture {
	t.Helper()
	ctx := context.Background()
	cli, ep := testenv.StartEmbedded(t, testenv.EmbeddedOptions{Name: "src"})
	f := &logFixture{cli: cli}
	put := func(k, v string, opts ...clientv3.OpOption) int64 {
		resp, err := cli.Put(ctx, k, v, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	del := func(k string) int64 {
		resp, err := cli.Delete(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	for i := range 20 {
		put(fmt.Sprintf("/registry/k%02d", i), fmt.Sprintf("set-%d", i))
	}
	recipients, ids := testenv.AgeKeys(t)
	f.ids, f.key = ids, testenv.NewSigningKey(t)
	f.dir = t.TempDir()
	var err error
	if f.usb, err = storage.NewLocal("usb", f.dir); err != nil {
		t.Fatal(err)
	}
	res, err := snapshot.Backup(ctx, snapshot.Options{
		Cluster: "prod", Etcd: snapshot.EtcdOptions{Endpoints: []string{ep}}, Root: t.TempDir(),
		Recipients: recipients, Signer: f.key.Signer, Trust: f.key.Trust, Targets: []storage.Target{f.usb},
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.m, f.sum, err = catalog.LoadManifest(ctx, f.usb, f.key.Trust, "prod", res.Manifest.ID); err != nil {
		t.Fatal(err)
	}

	// After the set: new keys, overwrites, a delete, one transaction of
	// several changes, a key under a lease, and more.
	for i := range 5 {
		put(fmt.Sprintf("/registry/a%d", i), "after")
	}
	put("/registry/k00", "changed")
	del("/registry/k02")
	txn, err := cli.Txn(ctx).Then(clientv3.OpPut("/registry/t1", "txn"), clientv3.OpPut("/registry/k01", "txn"),
		clientv3.OpDelete("/registry/k03")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	f.proof = txn.Header.Revision
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	leased := put("/registry/leased", "held", clientv3.WithLease(lease.ID))
	for i := range 4 {
		put(fmt.Sprintf("/registry/b%d", i), "later")
	}
	f.mid = del("/registry/a1")
	put("/registry/k04", "after the target")
	f.end = put("/registry/b0", "after the target")

	revs := testenv.WatchLog(t, cli, f.m.Etcd.Revision+1, f.end)
	split := 0
	for revs[split].Revision != f.proof {
		split++
	}
	log := &testenv.CapturedLog{Target: f.usb, Key: f.key, Recipients: recipients, Base: f.m, BaseSum: f.sum}
	log.Append(t, revs[:split+1], nil, testenv.HashKV(t, cli, ep, f.proof))
	log.Append(t, revs[split+1:], []manifest.LeaseRecord{{ID: int64(lease.ID), TTL: 600, Revision: leased}}, testenv.HashKV(t, cli, ep, f.end))
	return f
}

// chain reads the fixture's captured log as a restore plans from it.
func (f *logFixture) chain(t *testing.T) *catalog.Chain {
	t.Helper()
	c, err := catalog.ReadChain(context.Background(), f.usb, f.key.Trust, f.m, f.sum)
	if err != nil {
		t.Fatal(err)
	}
	if c.End() != f.end || c.Broken != nil {
		t.Fatalf("the fixture's log reaches %d (%v), want %d", c.End(), c.Broken, f.end)
	}
	return c
}

// plan is a one-node plan of the fixture's restore to rev.
func (f *logFixture) plan(t *testing.T, rev int64) *Plan {
	t.Helper()
	n := Node{Name: "m1", IP: "127.0.0.1",
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))}
	p, err := BuildPlanAt(f.chain(t), rev, Source{Kind: "local", Path: f.dir}, Options{Target: "usb", Topology: TopologySystemd, Nodes: []Node{n}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// kv is a key as etcd keeps it.
type kv struct {
	value                    string
	create, mod, version, le int64
}

// liveAt is the source's keyspace at rev.
func (f *logFixture) liveAt(t *testing.T, rev int64) map[string]kv {
	t.Helper()
	resp, err := f.cli.Get(context.Background(), "", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]kv{}
	for _, k := range resp.Kvs {
		out[string(k.Key)] = kv{string(k.Value), k.CreateRevision, k.ModRevision, k.Version, k.Lease}
	}
	return out
}

// dbAt opens a copy of an etcd database with etcd's storage and returns
// its revision and keyspace.
func dbAt(t *testing.T, db string) (int64, map[string]kv) {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "db")
	if err := CopyFile(context.Background(), db, cp); err != nil {
		t.Fatal(err)
	}
	be := backend.NewDefaultBackend(zap.NewNop(), cp)
	defer be.Close()
	st := mvcc.NewStore(zap.NewNop(), be, &etcdutl.SimpleLessor{}, mvcc.StoreConfig{})
	defer st.Close()
	txn := st.Read(mvcc.ConcurrentReadTxMode, traceutil.TODO())
	defer txn.End()
	r, err := txn.Range(context.Background(), []byte{0}, []byte{}, mvcc.RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]kv{}
	for _, k := range r.KVs {
		out[string(k.Key)] = kv{string(k.Value), k.CreateRevision, k.ModRevision, k.Version, k.Lease}
	}
	return txn.Rev(), out
}

// TestReplayStep restores a real etcd's backup to a revision inside its
// captured log: the replay step makes a database at exactly that
// revision with the keyspace the source had there, proved by the HashKV
// recorded before it; run again after an interruption it starts from a
// fresh copy; and the whole restore serves that keyspace from a revision
// above the log's end plus the bump.
func TestReplayStep(t *testing.T) {
	ctx := context.Background()
	f := newLogFixture(t)
	plan := f.plan(t, f.mid)
	root := t.TempDir()
	runner := &processRunner{t: t, cmds: map[string]*exec.Cmd{}}
	t.Cleanup(runner.stopAll)
	env := &Env{Plan: plan, Root: root, Target: f.usb, Identities: f.ids, Runner: runner, WaitTimeout: time.Minute}
	if err := Apply(ctx, env, "m1", ApplyOptions{Until: StepReplay}); err != nil {
		t.Fatal(err)
	}
	want := f.liveAt(t, f.mid)
	replayed := filepath.Join(root, filepath.FromSlash(plan.RestoredDB()))
	check := func(t *testing.T) {
		t.Helper()
		rev, got := dbAt(t, replayed)
		if rev != f.mid {
			t.Errorf("the replayed database is at revision %d, want %d", rev, f.mid)
		}
		if !maps.Equal(got, want) {
			t.Errorf("the replayed keyspace differs from the source's at %d:\n got %v\nwant %v", f.mid, got, want)
		}
		rec, err := env.Replayed("m1")
		if err != nil {
			t.Fatal(err)
		}
		if rec == nil || rec.Revision != f.mid || rec.Base != f.m.Etcd.Revision || rec.Applied != f.mid-f.m.Etcd.Revision || rec.Segments != 2 {
			t.Fatalf("the journal records %+v", rec)
		}
		if rec.Proved == nil || rec.Proved.Revision != f.proof {
			t.Errorf("the replay was proved by %+v, want the HashKV at %d", rec.Proved, f.proof)
		}
	}
	check(t)
	if _, ok := want["/registry/leased"]; !ok {
		t.Fatal("the target revision has no leased key: the fixture proves nothing about leases")
	}

	// Killed mid-replay: a half-replayed copy is left; the next run
	// throws it away and starts from the decrypted snapshot again.
	half := filepath.Join(root, filepath.FromSlash(plan.Staging()), tempPrefix+"replay.db")
	if err := os.WriteFile(half, []byte("half replayed"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(replayed); err != nil {
		t.Fatal(err)
	}
	e := journaled(t, env, "m1")
	e.journal.Steps[StepReplay].State = StateStarted
	if err := e.journal.save(); err != nil {
		t.Fatal(err)
	}
	if err := Apply(ctx, env, "m1", ApplyOptions{Until: StepReplay}); err != nil {
		t.Fatal(err)
	}
	check(t)

	if err := Apply(ctx, env, "m1", ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{plan.Options.Nodes[0].ClientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	values := map[string]string{}
	for k, v := range want {
		values[k] = v.value
	}
	if got := allKeys(t, cli); !maps.Equal(got, values) {
		t.Errorf("the restored etcd serves %v, want the source's keys at %d: %v", got, f.mid, values)
	}
	if rev, floor := mustRevision(t, cli), f.end+DefaultRevisionBump; rev < floor || plan.MinRevision() != floor {
		t.Errorf("restored at revision %d (plan's floor %d), want at least the log's end %d plus the bump", rev, plan.MinRevision(), f.end)
	}
}

// TestFetchRefusesSegments: a segment that changed on the target after
// the plan read it, lost its signature or its body, or whose body is
// damaged, is refused by fetch, named, before anything is replayed.
func TestFetchRefusesSegments(t *testing.T) {
	f := newLogFixture(t)
	plan := f.plan(t, f.mid)
	segs := plan.Replay.Segments
	body := func(i int) string {
		h := segs[i].Head
		return manifest.SegmentBodyKey(h.Cluster, h.Base.ID, h.First, h.Last)
	}
	for _, tc := range []struct {
		name  string
		key   string
		edit  func(data []byte) []byte // nil: delete
		wants string
	}{
		{"body missing", body(1), nil, "not exist"},
		{"body damaged", body(0), func(b []byte) []byte { b[len(b)/2] ^= 1; return b }, "damaged"},
		{"head changed", segs[1].Key, func(b []byte) []byte { return append(b, ' ') }, "not the head a trusted key signed"},
		{"signature missing", manifest.SignatureKey(segs[0].Key), nil, "not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(f.dir)); err != nil {
				t.Fatal(err)
			}
			usb, err := storage.NewLocal("usb", dir)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, filepath.FromSlash(tc.key))
			if tc.edit == nil {
				err = os.Remove(path)
			} else {
				var data []byte
				if data, err = os.ReadFile(path); err == nil {
					err = os.WriteFile(path, tc.edit(bytes.Clone(data)), 0o600)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			err = Apply(context.Background(), &Env{Plan: plan, Root: root, Target: usb, Identities: f.ids}, "m1", ApplyOptions{})
			if err == nil || !strings.Contains(err.Error(), "step fetch") || !strings.Contains(err.Error(), strings.TrimPrefix(tc.key, manifest.LogPrefix(plan.Cluster, plan.BackupID))) ||
				!strings.Contains(err.Error(), tc.wants) {
				t.Fatalf("Apply: %v; want fetch to refuse %s (%s)", err, tc.key, tc.wants)
			}
			t.Logf("refused: %v", err)
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(plan.RestoredDB()))); err == nil {
				t.Error("a database was replayed from a refused log")
			}
		})
	}
}
