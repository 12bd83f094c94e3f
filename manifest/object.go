package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/kdr-io/kdr/crypto"
)

// The object pipeline: plaintext, then zstd (one frame), then age, as
// docs/format.md describes. ObjectWriter is its only writer and
// ObjectReader its only reader, so the limits below hold for backup,
// verify, restore and drill alike.
const (
	// maxWindow bounds the memory a zstd frame may demand while it is
	// decoded. kdr writes writeWindow; a frame asking for more than this
	// is damage or an attack.
	maxWindow = 64 << 20
	// writeWindow keeps the compressor's share of memory small; on etcd's
	// bbolt pages the repetition is local, so a bigger window gains little.
	writeWindow = 4 << 20
	// decoderConcurrency 2 lets zstd parse the next block while the last
	// one is executed: restore's throughput needs both, and 1 would put
	// all of zstd on the reading goroutine.
	decoderConcurrency = 2
)

// ErrDamaged means an object's stored bytes, or their decrypted content,
// differ from what the manifest records: the object was changed, cut,
// swapped, or was bad when written. Errors of ObjectReader and
// StoredReader wrap it (or the source's own error when reading failed,
// or crypto.ErrWrongIdentity when the key does not fit).
var ErrDamaged = errors.New("object damaged")

// WriteOptions name the object an ObjectWriter stores.
type WriteOptions struct {
	Name string
	Kind string
	// PlainSHA256, if set, gives at Close the hex sha256 of the plaintext,
	// and the writer does not hash it itself: the etcd snapshot is hashed
	// already to check etcd's trailing hash, and a second pass over it
	// would cost as much again.
	PlainSHA256 func() string
}

// ObjectWriter stores one object: what is written to it is the plaintext,
// compressed and encrypted on its way to dst and counted and hashed before
// and after, so that Close returns the object's record for the manifest.
type ObjectWriter struct {
	o      WriteOptions
	stored *hashWriter
	enc    io.WriteCloser
	zw     *zstd.Encoder
	plainN int64
	plainH hash.Hash // nil when o.PlainSHA256 gives the sum
	closed bool
}

// NewObjectWriter starts an object on dst, encrypted to recipients. The
// caller writes the plaintext and then calls Close, or Abort when it
// cannot finish; what reached dst is then incomplete and is discarded.
func NewObjectWriter(dst io.Writer, recipients []crypto.Recipient, o WriteOptions) (*ObjectWriter, error) {
	w := &ObjectWriter{o: o, stored: &hashWriter{w: dst, h: sha256.New()}}
	if o.PlainSHA256 == nil {
		w.plainH = sha256.New()
	}
	enc, err := crypto.Encrypt(w.stored, recipients)
	if err != nil {
		return nil, err
	}
	// The fastest level compresses etcd's pages as well as the default at
	// twice the speed; two encoder goroutines keep up with a snapshot
	// stream without taking every core of a control-plane host. A log
	// segment is the other way round: a few MiB every few seconds, kept
	// for days, and the bulk of what continuous capture stores; the
	// better level takes 3% off its size (every revision's value is
	// new, so little more is to be had) for about 1% of a core at 500
	// revisions a second, and one encoder keeps its larger tables to
	// one copy in the agent's memory.
	level, encoders := zstd.SpeedFastest, 2
	if o.Kind == KindLog {
		level, encoders = zstd.SpeedBetterCompression, 1
	}
	zw, err := zstd.NewWriter(enc, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(encoders),
		zstd.WithWindowSize(writeWindow))
	if err != nil {
		return nil, fmt.Errorf("start zstd: %w", err)
	}
	w.enc, w.zw = enc, zw
	return w, nil
}

// Write compresses and encrypts p.
func (w *ObjectWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errors.New("write to a closed object writer")
	}
	n, err := w.zw.Write(p)
	w.plainN += int64(n)
	if w.plainH != nil {
		w.plainH.Write(p[:n])
	}
	return n, err
}

// Close ends the zstd frame and seals age's last chunk, in that order,
// and returns the object's record. It does not close dst.
func (w *ObjectWriter) Close() (Object, error) {
	if w.closed {
		return Object{}, errors.New("object writer closed twice")
	}
	w.closed = true
	if err := w.zw.Close(); err != nil {
		return Object{}, fmt.Errorf("compress: %w", err)
	}
	if err := w.enc.Close(); err != nil {
		return Object{}, fmt.Errorf("encrypt: %w", err)
	}
	var sum string
	if w.plainH != nil {
		sum = hex.EncodeToString(w.plainH.Sum(nil))
	} else if sum = w.o.PlainSHA256(); !sha256Pattern.MatchString(sum) {
		return Object{}, errors.New("the producer gave no plaintext sha256: it did not finish")
	}
	return Object{
		Name:        w.o.Name,
		Kind:        w.o.Kind,
		PlainSize:   w.plainN,
		PlainSHA256: sum,
		Size:        w.stored.n,
		SHA256:      hex.EncodeToString(w.stored.h.Sum(nil)),
	}, nil
}

// Abort releases the compressor's goroutines after the producer failed.
func (w *ObjectWriter) Abort() {
	if !w.closed {
		w.closed = true
		w.zw.Close()
	}
}

// hashWriter hashes and counts what passes through to w.
type hashWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *hashWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// StoredReader reads an object's stored bytes, counting and hashing them
// as they pass, and never reads more than one byte beyond the size the
// manifest records: that byte proves the object too large, and reading on
// could be endless. Check says whether the bytes are the recorded ones.
type StoredReader struct {
	r      io.Reader
	obj    Object
	h      hash.Hash
	n      int64
	eof    bool
	srcErr error // the source's own failure
	err    error // what Read returns from now on
	check  *error
}

// NewStoredReader reads the stored bytes of obj from r.
func NewStoredReader(r io.Reader, obj Object) *StoredReader {
	return &StoredReader{r: r, obj: obj, h: sha256.New()}
}

func (s *StoredReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.obj.Size < 0 {
		s.err = fmt.Errorf("%w: object %q: negative size", ErrInvalid, s.obj.Name)
		return 0, s.err
	}
	if room := s.obj.Size + 1 - s.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	switch {
	case s.n > s.obj.Size:
		// Only the byte that proves it is held back.
		s.err = fmt.Errorf("%w: more than the %d bytes the manifest records (stored object changed)", ErrDamaged, s.obj.Size)
		return n - 1, s.err
	case err == io.EOF:
		s.eof, s.err = true, io.EOF
	case err != nil:
		// Passed on as it is: age says it is the stream's, not the
		// ciphertext's, and a transport error is not damage.
		s.srcErr, s.err = err, err
	}
	return n, err
}

// Check reads what is left of the object, if anything, and returns nil
// when the stored bytes are the ones the manifest records; otherwise an
// error naming what differs (wrapping ErrDamaged) or, when reading
// failed, the source's error. It must not run while another reader (an
// open ObjectReader) still reads s.
func (s *StoredReader) Check() error {
	if s.check == nil {
		if s.err == nil {
			// Read bounds this to one byte past the recorded size.
			io.Copy(io.Discard, s)
		}
		err := s.verdict()
		s.check = &err
	}
	return *s.check
}

// failure is what went wrong with the stored bytes themselves, so far:
// the source failed, or they proved longer or shorter than recorded.
func (s *StoredReader) failure() error {
	if s.srcErr != nil || s.n > s.obj.Size || (s.eof && s.n < s.obj.Size) {
		return s.verdict()
	}
	return nil
}

// verdict judges what was read so far.
func (s *StoredReader) verdict() error {
	switch {
	case s.srcErr != nil:
		return fmt.Errorf("read failed after %d bytes: %w", s.n, s.srcErr)
	case s.n > s.obj.Size:
		return s.err
	case s.n < s.obj.Size:
		return fmt.Errorf("%w: truncated: %d of the %d bytes the manifest records", ErrDamaged, s.n, s.obj.Size)
	case hex.EncodeToString(s.h.Sum(nil)) != s.obj.SHA256:
		return fmt.Errorf("%w: sha256 mismatch (stored object changed or corrupt)", ErrDamaged)
	}
	return nil
}

// ReadOptions change how an ObjectReader runs; the zero value is right
// for a reader that only checks.
type ReadOptions struct {
	// Ahead, if set, wraps the decompressed stream before it is hashed and
	// handed out. A read-ahead there runs fetching, age and zstd on one
	// core while hashing and the caller's writing take another. It must
	// pass errors through; if it is an io.Closer, Close closes it first.
	Ahead func(io.Reader) io.Reader
}

// ObjectReader reads the plaintext of one object and proves it to be what
// the manifest records. Its Read returns io.EOF only when everything
// checked out: the stored size and sha256, age's authentication of every
// chunk, a zstd stream whose window stays within bounds, the plaintext
// size and sha256, and for the etcd snapshot etcd's trailing hash.
// Plaintext is handed out as it is decoded, so a caller must not act on
// it before io.EOF; but never more than the recorded plaintext size: one
// byte more stops the reader, so a small object that would inflate to
// gigabytes costs a few chunks' work. Errors are one line and wrap
// ErrDamaged (with crypto.ErrCorrupt when age found the damage, and
// ErrTrailingHash when etcd's own check failed), crypto.ErrWrongIdentity,
// or the source's own error when reading failed.
type ObjectReader struct {
	obj    Object
	stored *StoredReader
	age    *firstErr
	zr     *zstd.Decoder
	src    io.Reader // the decoded stream, or the caller's read-ahead of it
	ahead  io.Closer
	// Exactly one of h and etcd hashes the plaintext.
	h      hash.Hash
	etcd   *etcdHash
	n      int64
	err    error
	closed bool
}

// OpenObject reads the age header from stored and starts decoding. The
// object's record is the one stored was made with. Close the reader when
// done, also after an error, and before stored.Check.
func OpenObject(stored *StoredReader, ids []age.Identity, o ReadOptions) (*ObjectReader, error) {
	r := &ObjectReader{obj: stored.obj, stored: stored}
	if r.obj.PlainSize < 0 {
		return nil, fmt.Errorf("%w: object %q: negative plaintext size", ErrInvalid, r.obj.Name)
	}
	plain, err := crypto.Decrypt(stored, ids)
	switch {
	case err == nil:
	case stored.failure() != nil:
		return nil, stored.failure()
	case errors.Is(err, crypto.ErrCorrupt):
		return nil, fmt.Errorf("%w: %w", ErrDamaged, err)
	default: // a key that does not fit, or no key
		return nil, err
	}
	r.age = &firstErr{r: plain}
	// zstd decodes an input with a Len method (a *bytes.Buffer) in one
	// go, bounded only by its 64 GiB default; r.age has none, so every
	// frame streams, under the window cap.
	r.zr, err = zstd.NewReader(r.age, zstd.WithDecoderConcurrency(decoderConcurrency), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return nil, fmt.Errorf("start zstd: %w", err)
	}
	r.src = &decoded{r: r}
	if o.Ahead != nil {
		r.src = o.Ahead(r.src)
		r.ahead, _ = r.src.(io.Closer)
	}
	if r.obj.Name == EtcdObject {
		r.etcd = &etcdHash{h: sha256.New()}
	} else {
		r.h = sha256.New()
	}
	return r, nil
}

// Read reads plaintext.
func (r *ObjectReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.src.Read(p)
	r.hash(p[:n])
	if err == io.EOF {
		err = r.finish()
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

// WriteTo writes the plaintext to w, as Read hands it out, and returns
// nil only when everything checked out, as Read returns io.EOF. When the
// read-ahead is an io.WriterTo its buffers go to w as they are, without
// the copy into a caller's buffer: on a snapshot of gigabytes that copy
// is a tenth of a second of the core that also hashes and writes.
func (r *ObjectReader) WriteTo(w io.Writer) (int64, error) {
	wt, ok := r.src.(io.WriterTo)
	if !ok || r.err != nil {
		return io.Copy(w, struct{ io.Reader }{r})
	}
	pw := &plainWriter{r: r, w: w}
	n, err := wt.WriteTo(pw)
	if err == nil {
		err = r.finish()
	}
	r.err = err
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// plainWriter hashes and counts the plaintext on its way to w, as
// ObjectReader.Read does.
type plainWriter struct {
	r *ObjectReader
	w io.Writer
}

func (p *plainWriter) Write(b []byte) (int, error) {
	p.r.hash(b)
	n, err := p.w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return n, err
}

// hash counts and hashes plaintext handed out.
func (r *ObjectReader) hash(p []byte) {
	r.n += int64(len(p))
	if r.etcd != nil {
		r.etcd.Write(p)
	} else {
		r.h.Write(p)
	}
}

// Close stops the read-ahead and the decoder. It does not close the
// stored stream.
func (r *ObjectReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.err == nil {
		r.err = errors.New("read from a closed object reader")
	}
	var err error
	if r.ahead != nil {
		err = r.ahead.Close()
	}
	r.zr.Close()
	return err
}

// finish checks the plaintext once the decoded stream ended, which it
// does only after the stored bytes checked out (see decoded.tail).
func (r *ObjectReader) finish() error {
	if r.n != r.obj.PlainSize {
		return fmt.Errorf("%w: plaintext is %d bytes, the manifest records %d", ErrDamaged, r.n, r.obj.PlainSize)
	}
	var sum string
	var trailing error
	if r.etcd != nil {
		trailing = r.etcd.check()
		sum = r.etcd.sum()
	} else {
		sum = hex.EncodeToString(r.h.Sum(nil))
	}
	// The manifest's record first: a snapshot that matches it but not its
	// own hash was bad when written, which is worth saying apart.
	if sum != r.obj.PlainSHA256 {
		return fmt.Errorf("%w: plaintext sha256 differs from the manifest", ErrDamaged)
	}
	if trailing != nil {
		return fmt.Errorf("%w: %w", ErrDamaged, trailing)
	}
	return io.EOF
}

// fail names the cause of an error from age or zstd. Damage to the
// stored bytes explains everything after it, so it comes first; then
// age's view of the ciphertext, which zstd only repeats.
func (r *ObjectReader) fail(err error) error {
	if serr := r.stored.failure(); serr != nil {
		return serr
	}
	if r.age.err != nil {
		err = r.age.err
	}
	switch {
	case errors.Is(err, ErrDamaged):
		return err
	case errors.Is(err, crypto.ErrCorrupt):
		return fmt.Errorf("%w: %w", ErrDamaged, err)
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		// The latter for a single-segment frame, whose window is its
		// declared content size.
		return fmt.Errorf("%w: zstd frame asks for a window above the %d MiB allowed: %w", ErrDamaged, maxWindow>>20, err)
	}
	return fmt.Errorf("%w: zstd: %w", ErrDamaged, err)
}

// decoded is the decompressed stream, cut off one byte past the recorded
// plaintext size. At its end it proves that nothing follows: age is at
// its authenticated end and the stored bytes are the recorded ones.
type decoded struct {
	r   *ObjectReader
	n   int64
	err error
}

func (d *decoded) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	limit := d.r.obj.PlainSize
	if room := limit + 1 - d.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := d.r.zr.Read(p)
	d.n += int64(n)
	switch {
	case d.n > limit:
		n--
		err = fmt.Errorf("%w: plaintext is larger than the %d bytes the manifest records", ErrDamaged, limit)
	case err == io.EOF:
		err = d.r.tail()
	case err != nil:
		// zstd's input goroutine may still be reading after an error of a
		// later stage; stop it before looking at what it read. Close waits
		// for it, and ObjectReader.Close closing again is a no-op.
		d.r.zr.Close()
		err = d.r.fail(err)
	}
	if err != nil {
		d.err = err
	}
	return n, err
}

// tail runs when zstd's stream ended. zstd stops at the end of its
// input, and age gives that only after the last chunk authenticated; the
// read here proves it rather than trusting the decoder's habits.
func (r *ObjectReader) tail() error {
	var b [1]byte
	switch n, err := io.ReadAtLeast(r.age, b[:], 1); {
	case n > 0:
		return fmt.Errorf("%w: data after the zstd stream", ErrDamaged)
	case err != io.EOF:
		return r.fail(err)
	}
	if err := r.stored.Check(); err != nil {
		return err
	}
	return io.EOF
}

// firstErr keeps the first error other than io.EOF of the reader it wraps.
type firstErr struct {
	r   io.Reader
	err error
}

func (f *firstErr) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && err != io.EOF && f.err == nil {
		f.err = err
	}
	return n, err
}
