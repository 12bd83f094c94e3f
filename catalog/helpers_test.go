package catalog

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

const testCluster = "prod"

// stateFile is one entry of a test state tar.
type stateFile struct {
	path   string
	typ    string
	data   []byte
	mode   uint32
	target string
}

func defaultStateFiles() []stateFile {
	return []stateFile{
		{path: "etc/kubernetes", typ: manifest.EntryDir, mode: 0o755},
		{path: "etc/kubernetes/admin.conf", typ: manifest.EntryFile, mode: 0o600, data: []byte("apiVersion: v1\nkind: Config\n")},
		{path: "etc/kubernetes/pki", typ: manifest.EntryDir, mode: 0o755},
		{path: "etc/kubernetes/pki/ca.crt", typ: manifest.EntryFile, mode: 0o644, data: []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")},
		{path: "etc/kubernetes/pki/ca.key", typ: manifest.EntryFile, mode: 0o600, data: bytes.Repeat([]byte("k"), 3000)},
		{path: "etc/kubernetes/pki/current.pem", typ: manifest.EntrySymlink, mode: 0o777, target: "ca.crt"},
	}
}

// buildStateTar writes files as snapshot does: PAX headers, directories
// with a trailing slash, and the index last. editIndex, if set, changes
// the index before it is written.
func buildStateTar(t testing.TB, files []stateFile, editIndex func(*manifest.StateIndex)) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	idx := manifest.StateIndex{Node: "cp1"}
	mtime := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, f := range files {
		hdr := &tar.Header{Name: f.path, Mode: int64(f.mode), ModTime: mtime, Format: tar.FormatPAX}
		e := manifest.IndexEntry{Path: f.path, Set: "pki", Type: f.typ, Mode: f.mode, ModTime: mtime}
		switch f.typ {
		case manifest.EntryDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, f.path+"/"
		case manifest.EntrySymlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, f.target
			e.Target = f.target
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.data))
			e.Size = int64(len(f.data))
			s := sha256.Sum256(f.data)
			e.SHA256 = hex.EncodeToString(s[:])
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
		idx.Entries = append(idx.Entries, e)
	}
	if editIndex != nil {
		editIndex(&idx)
	}
	writeTarFile(t, tw, manifest.StateIndexPath, mustJSON(t, idx))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeTarFile(t testing.TB, tw *tar.Writer, name string, data []byte) {
	t.Helper()
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX,
		ModTime: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// etcdSnapshot is a stand-in for an etcd snapshot: data followed by its
// sha256, which is all of etcd's format that catalog checks.
func etcdSnapshot(db []byte) []byte {
	s := sha256.Sum256(db)
	return append(append([]byte(nil), db...), s[:]...)
}

// fixture writes backup sets the way snapshot does: zstd, then age, one
// ciphertext stored on every target, and per target a manifest linked to
// that target's newest complete set.
type fixture struct {
	t          *testing.T
	identity   age.Identity
	recipients []crypto.Recipient
	mu         sync.Mutex
	seq        int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{t: t}
}

func (f *fixture) keys() ([]age.Identity, []crypto.Recipient) {
	f.t.Helper()
	if f.identity == nil {
		f.identity, f.recipients = newKeys(f.t)
	}
	return []age.Identity{f.identity}, f.recipients
}

func newKeys(t testing.TB) (age.Identity, []crypto.Recipient) {
	t.Helper()
	idText, rcptText, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.ParseX25519Identity(idText)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := crypto.ParseRecipients([]string{rcptText})
	if err != nil {
		t.Fatal(err)
	}
	return id, rs
}

// setSpec describes a set to write; zero fields get defaults.
type setSpec struct {
	created time.Time
	// etcd is the etcd object's plaintext; default a valid snapshot.
	etcd []byte
	// dbSize overrides the manifest's etcd DBSize when etcd is set.
	dbSize int64
	// state is the state object's plaintext; default defaultStateFiles.
	state []byte
	// noManifest leaves the set incomplete.
	noManifest bool
	// editManifest, if set, changes the manifest before it is stored.
	editManifest func(*manifest.Manifest)
}

type builtSet struct {
	id string
	// manifests and sums are per target name.
	manifests map[string]*manifest.Manifest
	raw       map[string][]byte
	sums      map[string]string
}

func (f *fixture) write(spec setSpec, targets ...storage.Target) builtSet {
	f.t.Helper()
	ctx := context.Background()
	_, rcpts := f.keys()
	f.mu.Lock()
	f.seq++
	seq := f.seq
	f.mu.Unlock()
	if spec.created.IsZero() {
		spec.created = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Hour)
	}
	id := manifest.NewID(spec.created, [3]byte{byte(seq >> 16), byte(seq >> 8), byte(seq)})
	// Incompressible, and larger than one 64 KiB age chunk.
	db := make([]byte, 150<<10)
	seed := [32]byte{byte(seq)}
	rand.NewChaCha8(seed).Read(db)
	dbSize := int64(len(db))
	plainEtcd := etcdSnapshot(db)
	if spec.etcd != nil {
		plainEtcd, dbSize = spec.etcd, spec.dbSize
	}
	plainState := spec.state
	if plainState == nil {
		plainState = buildStateTar(f.t, defaultStateFiles(), nil)
	}
	objects := []struct {
		name, kind string
		plain      []byte
	}{
		{manifest.EtcdObject, manifest.KindEtcdSnapshot, plainEtcd},
		{manifest.StateObject, manifest.KindState, plainState},
	}
	m := manifest.Manifest{
		FormatVersion: manifest.FormatVersion,
		KdrVersion:    "test",
		ID:            id,
		Cluster:       testCluster,
		Created:       spec.created.UTC(),
		Completed:     spec.created.UTC().Add(time.Second),
		Node:          "cp1",
		Etcd:          manifest.Etcd{ClusterID: "1a2b", Revision: int64(1000 + seq), DBSize: dbSize},
		Recipients:    []string{rcpts[0].Fingerprint},
	}
	for _, o := range objects {
		cipher := seal(f.t, o.plain, rcpts)
		for _, t := range targets {
			if err := t.Put(ctx, manifest.Key(testCluster, id, o.name), bytes.NewReader(cipher), storage.PutOptions{}); err != nil {
				f.t.Fatal(err)
			}
		}
		m.Objects = append(m.Objects, manifest.Object{
			Name: o.name, Kind: o.kind,
			PlainSize: int64(len(o.plain)), PlainSHA256: manifest.Sum(o.plain),
			Size: int64(len(cipher)), SHA256: manifest.Sum(cipher),
		})
	}
	b := builtSet{id: id, manifests: map[string]*manifest.Manifest{}, raw: map[string][]byte{}, sums: map[string]string{}}
	if spec.noManifest {
		return b
	}
	if spec.editManifest != nil {
		spec.editManifest(&m)
	}
	for _, t := range targets {
		tm := m
		prev, sum, err := Latest(ctx, t, testTrust, testCluster)
		switch {
		case err == nil:
			tm.Previous = &manifest.Link{ID: prev.ID, SHA256: sum}
		case !errors.Is(err, ErrNoBackup):
			f.t.Fatal(err)
		}
		raw, err := tm.Marshal()
		if err != nil {
			f.t.Fatal(err)
		}
		if err := manifest.PutSigned(ctx, t, manifest.Key(testCluster, id, manifest.ManifestObject), raw, manifest.NamespaceManifest, testSigner, storage.PutOptions{}); err != nil {
			f.t.Fatal(err)
		}
		b.manifests[t.Name()], b.raw[t.Name()], b.sums[t.Name()] = &tm, raw, manifest.Sum(raw)
	}
	return b
}

// seal compresses and encrypts plain as snapshot's pipeline does.
func seal(t testing.TB, plain []byte, rcpts []crypto.Recipient) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := crypto.Encrypt(&buf, rcpts)
	if err != nil {
		t.Fatal(err)
	}
	zw, err := zstd.NewWriter(enc, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func newLocal(t testing.TB, name string) *storage.Local {
	t.Helper()
	l, err := storage.NewLocal(name, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// missingLocal is a target whose directory does not exist: an unmounted disk.
func missingLocal(t testing.TB, name string) *storage.Local {
	t.Helper()
	l, err := storage.NewLocal(name, filepath.Join(t.TempDir(), "not-mounted"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func readObject(t testing.TB, tg storage.Target, key string) []byte {
	t.Helper()
	rc, err := tg.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replaceObject rewrites a stored object through the target's own API.
func replaceObject(t testing.TB, tg storage.Target, key string, edit func([]byte) []byte) {
	t.Helper()
	ctx := context.Background()
	b := edit(readObject(t, tg, key))
	if err := tg.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := tg.Put(ctx, key, bytes.NewReader(b), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func flipByte(at func(n int) int) func([]byte) []byte {
	return func(b []byte) []byte {
		b = append([]byte(nil), b...)
		b[at(len(b))] ^= 0x01
		return b
	}
}

func deleteObject(t testing.TB, tg storage.Target, key string) {
	t.Helper()
	if err := tg.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

// keys lists every key on a target, sorted.
func keys(t testing.TB, tg storage.Target) []string {
	t.Helper()
	var out []string
	if err := tg.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		out = append(out, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// hookTarget wraps a target to record and refuse calls.
type hookTarget struct {
	storage.Target
	mu sync.Mutex
	// calls records "put KEY" and "delete KEY" in order.
	calls []string
	// deleteErr, if set, may refuse a Delete.
	deleteErr func(key string) error
	// retainUntil, if set, adds a retention time to listed objects.
	retainUntil func(key string) time.Time
}

func (h *hookTarget) Put(ctx context.Context, key string, r io.Reader, o storage.PutOptions) error {
	h.mu.Lock()
	h.calls = append(h.calls, "put "+key)
	h.mu.Unlock()
	return h.Target.Put(ctx, key, r, o)
}

func (h *hookTarget) Delete(ctx context.Context, key string) error {
	h.mu.Lock()
	h.calls = append(h.calls, "delete "+key)
	h.mu.Unlock()
	if h.deleteErr != nil {
		if err := h.deleteErr(key); err != nil {
			return err
		}
	}
	return h.Target.Delete(ctx, key)
}

func (h *hookTarget) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	return h.Target.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if h.retainUntil != nil {
			oi.RetainUntil = h.retainUntil(oi.Key)
		}
		return fn(oi)
	})
}

func (h *hookTarget) recorded(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, c := range h.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// naming returns the calls whose key names id, in the order they were
// made, so that one set's removal (its tombstone included) can be read
// apart from the other sets' calls around it.
func (h *hookTarget) naming(id string) []string {
	var out []string
	for _, c := range h.recorded("") {
		if strings.Contains(c, id) {
			out = append(out, c)
		}
	}
	return out
}

// removalHead is how a prune's removal of set id starts, whatever else
// it then deletes: the tombstone, signature first, then the manifest,
// so that an interrupted removal never leaves a complete-looking set with
// objects missing.
func removalHead(id string) []string {
	return []string{
		"put " + manifest.SignatureKey(TombstoneKey(testCluster, id)),
		"put " + TombstoneKey(testCluster, id),
		"delete " + manifest.Key(testCluster, id, manifest.ManifestObject),
	}
}

func lockedErr(key string) error {
	return fmt.Errorf("target test: deleting %s: %w", key, storage.ErrLocked)
}

// testSigner signs every set the fixture writes; testTrust trusts it.
var testSigner, testTrust = mustSigningKey()

func mustSigningKey() (*manifest.Signer, *manifest.Trust) {
	priv, pub, err := manifest.GenerateSigningKey("test")
	if err != nil {
		panic(err)
	}
	s, err := manifest.ParseSigner(priv)
	if err != nil {
		panic(err)
	}
	trust, err := manifest.ParseTrust([]string{pub})
	if err != nil {
		panic(err)
	}
	return s, trust
}
