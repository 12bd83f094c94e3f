package ociimage

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// layer is the gzipped layer in a temporary file, with its digests.
type layer struct {
	f      *os.File
	digest string // of the gzip stream: the blob's name
	diffID string // of the tar inside: the config's rootfs.diff_ids
	size   int64  // of the gzip stream
}

func (l *layer) remove() {
	l.f.Close()
	os.Remove(l.f.Name())
}

// writeLayer writes files, with their parent directories, as a gzipped tar
// to a temporary file in dir, hashing the tar and the gzip on the way so
// that no byte is read twice.
func writeLayer(ctx context.Context, dir string, files []File, mtime time.Time) (_ *layer, err error) {
	f, err := os.CreateTemp(dir, ".kdr-layer-*")
	if err != nil {
		return nil, fmt.Errorf("creating layer: %w", err)
	}
	l := &layer{f: f}
	defer func() {
		if err != nil {
			l.remove()
		}
	}()

	blobSum := &digester{h: sha256.New()}
	buf := bufio.NewWriterSize(io.MultiWriter(f, blobSum), 1<<20)
	// gzip.NewWriter leaves the header's name and time empty: no host path
	// or build time in the blob.
	zw := gzip.NewWriter(buf)
	tarSum := &digester{h: sha256.New()}
	tw := tar.NewWriter(io.MultiWriter(zw, tarSum))

	for _, e := range layerEntries(files) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("writing layer: %w", err)
		}
		if e.file == nil {
			if err := tw.WriteHeader(dirHeader(e.name, mtime)); err != nil {
				return nil, fmt.Errorf("writing layer: %s: %w", e.name, err)
			}
			continue
		}
		if err := copyFile(tw, e.name, *e.file, mtime); err != nil {
			return nil, fmt.Errorf("file %s: %w", e.file.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	if err := buf.Flush(); err != nil {
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	l.digest, l.size = blobSum.sum(), blobSum.n
	l.diffID = tarSum.sum()
	return l, nil
}

// entry is one tar entry of the layer: a directory when file is nil.
type entry struct {
	name string
	file *File
}

// layerEntries lists files and every parent directory once, by name:
// relative, as layer tars have them, directories ending in a slash. Sorting
// also puts each directory before what it holds, since its name is their
// prefix.
func layerEntries(files []File) []entry {
	var entries []entry
	dirs := map[string]bool{}
	for i := range files {
		f := &files[i]
		entries = append(entries, entry{name: strings.TrimPrefix(f.Path, "/"), file: f})
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				entries = append(entries, entry{name: strings.TrimPrefix(d, "/") + "/"})
			}
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	return entries
}

// copyFile streams f's source into tw as name. The size goes in the header
// before the data, so a source that changes size meanwhile is an error
// rather than a layer that does not match its header.
func copyFile(tw *tar.Writer, name string, f File, mtime time.Time) error {
	src, err := os.Open(f.Source)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer src.Close()
	info, err := src.Stat()
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("source %s is not a regular file", f.Source)
	}
	if err := tw.WriteHeader(fileHeader(name, f.Mode, info.Size(), mtime)); err != nil {
		return fmt.Errorf("writing layer: %w", err)
	}
	if _, err := io.CopyN(tw, src, info.Size()); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("source %s shrank while being read", f.Source)
		}
		return fmt.Errorf("copying %s: %w", f.Source, err)
	}
	if n, _ := src.Read(make([]byte, 1)); n > 0 {
		return fmt.Errorf("source %s grew while being read", f.Source)
	}
	return nil
}

// digester hashes and counts what is written to it.
type digester struct {
	h hash.Hash
	n int64
}

func (d *digester) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return d.h.Write(p)
}

func (d *digester) sum() string {
	return "sha256:" + hex.EncodeToString(d.h.Sum(nil))
}
