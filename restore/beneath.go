package restore

import (
	"errors"
	"fmt"
	"io"
	"os"
	pathpkg "path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// beneath is a directory a restore writes under without following any
// symlink below it. Paths are walked one component at a time, each opened
// with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) relative to the one
// before, and every change is made relative to an open parent directory:
// neither a symlink from the backup nor one already on the host can send
// a write elsewhere. os.Root is not enough: it follows symlinks that stay
// inside the root, and at root / everything is inside.
type beneath struct {
	dir *os.File
	// name is the directory's path on the host, for messages.
	name string
}

// openBeneath opens dir. The directory itself is the operator's (the
// restore root, or kdr's staging directory), so a symlink on the way to
// it is followed; only what is below it is confined.
func openBeneath(dir string) (*beneath, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return &beneath{dir: f, name: dir}, nil
}

func (b *beneath) Close() error { return b.dir.Close() }

// at is rel's path on the host, for messages.
func (b *beneath) at(rel string) string { return filepath.Join(b.name, filepath.FromSlash(rel)) }

// openDir opens the directory rel (slash-separated, relative; "." is b
// itself). With mkPerm non-zero, missing directories are made with it.
// A symlink anywhere on the way is refused, naming it.
func (b *beneath) openDir(rel string, mkPerm os.FileMode) (*os.File, error) {
	cur, err := openAt(b.dir, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	if rel == "." || rel == "" {
		return cur, nil
	}
	done := ""
	for _, name := range strings.Split(rel, "/") {
		done = pathpkg.Join(done, name)
		next, err := openAt(cur, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if errors.Is(err, unix.ENOENT) && mkPerm != 0 {
			if err = unix.Mkdirat(int(cur.Fd()), name, uint32(mkPerm.Perm())); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = openAt(cur, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			}
		}
		if err != nil {
			err = b.explain(cur, name, done, err)
		}
		cur.Close()
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return cur, nil
}

// explain turns the error of opening name in dir, rel below b, into what
// the operator needs to know. The kernel says ENOTDIR or ELOOP for a
// symlink, depending on the flags; lstat tells which it is.
func (b *beneath) explain(dir *os.File, name, rel string, err error) error {
	p := b.at(rel)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if st, ok, _ := lstatAt(dir, name); ok && isType(st, unix.S_IFLNK) {
			return fmt.Errorf("%s is a symlink on this host, which kdr does not follow: move it away and run again", p)
		}
		return fmt.Errorf("%s is not a directory on this host: move it away and run again", p)
	}
	return fmt.Errorf("open %s: %w", p, err)
}

// openAt opens one name in dir without following a symlink, even as the
// last component. name must be a single component: with no slash and no
// "..", openat with O_NOFOLLOW gives the same guarantee as openat2 on
// kernels older than 5.6, which lack it.
func openAt(dir *os.File, name string, flags int, perm uint32) (*os.File, error) {
	if name == "" || name == ".." || strings.Contains(name, "/") {
		return nil, fmt.Errorf("open %q: not a single path component", name)
	}
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	how := unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(perm)
	}
	for tries := 0; ; tries++ {
		fd, err := unix.Openat2(int(dir.Fd()), name, &how)
		if errors.Is(err, unix.ENOSYS) {
			fd, err = unix.Openat(int(dir.Fd()), name, flags, perm)
		}
		// openat2 asks for a retry when a rename raced the lookup.
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && tries < 10 {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// lstatAt is lstat of one name in dir; ok is false when nothing is there.
func lstatAt(dir *os.File, name string) (st unix.Stat_t, ok bool, err error) {
	err = unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	if err != nil {
		return st, false, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	return st, true, nil
}

func isType(st unix.Stat_t, t uint32) bool { return st.Mode&unix.S_IFMT == t }

// readlinkAt reads the target of the symlink name in dir.
func readlinkAt(dir *os.File, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(int(dir.Fd()), name, buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: name, Err: err}
	}
	if n == len(buf) {
		return "", &os.PathError{Op: "readlink", Path: name, Err: unix.ENAMETOOLONG}
	}
	return string(buf[:n]), nil
}

// chtimesAt sets the times of name in dir, of a symlink itself rather
// than its target.
func chtimesAt(dir *os.File, name string, t time.Time) error {
	ts := unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
	if err := unix.UtimesNanoAt(int(dir.Fd()), name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chtimes", Path: name, Err: err}
	}
	return nil
}

// lchownAt sets the owner of name in dir, of a symlink itself rather
// than its target.
func lchownAt(dir *os.File, name string, uid, gid int) error {
	if err := unix.Fchownat(int(dir.Fd()), name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lchown", Path: name, Err: err}
	}
	return nil
}

// renameAt moves a name from one directory to another; neither name is
// resolved through a symlink (rename never follows its last component).
func renameAt(from *os.File, oldName string, to *os.File, newName string) error {
	if err := unix.Renameat(int(from.Fd()), oldName, int(to.Fd()), newName); err != nil {
		return &os.LinkError{Op: "rename", Old: oldName, New: newName, Err: err}
	}
	return nil
}

// rootRel is host path p relative to the restore root, for beneath: clean,
// slash-separated, without a leading slash ("." for the root itself). A
// ".." cannot climb above the root, as in a chroot.
func rootRel(p string) string {
	rel := strings.TrimPrefix(pathpkg.Clean("/"+filepath.ToSlash(p)), "/")
	if rel == "" {
		return "."
	}
	return rel
}

// maxReadSize bounds what readFile takes whole: far above any certificate,
// key, kubeconfig or static pod manifest. A larger one is not what kubeadm
// writes, and reading it could exhaust memory.
const maxReadSize = 4 << 20

// lstat is lstat of rel below b, each directory on the way opened without
// following a symlink. ok is false when rel or a directory on the way is
// missing; a symlink on the way is an error naming it.
func (b *beneath) lstat(rel string) (st unix.Stat_t, ok bool, err error) {
	dir, err := b.openDir(pathpkg.Dir(rel), 0)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	defer dir.Close()
	st, ok, err = lstatAt(dir, pathpkg.Base(rel))
	if err != nil {
		return st, false, fmt.Errorf("lstat %s: %w", b.at(rel), err)
	}
	return st, ok, nil
}

// readFile reads the regular file rel below b without following a symlink
// on the way or at rel itself: a file of the restore may have come from a
// backup that links it to any file of the host. Anything but a regular file
// is refused. A missing file is an error that errors.Is fs.ErrNotExist.
func (b *beneath) readFile(rel string) ([]byte, os.FileInfo, error) {
	dir, err := b.openDir(pathpkg.Dir(rel), 0)
	if err != nil {
		return nil, nil, err
	}
	defer dir.Close()
	return readFileIn(dir, pathpkg.Base(rel), b.at(rel))
}

// readFileIn reads the regular file name in dir without following a
// symlink; shown is its path on the host, for messages.
func readFileIn(dir *os.File, name, shown string) ([]byte, os.FileInfo, error) {
	// O_NONBLOCK: a fifo put in the file's place must not hang the restore.
	f, err := openAt(dir, name, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, nil, fmt.Errorf("read %s: a symlink, which kdr does not follow: replace it with the file", shown)
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the name is in shown already
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", shown, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", shown, err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return nil, nil, fmt.Errorf("read %s: not a regular file (%s)", shown, fi.Mode().Type())
	case fi.Size() > maxReadSize:
		return nil, nil, fmt.Errorf("read %s: %d bytes, more than any file kdr edits holds", shown, fi.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxReadSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", shown, err)
	}
	if len(data) > maxReadSize {
		return nil, nil, fmt.Errorf("read %s: grew past %d bytes while read", shown, maxReadSize)
	}
	return data, fi, nil
}

// writeFile replaces rel below b with data: a temp file beside it, synced,
// given perm, renamed over rel, and the directory synced. Directories on
// the way are opened without following a symlink (made with mkPerm when it
// is not zero); a symlink at rel itself is replaced, never written
// through, as rename does not follow its last component.
func (b *beneath) writeFile(rel string, data []byte, perm, mkPerm os.FileMode) error {
	dir, err := b.openDir(pathpkg.Dir(rel), mkPerm)
	if err != nil {
		return fmt.Errorf("write %s: %w", b.at(rel), err)
	}
	defer dir.Close()
	if err := writeFileIn(dir, pathpkg.Base(rel), data, perm); err != nil {
		return fmt.Errorf("write %s: %w", b.at(rel), err)
	}
	return nil
}

// writeFileIn is writeFile relative to an open directory.
func writeFileIn(dir *os.File, name string, data []byte, perm os.FileMode) error {
	err := replaceIn(dir, name, func(_ string, f *os.File) error {
		if _, err := f.Write(data); err != nil {
			return err
		}
		return f.Chmod(perm.Perm())
	})
	if err != nil {
		return err
	}
	// The rename is durable only once the directory is.
	return dir.Sync()
}

// replaceIn writes name in dir through a temp file beside it that fill
// writes: synced, then renamed over name. A fill or write that fails
// leaves nothing behind, and name is never seen half written.
func replaceIn(dir *os.File, name string, fill func(tmp string, f *os.File) error) (err error) {
	tmp, f, err := createTemp(dir)
	if err != nil {
		return err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			unix.Unlinkat(int(dir.Fd()), tmp, 0)
		}
	}()
	if err := fill(tmp, f); err != nil {
		return err
	}
	err = errors.Join(f.Sync(), f.Close())
	f = nil
	if err != nil {
		return err
	}
	return renameAt(dir, tmp, dir, name)
}
