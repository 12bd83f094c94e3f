package restore

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	pathpkg "path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/manifest"
)

// StepRestoreFiles names the step that puts back the PKI, kubeconfigs, LB and DNS files.
const StepRestoreFiles = "restore-files"

var stepRestoreFiles = stepDef{
	id:    StepRestoreFiles,
	title: "Put back the PKI, kubeconfigs, LB and DNS files",
	why: "The CAs and the service-account keys cannot be made again: without them no node, client or token " +
		"trusts the restored cluster. Files already on the host are moved aside, never overwritten; keys keep " +
		"mode 0600 and their owners.",
	where: EveryNode,
	commands: []string{
		// The directories the sets name (dir/**) first, alone: kdr
		// restores their mode and owner, which tar's dir/** does not
		// match, and refuses a backup that has anything else there, where
		// a link would take every later write with it (see setDirs).
		"mkdir -p {{.Staging}}/files{{if .SetDirs}} && tar -x -p --numeric-owner -f {{.Staging}}/state.tar -C {{.Staging}}/files " +
			"--no-recursion -- {{.SetDirs}} && for d in {{.SetDirs}}; do [ -d \"{{.Staging}}/files/$d\" ] && [ ! -L \"{{.Staging}}/files/$d\" ] || " +
			"{ echo \"$d: not a directory in the backup; do not restore it\"; false; }; done{{end}}",
		// Only the sets' patterns are extracted (see stateMembers); GNU
		// tar refuses names with "..", and writes nothing through a link
		// it extracted. Owners by number, as kdr restores them.
		"tar -x -p --numeric-owner -f {{.Staging}}/state.tar -C {{.Staging}}/files " +
			"{{if .StateMembers}}--wildcards --no-wildcards-match-slash -- {{.StateMembers}}{{else}}--exclude .kdr{{end}}",
		// The static pod manifests wait in staging until their start
		// step, which makes their directory; a backup may have none.
		"mkdir -p {{.StagedManifests}} && if [ -d {{.Staging}}/files{{.KubeDir}}/manifests ]; then " +
			"find {{.Staging}}/files{{.KubeDir}}/manifests -mindepth 1 -maxdepth 1 -exec mv -t {{.StagedManifests}} {} + && " +
			"rmdir {{.Staging}}/files{{.KubeDir}}/manifests; fi",
		// The tar came from the backup target: what kdr would refuse to
		// write goes before anything is copied, each named as it goes: a
		// device, fifo or socket, and a symlink to an absolute path or
		// through "..", which could lead out of the restored files.
		// Setuid, setgid and sticky bits are dropped, as kdr does
		// (chmod -R passes symlinks by).
		"find {{.Staging}}/files ! -type f ! -type d ! -type l -print -delete && " +
			"find {{.Staging}}/files -type l \\( -lname '/*' -o -lname '*..*' \\) -print -delete && chmod -R ug-s,a-t {{.Staging}}/files",
		// Whatever is in the way is moved aside, never overwritten: a file
		// where the backup has one, anything but a directory where it has
		// a directory, a symlink anywhere (mv moves the link itself).
		"cd {{.Staging}}/files && find . -mindepth 1 | while read -r f; do h=\"/${f#./}\"; " +
			"if [ -L \"$h\" ] || { [ -e \"$h\" ] && ! { [ -d \"$h\" ] && [ -d \"$f\" ]; }; }; then " +
			"mkdir -p \"{{.Staging}}/aside/${f%/*}\" && mv -v --backup=numbered \"$h\" \"{{.Staging}}/aside/$f\"; fi; done",
		// Copied with tar: modes, owners and times as extracted; the
		// directories that are already there (/etc) keep theirs; and an
		// existing file stops it rather than being overwritten.
		"tar -c -C {{.Staging}}/files . | tar -x -p --numeric-owner --keep-old-files -C /",
	},
	expect: "Every file of the backup's state is in place with the mode and owner it had, less setuid, setgid and " +
		"sticky bits; any device, fifo or symlink leading out of the restored files was named and left out; " +
		"whatever was in the way is in {{.Staging}}/aside.",
	destructive: true,
	action:      restoreFiles,
	check:       checkFilesRestored,
}

// stateMembers is what restore-files extracts from the state tar by hand:
// the patterns of the manifest's sets as GNU tar --wildcards members,
// quoted for the shell. A member matches a pattern's whole name or a
// directory it names (so pki/** takes everything below pki), never the
// directory a pattern sits in: a symlink at etc/kubernetes/pki or
// etc/kubernetes/manifests, which the entry policy refuses, is left in
// the tar, as is anything outside the sets. A pattern that matched nothing
// at backup time is left out: tar fails on a member it does not find. ""
// when a set records no patterns (a backup made before sets did): the
// runbook then extracts all but the index, as it did.
func stateMembers(m *manifest.Manifest) string {
	if m == nil {
		return ""
	}
	var out []string
	for _, s := range m.State.Sets {
		if len(s.Paths) == 0 {
			return ""
		}
		for _, pat := range s.Paths {
			if slices.Contains(s.Missing, pat) {
				continue
			}
			out = append(out, shellQuote(strings.TrimPrefix(pathpkg.Clean(pat), "/")))
		}
	}
	return strings.Join(out, " ")
}

// setDirs are the directories the sets name, quoted for the shell: the
// base of each pattern dir/** that matched at backup time. kdr restores
// such a directory as part of its set (dir/** matches dir itself), with
// its recorded mode and owner (etcd's PKI directory is often 0700 and
// etcd's), and refuses a symlink there (entryPolicy.admit); GNU tar's
// member dir/** matches only what is below it. "" when stateMembers is.
func setDirs(m *manifest.Manifest) string {
	if stateMembers(m) == "" {
		return ""
	}
	var out []string
	for _, s := range m.State.Sets {
		for _, pat := range s.Paths {
			dir, ok := strings.CutSuffix(pathpkg.Clean(pat), "/**")
			if !ok || slices.Contains(s.Missing, pat) || strings.ContainsAny(dir, "*?[{\\") {
				continue
			}
			if q := shellQuote(strings.TrimPrefix(dir, "/")); !slices.Contains(out, q) {
				out = append(out, q)
			}
		}
	}
	return strings.Join(out, " ")
}

// shellQuote quotes s as one word for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
