package pkicheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

const (
	// maxLinks bounds symbolic link hops, as the kernel does, so a loop in
	// a damaged tree ends.
	maxLinks = 40
	// maxFileSize is far above any certificate, key or kubeconfig; a larger
	// file is damage, and reading it whole could exhaust memory.
	maxFileSize = 4 << 20
)

var (
	errTooManyLinks = errors.New("too many levels of symbolic links")
	errNotRegular   = errors.New("not a regular file")
)

// sandbox reads host paths (absolute, slash-separated) below root the way a
// process chrooted into root would. A restored tree keeps the host's
// absolute symbolic links (the kubelet's kubelet-client-current.pem); they
// must resolve inside the sandbox, never to the real host's files.
type sandbox struct{ root string }

// real is where a clean host path lies on this machine, without following
// links.
func (s sandbox) real(p string) string {
	return filepath.Join(s.root, filepath.FromSlash(p))
}

// resolve follows every link of host path p inside the sandbox and returns
// the real path and the file's own information. Errors carry the cause
// only: callers name the host path, and the machine path means nothing in
// a report.
func (s sandbox) resolve(p string) (string, fs.FileInfo, error) {
	done, err := s.resolveHost(p)
	if err != nil {
		return "", nil, err
	}
	// done holds no links now, so this describes the file itself.
	fi, err := os.Lstat(s.real(done))
	if err != nil {
		return "", nil, cause(err)
	}
	return s.real(done), fi, nil
}

// resolveHost follows every link of host path p inside the sandbox and
// returns the host path it leads to, which holds no link.
func (s sandbox) resolveHost(p string) (string, error) {
	todo := strings.Split(path.Clean("/"+p), "/")
	done, hops := "/", 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			done = path.Dir(done)
			continue
		}
		next := path.Join(done, name)
		fi, err := os.Lstat(s.real(next))
		if err != nil {
			return "", cause(err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		if hops++; hops > maxLinks {
			return "", errTooManyLinks
		}
		target, err := os.Readlink(s.real(next))
		if err != nil {
			return "", cause(err)
		}
		if path.IsAbs(target) {
			done = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return done, nil
}

// ReadFile reads the regular file at host path p (absolute,
// slash-separated) below root as Run reads the tree: links resolve inside
// root, and anything but a regular file of a sane size is refused. A
// restored file read this way cannot lead to the host's own files or block
// its reader on a FIFO. Errors name the cause, not the path.
func ReadFile(root, p string) ([]byte, error) {
	return sandbox{root: root}.readFile(p)
}

// readFile reads a regular file at host path p. Anything else is refused
// before it is opened: a FIFO would block the check for good.
func (s sandbox) readFile(p string) ([]byte, error) {
	real, fi, err := s.resolve(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errNotRegular
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("%d bytes, more than any PKI file or kubeconfig holds", fi.Size())
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return nil, cause(err)
	}
	return data, nil
}

// cause strips the machine path from a file system error and keeps what
// went wrong, which errors.Is still recognises (fs.ErrNotExist).
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
