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
	src io.Reader
	h   etcdHash
	err error
}

// NewSnapshotReader checks the etcd snapshot read through it.
func NewSnapshotReader(src io.Reader) *SnapshotReader {
	return &SnapshotReader{src: src, h: etcdHash{h: sha256.New()}}
}

func (r *SnapshotReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.src.Read(p)
	r.h.Write(p[:n])
	switch {
	case err == io.EOF:
		r.err = r.h.check()
		if r.err == nil {
			r.err = io.EOF
		}
	case err != nil:
		r.err = fmt.Errorf("read etcd snapshot stream: %w", err)
	}
	return n, r.err
}

// SHA256 is the hex sha256 of every byte read, trailing hash included; it
// is valid once Read has returned io.EOF.
func (r *SnapshotReader) SHA256() string {
	if !r.h.whole {
		return ""
	}
	return r.h.sum()
}

// DBSize is the number of database bytes seen, without the trailing hash.
func (r *SnapshotReader) DBSize() int64 { return r.h.size }

// etcdHash hashes an etcd snapshot stream and checks its trailing hash in
// the same pass: the database is hashed once, for etcd's check and for the
// sha256 of the whole stream the manifest records.
type etcdHash struct {
	h    hash.Hash
	tail [sha256.Size]byte
	n    int   // bytes held in tail
	size int64 // database bytes hashed so far
	done bool  // check ran: the tail is in h
	// whole is set when the stream ended with a matching hash.
	whole bool
}

// Write hashes all but the newest 32 bytes seen, which may be the hash.
func (e *etcdHash) Write(b []byte) (int, error) {
	total := e.n + len(b)
	if total <= sha256.Size {
		e.n += copy(e.tail[e.n:], b)
		return len(b), nil
	}
	excess := total - sha256.Size
	fromTail := min(excess, e.n)
	e.h.Write(e.tail[:fromTail])
	fromB := excess - fromTail
	e.h.Write(b[:fromB])
	k := copy(e.tail[:], e.tail[fromTail:e.n])
	copy(e.tail[k:], b[fromB:])
	e.n = sha256.Size
	e.size += int64(excess)
	return len(b), nil
}

// check ends the stream: it compares the last 32 bytes with the hash of
// the rest, then adds them, so sum is of the whole stream either way. It
// is called once.
func (e *etcdHash) check() error {
	if e.done {
		return errors.New("etcd snapshot hash checked twice")
	}
	e.done = true
	if e.n < sha256.Size {
		e.h.Write(e.tail[:e.n])
		return fmt.Errorf("%w: stream ended after %d bytes, before the hash", ErrTrailingHash, e.n)
	}
	// Sum leaves the state as it was: adding the tail now gives the hash
	// of the whole stream without hashing the database a second time.
	ok := bytes.Equal(e.h.Sum(nil), e.tail[:])
	e.h.Write(e.tail[:])
	if !ok {
		return fmt.Errorf("%w (%d bytes)", ErrTrailingHash, e.size)
	}
	e.whole = true
	return nil
}

// sum is the hex sha256 of every byte written; valid after check.
func (e *etcdHash) sum() string { return hex.EncodeToString(e.h.Sum(nil)) }
