package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
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

	"golang.org/x/sys/unix"

	"github.com/kdr-io/kdr/catalog"
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
		if err := copyChecked(ctx, e.Target, local, key, o); err != nil {
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
// or hash is not the recorded one. The copy stops one byte past the
// recorded size, so a swapped object cannot fill the staging disk.
func copyChecked(ctx context.Context, from, to storage.Target, key string, o manifest.Object) error {
	rc, err := from.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", key, err)
	}
	defer rc.Close()
	if err := to.Delete(ctx, key); err != nil {
		return err
	}
	stored := manifest.NewStoredReader(rc, o)
	if err := to.Put(ctx, key, stored, storage.PutOptions{}); err != nil {
		// Wraps the reader's error when it was the cause.
		return fmt.Errorf("fetch %s from %s: %w", key, from.Name(), err)
	}
	if err := stored.Check(); err != nil {
		to.Delete(ctx, key)
		return fmt.Errorf("fetch %s from %s: %w", key, from.Name(), err)
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
	if err := writeStreamAtomic(dst, plain, 0o600); err != nil {
		return fmt.Errorf("decrypt %s: %w", o.Name, err)
	}
	return nil
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
// Every entry is judged (see entryPolicy) before the first write, and
// every write is made relative to a directory opened without following a
// symlink (see beneath), so a backup cannot place a byte outside its sets.
func restoreFiles(ctx context.Context, e *Env) error {
	idx, err := e.readIndex()
	if err != nil {
		return err
	}
	p, err := e.statePolicy(idx)
	if err != nil {
		return err
	}
	// A first pass judges every tar header: a backup with one entry a
	// restore may not write restores nothing.
	if err := e.eachStateEntry(ctx, p, func(manifest.IndexEntry, io.Reader) error { return nil }); err != nil {
		return err
	}
	dirs, err := e.openStateDirs(true)
	if err != nil {
		return err
	}
	defer dirs.Close()
	dirs.removeLeftovers(e, idx)
	var links []manifest.IndexEntry
	err = e.eachStateEntry(ctx, p, func(ent manifest.IndexEntry, r io.Reader) error {
		if ent.Type == manifest.EntrySymlink {
			links = append(links, ent)
			return nil
		}
		return dirs.restore(e, p, ent, r)
	})
	if err != nil {
		return err
	}
	// Symlinks last: once one exists, nothing of this restore is written
	// after it, so none is ever in the way of another entry.
	for _, ent := range links {
		if err := dirs.restore(e, p, ent, nil); err != nil {
			return err
		}
	}
	return nil
}

// statePolicy judges every entry of the index against the manifest's
// sets.
func (e *Env) statePolicy(idx *manifest.StateIndex) (*entryPolicy, error) {
	if e.Plan.Manifest == nil {
		return nil, errors.New("the plan carries no manifest, whose state sets say what may be restored")
	}
	p := newEntryPolicy(e.Plan.Manifest.State.Sets, idx)
	for _, ent := range idx.Entries {
		if _, err := p.admit(ent); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// eachStateEntry calls fn for every entry of the state tar before its
// index, in tar order, each header checked against the policy and the
// index; r reads the entry's content.
func (e *Env) eachStateEntry(ctx context.Context, p *entryPolicy, fn func(ent manifest.IndexEntry, r io.Reader) error) error {
	f, err := os.Open(filepath.Join(e.staging(), stateFile))
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	seen := map[string]bool{}
	indexSeen := false
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
		if indexSeen {
			return refuse(hdr.Name, "after the index, which must be the last entry")
		}
		if hdr.Name == manifest.StateIndexPath {
			indexSeen = true
			continue
		}
		ent, err := p.admitHeader(hdr)
		if err != nil {
			return err
		}
		if seen[ent.Path] {
			return refuse(ent.Path, "in the tar more than once")
		}
		seen[ent.Path] = true
		if err := fn(ent, tr); err != nil {
			return err
		}
	}
}

// readIndex reads the index of the decrypted state, by the format's rules.
func (e *Env) readIndex() (*manifest.StateIndex, error) {
	f, err := os.Open(filepath.Join(e.staging(), stateFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return manifest.ReadStateIndex(f)
}

// stateDirs are the directories restore-files writes under, each written
// below without following a symlink.
type stateDirs struct {
	// host is the restore root, where the state's files belong.
	host *beneath
	// staged holds static pod manifests until their start step.
	staged *beneath
	// aside keeps what was in the way; nil when only reading.
	aside *beneath
}

// openStateDirs opens the restore root and kdr's own staging directories,
// making the latter; withAside for a restore that moves things.
func (e *Env) openStateDirs(withAside bool) (_ *stateDirs, err error) {
	d := &stateDirs{}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.host, err = openBeneath(e.Root); err != nil {
		return nil, err
	}
	staged := filepath.Join(e.staging(), "manifests")
	if err := os.MkdirAll(staged, 0o700); err != nil {
		return nil, err
	}
	if d.staged, err = openBeneath(staged); err != nil {
		return nil, err
	}
	if withAside {
		aside := filepath.Join(e.staging(), "aside")
		if err := os.MkdirAll(aside, 0o700); err != nil {
			return nil, err
		}
		if d.aside, err = openBeneath(aside); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *stateDirs) Close() {
	for _, b := range []*beneath{d.host, d.staged, d.aside} {
		if b != nil {
			b.Close()
		}
	}
}

// rootFor is where a state path goes: static pod manifests wait in
// staging, everything else goes to its place under the root.
func (d *stateDirs) rootFor(e *Env, rel string) *beneath {
	if e.isManifestEntry(rel) {
		return d.staged
	}
	return d.host
}

// removeLeftovers removes the temp files a run killed mid-write left
// beside the entries' names. A directory that cannot be opened without
// following a symlink is left for the restore to refuse with its reason.
func (d *stateDirs) removeLeftovers(e *Env, idx *manifest.StateIndex) {
	done := map[string]bool{}
	for _, ent := range idx.Entries {
		root, parent := d.rootFor(e, ent.Path), pathpkg.Dir(ent.Path)
		key := root.at(parent)
		if done[key] {
			continue
		}
		done[key] = true
		dir, err := root.openDir(parent, 0)
		if err != nil {
			continue
		}
		names, _ := dir.Readdirnames(-1)
		for _, n := range names {
			if strings.HasPrefix(n, tempPrefix) {
				unix.Unlinkat(int(dir.Fd()), n, 0)
			}
		}
		dir.Close()
	}
}

// tempPrefix names the temp files a restore writes beside their target.
const tempPrefix = ".kdr-tmp-"

// restore writes one admitted entry; an existing different file is moved
// into the staging directory's aside tree first.
func (d *stateDirs) restore(e *Env, p *entryPolicy, ent manifest.IndexEntry, r io.Reader) error {
	sc, err := p.admit(ent)
	if err != nil {
		return err
	}
	root := d.rootFor(e, ent.Path)
	if err := d.restoreIn(root, sc, ent, r); err != nil {
		return fmt.Errorf("restore %s: %w", root.at(ent.Path), err)
	}
	return nil
}

func (d *stateDirs) restoreIn(root *beneath, sc scope, ent manifest.IndexEntry, r io.Reader) error {
	dir, err := root.openDir(pathpkg.Dir(ent.Path), 0o755)
	if err != nil {
		return err
	}
	defer dir.Close()
	name := pathpkg.Base(ent.Path)
	st, exists, err := lstatAt(dir, name)
	if err != nil {
		return err
	}
	if exists {
		if done, err := keepExisting(dir, name, st, sc, ent); err != nil || done {
			return err
		}
		if err := d.moveAside(dir, name, ent.Path); err != nil {
			return err
		}
	}
	switch ent.Type {
	case manifest.EntryDir:
		perm := safeMode(ent.Mode)
		if sc == aboveSet {
			perm = 0o755
		}
		if err := unix.Mkdirat(int(dir.Fd()), name, perm); err != nil {
			return &os.PathError{Op: "mkdir", Path: name, Err: err}
		}
		if sc == aboveSet {
			return nil
		}
		return applyDirMeta(dir, name, ent)
	case manifest.EntrySymlink:
		if err := unix.Symlinkat(ent.Target, int(dir.Fd()), name); err != nil {
			return &os.LinkError{Op: "symlink", Old: ent.Target, New: name, Err: err}
		}
		return applyMeta(dir, name, nil, ent)
	default:
		return writeEntryFile(dir, name, r, ent)
	}
}

// keepExisting reports whether what is already at name is the entry (a
// resumed restore, or a host that has the backup's file): then only its
// recorded mode, owner and times are applied.
func keepExisting(dir *os.File, name string, st unix.Stat_t, sc scope, ent manifest.IndexEntry) (bool, error) {
	switch {
	case ent.Type == manifest.EntryDir && isType(st, unix.S_IFDIR):
		if sc == aboveSet {
			return true, nil
		}
		return true, applyDirMeta(dir, name, ent)
	case ent.Type == manifest.EntryFile && isType(st, unix.S_IFREG):
		f, ok := fileHasAt(dir, name, ent.SHA256)
		if !ok {
			return false, nil
		}
		defer f.Close()
		return true, applyMeta(dir, name, f, ent)
	case ent.Type == manifest.EntrySymlink && isType(st, unix.S_IFLNK):
		if target, err := readlinkAt(dir, name); err != nil || target != ent.Target {
			return false, nil
		}
		return true, applyMeta(dir, name, nil, ent)
	}
	return false, nil
}

// moveAside moves name out of the way into the aside tree, under the
// entry's path (or path-2, path-3...). A symlink is moved itself, never
// what it points to.
func (d *stateDirs) moveAside(dir *os.File, name, rel string) error {
	adir, err := d.aside.openDir(pathpkg.Dir(rel), 0o700)
	if err != nil {
		return fmt.Errorf("move the existing file aside: %w", err)
	}
	defer adir.Close()
	for i := 1; i < 1000; i++ {
		free := name
		if i > 1 {
			free = fmt.Sprintf("%s-%d", name, i)
		}
		_, taken, err := lstatAt(adir, free)
		if err != nil {
			return err
		}
		if taken {
			continue
		}
		if err := renameAt(dir, name, adir, free); err != nil {
			return fmt.Errorf("move the existing file aside: %w", err)
		}
		return nil
	}
	return fmt.Errorf("no free name beside %s", d.aside.at(rel))
}

// writeEntryFile writes a file entry to a temp file beside name, checks
// its content against the index, gives it its recorded owner, mode and
// times, and renames it into place: a file that fails the check never
// appears.
func writeEntryFile(dir *os.File, name string, r io.Reader, ent manifest.IndexEntry) error {
	return replaceIn(dir, name, func(tmp string, f *os.File) error {
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, ent.Size+1))
		if err != nil {
			return err
		}
		if n != ent.Size || hex.EncodeToString(h.Sum(nil)) != ent.SHA256 {
			return fmt.Errorf("%w: content does not match the index", catalog.ErrDamaged)
		}
		return applyMeta(dir, tmp, f, ent)
	})
}

// createTemp creates a new temp file in dir, readable by its owner only
// until its recorded mode is applied.
func createTemp(dir *os.File) (string, *os.File, error) {
	for range 10 {
		var b [8]byte
		rand.Read(b[:])
		name := tempPrefix + hex.EncodeToString(b[:])
		f, err := openAt(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		return name, f, err
	}
	return "", nil, errors.New("no free temp file name")
}

// applyDirMeta applies a directory's recorded metadata through the
// directory opened without following a symlink.
func applyDirMeta(dir *os.File, name string, ent manifest.IndexEntry) error {
	f, err := openAt(dir, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return applyMeta(dir, name, f, ent)
}

// applyMeta sets owner (when root), mode and times as recorded on name in
// dir. f is name opened, for the mode (chmod has no form that leaves a
// symlink alone); it is nil for a symlink, whose mode means nothing.
// Private keys keep their 0600 because the backup recorded it; setuid,
// setgid and sticky bits are never restored.
func applyMeta(dir *os.File, name string, f *os.File, ent manifest.IndexEntry) error {
	if os.Geteuid() == 0 {
		var err error
		if f != nil {
			err = f.Chown(ent.UID, ent.GID)
		} else {
			err = lchownAt(dir, name, ent.UID, ent.GID)
		}
		if err != nil {
			return err
		}
	}
	if f != nil {
		if err := f.Chmod(os.FileMode(safeMode(ent.Mode))); err != nil {
			return err
		}
	}
	return chtimesAt(dir, name, ent.ModTime)
}

// fileHasAt opens the regular file name in dir, without following a
// symlink, and reports whether its content has the sha256 sum; the file
// is returned open when it has.
func fileHasAt(dir *os.File, name, sum string) (*os.File, bool) {
	// O_NONBLOCK: a fifo put in the file's place must not hang the restore.
	f, err := openAt(dir, name, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, false
	}
	h := sha256.New()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, false
	}
	if _, err := io.Copy(h, f); err != nil || hex.EncodeToString(h.Sum(nil)) != sum {
		f.Close()
		return nil, false
	}
	return f, true
}

// checkFilesRestored reads every entry back the way restore-files wrote
// it: relative to directories opened without following a symlink.
func checkFilesRestored(_ context.Context, e *Env) error {
	idx, err := e.readIndex()
	if err != nil {
		return err
	}
	if _, err := e.statePolicy(idx); err != nil {
		return err
	}
	dirs, err := e.openStateDirs(false)
	if err != nil {
		return err
	}
	defer dirs.Close()
	for _, ent := range idx.Entries {
		root := dirs.rootFor(e, ent.Path)
		if err := checkRestored(root, ent); err != nil {
			return fmt.Errorf("%s: %w", root.at(ent.Path), err)
		}
	}
	return nil
}

func checkRestored(root *beneath, ent manifest.IndexEntry) error {
	dir, err := root.openDir(pathpkg.Dir(ent.Path), 0)
	if err != nil {
		return err
	}
	defer dir.Close()
	name := pathpkg.Base(ent.Path)
	switch ent.Type {
	case manifest.EntryFile:
		f, ok := fileHasAt(dir, name, ent.SHA256)
		if !ok {
			return errors.New("not the backup's file")
		}
		f.Close()
	case manifest.EntryDir:
		st, ok, err := lstatAt(dir, name)
		if err != nil {
			return err
		}
		if !ok || !isType(st, unix.S_IFDIR) {
			return errors.New("not a directory")
		}
	case manifest.EntrySymlink:
		target, err := readlinkAt(dir, name)
		if err != nil {
			return err
		}
		if target != ent.Target {
			return fmt.Errorf("a symlink to %q, the backup's points to %q", target, ent.Target)
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
