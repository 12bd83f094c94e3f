package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// ErrTrailingHash means an etcd snapshot's bytes do not match the sha256
// etcd appended to them: the stream was damaged or cut, or the file is a
// raw copy of a data dir's db rather than a snapshot.
var ErrTrailingHash = errors.New("etcd snapshot does not match its trailing sha256")

// SnapshotReader passes an etcd snapshot stream through unchanged
// (the stored object keeps etcd's trailing hash, so `etcdutl snapshot
// restore` checks it too) and checks that the last 32 bytes are the sha256
// of everything before them. At EOF a mismatch, or a stream shorter than
// the hash, is an error, never a silent success.
type SnapshotReader struct {
	src  io.Reader
	h    hash.Hash
	tail [sha256.Size]byte
	n    int   // bytes held in tail
	size int64 // database bytes hashed so far
	err  error
	// whole is set when the stream ended with a matching hash.
	whole bool
}

// NewSnapshotReader checks the etcd snapshot read through it.
func NewSnapshotReader(src io.Reader) *SnapshotReader {
	return &SnapshotReader{src: src, h: sha256.New()}
}

func (r *SnapshotReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.src.Read(p)
	r.consume(p[:n])
	switch {
	case err == io.EOF:
		r.err = r.finish()
	case err != nil:
		r.err = fmt.Errorf("read etcd snapshot stream: %w", err)
	}
	return n, r.err
}

// consume hashes all but the newest 32 bytes seen, which may be the hash.
func (r *SnapshotReader) consume(b []byte) {
	total := r.n + len(b)
	if total <= sha256.Size {
		r.n += copy(r.tail[r.n:], b)
		return
	}
	excess := total - sha256.Size
	fromTail := min(excess, r.n)
	r.h.Write(r.tail[:fromTail])
	fromB := excess - fromTail
	r.h.Write(b[:fromB])
	k := copy(r.tail[:], r.tail[fromTail:r.n])
	copy(r.tail[k:], b[fromB:])
	r.n = sha256.Size
	r.size += int64(excess)
}

func (r *SnapshotReader) finish() error {
	if r.n < sha256.Size {
		return fmt.Errorf("%w: stream ended after %d bytes, before the hash", ErrTrailingHash, r.n)
	}
	if !bytes.Equal(r.h.Sum(nil), r.tail[:]) {
		return fmt.Errorf("%w (%d bytes)", ErrTrailingHash, r.size)
	}
	// Sum leaves the state as it was: adding the tail now gives the hash of
	// the whole stream without hashing the database a second time.
	r.h.Write(r.tail[:])
	r.whole = true
	return io.EOF
}

// SHA256 is the hex sha256 of every byte read, trailing hash included; it
// is valid once Read has returned io.EOF.
func (r *SnapshotReader) SHA256() string {
	if !r.whole {
		return ""
	}
	return hex.EncodeToString(r.h.Sum(nil))
}

// DBSize is the number of database bytes seen, without the trailing hash.
func (r *SnapshotReader) DBSize() int64 { return r.size }
