package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	pathpkg "path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/klauspost/compress/zstd"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// hostPath joins slash-separated host paths.
func hostPath(elem ...string) string { return pathpkg.Join(elem...) }

// Files the restore writes into its staging directory.
const (
	snapshotFile = "snapshot.db"
	stateFile    = "state.tar"
)

// ErrNoSpace means the host lacks the disk space the restore needs.
var ErrNoSpace = errors.New("not enough disk space")

// ErrWrongHost means the node's address is not on this machine.
var ErrWrongHost = errors.New("this host is not the node")

// preflight checks disk space, that this host is the node, and that
// nothing but a stoppable etcd holds etcd's ports. It changes nothing.
func preflight(_ context.Context, e *Env) error {
	m := e.Plan.Manifest
	var stored, plain int64
	for _, o := range m.Objects {
		stored += o.Size
		plain += o.PlainSize
	}
	if err := needSpace(e.staging(), stored+plain); err != nil {
		return err
	}
	if err := needSpace(e.path(e.Plan.Options.EtcdDataDir), m.Etcd.DBSize+m.Etcd.DBSize/10); err != nil {
		return err
	}
	for _, u := range []string{e.Node.PeerURL, e.Node.ClientURL} {
		if err := portFree(u); err != nil {
			if errors.Is(err, ErrWrongHost) || !e.hasStoppableEtcd() {
				return err
			}
			e.Log.Info("etcd holds its port now; stop-control-plane stops it", "url", u)
		}
	}
	return nil
}

// hasStoppableEtcd reports whether a step of this restore will stop what
// holds etcd's ports: a static pod manifest or a systemd unit.
func (e *Env) hasStoppableEtcd() bool {
	if e.Plan.Options.Topology == TopologySystemd {
		return true
	}
	_, err := os.Stat(e.path(hostPath(e.Plan.Options.KubernetesDir, "manifests", "etcd.yaml")))
	return err == nil
}

// needSpace checks the filesystem that holds p (or its nearest existing
// parent) has room for n more bytes.
func needSpace(p string, n int64) error {
	dir := p
	for {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("disk space of %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < n {
		return fmt.Errorf("%w under %s: need %s, %s free", ErrNoSpace, dir, human(n), human(free))
	}
	return nil
}

func human(n int64) string {
	const mib = 1 << 20
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/mib)
}

// portFree fails when the URL's address is not on this host, or its port
// is taken.
func portFree(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("%w: no interface here has %s (run this on the node that has it)", ErrWrongHost, u.Hostname())
		}
		return fmt.Errorf("%s is in use: %w", u.Host, err)
	}
	return l.Close()
}

func checkPortsFree(ctx context.Context, e *Env) error {
	return waitFor(ctx, e.WaitTimeout, func() error {
		for _, u := range []string{e.Node.PeerURL, e.Node.ClientURL} {
			if err := portFree(u); err != nil {
				return err
			}
		}
		return nil
	})
}

// stagingTarget is the staging directory as a local target, so fetched
// sets are checked with the same code as any other target.
func (e *Env) stagingTarget() (storage.Target, error) {
	root := e.path(e.Plan.Options.StagingDir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	return storage.NewLocal("staging", root)
}

// fetch copies the small objects of the set (the state and the manifest)
// to the staging directory, checking each object's size and sha256 as it
// arrives. The etcd snapshot is streamed by decrypt straight from the
// target into place, so its ciphertext never touches the disk.
func fetch(ctx context.Context, e *Env) error {
	local, err := e.stagingTarget()
	if err != nil {
		return err
	}
	m := e.Plan.Manifest
	for _, o := range fetchedObjects(m) {
		key := manifest.Key(m.Cluster, m.ID, o.Name)
		if _, err := local.Stat(ctx, key); err == nil && e.noteOf("fetch", o.Name) == o.SHA256 {
			continue // fetched and checked before an interruption
		}
		if err := copyChecked(ctx, e.Target, local, key, o.Size, o.SHA256); err != nil {
			return err
		}
		if err := e.note(o.Name, o.SHA256); err != nil {
			return err
		}
	}
	raw, err := m.Marshal()
	if err != nil {
		return err
	}
	key := manifest.Key(m.Cluster, m.ID, manifest.ManifestObject)
	if err := local.Delete(ctx, key); err != nil {
		return err
	}
	return local.Put(ctx, key, bytes.NewReader(raw), storage.PutOptions{})
}

// fetchedObjects are the objects fetch copies: all but the etcd snapshot,
// which decrypt streams from the target.
func fetchedObjects(m *manifest.Manifest) []manifest.Object {
	var out []manifest.Object
	for _, o := range m.Objects {
		if o.Name != manifest.EtcdObject {
			out = append(out, o)
		}
	}
	return out
}

// copyChecked copies one object, and removes the copy again when its size
// or hash is not the recorded one.
func copyChecked(ctx context.Context, from, to storage.Target, key string, size int64, sum string) error {
	rc, err := from.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	if err := to.Delete(ctx, key); err != nil {
		return err
	}
	if err := to.Put(ctx, key, io.TeeReader(rc, h), storage.PutOptions{}); err != nil {
		return fmt.Errorf("fetch %s: %w", key, err)
	}
	info, err := to.Stat(ctx, key)
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); info.Size != size || got != sum {
		to.Delete(ctx, key)
		return fmt.Errorf("fetch %s from %s: %w: %d bytes with sha256 %s, the manifest says %d bytes with %s",
			key, from.Name(), catalog.ErrDamaged, info.Size, got, size, sum)
	}
	return nil
}

func checkFetched(ctx context.Context, e *Env) error {
	local, err := e.stagingTarget()
	if err != nil {
		return err
	}
	m := e.Plan.Manifest
	for _, o := range fetchedObjects(m) {
		info, err := local.Stat(ctx, manifest.Key(m.Cluster, m.ID, o.Name))
		if err != nil {
			return err
		}
		if info.Size != o.Size || e.noteOf("fetch", o.Name) != o.SHA256 {
			return fmt.Errorf("%s: not fetched whole", o.Name)
		}
	}
	// The manifest is written last: a fetch killed before it is not done.
	want, err := m.Marshal()
	if err != nil {
		return err
	}
	rc, err := local.Get(ctx, manifest.Key(m.Cluster, m.ID, manifest.ManifestObject))
	if err != nil {
		return err
	}
	defer rc.Close()
	got, err := io.ReadAll(io.LimitReader(rc, int64(len(want))+1))
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: not fetched whole", manifest.ManifestObject)
	}
	return nil
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
		rep := catalog.Verify(ctx, local, m.Cluster, m.ID, catalog.VerifyOptions{Identities: e.Identities, Only: []string{manifest.StateObject}})
		for _, p := range rep.Problems {
			// The staging copy has no predecessors: the chain is checked on
			// the target, not here.
			if !errors.Is(p.Err, catalog.ErrChain) {
				return p // names the object and the reason, and unwraps to the sentinel
			}
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

// decryptTo streams one object from a target into dst, checking the
// stored bytes, the plaintext, and for the snapshot etcd's trailing hash.
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
	stored := &hashCounter{h: sha256.New()}
	plain, err := crypto.Decrypt(io.TeeReader(fetched, stored), e.Identities)
	if err != nil {
		return fmt.Errorf("decrypt %s: %w", o.Name, err)
	}
	zr, err := zstd.NewReader(plain, zstd.WithDecoderConcurrency(2))
	if err != nil {
		return err
	}
	defer zr.Close()
	// Fetching, age and zstd run ahead on one core while hashing and
	// writing take the other.
	ahead := newReadahead(zr, 4, 1<<20)
	defer ahead.Close()
	// The snapshot reader hashes the stream for etcd's trailing hash and
	// gives the whole stream's sha256 from the same pass; other objects
	// are hashed on their way to the file.
	h := sha256.New()
	var src io.Reader = io.TeeReader(ahead, h)
	plainSum := func() string { return hex.EncodeToString(h.Sum(nil)) }
	if o.Name == manifest.EtcdObject {
		snap := manifest.NewSnapshotReader(ahead)
		src, plainSum = snap, snap.SHA256
	}
	err = writeStreamChecked(dst, src, 0o600, func() error {
		// Drain what age and zstd hold back, so the stored hash covers
		// every byte of the object.
		if _, err := io.Copy(io.Discard, io.TeeReader(fetched, stored)); err != nil {
			return err
		}
		switch {
		case stored.n != o.Size || hex.EncodeToString(stored.h.Sum(nil)) != o.SHA256:
			return fmt.Errorf("%w: %s: stored object is %d bytes with sha256 %s, the manifest says %d bytes with %s",
				catalog.ErrDamaged, o.Name, stored.n, hex.EncodeToString(stored.h.Sum(nil)), o.Size, o.SHA256)
		case plainSum() != o.PlainSHA256:
			return fmt.Errorf("%w: %s: plaintext sha256 does not match the manifest", catalog.ErrDamaged, o.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("decrypt %s: %w", o.Name, err)
	}
	return nil
}

// hashCounter hashes and counts what is written to it.
type hashCounter struct {
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
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

func stopControlPlane(ctx context.Context, e *Env) error { return e.Runner.StopControlPlane(ctx, e) }

// moveAside renames the old etcd data dir out of the way; it is never
// deleted or merged.
func moveAside(_ context.Context, e *Env) error {
	dir := e.path(e.Plan.Options.EtcdDataDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		if err == nil {
			return os.Remove(dir)
		}
		return nil
	}
	if err != nil {
		return err
	}
	aside, err := freeName(dir + e.Plan.AsideSuffix())
	if err != nil {
		return err
	}
	if err := e.note("dataDirAside", aside); err != nil {
		return err
	}
	return os.Rename(dir, aside)
}

// freeName returns p, or p-2, p-3... when p is taken.
func freeName(p string) (string, error) {
	for i := 1; i < 1000; i++ {
		name := p
		if i > 1 {
			name = fmt.Sprintf("%s-%d", p, i)
		}
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			return name, nil
		}
	}
	return "", fmt.Errorf("no free name beside %s", p)
}

func checkMovedAside(_ context.Context, e *Env) error {
	entries, err := os.ReadDir(e.path(e.Plan.Options.EtcdDataDir))
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%s still holds data", e.Plan.Options.EtcdDataDir)
}

// isManifestEntry reports whether a state path is a static pod manifest:
// those wait in staging until their start step.
func (e *Env) isManifestEntry(rel string) bool {
	dir := strings.TrimPrefix(hostPath(e.Plan.Options.KubernetesDir, "manifests"), "/") + "/"
	return strings.HasPrefix(rel, dir)
}

// restoreFiles writes the state's files back: modes, owners and times as
// recorded; anything in the way moved aside first, never overwritten.
func restoreFiles(ctx context.Context, e *Env) error {
	idx, err := e.readIndex()
	if err != nil {
		return err
	}
	want := map[string]manifest.IndexEntry{}
	for _, ent := range idx.Entries {
		want[ent.Path] = ent
		// A run killed mid-write left its temp file beside the target.
		leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(e.path("/"+ent.Path)), ".kdr-tmp-*"))
		for _, l := range leftovers {
			os.Remove(l)
		}
	}
	f, err := os.Open(filepath.Join(e.staging(), stateFile))
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read state: %w", err)
		}
		rel := strings.TrimSuffix(hdr.Name, "/")
		if rel == manifest.StateIndexPath {
			continue
		}
		ent, ok := want[rel]
		if !ok || manifest.ValidEntryPath(rel) != nil || len(hdr.PAXRecords) > 0 && hasSparse(hdr) {
			return fmt.Errorf("state entry %q is not in the index or not safe to restore", hdr.Name)
		}
		dst := e.path("/" + rel)
		if e.isManifestEntry(rel) {
			dst = filepath.Join(e.staging(), "manifests", filepath.FromSlash(rel))
		}
		if err := e.restoreEntry(tr, ent, dst); err != nil {
			return fmt.Errorf("restore /%s: %w", rel, err)
		}
	}
}

func hasSparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func (e *Env) readIndex() (*manifest.StateIndex, error) {
	f, err := os.Open(filepath.Join(e.staging(), stateFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("state index not found: %w", err)
		}
		if hdr.Name == manifest.StateIndexPath {
			return manifest.ParseIndex(tr)
		}
	}
}

// restoreEntry writes one entry; an existing different file is moved into
// the staging directory's aside tree first.
func (e *Env) restoreEntry(r io.Reader, ent manifest.IndexEntry, dst string) error {
	if ent.Type == manifest.EntryFile && fileHas(dst, ent.SHA256) {
		return applyMeta(dst, ent)
	}
	if fi, err := os.Lstat(dst); err == nil && !(ent.Type == manifest.EntryDir && fi.IsDir()) {
		aside := filepath.Join(e.staging(), "aside", filepath.FromSlash(ent.Path))
		if err := os.MkdirAll(filepath.Dir(aside), 0o700); err != nil {
			return err
		}
		if aside, err = freeName(aside); err != nil {
			return err
		}
		if err := os.Rename(dst, aside); err != nil {
			return fmt.Errorf("move the existing file aside: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	switch ent.Type {
	case manifest.EntryDir:
		if err := os.MkdirAll(dst, os.FileMode(ent.Mode)&os.ModePerm); err != nil {
			return err
		}
	case manifest.EntrySymlink:
		if err := os.Symlink(ent.Target, dst); err != nil {
			return err
		}
		return nil
	case manifest.EntryFile:
		h := sha256.New()
		if err := writeStreamAtomic(dst, io.TeeReader(io.LimitReader(r, ent.Size+1), h), os.FileMode(ent.Mode)&os.ModePerm); err != nil {
			return err
		}
		if hex.EncodeToString(h.Sum(nil)) != ent.SHA256 {
			os.Remove(dst)
			return fmt.Errorf("%w: content does not match the index", catalog.ErrDamaged)
		}
	}
	return applyMeta(dst, ent)
}

// applyMeta sets mode, owner (when root) and times as recorded. Private
// keys keep their 0600 because the backup recorded it.
func applyMeta(dst string, ent manifest.IndexEntry) error {
	if err := os.Chmod(dst, os.FileMode(ent.Mode)&os.ModePerm); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(dst, ent.UID, ent.GID); err != nil {
			return err
		}
	}
	return os.Chtimes(dst, ent.ModTime, ent.ModTime)
}

func fileHas(p, sum string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == sum
}

func checkFilesRestored(_ context.Context, e *Env) error {
	idx, err := e.readIndex()
	if err != nil {
		return err
	}
	for _, ent := range idx.Entries {
		dst := e.path("/" + ent.Path)
		if e.isManifestEntry(ent.Path) {
			dst = filepath.Join(e.staging(), "manifests", filepath.FromSlash(ent.Path))
		}
		switch ent.Type {
		case manifest.EntryFile:
			if !fileHas(dst, ent.SHA256) {
				return fmt.Errorf("/%s is not the backup's", ent.Path)
			}
		default:
			if _, err := os.Lstat(dst); err != nil {
				return err
			}
		}
	}
	return nil
}

// restoreEtcd builds the member's data dir in a scratch directory from
// the decrypted snapshot, which it takes rather than copies, and renames
// it into place: the data dir is never half written. Killed halfway, the
// next run finishes the scratch it finds.
func restoreEtcd(ctx context.Context, e *Env) error {
	p, n := e.Plan, e.Node
	dir := e.path(p.Options.EtcdDataDir)
	marker := restoredMarker(p)
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		// This restore put the member in place before an interruption:
		// only the manifest may be left to do.
		return configureEtcdManifest(e)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s holds data this restore did not make (something started etcd after move-aside): stop it, move the directory away, and run again", p.Options.EtcdDataDir)
	}
	scratch := dir + ".kdr-restoring"
	snapshot := filepath.Join(e.staging(), snapshotFile)
	switch _, err := os.Stat(snapshot); {
	case err == nil:
		if err := os.RemoveAll(scratch); err != nil {
			return err
		}
		if err := takeSnapshot(ctx, snapshot, scratch); err != nil {
			return fmt.Errorf("put the snapshot in place: %w", err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	default:
		if _, err := os.Stat(dbPath(scratch)); err != nil {
			return fmt.Errorf("the decrypted snapshot is gone and no interrupted restore holds it: run again with --from-step decrypt")
		}
	}
	err := writeMemberData(ctx, memberData{
		DataDir:        scratch,
		Name:           n.Name,
		InitialCluster: p.InitialCluster,
		Token:          p.Options.Token,
		RevisionBump:   p.Options.RevisionBump,
		MinRevision:    p.Revision,
	})
	if err != nil {
		return fmt.Errorf("etcd snapshot restore: %w", err)
	}
	if err := os.Chmod(scratch, 0o700); err != nil {
		return err
	}
	// The marker goes in with the data, in one rename: it tells a resumed
	// restore that the member in place is its own.
	if err := writeFileAtomic(filepath.Join(scratch, marker), []byte(p.BackupID+"\n"), 0o600); err != nil {
		return err
	}
	// The manifest first: once the data dir has its name the step counts
	// as done, and etcd must then start as this node.
	if err := configureEtcdManifest(e); err != nil {
		return err
	}
	if err := os.Rename(scratch, dir); err != nil {
		return fmt.Errorf("put the restored data dir in place: %w", err)
	}
	return nil
}

func checkEtcdRestored(_ context.Context, e *Env) error {
	dir := e.path(e.Plan.Options.EtcdDataDir)
	for _, p := range []string{filepath.Join(dir, "member", "snap", "db"), filepath.Join(dir, restoredMarker(e.Plan))} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return checkEtcdManifest(e)
}

// restoredMarker names the file a restored data dir carries, so a resumed
// restore can tell its own member from one etcd made by itself.
func restoredMarker(p *Plan) string { return ".kdr-restored-" + p.BackupID }

func startEtcd(ctx context.Context, e *Env) error { return e.Runner.StartEtcd(ctx, e) }

func startControlPlane(ctx context.Context, e *Env) error {
	return e.Runner.StartControlPlane(ctx, e)
}

// hasControlPlane: the control-plane step is for kubeadm backups that hold
// static pod manifests.
func hasControlPlane(p *Plan, _ Node) bool {
	if p.Options.Topology != TopologyKubeadm {
		return false
	}
	for _, s := range p.Manifest.State.Sets {
		if s.Name == "manifests" && s.Files > 0 {
			return true
		}
	}
	return false
}

// writeStreamAtomic writes r to a temp file beside dst, syncs it and
// renames it into place.
func writeStreamAtomic(dst string, r io.Reader, mode os.FileMode) error {
	return writeStreamChecked(dst, r, mode, nil)
}

// writeStreamChecked is writeStreamAtomic with a check run after the
// stream ends and before the file takes its name: a file that fails the
// check never appears.
func writeStreamChecked(dst string, r io.Reader, mode os.FileMode, check func() error) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".kdr-tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := io.Copy(f, r)
	err = errors.Join(werr, f.Chmod(mode), f.Sync(), f.Close())
	if err == nil && check != nil {
		err = check()
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func writeFileAtomic(dst string, data []byte, mode os.FileMode) error {
	return writeStreamAtomic(dst, bytes.NewReader(data), mode)
}

// relTo is p relative to root, slash-separated, with a leading slash.
func relTo(root, p string) (string, error) {
	rel, err := filepath.Rel(root, p)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("%s is outside %s", p, root)
	}
	return "/" + filepath.ToSlash(rel), nil
}
