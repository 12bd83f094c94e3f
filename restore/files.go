package restore

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

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
	f, err := os.CreateTemp(filepath.Dir(dst), tempPrefix+"*")
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

// writeFileAtomic is writeStreamAtomic of data.
func writeFileAtomic(dst string, data []byte, mode os.FileMode) error {
	return writeStreamAtomic(dst, bytes.NewReader(data), mode)
}

// tempPrefix names the temp files a restore writes beside their target.
const tempPrefix = ".kdr-tmp-"

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

// syncDir makes the entries of dir, a rename into it among them, durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
