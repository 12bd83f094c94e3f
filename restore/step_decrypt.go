package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"

	"golang.org/x/sys/unix"
)

// StepDecrypt names the step that verifies, decrypts and decompresses the set.
const StepDecrypt = "decrypt"

var stepDecrypt = stepDef{
	id:    StepDecrypt,
	title: "Verify, decrypt and decompress",
	why: "Decryption with the operators' offline key proves the backup is ours and whole: age authenticates " +
		"every chunk, and the plaintext hashes, etcd's own trailing hash and the state index are checked.",
	where: EveryNode,
	commands: []string{
		"cd {{.Staging}}",
		"age -d -i {{.Identity}} etcd.db.zst.age | zstd -d -o snapshot.db",
		"age -d -i {{.Identity}} state.tar.zst.age | zstd -d -o state.tar",
		"sha256sum snapshot.db state.tar",
	},
	expect: "Both sha256 sums equal the \"plainSHA256\" of their objects in manifest.json.",
	action: decrypt,
	check:  checkDecrypted,
}

// decrypt proves the state whole with the operators' identity (the same
// check as kdr verify, on the fetched copy), writes the state tar, and
// streams the etcd snapshot from the target through every check at once:
// stored size and sha256, age's authentication, plaintext sha256 and
// etcd's trailing hash. The snapshot file appears only when all pass.
func decrypt(ctx context.Context, e *Env) error {
	local, err := e.stagingTarget()
	if err != nil {
		return err
	}
	m := e.Plan.Manifest
	if st, ok := m.Object(manifest.StateObject); ok {
		// The plan's manifest was verified when the plan was made, and
		// fetch compared the staged copy with it by hash.
		rep := catalog.Verify(ctx, local, m.Cluster, m.ID, catalog.VerifyOptions{Identities: e.Identities, Only: []string{manifest.StateObject}, Manifest: m})
		if len(rep.Problems) > 0 {
			return rep.Problems[0] // names the object and the reason, and unwraps to the sentinel
		}
		if err := decryptTo(ctx, e, local, st, filepath.Join(e.staging(), stateFile)); err != nil {
			return err
		}
	}
	etcd, ok := m.Object(manifest.EtcdObject)
	if !ok {
		return fmt.Errorf("%w: the manifest lists no %s", catalog.ErrDamaged, manifest.EtcdObject)
	}
	return decryptTo(ctx, e, e.Target, etcd, filepath.Join(e.staging(), snapshotFile))
}

// decryptTo streams one object from a target into dst through the
// format's reader, which checks the stored bytes, the plaintext, and for
// the snapshot etcd's trailing hash, and cuts the stream off one byte past
// the recorded plaintext size: a small object that would inflate to
// gigabytes never fills the staging disk. dst appears only when all pass.
func decryptTo(ctx context.Context, e *Env, from storage.Target, o manifest.Object, dst string) error {
	m := e.Plan.Manifest
	rc, err := from.Get(ctx, manifest.Key(m.Cluster, m.ID, o.Name))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", o.Name, err)
	}
	defer rc.Close()
	// The download runs ahead too, so waiting on the network overlaps
	// with decrypting what has arrived.
	fetched := newReadahead(rc, 4, 1<<20)
	defer fetched.Close()
	plain, err := manifest.OpenObject(manifest.NewStoredReader(fetched, o), e.Identities, manifest.ReadOptions{
		// Fetching, age and zstd run ahead on one core while hashing and
		// writing take the other.
		Ahead: func(r io.Reader) io.Reader { return newReadahead(r, 4, 1<<20) },
	})
	if err != nil {
		return fmt.Errorf("decrypt %s: %w", o.Name, err)
	}
	defer plain.Close()
	// The reader ends without an error only when every check passed.
	if err := writeDecrypted(dst, plain); err != nil {
		return fmt.Errorf("decrypt %s: %w", o.Name, err)
	}
	return nil
}

// writeDecrypted writes r to a temp file beside dst, syncs it and renames
// it into place, as writeStreamAtomic does, in large writes, and with the
// disk writing behind it (syncBehind): the fsync at the end then waits for
// the last few megabytes, not for a whole snapshot at once.
func writeDecrypted(dst string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), tempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	w := &syncBehind{f: f, fd: int(f.Fd())}
	_, werr := io.CopyBuffer(w, r, make([]byte, 1<<20))
	err = errors.Join(werr, f.Chmod(0o600), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// syncBehind writes to a file and, every syncEvery bytes, asks the kernel
// to start writing back what was just written (sync_file_range with
// SYNC_FILE_RANGE_WRITE queues the writes and waits for none), so the
// disk works while the rest is still being decrypted instead of after.
// Only the fsync that follows makes the file durable; this starts it early.
type syncBehind struct {
	f      *os.File
	fd     int
	n      int64 // bytes written
	synced int64 // bytes handed to writeback
}

// syncEvery is large enough that writeback goes out in big requests and
// small enough that little is left for the final fsync.
const syncEvery = 8 << 20

func (w *syncBehind) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.n += int64(n)
	if w.n-w.synced >= syncEvery {
		// A hint: where the filesystem has no use for it, the final
		// fsync does all the work, as it would have anyway.
		unix.SyncFileRange(w.fd, w.synced, w.n-w.synced, unix.SYNC_FILE_RANGE_WRITE)
		w.synced = w.n
	}
	return n, err
}

func checkDecrypted(_ context.Context, e *Env) error {
	m := e.Plan.Manifest
	for _, f := range []struct{ object, file string }{{manifest.EtcdObject, snapshotFile}, {manifest.StateObject, stateFile}} {
		o, ok := m.Object(f.object)
		if !ok {
			continue
		}
		fi, err := os.Stat(filepath.Join(e.staging(), f.file))
		if err != nil {
			return err
		}
		if fi.Size() != o.PlainSize {
			return fmt.Errorf("%s: %d bytes, want %d", f.file, fi.Size(), o.PlainSize)
		}
	}
	return nil
}
