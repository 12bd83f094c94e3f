package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Local is a target in a directory: a USB disk, an NFS mount, any local
// path. Objects are files under the directory, named by their keys, and are
// left read-only (0444) once written. A Local is safe for concurrent use.
type Local struct {
	name string
	dir  string
}

var _ Target = (*Local)(nil)

// NewLocal returns a target that stores objects under dir. It does not touch
// the disk: a disk that is not mounted yet is reported by the first
// operation, and the directory itself is never created, so that backups do
// not silently land on the root filesystem under an empty mount point.
func NewLocal(name, dir string) (*Local, error) {
	if name == "" {
		return nil, errors.New("local target: empty name")
	}
	if dir == "" {
		return nil, fmt.Errorf("local target %s: empty directory", name)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local target %s: %w", name, err)
	}
	return &Local{name: name, dir: abs}, nil
}

// Name returns the configured name of the target.
func (l *Local) Name() string { return l.name }

// Dir returns the absolute directory the target stores objects in.
func (l *Local) Dir() string { return l.dir }

func (l *Local) path(key string) string {
	return filepath.Join(l.dir, filepath.FromSlash(key))
}

// checkRoot fails when the target directory is missing or not a directory;
// both are permanent for the length of an operation.
func (l *Local) checkRoot() error {
	fi, err := os.Stat(l.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return mark(ErrPermanent, err, fmt.Sprintf("target %s: directory %s does not exist (is the disk mounted?)", l.name, l.dir))
	case err != nil:
		return l.fail("opening", l.dir, err)
	case !fi.IsDir():
		return mark(ErrPermanent, nil, fmt.Sprintf("target %s: %s is not a directory", l.name, l.dir))
	}
	return nil
}

// fail turns an OS error into the target's error. Conditions that retrying
// cannot fix (a full or read-only disk, missing permissions) wrap
// ErrPermanent and say plainly what happened.
func (l *Local) fail(verb, key string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EACCES, syscall.EPERM:
			return mark(ErrPermanent, err, fmt.Sprintf("target %s: %s %s %s", l.name, errno.Error(), verb, key))
		}
	}
	return fmt.Errorf("target %s: %s %s: %w", l.name, verb, key, err)
}

func (l *Local) notExist(key string, cause error) error {
	return mark(ErrNotExist, cause, fmt.Sprintf("target %s: %s: %v", l.name, key, ErrNotExist))
}

// Put writes r to a hidden temp file beside the final name, syncs it, and
// renames it into place, so that the object appears whole or not at all.
// With opts.IfAbsent the last step never replaces an existing file (see
// placeNew).
func (l *Local) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (err error) {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("target %s: %w", l.name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("target %s: writing %s: %w", l.name, key, err)
	}
	if err := l.checkRoot(); err != nil {
		return err
	}
	final := l.path(key)
	dir := filepath.Dir(final)
	f, err := l.createTemp(dir, filepath.Base(final))
	if err != nil {
		return l.fail("writing", key, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := copyCtx(ctx, f, r); err != nil {
		var we writeError
		if errors.As(err, &we) {
			return l.fail("writing", key, we.err)
		}
		return fmt.Errorf("target %s: writing %s: %w", l.name, key, err)
	}
	mode := os.FileMode(0o444)
	if opts.Executable {
		mode = 0o755
	}
	if err := f.Chmod(mode); err != nil {
		return l.fail("writing", key, err)
	}
	// Some filesystems (NFS) report a full disk only at sync or close.
	if err := f.Sync(); err != nil {
		return l.fail("writing", key, err)
	}
	if err := f.Close(); err != nil {
		return l.fail("writing", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("target %s: writing %s: %w", l.name, key, err)
	}
	if opts.IfAbsent {
		err = placeNew(tmp, final)
		if errors.Is(err, fs.ErrExist) {
			return mark(ErrExist, err, fmt.Sprintf("target %s: %s: %v", l.name, key, ErrExist))
		}
	} else {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		return l.fail("writing", key, err)
	}
	if err := syncDir(dir); err != nil {
		return l.fail("writing", key, err)
	}
	return nil
}

// placeNew moves the finished temp file tmp to final unless final exists,
// in which case the error wraps fs.ErrExist and tmp stays for the caller to
// remove. renameat2 with RENAME_NOREPLACE does it in one step; filesystems
// that do not know the flag (NFS, some FUSE mounts) refuse it with EINVAL,
// and get link(2) and an unlink of tmp instead.
func placeNew(tmp, final string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.ENOTSUP):
	default:
		return &os.LinkError{Op: "renameat2", Old: tmp, New: final, Err: err}
	}
	return linkNew(tmp, final)
}

// linkNew is placeNew by link(2) and an unlink of tmp.
func linkNew(tmp, final string) error {
	if err := os.Link(tmp, final); err != nil {
		// NFS may answer a retransmitted LINK that did succeed with EEXIST:
		// the file in place being tmp itself means it did.
		if !errors.Is(err, fs.ErrExist) || !sameFile(tmp, final) {
			return err
		}
	}
	// The object is in place; a temp name left by a failed unlink is
	// removed by CleanupIncomplete.
	os.Remove(tmp)
	return nil
}

func sameFile(a, b string) bool {
	ai, aerr := os.Stat(a)
	bi, berr := os.Stat(b)
	return aerr == nil && berr == nil && os.SameFile(ai, bi)
}

// createTemp makes the key's directories and a temp file in the last one. A
// concurrent Delete may remove a directory it has just emptied between the
// two steps; trying again then succeeds.
func (l *Local) createTemp(dir, base string) (*os.File, error) {
	if len(base) > 100 {
		base = base[:100]
	}
	var err error
	for range 3 {
		if err = os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		var f *os.File
		f, err = os.CreateTemp(dir, tempPrefix+base+"-*")
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// writeError tells a failed write apart from a failed read in copyCtx: only
// the former is the target's problem.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// copyCtx copies r to w and stops at the next read when ctx ends.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) error {
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return writeError{err}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("reading input: %w", rerr)
		}
	}
}

// syncDir makes a rename durable. Filesystems that cannot sync a directory
// (some NFS and FUSE mounts) say so with EINVAL or ENOTSUP; the rename is as
// durable there as it gets.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get opens the object's file.
func (l *Local) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, fmt.Errorf("target %s: %w", l.name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("target %s: reading %s: %w", l.name, key, err)
	}
	f, err := os.Open(l.path(key))
	if err != nil {
		return nil, l.missing("reading", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, l.fail("reading", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, l.notExist(key, nil)
	}
	return f, nil
}

// GetRange opens length bytes of the object from offset.
func (l *Local) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("target %s: reading %s: range %d+%d", l.name, key, offset, length)
	}
	rc, err := l.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	f := rc.(*os.File)
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, offset, length), f}, nil
}

// missing maps "no such file" to ErrNotExist, unless the whole target
// directory is gone: an unmounted disk must not look like a missing backup.
func (l *Local) missing(verb, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		if rerr := l.checkRoot(); rerr != nil {
			return rerr
		}
		return l.notExist(key, err)
	}
	return l.fail(verb, key, err)
}

// Stat describes the object's file.
func (l *Local) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, fmt.Errorf("target %s: %w", l.name, err)
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("target %s: stat %s: %w", l.name, key, err)
	}
	fi, err := os.Stat(l.path(key))
	if err != nil {
		return ObjectInfo{}, l.missing("reading", key, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, l.notExist(key, nil)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), Modified: fi.ModTime()}, nil
}

// List walks the deepest directory that can hold keys with the prefix and
// reports regular files in key order. Keys are sorted as strings, not in walk
// order: "a-b" sorts before "a/b" although directory "a" is walked first.
func (l *Local) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if err := validatePrefix(prefix); err != nil {
		return fmt.Errorf("target %s: %w", l.name, err)
	}
	if err := l.checkRoot(); err != nil {
		return err
	}
	start := filepath.Join(l.dir, filepath.FromSlash(listDir(prefix)))
	var objs []ObjectInfo
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == start && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		rel, rerr := filepath.Rel(l.dir, p)
		if rerr != nil {
			return rerr
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if p == start {
				return nil
			}
			// Skip directories that cannot hold a matching key.
			if dk := key + "/"; !strings.HasPrefix(dk, prefix) && !strings.HasPrefix(prefix, dk) {
				return fs.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(d.Name(), tempPrefix) || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, ierr := os.Stat(p) // follows a symlink to a file
		if errors.Is(ierr, fs.ErrNotExist) {
			return nil // removed while listing
		}
		if ierr != nil {
			return ierr
		}
		if fi.Mode().IsRegular() {
			objs = append(objs, ObjectInfo{Key: key, Size: fi.Size(), Modified: fi.ModTime()})
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("target %s: listing %q: %w", l.name, prefix, err)
		}
		return l.fail("listing", prefix, err)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("target %s: listing %q: %w", l.name, prefix, err)
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the object's file and then the directories it leaves
// empty, so that pruned backups do not leave a trail of empty directories on
// the disk. Write permission on the directory is what counts, so the 0444
// file itself is no obstacle.
func (l *Local) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("target %s: %w", l.name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("target %s: deleting %s: %w", l.name, key, err)
	}
	p := l.path(key)
	fi, err := os.Lstat(p)
	if err != nil {
		err = l.missing("deleting", key, err)
		if errors.Is(err, ErrNotExist) {
			return nil
		}
		return err
	}
	if fi.IsDir() {
		return nil // no object by that name
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return l.fail("deleting", key, err)
	}
	for d := filepath.Dir(p); d != l.dir && strings.HasPrefix(d, l.dir+string(filepath.Separator)); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break // not empty, or in use by a concurrent Put
		}
	}
	return nil
}

// CleanupIncomplete removes temp files of interrupted Puts whose last write
// is older than olderThan. A Put in progress writes to its temp file all the
// time, so an age of a few hours never catches a live one.
func (l *Local) CleanupIncomplete(ctx context.Context, olderThan time.Duration) (int, error) {
	if err := l.checkRoot(); err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	err := filepath.WalkDir(l.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, ierr := d.Info()
		if errors.Is(ierr, fs.ErrNotExist) {
			return nil
		}
		if ierr != nil {
			return ierr
		}
		if !fi.ModTime().Before(cutoff) {
			return nil
		}
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return rerr
		}
		removed++
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return removed, fmt.Errorf("target %s: cleaning up: %w", l.name, err)
		}
		return removed, l.fail("cleaning up", l.dir, err)
	}
	return removed, nil
}

// Ping checks that the directory exists and a file can be created in it.
func (l *Local) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("target %s: %w", l.name, err)
	}
	if err := l.checkRoot(); err != nil {
		return err
	}
	f, err := os.CreateTemp(l.dir, tempPrefix+"ping-*")
	if err != nil {
		return l.fail("writing to", l.dir, err)
	}
	name := f.Name()
	cerr := f.Close()
	rerr := os.Remove(name)
	if err := errors.Join(cerr, rerr); err != nil {
		return l.fail("writing to", l.dir, err)
	}
	return nil
}
