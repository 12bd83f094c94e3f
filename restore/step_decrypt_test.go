package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// zstdBomb is one zstd frame, written byte by byte, of n RLE blocks of
// 128 KiB of zeros: 4 bytes each, and no content size in the header.
func zstdBomb(n int) []byte {
	out := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3} // magic, no content size, 128 KiB window
	for i := range n {
		h := uint32(128<<10)<<3 | 1<<1 // RLE
		if i == n-1 {
			h |= 1
		}
		out = append(out, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return out
}

// countingTarget counts the bytes its objects give readers.
type countingTarget struct {
	storage.Target
	read int64
}

func (c *countingTarget) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := c.Target.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return &countingBody{rc, c}, nil
}

type countingBody struct {
	io.ReadCloser
	c *countingTarget
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.read += int64(n)
	return n, err
}

// TestDecryptBomb: a small etcd object that inflates to 512 GiB, on a
// target an attacker can write, while the signed manifest records 1 MiB.
// decrypt stops one byte past 1 MiB: nothing in staging grows beyond it,
// and most of the object is never fetched.
func TestDecryptBomb(t *testing.T) {
	ctx := context.Background()
	rs, ids := testenv.AgeKeys(t)
	var stored bytes.Buffer
	w, err := crypto.Encrypt(&stored, rs)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(zstdBomb(512 << 30 / (128 << 10)))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	const plainSize = 1 << 20
	obj := manifest.Object{Name: manifest.EtcdObject, Kind: manifest.KindEtcdSnapshot,
		PlainSize: plainSize, PlainSHA256: manifest.Sum(make([]byte, plainSize)),
		Size: int64(stored.Len()), SHA256: manifest.Sum(stored.Bytes())}
	m := &manifest.Manifest{FormatVersion: manifest.FormatVersion, Cluster: "prod", ID: "20260101T000000.000Z-abcdef",
		Created: time.Now(), Objects: []manifest.Object{obj}}

	local, err := storage.NewLocal("usb", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Put(ctx, manifest.Key(m.Cluster, m.ID, obj.Name), bytes.NewReader(stored.Bytes()), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	target := &countingTarget{Target: local}
	env := &Env{Plan: &Plan{Cluster: m.Cluster, BackupID: m.ID, Manifest: m, Options: Options{StagingDir: "/var/lib/kdr/restore"}},
		Root: t.TempDir(), Target: target, Identities: ids}

	err = decryptTo(ctx, env, target, obj, filepath.Join(env.staging(), snapshotFile))
	t.Logf("fetched %d of %d stored bytes; error: %v", target.read, stored.Len(), err)
	if !errors.Is(err, catalog.ErrDamaged) {
		t.Fatalf("error %v, want it to wrap catalog.ErrDamaged", err)
	}
	filepath.WalkDir(env.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if info, _ := d.Info(); d.Type().IsRegular() && info.Size() > plainSize+1 {
			t.Errorf("%s is %d bytes, more than the recorded %d + 1", p, info.Size(), plainSize)
		}
		return nil
	})
	if target.read >= int64(stored.Len()) {
		t.Errorf("fetched all %d bytes of the object", target.read)
	}
}

// TestWriteDecrypted: what crosses several writeback spans arrives whole
// under its name, and a stream that fails leaves neither the name nor a
// temp file behind.
func TestWriteDecrypted(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("bbolt page "), 3*syncEvery/11+7)
	dst := filepath.Join(dir, "snapshot.db")
	if err := writeDecrypted(dst, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v), want 0600", fi.Mode(), err)
	}
	boom := errors.New("boom")
	failed := filepath.Join(dir, "failed.db")
	if err := writeDecrypted(failed, io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom))); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the stream's error", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "snapshot.db" {
		t.Fatalf("left %v beside the written file", entries)
	}
}
