package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/kubedata"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

type keyPair struct {
	recipients []crypto.Recipient
	identities []age.Identity
	sign       *testenv.SigningKey
}

func newKeyPair(t *testing.T) keyPair {
	rs, ids := testenv.AgeKeys(t)
	return keyPair{recipients: rs, identities: ids, sign: testenv.NewSigningKey(t)}
}

func newLocal(t *testing.T, name string) *storage.Local {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := storage.NewLocal(name, dir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func fill(t *testing.T, c *testenv.EtcdCluster, bytes int64) {
	t.Helper()
	if _, err := kubedata.Fill(context.Background(), c.Client(), kubedata.Options{Bytes: bytes, Seed: 1}); err != nil {
		t.Fatal(err)
	}
}

// readObject decrypts and decompresses one object of a stored set.
func readObject(t *testing.T, target storage.Target, m *manifest.Manifest, name string, ids []age.Identity) []byte {
	t.Helper()
	rc, err := target.Get(context.Background(), manifest.Key(m.Cluster, m.ID, name))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	plain, err := crypto.Decrypt(rc, ids)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zstd.NewReader(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// offlineHashKV computes HashKV of a snapshot file with the real etcdutl.
func offlineHashKV(t *testing.T, db []byte, rev int64) uint32 {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(path, db, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testenv.Binary(t, "etcdutl"), "hashkv", path, "--rev", fmt.Sprint(rev), "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl hashkv: %v", err)
	}
	var res struct {
		Hash uint32 `json:"hash"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("etcdutl hashkv output %q: %v", out, err)
	}
	return res.Hash
}

func TestBackupRoundTrip(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{TLS: true})
	fill(t, etcd, 4<<20)
	root := t.TempDir()
	kubeadmTree(t, root)
	keys := newKeyPair(t)
	usb, nfs := newLocal(t, "usb"), newLocal(t, "nfs")
	ctx := context.Background()

	// An independent snapshot with the client library etcdctl uses. Two
	// snapshots are not the same bytes (etcd commits its meta page between
	// them) but hold the same keyspace: their HashKVs must agree.
	direct, err := etcd.Client().SnapshotWithVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	streamed, err := io.ReadAll(direct.Snapshot)
	if err != nil {
		t.Fatal(err)
	}

	res, err := Backup(ctx, Options{
		Cluster:    "prod",
		Etcd:       EtcdOptions{Endpoints: etcd.Endpoints(), TLS: etcd.ClientTLS()},
		State:      kubeadmSets(),
		Root:       root,
		Recipients: keys.recipients, Signer: keys.sign.Signer, Trust: keys.sign.Trust,
		Targets: []storage.Target{usb, nfs},
		Node:    "cp1",
	})
	if err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	if len(res.Complete) != 2 {
		t.Fatalf("complete on %v, want both targets", res.Complete)
	}
	for _, target := range []storage.Target{usb, nfs} {
		db := readObject(t, target, m, manifest.EtcdObject, keys.identities)
		// The manifest's plain sha256 was taken of the bytes as etcd streamed
		// them, so equality here is byte identity with the stream; etcd's own
		// trailing hash proves the stream itself whole.
		obj, _ := m.Object(manifest.EtcdObject)
		if sha(db) != obj.PlainSHA256 || int64(len(db)) != obj.PlainSize {
			t.Fatalf("%s: decrypted snapshot is not byte-identical to what etcd streamed", target.Name())
		}
		if _, err := io.Copy(io.Discard, manifest.NewSnapshotReader(bytes.NewReader(db))); err != nil {
			t.Fatalf("%s: decrypted snapshot fails etcd's trailing hash: %v", target.Name(), err)
		}
		if m.Etcd.DBSize != int64(len(db))-sha256.Size {
			t.Errorf("dbSize %d, want %d", m.Etcd.DBSize, len(db)-sha256.Size)
		}
		if got := offlineHashKV(t, db[:len(db)-sha256.Size], m.Etcd.Revision); got != m.Etcd.HashKV || got == 0 {
			t.Errorf("HashKV of the restored snapshot at revision %d = %d, manifest says %d", m.Etcd.Revision, got, m.Etcd.HashKV)
		}
		if got := offlineHashKV(t, streamed[:len(streamed)-sha256.Size], m.Etcd.Revision); got != m.Etcd.HashKV {
			t.Errorf("HashKV of an independent snapshot = %d, manifest says %d", got, m.Etcd.HashKV)
		}
	}
	if m.Etcd.ClusterID == "" || len(m.Etcd.Members) != 1 || m.Etcd.Revision == 0 || m.Etcd.SnapshotMember != "m1" {
		t.Errorf("etcd facts missing from manifest: %+v", m.Etcd)
	}
	if len(m.State.Certificates) == 0 || len(m.Recipients) != 1 || m.Node != "cp1" {
		t.Errorf("state facts missing from manifest: certs %d recipients %v node %q", len(m.State.Certificates), m.Recipients, m.Node)
	}

	// The second backup links to the first on each target.
	res2, err := Backup(ctx, Options{
		Cluster: "prod", Etcd: EtcdOptions{Endpoints: etcd.Endpoints(), TLS: etcd.ClientTLS()},
		State: kubeadmSets(), Root: root, Recipients: keys.recipients, Signer: keys.sign.Signer, Trust: keys.sign.Trust, Targets: []storage.Target{usb, nfs},
	})
	if err != nil {
		t.Fatal(err)
	}
	m2, _, err := catalog.LoadManifest(ctx, usb, keys.sign.Trust, "prod", res2.Manifest.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, firstSum, err := catalog.LoadManifest(ctx, usb, keys.sign.Trust, "prod", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Previous == nil || m2.Previous.ID != m.ID || m2.Previous.SHA256 != firstSum {
		t.Errorf("second manifest links to %+v, want %s/%s", m2.Previous, m.ID, firstSum)
	}
}

// TestBackupHoldsNoSecretInClear scans every stored byte for private key
// material: nothing secret may reach a target unencrypted.
func TestBackupHoldsNoSecretInClear(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{})
	root := t.TempDir()
	pki := kubeadmTree(t, root)
	// A secret in etcd too, as Kubernetes stores them.
	secret := "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0IGluIGV0Y2Q=\n-----END RSA PRIVATE KEY-----\n"
	if _, err := etcd.Client().Put(context.Background(), "/registry/secrets/default/tls", secret); err != nil {
		t.Fatal(err)
	}
	keys := newKeyPair(t)
	usb := newLocal(t, "usb")
	if _, err := Backup(context.Background(), Options{
		Cluster: "prod", Etcd: EtcdOptions{Endpoints: etcd.Endpoints()}, State: kubeadmSets(), Root: root,
		Recipients: keys.recipients, Signer: keys.sign.Signer, Trust: keys.sign.Trust, Targets: []storage.Target{usb},
	}); err != nil {
		t.Fatal(err)
	}
	var needles [][]byte
	for _, p := range []string{pki.CAKey, pki.ServerKey, pki.ClientKey} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		needles = append(needles, b)
		// Every line of the base64 body, not only the whole file.
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				needles = append(needles, []byte(line))
			}
		}
	}
	needles = append(needles, []byte("PRIVATE KEY"), []byte("c2VjcmV0IGluIGV0Y2Q="))
	scanned := 0
	err := filepath.Walk(usb.Dir(), func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned++
		for _, n := range needles {
			if bytes.Contains(data, n) {
				t.Errorf("%s holds key material in clear: %.40q", path, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if scanned != 4 {
		t.Errorf("scanned %d stored files, want the 4 objects of the set (manifest signature included)", scanned)
	}
}

// TestBackupRetriesOnAnotherMember kills the member that is streaming the
// snapshot; the backup must finish from another member.
func TestBackupRetriesOnAnotherMember(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{Members: 3})
	fill(t, etcd, 48<<20)
	keys := newKeyPair(t)
	usb := newLocal(t, "usb")
	killed := -1
	res, err := Backup(context.Background(), Options{
		Cluster:    "prod",
		Etcd:       EtcdOptions{Endpoints: etcd.Endpoints(), Prefer: PreferAny},
		Root:       t.TempDir(),
		Recipients: keys.recipients, Signer: keys.sign.Signer, Trust: keys.sign.Trust,
		Targets: []storage.Target{usb},
		Progress: func(read int64) {
			// With prefer "any" the first endpoint streams first.
			if killed < 0 && read > 2<<20 {
				killed = 0
				etcd.Kill(0)
			}
		},
	})
	if err != nil {
		t.Fatalf("backup did not survive the loss of its member: %v", err)
	}
	if killed != 0 {
		t.Fatal("the member was never killed: the test proves nothing")
	}
	if res.Manifest.Etcd.SnapshotMember == etcd.Members[0].Name {
		t.Errorf("snapshot recorded from the killed member %s", etcd.Members[0].Name)
	}
	sets, err := catalog.Sets(context.Background(), usb, "prod")
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 || !sets[0].Complete || len(sets[0].Objects) != 4 {
		t.Errorf("target holds %+v, want one complete set of 4 objects (manifest signature included)", sets)
	}
}

func TestBackupFailures(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{})
	keys := newKeyPair(t)
	deadPort := testenv.FreePort(t)
	tests := []struct {
		name      string
		endpoints []string
		state     bool
		wantErr   error
		wantMsg   string
	}{
		{name: "unreachable endpoint", endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", deadPort)}, wantErr: ErrNoMember, wantMsg: fmt.Sprint(deadPort)},
		{name: "required state missing", endpoints: etcd.Endpoints(), state: true, wantErr: ErrRequiredMissing, wantMsg: "pki"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			usb := newLocal(t, "usb")
			o := Options{
				Cluster: "prod", Etcd: EtcdOptions{Endpoints: tt.endpoints, DialTimeout: 2 * time.Second},
				Root: t.TempDir(), Recipients: keys.recipients, Signer: keys.sign.Signer, Trust: keys.sign.Trust, Targets: []storage.Target{usb},
			}
			if tt.state {
				o.State = kubeadmSets()
			}
			_, err := Backup(context.Background(), o)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.wantErr, tt.wantMsg)
			}
			sets, err := catalog.Sets(context.Background(), usb, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(sets) != 0 {
				t.Errorf("a failed backup left %+v on the target", sets)
			}
		})
	}
}

// failingTarget is a real local target whose Puts of one object fail, as a
// USB disk that fills up does.
type failingTarget struct {
	*storage.Local
	failObject string
}

func (f failingTarget) Put(ctx context.Context, key string, r io.Reader, o storage.PutOptions) error {
	if strings.HasSuffix(key, f.failObject) {
		io.CopyN(io.Discard, r, 1<<10)
		return fmt.Errorf("target %s: %w: no space left on device", f.Name(), storage.ErrPermanent)
	}
	return f.Local.Put(ctx, key, r, o)
}

func TestBackupOneTargetFails(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{})
	fill(t, etcd, 1<<20)
	keys := newKeyPair(t)
	good := newLocal(t, "s3")
	for _, obj := range []string{manifest.EtcdObject, manifest.StateObject, manifest.ManifestObject} {
		t.Run(obj, func(t *testing.T) {
			bad := failingTarget{Local: newLocal(t, "usb"), failObject: obj}
			res, err := Backup(context.Background(), Options{
				Cluster: "prod", Etcd: EtcdOptions{Endpoints: etcd.Endpoints()}, Root: t.TempDir(),
				Recipients: keys.recipients, Signer: keys.sign.Signer, Trust: keys.sign.Trust, Targets: []storage.Target{bad, good},
			})
			if !errors.Is(err, ErrPartial) || !strings.Contains(err.Error(), "usb") {
				t.Fatalf("err = %v, want ErrPartial naming usb", err)
			}
			if len(res.Complete) != 1 || res.Complete[0] != "s3" {
				t.Errorf("complete on %v, want [s3]", res.Complete)
			}
			if _, _, err := catalog.LoadManifest(context.Background(), good, keys.sign.Trust, "prod", res.Manifest.ID); err != nil {
				t.Errorf("good target lacks the set: %v", err)
			}
			sets, _ := catalog.Sets(context.Background(), bad, "prod")
			for _, s := range sets {
				if s.Complete {
					t.Errorf("failed target holds a complete set %s", s.ID)
				}
			}
		})
	}
}

// TestBackupEveryTargetFails: a backup that no target takes still says,
// per target, why, so the agent counts the failure against each target
// rather than as an unexplained one.
func TestBackupEveryTargetFails(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{})
	fill(t, etcd, 1<<20)
	keys := newKeyPair(t)
	for _, obj := range []string{manifest.StateObject, manifest.EtcdObject, manifest.ManifestObject} {
		t.Run(obj, func(t *testing.T) {
			targets := []storage.Target{
				failingTarget{Local: newLocal(t, "s3"), failObject: obj},
				failingTarget{Local: newLocal(t, "usb"), failObject: obj},
			}
			res, err := Backup(context.Background(), Options{
				Cluster: "prod", Etcd: EtcdOptions{Endpoints: etcd.Endpoints()}, Root: t.TempDir(),
				Recipients: keys.recipients, Signer: keys.sign.Signer, Trust: keys.sign.Trust, Targets: targets,
			})
			if err == nil || errors.Is(err, ErrPartial) {
				t.Fatalf("err = %v, want a failed backup", err)
			}
			if res == nil {
				t.Fatal("no Result: the caller cannot tell which targets failed")
			}
			if len(res.Complete) != 0 || len(res.Failed) != 2 || res.Failed["s3"] == nil || res.Failed["usb"] == nil {
				t.Errorf("complete on %v, failed on %v: want none complete, s3 and usb failed", res.Complete, res.Failed)
			}
		})
	}
}

func TestBackupCancelled(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{})
	fill(t, etcd, 16<<20)
	keys := newKeyPair(t)
	usb := newLocal(t, "usb")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Backup(ctx, Options{
		Cluster: "prod", Etcd: EtcdOptions{Endpoints: etcd.Endpoints()}, Root: t.TempDir(),
		Recipients: keys.recipients, Signer: keys.sign.Signer, Trust: keys.sign.Trust, Targets: []storage.Target{usb},
		Progress: func(read int64) {
			if read > 1<<20 {
				cancel()
			}
		},
	})
	if err == nil {
		t.Fatal("a cancelled backup succeeded")
	}
	sets, err := catalog.Sets(context.Background(), usb, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		if s.Complete {
			t.Errorf("a cancelled backup left a complete set %s", s.ID)
		}
	}
}
