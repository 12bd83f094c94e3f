package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// captureConfig is the agent config of the log tests: segments closed
// every second with etcd's HashKV on most, no scheduled backup to start
// chains of its own.
func captureConfig(addr, extra string) string {
	return fmt.Sprintf(`schedule: {backup: "0 0 1 1 *", prune: "@every 1h"}
agent:
  listen: %q
  checkInterval: 1s
  shutdownGrace: 5s
  capture: {segmentPeriod: 1s, hashEvery: 2s}
%s`, addr, extra)
}

// logStatus is the agent's /status of the log.
func (p *agentProc) logDurable(t *testing.T) int64 {
	t.Helper()
	_, body := p.get("/status")
	var st struct {
		Log map[string]struct {
			Durable int64 `json:"durable"`
		} `json:"log"`
	}
	json.Unmarshal([]byte(body), &st)
	return st.Log[cluster].Durable
}

// writer is a bounded write load on etcd: puts of new keys and
// overwrites, deletes, multi-op transactions, and keys on leases, some of
// which it revokes.
type writer struct {
	cli  *clientv3.Client
	rnd  *rand.Rand
	n    int
	live []clientv3.LeaseID
}

func newWriter(cli *clientv3.Client, seed uint64) *writer {
	return &writer{cli: cli, rnd: rand.New(rand.NewPCG(seed, 1))}
}

// write does count operations and returns the revision after them.
func (wr *writer) write(t *testing.T, count int) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var rev int64
	for range count {
		wr.n++
		key := fmt.Sprintf("/registry/pods/ns%d/p%03d", wr.rnd.IntN(3), wr.rnd.IntN(200))
		value := bytes.Repeat([]byte{byte('a' + wr.n%26)}, 100+wr.rnd.IntN(900))
		var h *etcdserverpb.ResponseHeader
		switch wr.n % 8 {
		case 0, 1, 2:
			r, err := wr.cli.Put(ctx, key, string(value))
			if err != nil {
				t.Fatal(err)
			}
			h = r.Header
		case 3:
			r, err := wr.cli.Delete(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			h = r.Header
		case 4, 5:
			r, err := wr.cli.Txn(ctx).Then(
				clientv3.OpPut(key+"/spec", string(value)), clientv3.OpPut(key+"/status", "Running"),
				clientv3.OpDelete(fmt.Sprintf("/registry/events/ns%d/", wr.rnd.IntN(3)), clientv3.WithPrefix()),
			).Commit()
			if err != nil {
				t.Fatal(err)
			}
			h = r.Header
		case 6:
			l, err := wr.cli.Grant(ctx, int64(300+wr.rnd.IntN(300)))
			if err != nil {
				t.Fatal(err)
			}
			wr.live = append(wr.live, l.ID)
			r, err := wr.cli.Put(ctx, fmt.Sprintf("/registry/events/ns%d/e%d", wr.rnd.IntN(3), wr.n), "event", clientv3.WithLease(l.ID))
			if err != nil {
				t.Fatal(err)
			}
			h = r.Header
		case 7:
			if len(wr.live) > 3 {
				id := wr.live[0]
				wr.live = wr.live[1:]
				if _, err := wr.cli.Revoke(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			r, err := wr.cli.Put(ctx, fmt.Sprintf("/registry/leases/l%d", wr.n%5), "renewed")
			if err != nil {
				t.Fatal(err)
			}
			h = r.Header
		}
		rev = h.Revision
	}
	return rev
}

// sourceRevisions are the revisions from..to as etcd serves them.
func sourceRevisions(t *testing.T, cli *clientv3.Client, from, to int64) map[int64][]manifest.LogEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out := map[int64][]manifest.LogEvent{}
	for resp := range cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		done := false
		for _, ev := range resp.Events {
			kv := ev.Kv
			if kv.ModRevision > to {
				done = true
				break
			}
			le := manifest.LogEvent{Key: kv.Key, Delete: ev.Type == mvccpb.DELETE}
			if !le.Delete {
				le.Value, le.CreateRevision, le.Version, le.Lease = kv.Value, kv.CreateRevision, kv.Version, kv.Lease
			}
			out[kv.ModRevision] = append(out[kv.ModRevision], le)
			done = kv.ModRevision == to
		}
		if done {
			break
		}
	}
	return out
}

// logAudit reads every chain on a target as a restore would, checks each
// is whole, that together they reach every revision from from to end, and
// that each revision a chain holds is the source's.
func logAudit(t *testing.T, w *world, tg storage.Target, from, end int64, source map[int64][]manifest.LogEvent) (chains int, writers map[string]int) {
	t.Helper()
	ctx := t.Context()
	trust, err := manifest.ParseTrust([]string{w.signingPub})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := crypto.LoadIdentities(w.identity, nil)
	if err != nil {
		t.Fatal(err)
	}
	sets, err := catalog.Sets(ctx, tg, cluster)
	if err != nil {
		t.Fatal(err)
	}
	writers = map[string]int{}
	covered := map[int64]bool{}
	for _, s := range sets {
		if !s.Complete {
			continue
		}
		m, sum, err := catalog.LoadManifest(ctx, tg, trust, cluster, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		c, err := catalog.ReadChain(ctx, tg, trust, m, sum)
		if err != nil {
			t.Fatal(err)
		}
		if c.Broken != nil {
			t.Fatalf("target %s: the log of %s is broken: %v", tg.Name(), s.ID, c.Broken)
		}
		if len(c.Segments) > 0 {
			chains++
		}
		for r := m.Etcd.Revision + 1; r <= c.End(); r++ {
			covered[r] = true
		}
		for _, seg := range c.Segments {
			writers[seg.Head.Writer]++
			_, err := catalog.ReadSegment(ctx, tg, seg, ids, func(r *manifest.LogRevision) error {
				want, ok := source[r.Revision]
				if !ok {
					return nil // before the window the test compares
				}
				if !sameEvents(r.Events, want) {
					return fmt.Errorf("revision %d in the log of %s differs from the source's", r.Revision, s.ID)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for r := from; r <= end; r++ {
		if !covered[r] {
			t.Fatalf("target %s: revision %d is in no chain (the test wants %d..%d)", tg.Name(), r, from, end)
		}
	}
	return chains, writers
}

func sameEvents(got, want []manifest.LogEvent) bool {
	return slices.EqualFunc(got, want, func(a, b manifest.LogEvent) bool {
		return a.Delete == b.Delete && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) &&
			a.CreateRevision == b.CreateRevision && a.Version == b.Version && a.Lease == b.Lease
	})
}

func (w *world) targets(t *testing.T) []storage.Target {
	t.Helper()
	usb, err := storage.NewLocal("usb", w.usb)
	if err != nil {
		t.Fatal(err)
	}
	out := []storage.Target{usb}
	if w.minio != nil {
		s3, err := storage.NewS3(t.Context(), "s3", storage.S3Options{Endpoint: w.minio.Endpoint(), Bucket: bucket, Prefix: s3Prefix,
			AccessKey: w.minio.AccessKey(), SecretKey: w.minio.SecretKey(), Insecure: true, PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s3)
	}
	return out
}

// TestLogLeaderFrozen: two agents that take turns leading capture one
// log. The leader is frozen (SIGSTOP) while writes go on; the standby
// takes the lease and continues the chain where it is durable; the frozen
// one resumes still believing it leads, and the log neither forks nor
// skips nor repeats a revision on either target.
func TestLogLeaderFrozen(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1, s3: true})
	k := testenv.StartKubeadmHost(t, testenv.KubeOptions{})
	k.Kubectl(t, "create", "namespace", "kdr-system")
	kubeconfig := k.Kubeconfig(t, "super-admin.conf")
	cli := w.etcd.Client()
	wr := newWriter(cli, 1)
	wr.write(t, 50)
	cfg := writeConfig(t, w.spec())
	first := w.backup(t, cfg)
	agents := map[string]*agentProc{}
	for _, node := range []string{"cp1", "cp2"} {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		spec := w.spec()
		spec.extra = captureConfig(addr, leaderElection(kubeconfig))
		agents[node] = startAgent(t, w.env(), writeConfig(t, spec), w.host.root, node, addr)
	}
	leader, standby := waitLeader(t, agents)
	rev := wr.write(t, 100)
	testenv.Eventually(t, time.Minute, "the leader's log reaches the writes", func() bool { return agents[leader].logDurable(t) >= rev })

	// Frozen mid-stream: writes go on while it cannot renew its lease.
	var mu sync.Mutex
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for range 200 {
			select {
			case <-stopLoad:
				return
			default:
			}
			mu.Lock()
			wr.write(t, 5)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	frozen := agents[leader].cmd.Process
	if err := frozen.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { frozen.Signal(syscall.SIGCONT) })
	testenv.Eventually(t, time.Minute, "the standby leads", func() bool { return agents[standby].status(t).Leader })
	mu.Lock()
	rev = wr.write(t, 20)
	mu.Unlock()
	testenv.Eventually(t, time.Minute, "the standby's log continues", func() bool { return agents[standby].logDurable(t) >= rev })
	// Resumed, it still holds a segment it believes is its to store.
	if err := frozen.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	close(stopLoad)
	<-loadDone
	end := wr.write(t, 20)
	var now string
	testenv.Eventually(t, time.Minute, "the log reaches the last write", func() bool {
		for node, a := range agents {
			if a.status(t).Leader && a.logDurable(t) >= end {
				now = node
				return true
			}
		}
		return false
	})
	t.Logf("leader %s frozen, %s took over, %s leads at the end", leader, standby, now)
	source := sourceRevisions(t, cli, 1, end)
	for _, tg := range w.targets(t) {
		chains, writers := logAudit(t, w, tg, setRevision(t, w, first)+1, end, source)
		t.Logf("target %s: %d chains, segments by writer %v", tg.Name(), chains, writers)
		if len(writers) < 2 {
			t.Errorf("target %s: segments by %v, want both agents'", tg.Name(), writers)
		}
	}
	r := w.kdr(t, cfg, "verify", "--identity", w.identity)
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "log: revisions") {
		t.Errorf("verify says nothing of the log:\n%s", r)
	}
}

// TestLogBehindCompaction: an agent that starts after the cluster
// compacted past the newest set cannot capture from it: it says so,
// counts it, takes a full backup at once, and the log continues that set.
func TestLogBehindCompaction(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	cli := w.etcd.Client()
	wr := newWriter(cli, 2)
	wr.write(t, 30)
	cfg := writeConfig(t, w.spec())
	old := w.backup(t, cfg)
	rev := wr.write(t, 60)
	if _, err := cli.Compact(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	spec := w.spec()
	spec.extra = captureConfig(addr, "  leaderElection: {enabled: false}\n")
	a := startAgent(t, nil, writeConfig(t, spec), w.host.root, "cp1", addr)
	requests := fmt.Sprintf(`kdr_log_full_set_requests_total{cluster=%q}`, cluster)
	testenv.Eventually(t, time.Minute, "a full set asked for", func() bool { return a.metric(requests) >= 1 })
	end := wr.write(t, 40)
	testenv.Eventually(t, time.Minute, "the log continues the new set", func() bool { return a.logDurable(t) >= end })
	if !strings.Contains(a.log.String(), "compaction") {
		t.Errorf("the agent's log does not say the watch fell behind compaction:\n%s", a.log)
	}
	sets, err := filepath.Glob(filepath.Join(w.usb, cluster, "*", "manifest.json"))
	if err != nil || len(sets) != 2 {
		t.Fatalf("%d sets, want the old one and the one the capture asked for: %v", len(sets), sets)
	}
	if _, err := os.Stat(filepath.Join(w.usb, cluster, old, "log")); err == nil {
		t.Errorf("the old set %s has a log: nothing after it could be captured", old)
	}
	source := sourceRevisions(t, cli, rev+1, end)
	var fresh string
	for _, m := range sets {
		if id := filepath.Base(filepath.Dir(m)); id != old {
			fresh = id
		}
	}
	chains, _ := logAudit(t, w, w.targets(t)[0], setRevision(t, w, fresh)+1, end, source)
	if chains != 1 {
		t.Errorf("%d chains, want 1", chains)
	}
}

// setRevision is the etcd revision a set's manifest records.
func setRevision(t *testing.T, w *world, id string) int64 {
	t.Helper()
	var m struct {
		Etcd struct {
			Revision int64 `json:"revision"`
		} `json:"etcd"`
	}
	if err := json.Unmarshal(testenv.ReadFile(t, filepath.Join(w.usb, cluster, id, manifest.ManifestObject)), &m); err != nil {
		t.Fatal(err)
	}
	return m.Etcd.Revision
}

// TestLogRestoreToRevision is the captured log's acceptance: real etcd
// under a write load (puts, deletes, multi-op transactions, keys on
// leases, a compaction by the cluster mid-way), the agent capturing to
// MinIO and a local target; for 20 random revisions, a restore to that
// revision serves exactly what `etcdctl get --prefix "" --rev N` of the
// source does, with create and mod revisions, versions and lease IDs,
// and its replay proved against etcd's HashKV. Leases come back as they
// were at N. A damaged, missing, unsigned or foreign segment is refused
// by verify, restore and drill, named, and the revisions before it stay
// restorable.
func TestLogRestoreToRevision(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1, s3: true})
	cli := w.etcd.Client()
	ctx := t.Context()
	wr := newWriter(cli, 3)
	wr.write(t, 60)
	grant := func(key string) clientv3.LeaseID {
		l, err := cli.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, key, "on a lease", clientv3.WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
		return l.ID
	}
	revoke := func(id clientv3.LeaseID) {
		if _, err := cli.Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// Granted before the full set, alive throughout.
	before := grant("/registry/leases/before")
	cfg := writeConfig(t, w.spec())
	w.backup(t, cfg)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	spec := w.spec()
	spec.extra = captureConfig(addr, "  leaderElection: {enabled: false}\n")
	a := startAgent(t, w.env(), writeConfig(t, spec), w.host.root, "cp1", addr)

	// Granted in the log; one revoked before the lease revision, one after.
	revokedBefore := grant("/registry/leases/revoked-before")
	wr.write(t, 40)
	revoke(revokedBefore)
	wr.write(t, 20)
	laterRevoked := grant("/registry/leases/revoked-after")
	wr.write(t, 30)
	time.Sleep(1500 * time.Millisecond) // a segment end between the revocations and N
	leaseRev := wr.write(t, 10)
	time.Sleep(1500 * time.Millisecond)
	revoke(laterRevoked)
	mid := wr.write(t, 80)
	// What the source served at the lease revision, before it compacts.
	wants := map[int64]map[string]*mvccpb.KeyValue{leaseRev: sourceAt(t, cli, leaseRev)}
	// The cluster compacts while the log is captured, as Kubernetes does.
	compacted := mid - 50
	if _, err := cli.Compact(ctx, compacted); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		wr.write(t, 50)
		time.Sleep(700 * time.Millisecond)
	}
	end := wr.write(t, 20)
	testenv.Eventually(t, 2*time.Minute, "the log reaches the last write", func() bool { return a.logDurable(t) >= end })

	// 20 random revisions the source still serves, and the lease revision.
	rnd := rand.New(rand.NewPCG(13, 0))
	revs := []int64{leaseRev, end}
	for len(revs) < 20 {
		revs = append(revs, compacted+rnd.Int64N(end-compacted+1))
	}
	for i, n := range revs {
		target := []string{"usb", "s3"}[i%2]
		got := w.restoreAt(t, cfg, target, n)
		want := wants[n]
		if want == nil {
			want = sourceAt(t, cli, n)
		}
		if d := diffKVs(got.kvs, want); d != "" {
			t.Fatalf("restore to %d from %s: %s", n, target, d)
		}
		if !strings.Contains(got.out, "proved=true") {
			t.Errorf("restore to %d from %s: the replay was not proved against a HashKV:\n%s", n, target, got.out)
		}
		if n == leaseRev {
			for id, alive := range map[clientv3.LeaseID]bool{before: true, laterRevoked: true, revokedBefore: false} {
				if got.leases[int64(id)] != alive {
					t.Errorf("restore to %d: lease %x alive %v, want %v (leases %v)", n, id, got.leases[int64(id)], alive, got.leases)
				}
			}
		}
	}
	t.Logf("restored %d revisions between %d and %d exactly", len(revs), compacted, end)

	// Damage, one kind per target copy, each refused by name; what comes
	// before it stays restorable.
	t.Run("damage", func(t *testing.T) {
		usb := w.targets(t)[0]
		trust, _ := manifest.ParseTrust([]string{w.signingPub})
		base, sum, err := catalog.Latest(ctx, usb, trust, cluster)
		if err != nil {
			t.Fatal(err)
		}
		c, err := catalog.ReadChain(ctx, usb, trust, base, sum)
		if err != nil || len(c.Segments) < 3 {
			t.Fatalf("chain of %d segments (%v), want at least 3", len(c.Segments), err)
		}
		seg := c.Segments[len(c.Segments)/2]
		h := seg.Head
		body := filepath.Join(w.usb, filepath.FromSlash(manifest.SegmentBodyKey(cluster, h.Base.ID, h.First, h.Last)))
		head := filepath.Join(w.usb, filepath.FromSlash(seg.Key))
		other := filepath.Join(t.TempDir(), "other")
		testenv.Mkdir(t, other, 0o755)
		foreignKey, _ := generateSigningKey(t, other)
		for _, tc := range []struct {
			name  string
			spoil func(t *testing.T) (restore func())
			want  string
		}{
			{"damaged body", func(t *testing.T) func() {
				return editFile(t, body, func(b []byte) []byte { b[len(b)/2] ^= 1; return b })
			}, "damaged"},
			{"missing head", func(t *testing.T) func() { return moveAway(t, head) }, "missing"},
			{"unsigned head", func(t *testing.T) func() { return moveAway(t, head+".sig") }, "not signed"},
			{"foreign head", func(t *testing.T) func() {
				undo := moveAway(t, head+".sig")
				signer, err := manifest.LoadSigner(foreignKey)
				if err != nil {
					t.Fatal(err)
				}
				sig, err := signer.Sign(testenv.ReadFile(t, head), manifest.NamespaceSegment)
				if err != nil {
					t.Fatal(err)
				}
				testenv.WriteFile(t, head+".sig", sig, 0o444)
				return func() {
					os.Remove(head + ".sig")
					undo()
				}
			}, "not a trusted key"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				undo := tc.spoil(t)
				defer undo()
				r := w.kdr(t, cfg, "verify", "--target", "usb", "--identity", w.identity)
				wantExit(t, r, 1)
				if !strings.Contains(r.stdout, fmt.Sprint(h.First)) || !strings.Contains(r.stdout, tc.want) {
					t.Errorf("verify does not name segment %d..%d (%s):\n%s", h.First, h.Last, tc.want, r)
				}
				// A body is read by fetch; a head already by the plan.
				ports := distinctPorts(t)
				r = w.kdr(t, cfg, "restore", "apply", "--target", "usb", "--revision", fmt.Sprint(h.Last), "--node", "cp1",
					"--node-ip", fmt.Sprintf("cp1=127.0.0.1,https://127.0.0.1:%d,https://127.0.0.1:%d", ports.EtcdPeer, ports.EtcdClient),
					"--root", t.TempDir(), "--identity", w.identity, "--until", "fetch")
				if r.code == 0 || !strings.Contains(r.stderr, fmt.Sprint(h.First)) {
					t.Errorf("restore past the damage:\n%s", r)
				}
				r = w.kdr(t, cfg, "drill", "--target", "usb", "--revision", fmt.Sprint(h.Last), "--identity", w.identity, "--no-store")
				if r.code == 0 || !strings.Contains(r.stdout+r.stderr, fmt.Sprint(h.First)) {
					t.Errorf("drill past the damage:\n%s", r)
				}
				r = w.kdr(t, cfg, "restore", "plan", "--target", "usb", "--revision", fmt.Sprint(h.First-1))
				wantExit(t, r, 0)
			})
		}
		// And a drill before it replays the log and proves it. (This
		// world's host is no kubeadm node: the drill's PKI checks fail on
		// files it never had, which the other drill tests cover.)
		r := w.kdr(t, cfg, "drill", "--target", "usb", "--revision", fmt.Sprint(h.First-1), "--identity", w.identity, "--no-store")
		for _, check := range []string{"pass  replay-revision", "pass  replay ", "pass  etcd-hashkv"} {
			if !strings.Contains(r.stdout, check) {
				t.Errorf("drill to %d: no %q\n%s", h.First-1, check, r)
			}
		}
	})
}

// restored is what a restore to a revision serves.
type restored struct {
	out    string
	kvs    map[string]*mvccpb.KeyValue
	leases map[int64]bool
}

// restoreAt restores the world's cluster to rev from target into a fresh
// root, up to the restored member, and serves it with an etcd of the
// test's.
func (w *world) restoreAt(t *testing.T, cfg, target string, rev int64) restored {
	t.Helper()
	root := t.TempDir()
	ports := distinctPorts(t)
	r := runKdr(t, w.env(), "--config", cfg, "--log-format", "text", "restore", "apply", "--target", target, "--revision", fmt.Sprint(rev),
		"--node", "cp1", "--node-ip", fmt.Sprintf("cp1=127.0.0.1,https://127.0.0.1:%d,https://127.0.0.1:%d", ports.EtcdPeer, ports.EtcdClient),
		"--root", root, "--identity", w.identity, "--until", "restore-etcd")
	wantExit(t, r, 0)
	member := startRestoredEtcd(t, filepath.Join(root, "var/lib/etcd"), "cp1",
		fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	resp, err := member.Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	out := restored{out: r.stdout + r.stderr, kvs: map[string]*mvccpb.KeyValue{}, leases: map[int64]bool{}}
	for _, kv := range resp.Kvs {
		out.kvs[string(kv.Key)] = kv
	}
	ls, err := member.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls.Leases {
		out.leases[int64(l.ID)] = true
	}
	member.Close()
	return out
}

// sourceAt is what the source serves at rev.
func sourceAt(t *testing.T, cli *clientv3.Client, rev int64) map[string]*mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(t.Context(), "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*mvccpb.KeyValue{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv
	}
	return out
}

// diffKVs says how two keyspaces differ, or "" when they are the same.
func diffKVs(got, want map[string]*mvccpb.KeyValue) string {
	var d []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("%s missing", k))
		case !bytes.Equal(g.Value, w.Value) || g.CreateRevision != w.CreateRevision || g.ModRevision != w.ModRevision ||
			g.Version != w.Version || g.Lease != w.Lease:
			d = append(d, fmt.Sprintf("%s: got create %d mod %d version %d lease %x, want %d %d %d %x", k,
				g.CreateRevision, g.ModRevision, g.Version, g.Lease, w.CreateRevision, w.ModRevision, w.Version, w.Lease))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s not in the source", k))
		}
	}
	slices.Sort(d)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("and %d more", len(d)-5))
	}
	return strings.Join(d, "; ")
}

// editFile changes a file in place and returns what puts it back.
func editFile(t *testing.T, path string, edit func([]byte) []byte) (undo func()) {
	t.Helper()
	orig := testenv.ReadFile(t, path)
	os.Chmod(path, 0o644)
	testenv.WriteFile(t, path, edit(append([]byte(nil), orig...)), 0o444)
	return func() { testenv.WriteFile(t, path, orig, 0o444) }
}

// moveAway takes a file away and returns what puts it back.
func moveAway(t *testing.T, path string) (undo func()) {
	t.Helper()
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Rename(path+".away", path); err != nil {
			t.Error(err)
		}
	}
}
