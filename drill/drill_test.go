package drill

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/kubedata"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/restore"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
	"time"
)

// source is a 3-member etcd with Kubernetes-like data and a kubeadm
// host's files, backed up to a local target.
type source struct {
	etcd *testenv.EtcdCluster
	root string
	usb  storage.Target
	dir  string
	rs   []crypto.Recipient
	ids  []age.Identity
	key  *testenv.SigningKey
}

func newSource(t *testing.T) *source {
	t.Helper()
	s := &source{etcd: testenv.StartEtcd(t, testenv.EtcdOptions{Members: 3}), root: filepath.Join(t.TempDir(), "host")}
	if _, err := kubedata.Fill(context.Background(), s.etcd.Client(), kubedata.Options{Bytes: 1 << 20, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	testenv.KubeadmInit(t, s.root, testenv.KubeOptions{})
	s.rs, s.ids = testenv.AgeKeys(t)
	s.key = testenv.NewSigningKey(t)
	s.dir = t.TempDir()
	var err error
	if s.usb, err = storage.NewLocal("usb", s.dir); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *source) backup(t *testing.T) *manifest.Manifest {
	t.Helper()
	ctx := context.Background()
	key := s.key
	res, err := snapshot.Backup(ctx, snapshot.Options{
		Cluster: "prod", Etcd: snapshot.EtcdOptions{Endpoints: s.etcd.Endpoints()}, Root: s.root, State: config.DefaultState(),
		Recipients: s.rs, Signer: key.Signer, Trust: key.Trust, Targets: []storage.Target{s.usb}, Node: "cp1",
	})
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := catalog.LoadManifest(ctx, s.usb, key.Trust, "prod", res.Manifest.ID)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (s *source) drill(t *testing.T, m *manifest.Manifest) *Report {
	t.Helper()
	sandbox := t.TempDir()
	rep, err := Run(context.Background(), Options{
		Manifest: m, Source: restore.Source{Kind: "local", Path: s.dir}, Target: s.usb, Identities: s.ids,
		Sandbox: sandbox, Live: s.etcd.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(sandbox); len(left) > 0 {
		t.Errorf("the drill left %d entries in its sandbox", len(left))
	}
	return rep
}

func grades(rep *Report) map[string]Grade {
	out := map[string]Grade{}
	for _, c := range rep.Checks {
		if c.Grade.rank() >= out[c.ID].rank() {
			out[c.ID] = c.Grade
		}
	}
	return out
}

// TestDrillOfAGoodBackup: every check passes, on as many members as the
// source had, with real figures; the report stores and reads back.
func TestDrillOfAGoodBackup(t *testing.T) {
	s := newSource(t)
	m := s.backup(t)
	rep := s.drill(t, m)
	if rep.Result != Pass {
		t.Fatalf("drill %s: %v", rep.Result, rep.Failures())
	}
	g := grades(rep)
	for _, id := range []string{"restore", "etcd-quorum", "etcd-revision", "etcd-hashkv", "etcd-keys", "drift", "cert-chain", "key-match", "kubeconfig"} {
		if g[id] != Pass {
			t.Errorf("check %s: %q, want pass", id, g[id])
		}
	}
	if rep.Members != 3 || rep.Keys == 0 || rep.RTOSeconds <= 0 || rep.RPOSeconds <= 0 {
		t.Errorf("figures: %d members, %d keys, RTO %v, RPO %v", rep.Members, rep.Keys, rep.RTOSeconds, rep.RPOSeconds)
	}
	ctx := context.Background()
	if err := Store(ctx, s.usb, s.key.Signer, rep); err != nil {
		t.Fatal(err)
	}
	// A report planted without a trusted signature, dated later, is
	// never part of the history.
	planted := `{"id":"20991231T000000.000Z-000000","backup":"x","finished":"2099-12-31T00:00:00Z","result":"pass"}`
	if err := s.usb.Put(ctx, "prod/drills/20991231T000000.000Z-000000.json", strings.NewReader(planted), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	hist, err := History(ctx, s.usb, s.key.Trust, "prod")
	if err != nil || len(hist) != 1 || hist[0].ID != rep.ID || hist[0].Result != Pass {
		t.Fatalf("history %+v, %v", hist, err)
	}
	// The catalog passes the reports by.
	if sets, err := catalog.Sets(ctx, s.usb, "prod"); err != nil || len(sets) != 1 {
		t.Fatalf("sets after storing a report: %v, %v", sets, err)
	}
	var pdf bytes.Buffer
	if err := PDF(&pdf, rep); err != nil {
		t.Fatal(err)
	}
	text := pdfText(t, pdf.Bytes())
	for _, want := range []string{rep.ID, m.ID, "PASS", "etcd-hashkv", "RTO"} {
		if !strings.Contains(text, want) {
			t.Errorf("the PDF report lacks %q", want)
		}
	}
}

// TestDrillFindsDamage: a backup damaged in each way fails its drill, and
// the report names why.
func TestDrillFindsDamage(t *testing.T) {
	s := newSource(t)
	other := s.backup(t)
	etcdFile := func(m *manifest.Manifest) string {
		return filepath.Join(s.dir, filepath.FromSlash(manifest.Key(m.Cluster, m.ID, manifest.EtcdObject)))
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, m *manifest.Manifest)
		check  string
		reason string
	}{
		{"flipped byte", func(t *testing.T, m *manifest.Manifest) {
			f := etcdFile(m)
			b := readWritable(t, f)
			b[len(b)/2] ^= 0xff
			os.WriteFile(f, b, 0o444)
		}, "restore", "corrupt or truncated"},
		{"truncated etcd object", func(t *testing.T, m *manifest.Manifest) {
			f := etcdFile(m)
			b := readWritable(t, f)
			os.WriteFile(f, b[:len(b)/2], 0o444)
		}, "restore", "truncated: "},
		{"swapped manifest", func(t *testing.T, m *manifest.Manifest) {
			// The other backup's objects under this set's manifest.
			for _, o := range m.Objects {
				src := filepath.Join(s.dir, filepath.FromSlash(manifest.Key(other.Cluster, other.ID, o.Name)))
				dst := filepath.Join(s.dir, filepath.FromSlash(manifest.Key(m.Cluster, m.ID, o.Name)))
				readWritable(t, dst)
				os.WriteFile(dst, readWritable(t, src), 0o444)
			}
		}, "restore", "the manifest records"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := s.backup(t)
			tc.damage(t, m)
			rep := s.drill(t, m)
			if rep.Result != Fail {
				t.Fatalf("drill of a damaged backup: %s", rep.Result)
			}
			found := false
			for _, f := range rep.Failures() {
				found = found || (strings.HasPrefix(f, tc.check+" ") && strings.Contains(f, tc.reason))
			}
			if !found {
				t.Errorf("failures %q name no %s check with %q", rep.Failures(), tc.check, tc.reason)
			}
		})
	}
	t.Run("wrong identity", func(t *testing.T) {
		m := s.backup(t)
		_, others := testenv.AgeKeys(t)
		rep, err := Run(context.Background(), Options{Manifest: m, Source: restore.Source{Kind: "local", Path: s.dir},
			Target: s.usb, Identities: others, Sandbox: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Result != Fail || !strings.Contains(strings.Join(rep.Failures(), "\n"), "no identity matches") {
			t.Fatalf("drill with another key: %s %q", rep.Result, rep.Failures())
		}
	})
	// A file the manifests reference fails the backup itself; the etcd
	// CA key is referenced by none, and only the drill can miss it.
	t.Run("missing PKI file", func(t *testing.T) {
		key := filepath.Join(s.root, "etc/kubernetes/pki/etcd/ca.key")
		if err := os.Remove(key); err != nil {
			t.Fatal(err)
		}
		rep := s.drill(t, s.backup(t))
		if rep.Result != Fail || !strings.Contains(strings.Join(rep.Failures(), "\n"), "etcd/ca.key") {
			t.Fatalf("drill without etcd/ca.key: %s %q", rep.Result, rep.Failures())
		}
	})
}

// readWritable reads a stored object (local targets leave them 0444) and
// makes it writable for the damage that follows.
func readWritable(t *testing.T, path string) []byte {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pdfText(t *testing.T, pdf []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "r.pdf")
	os.WriteFile(f, pdf, 0o600)
	out, err := exec.Command("pdftotext", f, "-").CombinedOutput()
	if err != nil {
		t.Fatalf("pdftotext: %v: %s", err, out)
	}
	return string(out)
}

// TestMembersStopWithoutQuorum: a drill stopped while its members wait
// for each other (here one member of two, the other never starts) still
// stops them.
func TestMembersStopWithoutQuorum(t *testing.T) {
	nodes, err := loopbackNodes(2)
	if err != nil {
		t.Fatal(err)
	}
	plan := &restore.Plan{
		InitialCluster: nodes[0].Name + "=" + nodes[0].PeerURL + "," + nodes[1].Name + "=" + nodes[1].PeerURL,
		Options:        restore.Options{EtcdDataDir: "/var/lib/etcd", Token: "drill-test"},
	}
	ms := &members{}
	if err := ms.StartEtcd(context.Background(), &restore.Env{Plan: plan, Node: nodes[0], Root: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		ms.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("a member without quorum did not stop within 30s")
	}
}

// TestDrillToARevision drills a restore to revisions inside the captured
// log written after a backup: the drill replays the log on every member,
// proves the restored database is at the revision with the source's
// keyspace there, and reports the replay; a replay no HashKV proves is a
// warning.
func TestDrillToARevision(t *testing.T) {
	ctx := context.Background()
	s := newSource(t)
	m := s.backup(t)
	_, sum, err := catalog.LoadManifest(ctx, s.usb, s.key.Trust, "prod", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	cli := s.etcd.Client()
	var revs []int64
	for i := range 12 {
		var resp *clientv3.PutResponse
		if resp, err = cli.Put(ctx, fmt.Sprintf("/registry/after/%d", i%5), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		revs = append(revs, resp.Header.Revision)
	}
	del, err := cli.Delete(ctx, "/registry/after/1")
	if err != nil {
		t.Fatal(err)
	}
	end := del.Header.Revision
	log := testenv.WatchLog(t, cli, m.Etcd.Revision+1, end)
	split := slices.IndexFunc(log, func(r manifest.LogRevision) bool { return r.Revision == revs[5] })
	w := &testenv.CapturedLog{Target: s.usb, Key: s.key, Recipients: s.rs, Base: m, BaseSum: sum}
	w.Append(t, log[:split+1], nil, testenv.HashKV(t, cli, s.etcd.Endpoints()[0], revs[5]))
	w.Append(t, log[split+1:], nil, nil)
	chain, err := catalog.ReadChain(ctx, s.usb, s.key.Trust, m, sum)
	if err != nil || chain.End() != end {
		t.Fatalf("the log reaches %d (%v), want %d", chain.End(), err, end)
	}
	for _, tc := range []struct {
		name   string
		rev    int64
		grade  Grade // the replay's
		proved int64
	}{
		{"proved", revs[9], Pass, revs[5]},
		{"unproved", revs[3], Warn, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(ctx, Options{Manifest: m, Revision: tc.rev, Chain: chain, Source: restore.Source{Kind: "local", Path: s.dir},
				Target: s.usb, Identities: s.ids, Sandbox: t.TempDir(), Live: cli})
			if err != nil {
				t.Fatal(err)
			}
			g := grades(rep)
			for _, id := range []string{"restore", "etcd-quorum", "etcd-revision", "replay-revision", "etcd-hashkv", "etcd-keys"} {
				if g[id] != Pass {
					t.Errorf("check %s: %q, want pass (failures %q)", id, g[id], rep.Failures())
				}
			}
			if g["replay"] != tc.grade || rep.Result != tc.grade {
				t.Errorf("replay %q and drill %q, want %q", g["replay"], rep.Result, tc.grade)
			}
			r := rep.Replay
			if rep.Revision != tc.rev || r == nil || r.Revision != tc.rev || r.Base != m.Etcd.Revision || r.Applied != tc.rev-m.Etcd.Revision ||
				r.ProvedAt != tc.proved || r.Seconds <= 0 {
				t.Fatalf("report of the replay %+v (revision %d), want %d applied to %d, proved at %d", r, rep.Revision, tc.rev-m.Etcd.Revision, tc.rev, tc.proved)
			}
			at, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(tc.rev), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Keys != at.Count {
				t.Errorf("the drill served %d keys, the source had %d at revision %d", rep.Keys, at.Count, tc.rev)
			}
			var md bytes.Buffer
			if err := Markdown(&md, rep); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(md.String(), fmt.Sprintf("| revision | %d: the set's %d + %d revisions replayed", tc.rev, m.Etcd.Revision, r.Applied)) ||
				!strings.Contains(md.String(), "| replay time |") {
				t.Errorf("the report does not say what was replayed:\n%s", md.String())
			}
		})
	}
}
