package restore

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/kubedata"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
)

// processRunner starts restored etcd members as real processes, as a
// kubelet or systemd would on a real host.
type processRunner struct {
	HostRunner
	t    *testing.T
	mu   sync.Mutex
	cmds map[string]*exec.Cmd
}

func (r *processRunner) StopControlPlane(context.Context, *Env) error { return nil }

func (r *processRunner) StartEtcd(_ context.Context, e *Env) error {
	n := e.Node
	cmd := exec.Command(testenv.Binary(r.t, "etcd"),
		"--name", n.Name, "--data-dir", e.path(e.Plan.Options.EtcdDataDir),
		"--listen-client-urls", n.ClientURL, "--advertise-client-urls", n.ClientURL,
		"--listen-peer-urls", n.PeerURL, "--initial-advertise-peer-urls", n.PeerURL,
		"--log-level", "warn")
	log, err := os.Create(filepath.Join(e.Root, "etcd.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	r.mu.Lock()
	r.cmds[n.Name] = cmd
	r.mu.Unlock()
	return nil
}

func (r *processRunner) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cmds {
		c.Process.Kill()
		c.Wait()
	}
}

func allKeys(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

// fixture is a real backup of a real cluster on a local target.
type fixture struct {
	src    *testenv.EtcdCluster
	usb    *storage.Local
	dir    string
	m      *manifest.Manifest
	ids    []age.Identity
	before map[string]string
}

func newFixture(t *testing.T, members int) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{src: testenv.StartEtcd(t, testenv.EtcdOptions{Members: members})}
	if _, err := kubedata.Fill(ctx, f.src.Client(), kubedata.Options{Bytes: 2 << 20, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	f.before = allKeys(t, f.src.Client())
	var rs []crypto.Recipient
	rs, f.ids = testenv.AgeKeys(t)
	key := testenv.NewSigningKey(t)
	f.dir = filepath.Join(t.TempDir(), "usb")
	os.Mkdir(f.dir, 0o755)
	var err error
	if f.usb, err = storage.NewLocal("usb", f.dir); err != nil {
		t.Fatal(err)
	}
	res, err := snapshot.Backup(ctx, snapshot.Options{
		Cluster: "prod", Etcd: snapshot.EtcdOptions{Endpoints: f.src.Endpoints()}, Root: t.TempDir(),
		Recipients: rs, Signer: key.Signer, Trust: key.Trust, Targets: []storage.Target{f.usb},
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.m, _, err = catalog.LoadManifest(ctx, f.usb, key.Trust, "prod", res.Manifest.ID); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRestoreThreeMembers backs up a 3-member cluster to a real MinIO,
// destroys it, and restores it onto three nodes, one of them a replacement
// with a new name and address: quorum, every key, HashKV, and a revision
// above the old one.
func TestRestoreThreeMembers(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 3)
	src, m, ids, before := f.src, f.m, f.ids, f.before
	minio := testenv.StartMinIO(t, testenv.MinIOOptions{})
	minio.CreateBucket(t, "kdr", false)
	s3, err := storage.NewS3(ctx, "s3", storage.S3Options{Endpoint: minio.Endpoint(), Bucket: "kdr", Prefix: "backups",
		AccessKey: minio.AccessKey(), SecretKey: minio.SecretKey(), Insecure: true, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	// The set goes to S3 as a backup would put it there.
	for _, o := range append(m.Objects, manifest.Object{Name: manifest.ManifestObject}) {
		key := manifest.Key(m.Cluster, m.ID, o.Name)
		rc, err := f.usb.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := s3.Put(ctx, key, rc, storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	usb := s3
	for i := range src.Members {
		src.Kill(i)
		os.RemoveAll(src.Members[i].DataDir)
	}
	var nodes []Node
	for i, ip := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.2"} {
		name := fmt.Sprintf("m%d", i+1)
		if i == 2 {
			name = "cp-new" // replacement hardware
		}
		nodes = append(nodes, Node{Name: name, IP: ip,
			PeerURL:   fmt.Sprintf("http://%s:%d", ip, testenv.FreePort(t)),
			ClientURL: fmt.Sprintf("http://%s:%d", ip, testenv.FreePort(t))})
	}
	plan, err := BuildPlan(m, Source{Kind: "s3", Endpoint: minio.Endpoint(), Bucket: "kdr", Prefix: "backups", Insecure: true}, Options{Topology: TopologySystemd, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	runner := &processRunner{t: t, cmds: map[string]*exec.Cmd{}}
	t.Cleanup(runner.stopAll)
	// HashKV of the snapshot the restore takes equals the manifest's: the
	// data restored is exactly what was backed up. The first node stops
	// after decrypt to show it, and resumes with the others.
	roots := make([]string, len(nodes))
	for i := range roots {
		roots[i] = t.TempDir()
	}
	env := &Env{Plan: plan, Root: roots[0], Target: usb, Identities: ids, Runner: runner, WaitTimeout: time.Minute}
	if err := Apply(ctx, env, nodes[0].Name, ApplyOptions{Until: StepDecrypt}); err != nil {
		t.Fatal(err)
	}
	snapPath := filepath.Join(roots[0], plan.Staging(), snapshotFile)
	raw, err := os.ReadFile(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "db")
	os.WriteFile(db, raw[:len(raw)-32], 0o600)
	out, err := exec.Command(testenv.Binary(t, "etcdutl"), "hashkv", db, "--rev", fmt.Sprint(m.Etcd.Revision), "-w", "simple").CombinedOutput()
	if err != nil {
		t.Fatalf("etcdutl hashkv: %v: %s", err, out)
	}
	var hash uint32
	fmt.Sscanf(string(out), "%d", &hash)
	if hash != m.Etcd.HashKV {
		t.Errorf("HashKV of the restored snapshot %d, manifest %d (%s)", hash, m.Etcd.HashKV, out)
	}

	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := &Env{Plan: plan, Root: roots[i], Target: usb, Identities: ids, Runner: runner, WaitTimeout: time.Minute}
			errs[i] = Apply(ctx, env, n.Name, ApplyOptions{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %s: %v", nodes[i].Name, err)
		}
	}

	eps := make([]string, len(nodes))
	for i, n := range nodes {
		eps[i] = n.ClientURL
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	after := allKeys(t, cli)
	if len(after) != len(before) {
		t.Errorf("restored %d keys, the cluster had %d", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("key %s differs after the restore", k)
		}
	}
	for _, n := range nodes {
		st, err := cli.Status(ctx, n.ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		if st.Header.Revision < m.Etcd.Revision+DefaultRevisionBump {
			t.Errorf("%s at revision %d: the bump did not happen", n.Name, st.Header.Revision)
		}
	}
	if _, ok := m.Object(manifest.EtcdObject); !ok {
		t.Fatal("manifest lost its etcd object")
	}
}
