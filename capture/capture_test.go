package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
)

const cluster = "prod"

// world is a real etcd, two local targets, keys, and a full set on both.
type world struct {
	etcd    *testenv.EtcdCluster
	cli     *clientv3.Client
	targets []storage.Target
	rs      []crypto.Recipient
	ids     []age.Identity
	sign    *testenv.SigningKey
	base    *manifest.Manifest
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{etcd: testenv.StartEtcd(t, testenv.EtcdOptions{}), sign: testenv.NewSigningKey(t)}
	w.cli = w.etcd.Client()
	w.rs, w.ids = testenv.AgeKeys(t)
	for _, name := range []string{"usb", "nas"} {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		l, err := storage.NewLocal(name, dir)
		if err != nil {
			t.Fatal(err)
		}
		w.targets = append(w.targets, l)
	}
	w.load(t, 50, 1)
	w.base = w.backup(t)
	return w
}

func (w *world) backup(t *testing.T) *manifest.Manifest {
	t.Helper()
	res, err := snapshot.Backup(context.Background(), snapshot.Options{
		Cluster: cluster, Etcd: snapshot.EtcdOptions{Endpoints: w.etcd.Endpoints()},
		Recipients: w.rs, Signer: w.sign.Signer, Trust: w.sign.Trust, Targets: w.targets,
		Root: t.TempDir(), Node: "cp1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.Manifest
}

func (w *world) options(writer string) Options {
	return Options{
		Cluster: cluster, Etcd: snapshot.EtcdOptions{Endpoints: w.etcd.Endpoints()},
		Targets: w.targets, Recipients: w.rs, Signer: w.sign.Signer, Trust: w.sign.Trust,
		Writer: writer, Period: 150 * time.Millisecond, HashEvery: time.Millisecond,
	}
}

// load writes n rounds of puts, overwrites, deletes, transactions and
// keys on leases, seeded.
func (w *world) load(t *testing.T, n int, seed uint64) {
	t.Helper()
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(seed, 0))
	kv := w.cli
	for i := range n {
		key := fmt.Sprintf("/registry/k%02d", rnd.IntN(20))
		var err error
		switch i % 5 {
		case 0:
			_, err = kv.Put(ctx, key, fmt.Sprintf("v%d-%d", seed, i))
		case 1:
			_, err = kv.Put(ctx, fmt.Sprintf("/registry/z%d/%d", i%3, i), "to be deleted by a range")
		case 2:
			_, err = kv.Delete(ctx, key)
			if err == nil {
				_, err = kv.Put(ctx, key+"x", "after delete")
			}
		case 3:
			_, err = kv.Txn(ctx).Then(
				clientv3.OpPut(key+"/a", "ta"), clientv3.OpPut(key+"/b", "tb"), clientv3.OpDelete(fmt.Sprintf("/registry/z%d/", rnd.IntN(3)), clientv3.WithPrefix()),
			).Commit()
		case 4:
			var l *clientv3.LeaseGrantResponse
			l, err = kv.Grant(ctx, int64(60+i))
			if err == nil {
				_, err = kv.Put(ctx, key+"/leased", "on a lease", clientv3.WithLease(l.ID))
			}
			if err == nil && i%10 == 4 {
				_, err = kv.Revoke(ctx, l.ID)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (w *world) revision(t *testing.T) int64 {
	t.Helper()
	resp, err := w.cli.Get(context.Background(), "kdr-probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// runUntil runs captures until every target's chain reaches rev.
func waitDurable(t *testing.T, c *Capture, rev int64) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("the log to reach revision %d", rev), func() bool {
		return c.Status().Durable >= rev
	})
}

// source returns every revision from..to as the etcd client sees them.
func (w *world) source(t *testing.T, from, to int64) []manifest.LogRevision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []manifest.LogRevision
	for resp := range w.cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		for _, ev := range resp.Events {
			kv := ev.Kv
			if n := len(out); n == 0 || out[n-1].Revision != kv.ModRevision {
				out = append(out, manifest.LogRevision{Revision: kv.ModRevision})
			}
			le := manifest.LogEvent{Key: kv.Key, Delete: ev.Type == mvccpb.DELETE}
			if !le.Delete {
				le.Value, le.CreateRevision, le.Version, le.Lease = kv.Value, kv.CreateRevision, kv.Version, kv.Lease
			}
			out[len(out)-1].Events = append(out[len(out)-1].Events, le)
		}
		if n := len(out); n > 0 && out[n-1].Revision >= to {
			break
		}
	}
	return out
}

// logged decodes a target's chain.
func (w *world) logged(t *testing.T, tgt storage.Target, base *manifest.Manifest) (*catalog.Chain, []manifest.LogRevision, []manifest.LeaseRecord) {
	t.Helper()
	ctx := context.Background()
	_, sum, err := catalog.LoadManifest(ctx, tgt, w.sign.Trust, cluster, base.ID)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := catalog.ReadChain(ctx, tgt, w.sign.Trust, base, sum)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Broken != nil {
		t.Fatalf("chain on %s broken: %v", tgt.Name(), ch.Broken)
	}
	var revs []manifest.LogRevision
	var leases []manifest.LeaseRecord
	for _, s := range ch.Segments {
		ls, err := catalog.ReadSegment(ctx, tgt, s, w.ids, func(r *manifest.LogRevision) error {
			revs = append(revs, *r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, ls...)
	}
	return ch, revs, leases
}

func sameRevisions(t *testing.T, got, want []manifest.LogRevision) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("log holds %d revisions, the source %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Revision != w.Revision || len(g.Events) != len(w.Events) {
			t.Fatalf("revision %d: log has revision %d with %d events, source %d with %d", i, g.Revision, len(g.Events), w.Revision, len(w.Events))
		}
		for j := range w.Events {
			ge, we := g.Events[j], w.Events[j]
			if ge.Delete != we.Delete || !bytes.Equal(ge.Key, we.Key) || !bytes.Equal(ge.Value, we.Value) ||
				ge.CreateRevision != we.CreateRevision || ge.Version != we.Version || ge.Lease != we.Lease {
				t.Fatalf("revision %d event %d: log %+v, source %+v", w.Revision, j, ge, we)
			}
		}
		if g.Seen.IsZero() {
			t.Fatalf("revision %d: no seen time", g.Revision)
		}
	}
}

func run(t *testing.T, c *Capture) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	return func() error {
		cancel()
		return <-errc
	}
}

// TestCaptureEveryRevision: every revision after the full set, on both
// targets, exactly as etcd served it, in a chain of signed segments with
// HashKV at their ends, and lease facts for every lease met.
func TestCaptureEveryRevision(t *testing.T) {
	w := newWorld(t)
	c, err := New(w.options("agent-a"))
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, c)
	for round := range 4 {
		w.load(t, 40, uint64(round+2))
		time.Sleep(200 * time.Millisecond) // several segments, not one
	}
	end := w.revision(t)
	waitDurable(t, c, end)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := w.source(t, w.base.Etcd.Revision+1, end)
	for _, tgt := range w.targets {
		ch, got, leases := w.logged(t, tgt, w.base)
		if len(ch.Segments) < 2 {
			t.Errorf("target %s: %d segments, want several", tgt.Name(), len(ch.Segments))
		}
		if ch.Proof(end) == nil {
			t.Errorf("target %s: no segment carries a HashKV", tgt.Name())
		}
		sameRevisions(t, got, want)
		granted, revoked := 0, 0
		for _, l := range leases {
			if l.Revoked {
				revoked++
			} else if l.TTL > 0 {
				granted++
			}
		}
		if granted == 0 || revoked == 0 {
			t.Errorf("target %s: %d leases granted with a TTL and %d revoked recorded, want both", tgt.Name(), granted, revoked)
		}
	}
}

// TestCaptureTakeover: two writers that both believe they lead never fork
// the log: one loses each head it races for, stops, and the next run
// continues exactly where the durable chain ends.
func TestCaptureTakeover(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	lost := 0
	var caps []*Capture
	for _, name := range []string{"agent-a", "agent-b"} {
		c, err := New(w.options(name))
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := c.Run(ctx)
				if errors.Is(err, manifest.ErrLost) {
					mu.Lock()
					lost++
					mu.Unlock()
					// As the agent does: a short pause, then the durable end again.
					time.Sleep(50 * time.Millisecond)
					continue
				}
				if err != nil && ctx.Err() == nil {
					t.Errorf("%s: %v", name, err)
					return
				}
			}
		}()
	}
	for round := range 6 {
		w.load(t, 30, uint64(round+10))
		time.Sleep(100 * time.Millisecond)
	}
	end := w.revision(t)
	testenv.Eventually(t, 60*time.Second, "either writer to store the end", func() bool {
		return caps[0].Status().Durable >= end || caps[1].Status().Durable >= end
	})
	cancel()
	wg.Wait()
	want := w.source(t, w.base.Etcd.Revision+1, end)
	for _, tgt := range w.targets {
		ch, got, _ := w.logged(t, tgt, w.base)
		sameRevisions(t, got[:len(want)], want)
		writers := map[string]bool{}
		for _, s := range ch.Segments {
			writers[s.Head.Writer] = true
		}
		t.Logf("target %s: %d segments by %v; %d lost races", tgt.Name(), len(ch.Segments), writers, lost)
	}
}

// TestCaptureBehindCompaction: a log that would start at a compacted
// revision cannot be captured; the capture says a new full set is needed.
func TestCaptureBehindCompaction(t *testing.T) {
	w := newWorld(t)
	w.load(t, 20, 3)
	rev := w.revision(t)
	if _, err := w.cli.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	c, err := New(w.options("agent-a"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = c.Run(ctx)
	if !errors.Is(err, ErrNeedFullSet) {
		t.Fatalf("Run = %v, want ErrNeedFullSet", err)
	}
	t.Log(err)
	// The full set it asks for starts a chain that can be captured.
	w.base = w.backup(t)
	stop := run(t, c)
	w.load(t, 10, 4)
	waitDurable(t, c, w.revision(t))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestCaptureTargetMissesSegment: a target that fails a segment leaves
// the chain; the capture says so once and goes on with the other.
func TestCaptureTargetMissesSegment(t *testing.T) {
	w := newWorld(t)
	o := w.options("agent-a")
	var reasons []string
	var mu sync.Mutex
	o.NeedFullSet = func(r string) {
		mu.Lock()
		reasons = append(reasons, r)
		mu.Unlock()
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, c)
	w.load(t, 10, 5)
	waitDurable(t, c, w.revision(t))
	// The NAS goes away: its directory can no longer be written.
	nas := w.targets[1].(*storage.Local)
	if err := os.Chmod(filepath.Join(nas.Dir(), cluster, w.base.ID, "log"), 0o500); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// root writes anyway: take the directory away instead.
		if err := os.Rename(nas.Dir(), nas.Dir()+".gone"); err != nil {
			t.Fatal(err)
		}
	}
	w.load(t, 10, 6)
	end := w.revision(t)
	waitDurable(t, c, end)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reasons) != 1 {
		t.Fatalf("NeedFullSet told %d times (%v), want once", len(reasons), reasons)
	}
	if st := c.Status(); len(st.Targets) != 1 || st.Targets[0] != "usb" {
		t.Errorf("capture writes to %v, want only usb", st.Targets)
	}
	_, got, _ := w.logged(t, w.targets[0], w.base)
	if got[len(got)-1].Revision != end {
		t.Errorf("usb's log ends at %d, want %d", got[len(got)-1].Revision, end)
	}
}
