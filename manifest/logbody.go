package manifest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// A segment body's plaintext (before zstd and age):
//
//	"kdr-log 2\n"
//	uvarint count, then per lease record:
//	    byte 'g' (granted) or 'r' (revoked), varint ID, varint TTL (granted
//	    only, seconds, 0 when unknown), varint revision
//	uvarint count, uvarint first revision, then per revision, in order
//	and without a gap:
//	    varint seen (Unix microseconds, less the previous revision's; the
//	    first's less zero), uvarint events,
//	    then per event: byte 0 (put) or 1 (delete), uvarint length, key;
//	    a put goes on with uvarint length, value, uvarint revision less
//	    create revision, varint version, varint lease ID
//
// The mod revision of every event is its revision's, and revisions follow
// each other from the first, so neither is stored; a create revision is
// stored as its distance back, zero for a key the revision creates; the
// times a batch of revisions arrived together differ by nothing. What is
// stored per revision is then the events and little else: the log is
// most of what continuous capture stores.
//
// "kdr-log 1\n" bodies, written before, are read too: each revision
// starts with its number and the time in Unix nanoseconds, a put's create
// revision is stored whole, and the first revision is not stated.
//
// Lease records come first, so that a replay knows before the revisions
// which leases the segment saw revoked.
const (
	logMagic   = "kdr-log 2\n"
	logMagicV1 = "kdr-log 1\n"
	// maxSeen bounds a time in microseconds to what Unix nanoseconds
	// hold (1677 to 2262), as they did in the format before.
	maxSeen = math.MaxInt64 / 1000
)

// LogEvent is one change of one revision.
type LogEvent struct {
	Delete         bool
	Key, Value     []byte
	CreateRevision int64
	Version        int64
	Lease          int64
}

// LogRevision is one etcd revision: every change it made, in order.
type LogRevision struct {
	Revision int64
	// Seen is when the writer received it.
	Seen   time.Time
	Events []LogEvent
}

// LeaseRecord is what restoring a lease needs, since leases are not watch
// events: a grant with its TTL, or a revocation, and the revision by which
// the writer saw it.
type LeaseRecord struct {
	ID      int64
	Revoked bool
	// TTL is the granted TTL in seconds (0: unknown; the lease was gone
	// before the writer asked).
	TTL      int64
	Revision int64
}

// LogEncoder builds a body's plaintext in memory: a segment is closed
// and sealed whole, and is bounded by the writer's size limit.
type LogEncoder struct {
	leases    []LeaseRecord
	revs      bytes.Buffer
	count     uint64
	first     int64
	last      int64
	seenFirst time.Time
	seenLast  time.Time
	seen      int64 // the last revision's, in Unix microseconds
	scratch   [binary.MaxVarintLen64]byte
}

// AddLease records a lease fact.
func (e *LogEncoder) AddLease(l LeaseRecord) { e.leases = append(e.leases, l) }

// AddRevision appends the next revision; it must follow the last one.
func (e *LogEncoder) AddRevision(r LogRevision) error {
	if e.count > 0 && r.Revision != e.last+1 {
		return fmt.Errorf("revision %d does not follow %d", r.Revision, e.last)
	}
	if len(r.Events) == 0 {
		return fmt.Errorf("revision %d has no events", r.Revision)
	}
	// What the reader refuses is refused here, so that a bad segment
	// fails at capture and not at restore.
	for _, ev := range r.Events {
		switch {
		case len(ev.Key) == 0:
			return fmt.Errorf("revision %d: an event without a key", r.Revision)
		case !ev.Delete && (ev.CreateRevision <= 0 || ev.CreateRevision > r.Revision || ev.Version <= 0):
			return fmt.Errorf("revision %d: a put of key %q created at %d, version %d", r.Revision, ev.Key, ev.CreateRevision, ev.Version)
		}
	}
	seen := r.Seen.UnixMicro()
	if seen > maxSeen || seen < -maxSeen {
		return fmt.Errorf("revision %d: seen at %s", r.Revision, r.Seen)
	}
	// The body keeps microseconds, and so does the head, so that the two
	// agree on when each revision was seen.
	if e.count == 0 {
		e.first, e.seenFirst = r.Revision, time.UnixMicro(seen).UTC()
	}
	e.last, e.seenLast = r.Revision, time.UnixMicro(seen).UTC()
	e.count++
	e.varint(seen - e.seen)
	e.seen = seen
	e.uvarint(uint64(len(r.Events)))
	for _, ev := range r.Events {
		if ev.Delete {
			e.revs.WriteByte(1)
			e.bytes(ev.Key)
			continue
		}
		e.revs.WriteByte(0)
		e.bytes(ev.Key)
		e.bytes(ev.Value)
		e.uvarint(uint64(r.Revision - ev.CreateRevision))
		e.varint(ev.Version)
		e.varint(ev.Lease)
	}
	return nil
}

func (e *LogEncoder) uvarint(v uint64) { e.revs.Write(binary.AppendUvarint(e.scratch[:0], v)) }
func (e *LogEncoder) varint(v int64)   { e.revs.Write(binary.AppendVarint(e.scratch[:0], v)) }
func (e *LogEncoder) bytes(b []byte) {
	e.uvarint(uint64(len(b)))
	e.revs.Write(b)
}

// Revisions is how many revisions were added.
func (e *LogEncoder) Revisions() int { return int(e.count) }

// Leases is how many lease records were added.
func (e *LogEncoder) Leases() int { return len(e.leases) }

// Range is the first and last revision added and when they were seen.
func (e *LogEncoder) Range() (first, last int64, seenFirst, seenLast time.Time) {
	return e.first, e.last, e.seenFirst, e.seenLast
}

// Size is the plaintext size so far, roughly: the writer's size bound.
func (e *LogEncoder) Size() int { return e.revs.Len() + 32*len(e.leases) }

// WriteTo writes the whole plaintext.
func (e *LogEncoder) WriteTo(w io.Writer) (int64, error) {
	var head []byte
	head = append(head, logMagic...)
	head = binary.AppendUvarint(head, uint64(len(e.leases)))
	for _, l := range e.leases {
		if l.Revoked {
			head = append(head, 'r')
			head = binary.AppendVarint(head, l.ID)
		} else {
			head = append(head, 'g')
			head = binary.AppendVarint(head, l.ID)
			head = binary.AppendVarint(head, l.TTL)
		}
		head = binary.AppendVarint(head, l.Revision)
	}
	head = binary.AppendUvarint(head, e.count)
	head = binary.AppendUvarint(head, uint64(e.first))
	n, err := w.Write(head)
	if err != nil {
		return int64(n), err
	}
	m, err := w.Write(e.revs.Bytes())
	return int64(n + m), err
}

// ErrLogBody means a segment body's plaintext does not follow the format.
var ErrLogBody = errors.New("segment body malformed")

// LogReader decodes a body's plaintext, read through an ObjectReader that
// holds it to its head's record. It checks the shape as it goes: revisions
// from first to last without a gap, and no field longer than what is left.
type LogReader struct {
	r *bufio.Reader
	// src is closed once the body ends or fails: an ObjectReader's zstd
	// decoder holds goroutines and buffers until it is.
	src    io.Reader
	left   int64 // plaintext bytes not yet read
	leases []LeaseRecord
	count  uint64
	read   uint64
	next   int64 // the revision expected next
	last   int64
	v1     bool  // a "kdr-log 1" body
	seen   int64 // the last revision's, in Unix microseconds (v2)
	err    error
	bytesR countingByteReader
}

// NewLogReader reads the lease records of a body holding first..last
// whose plaintext is size bytes.
func NewLogReader(r io.Reader, size, first, last int64) (*LogReader, error) {
	lr := &LogReader{r: bufio.NewReaderSize(r, 64<<10), src: r, left: size, next: first, last: last}
	ok := false
	defer func() {
		if !ok {
			lr.Close()
		}
	}()
	magic := make([]byte, len(logMagic))
	if err := lr.full(magic); err != nil {
		return nil, err
	}
	switch string(magic) {
	case logMagic:
	case logMagicV1:
		lr.v1 = true
	default:
		return nil, fmt.Errorf("%w: not a segment body", ErrLogBody)
	}
	n, err := lr.uvarint()
	if err != nil {
		return nil, err
	}
	// A record takes at least three bytes: a count beyond what is left
	// is damage, and must not drive the loop.
	if n > uint64(lr.left)/3 {
		return nil, fmt.Errorf("%w: %d lease records in %d bytes", ErrLogBody, n, lr.left)
	}
	for range n {
		var l LeaseRecord
		kind, err := lr.byte()
		if err != nil {
			return nil, err
		}
		switch kind {
		case 'g':
		case 'r':
			l.Revoked = true
		default:
			return nil, fmt.Errorf("%w: lease record kind %q", ErrLogBody, kind)
		}
		if l.ID, err = lr.varint(); err != nil {
			return nil, err
		}
		if !l.Revoked {
			if l.TTL, err = lr.varint(); err != nil {
				return nil, err
			}
		}
		if l.Revision, err = lr.varint(); err != nil {
			return nil, err
		}
		lr.leases = append(lr.leases, l)
	}
	if lr.count, err = lr.uvarint(); err != nil {
		return nil, err
	}
	if want := uint64(last - first + 1); lr.count != want {
		return nil, fmt.Errorf("%w: %d revisions for %d..%d", ErrLogBody, lr.count, first, last)
	}
	if !lr.v1 {
		at, err := lr.uvarint()
		if err != nil {
			return nil, err
		}
		if int64(at) != first {
			return nil, fmt.Errorf("%w: the body starts at revision %d, not %d", ErrLogBody, at, first)
		}
	}
	ok = true
	return lr, nil
}

// Close releases the source when it is an io.Closer. Next closes it at
// the end of the body or on an error; a reader dropped earlier is closed
// by its caller.
func (lr *LogReader) Close() error {
	c, ok := lr.src.(io.Closer)
	if !ok {
		return nil
	}
	lr.src = nil
	return c.Close()
}

// Leases are the body's lease records.
func (lr *LogReader) Leases() []LeaseRecord { return lr.leases }

// Next returns the next revision, or io.EOF after the last one once the
// plaintext ended exactly there.
func (lr *LogReader) Next() (*LogRevision, error) {
	if lr.err != nil {
		return nil, lr.err
	}
	r, err := lr.revision()
	if err != nil {
		lr.err = err
		lr.Close()
		return nil, err
	}
	return r, nil
}

func (lr *LogReader) revision() (*LogRevision, error) {
	if lr.read == lr.count {
		if lr.left != 0 {
			return nil, fmt.Errorf("%w: %d bytes after the last revision", ErrLogBody, lr.left)
		}
		// The source's io.EOF is its verdict that the plaintext is the
		// one recorded: wait for it rather than stop at the count.
		switch _, err := lr.r.ReadByte(); {
		case err == nil:
			return nil, fmt.Errorf("%w: more plaintext than recorded", ErrLogBody)
		case err != io.EOF:
			return nil, err
		}
		return nil, io.EOF
	}
	rev := lr.next
	seen, err := lr.seenAt(rev)
	if err != nil {
		return nil, err
	}
	n, err := lr.uvarint()
	if err != nil {
		return nil, err
	}
	// Every event takes at least two bytes: a count larger than what is
	// left is damage, and must not size an allocation.
	if n == 0 || n > uint64(lr.left)/2 {
		return nil, fmt.Errorf("%w: revision %d with %d events", ErrLogBody, rev, n)
	}
	r := &LogRevision{Revision: rev, Seen: seen, Events: make([]LogEvent, n)}
	for i := range r.Events {
		ev := &r.Events[i]
		kind, err := lr.byte()
		if err != nil {
			return nil, err
		}
		if kind > 1 {
			return nil, fmt.Errorf("%w: revision %d: event kind %d", ErrLogBody, rev, kind)
		}
		ev.Delete = kind == 1
		if ev.Key, err = lr.bytes(); err != nil {
			return nil, err
		}
		if len(ev.Key) == 0 {
			return nil, fmt.Errorf("%w: revision %d: empty key", ErrLogBody, rev)
		}
		if ev.Delete {
			continue
		}
		if ev.Value, err = lr.bytes(); err != nil {
			return nil, err
		}
		if lr.v1 {
			ev.CreateRevision, err = lr.varint()
		} else {
			var back uint64
			back, err = lr.uvarint()
			ev.CreateRevision = rev - int64(min(back, uint64(rev)))
		}
		if err != nil {
			return nil, err
		}
		if ev.Version, err = lr.varint(); err != nil {
			return nil, err
		}
		if ev.Lease, err = lr.varint(); err != nil {
			return nil, err
		}
		if ev.CreateRevision <= 0 || ev.CreateRevision > r.Revision || ev.Version <= 0 {
			return nil, fmt.Errorf("%w: revision %d: create revision %d, version %d", ErrLogBody, rev, ev.CreateRevision, ev.Version)
		}
	}
	lr.read++
	lr.next++
	return r, nil
}

// seenAt reads when revision rev was seen: in a kdr-log 2 body the
// microseconds since the revision before; in kdr-log 1 the revision's
// number, checked, and its Unix nanoseconds.
func (lr *LogReader) seenAt(rev int64) (time.Time, error) {
	if lr.v1 {
		at, err := lr.uvarint()
		if err != nil {
			return time.Time{}, err
		}
		if int64(at) != rev {
			return time.Time{}, fmt.Errorf("%w: revision %d where %d was due", ErrLogBody, at, rev)
		}
		ns, err := lr.varint()
		return time.Unix(0, ns).UTC(), err
	}
	d, err := lr.varint()
	if err != nil {
		return time.Time{}, err
	}
	// lr.seen is within ±maxSeen and d is checked first: the sum cannot
	// overflow.
	if d > 2*maxSeen || d < -2*maxSeen || lr.seen+d > maxSeen || lr.seen+d < -maxSeen {
		return time.Time{}, fmt.Errorf("%w: revision %d: seen %d µs after the one before", ErrLogBody, rev, d)
	}
	lr.seen += d
	return time.UnixMicro(lr.seen).UTC(), nil
}

func (lr *LogReader) full(p []byte) error {
	if int64(len(p)) > lr.left {
		return fmt.Errorf("%w: %d bytes wanted, %d left", ErrLogBody, len(p), lr.left)
	}
	if _, err := io.ReadFull(lr.r, p); err != nil {
		return lr.readErr(err)
	}
	lr.left -= int64(len(p))
	return nil
}

// readErr keeps the source's error (the ObjectReader's verdict on the
// stored bytes) and calls a short plaintext what it is.
func (lr *LogReader) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: plaintext ends early", ErrLogBody)
	}
	return err
}

func (lr *LogReader) byte() (byte, error) {
	var b [1]byte
	err := lr.full(b[:])
	return b[0], err
}

func (lr *LogReader) uvarint() (uint64, error) {
	// The reader lives in lr, so that a varint costs no allocation.
	c := &lr.bytesR
	c.lr, c.err = lr, nil
	v, err := binary.ReadUvarint(c)
	switch {
	case c.err != nil:
		return 0, lr.readErr(c.err)
	case err != nil: // overflow
		return 0, fmt.Errorf("%w: %v", ErrLogBody, err)
	}
	return v, nil
}

func (lr *LogReader) varint() (int64, error) {
	u, err := lr.uvarint()
	// binary.Varint's zig-zag, over the bounded uvarint reader.
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x, err
}

func (lr *LogReader) bytes() ([]byte, error) {
	n, err := lr.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(lr.left) {
		return nil, fmt.Errorf("%w: a field of %d bytes with %d left", ErrLogBody, n, lr.left)
	}
	b := make([]byte, n)
	return b, lr.full(b)
}

// countingByteReader reads single bytes within what is left, and keeps
// the reason it stopped.
type countingByteReader struct {
	lr  *LogReader
	err error
}

func (c *countingByteReader) ReadByte() (byte, error) {
	if c.lr.left <= 0 {
		c.err = io.ErrUnexpectedEOF
		return 0, c.err
	}
	b, err := c.lr.r.ReadByte()
	if err != nil {
		c.err = err
		return 0, err
	}
	c.lr.left--
	return b, nil
}
