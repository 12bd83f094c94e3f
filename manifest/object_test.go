package manifest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/kdr-io/kdr/crypto"
)

// Fixed test keys, so that a fuzz input saved in testdata/fuzz opens the
// same way on every run. They protect nothing.
const (
	testIdentity   = "AGE-SECRET-KEY-1TRSVEMUGFYC9750UALLAKMA0MAZHXZGQVW63DGT6DP2GE0RRCY2QHZRQYN"
	testRecipient  = "age18vhl2nxenlnl56gaxnu07p7qvp7p9pwq6qs9ugha0crmzemdwq2qu7azkl"
	otherIdentity  = "AGE-SECRET-KEY-127F2WJM8XGWAX4FEPH4HH08XEDQ5RLN4SHU73PMXDVA36NA2Y4AQKVMWF8"
	otherRecipient = "age1jjapwvrqpvzfzp3p0xygdzwdvf7ntdd0ntuq8zu6653ctasrfdkqnfsawm"
)

func testKeys(t testing.TB, identity, recipient string) ([]age.Identity, []crypto.Recipient) {
	t.Helper()
	id, err := age.ParseX25519Identity(identity)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := crypto.ParseRecipients([]string{recipient})
	if err != nil {
		t.Fatal(err)
	}
	return []age.Identity{id}, rs
}

// ageSeal encrypts data with age alone: the malicious objects below are
// made without the writer under test.
func ageSeal(t testing.TB, data []byte, rs []crypto.Recipient) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := crypto.Encrypt(&buf, rs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zstdFrame compresses plain with the library directly.
func zstdFrame(t testing.TB, plain []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(plain, nil)
}

// zstd frames written byte by byte (RFC 8878), for what no encoder makes.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// rleBlock is a block header and the one byte an RLE block repeats size
// times: four bytes that decode to up to 128 KiB.
func rleBlock(size int, last bool) []byte {
	h := uint32(size)<<3 | 1<<1 // block type 1: RLE
	if last {
		h |= 1
	}
	return []byte{byte(h), byte(h >> 8), byte(h >> 16), 0}
}

// rleBomb is one zstd frame of blocks 128 KiB blocks of zeros, with no
// content size in its header: nothing says how big it is until it is
// decoded. windowLog is log2 of the window it declares.
func rleBomb(windowLog, blocks int) []byte {
	out := append(append([]byte(nil), zstdMagic...), 0x00, byte(windowLog-10)<<3)
	for i := range blocks {
		out = append(out, rleBlock(128<<10, i == blocks-1)...)
	}
	return out
}

// bigSingleSegment declares a single segment of size bytes, which makes
// its window that size.
func bigSingleSegment(size uint32) []byte {
	out := append(append([]byte(nil), zstdMagic...), 2<<6|1<<5) // 4-byte content size, single segment
	out = binary.LittleEndian.AppendUint32(out, size)
	return append(out, rleBlock(1, true)...)
}

func recordOf(name string, plain, stored []byte) Object {
	return Object{Name: name, Kind: "test", PlainSize: int64(len(plain)), PlainSHA256: Sum(plain),
		Size: int64(len(stored)), SHA256: Sum(stored)}
}

// countingReader counts what is read from r.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// readObject reads stored through the format's reader and reports what it
// handed out, how much of stored it read, and the error that ended it
// (nil for a whole, checked object).
func readObject(t testing.TB, stored []byte, rec Object, ids []age.Identity, o ReadOptions) (plain []byte, read int64, err error) {
	t.Helper()
	src := &countingReader{r: bytes.NewReader(stored)}
	r, err := OpenObject(NewStoredReader(src, rec), ids, o)
	if err != nil {
		return nil, src.n, err
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, r)
	if cerr := r.Close(); cerr != nil {
		t.Errorf("Close: %v", cerr)
	}
	return buf.Bytes(), src.n, err
}

func TestOpenObjectRefuses(t *testing.T) {
	ids, rs := testKeys(t, testIdentity, testRecipient)
	otherIDs, _ := testKeys(t, otherIdentity, otherRecipient)

	plain := bytes.Repeat([]byte("bbolt page "), 20000)
	good := ageSeal(t, zstdFrame(t, plain), rs)
	goodRec := recordOf(StateObject, plain, good)

	// 64 GiB of zeros in 2 MiB of zstd, claiming to be 1 MiB.
	const claimed = 1 << 20
	bomb := ageSeal(t, rleBomb(17, 64<<30/(128<<10)), rs)
	bombRec := Object{Name: EtcdObject, PlainSize: claimed, PlainSHA256: Sum(make([]byte, claimed)), Size: int64(len(bomb)), SHA256: Sum(bomb)}

	window := ageSeal(t, rleBomb(27, 1), rs) // a 128 MiB window
	single := ageSeal(t, bigSingleSegment(2<<30), rs)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	// The same plaintext encrypted again: age and zstd are content, only
	// the stored hash tells it from the recorded object.
	again := ageSeal(t, zstdFrame(t, plain), rs)
	junk := ageSeal(t, append(zstdFrame(t, plain), "junk after the frame"...), rs)
	// A frame failing its checksum, then more input: zstd's input
	// goroutine reads on while the error travels to the reader.
	noise := make([]byte, 4<<20)
	rand.Read(noise)
	badCRC := zstdFrame(t, plain)
	badCRC[len(badCRC)-1] ^= 1
	crcThenMore := ageSeal(t, append(badCRC, zstdFrame(t, noise)...), rs)
	snap := withTrailingHash([]byte("database"))
	snap[len(snap)-1] ^= 1
	badSnap := ageSeal(t, zstdFrame(t, snap), rs)

	cases := []refusal{
		{
			name: "decompression bomb", stored: bomb, rec: bombRec,
			is:     []error{ErrDamaged},
			reason: "plaintext is larger than the 1048576 bytes the manifest records",
			// The plaintext limit is met after a few blocks; the rest of the
			// 2 MiB is never read, let alone decoded.
			maxRead: 512 << 10,
		},
		{
			name: "stored object larger than its record", stored: good,
			rec:    func() Object { r := goodRec; r.Size -= 100; return r }(),
			is:     []error{ErrDamaged},
			reason: "more than the",
		},
		{
			name: "bytes after a whole object", stored: append(bytes.Clone(good), make([]byte, 1<<20)...), rec: goodRec,
			is:      []error{ErrDamaged},
			reason:  "more than the",
			maxRead: goodRec.Size + 1,
		},
		{
			name: "frame window above the cap", stored: window, rec: recordOf(StateObject, make([]byte, 128<<10), window),
			is:     []error{ErrDamaged, zstd.ErrWindowSizeExceeded},
			reason: "window above the 64 MiB allowed",
		},
		{
			name: "single segment of 2 GiB", stored: single, rec: recordOf(StateObject, []byte{0}, single),
			is:     []error{ErrDamaged, zstd.ErrDecoderSizeExceeded},
			reason: "window above",
		},
		{
			name: "truncated", stored: good[:len(good)/2], rec: goodRec,
			is:     []error{ErrDamaged},
			reason: "truncated: ",
		},
		{
			name: "cut inside the age header", stored: good[:40], rec: goodRec,
			is:     []error{ErrDamaged},
			reason: "truncated: 40 of the",
		},
		{
			name: "wrong identity", stored: good, rec: goodRec, ids: otherIDs,
			is:  []error{crypto.ErrWrongIdentity},
			not: []error{ErrDamaged},
		},
		{
			name: "flipped byte", stored: flipped, rec: goodRec,
			is:     []error{ErrDamaged, crypto.ErrCorrupt},
			reason: "corrupt",
		},
		{
			name: "re-encrypted", stored: again, rec: func() Object { r := goodRec; r.Size = int64(len(again)); return r }(),
			is:     []error{ErrDamaged},
			reason: "sha256 mismatch",
		},
		{
			name: "data after the zstd frame", stored: junk, rec: recordOf(StateObject, plain, junk),
			is:     []error{ErrDamaged},
			reason: "zstd",
		},
		{
			name: "checksum mismatch, then more frames", stored: crcThenMore,
			rec:    recordOf(StateObject, append(bytes.Clone(plain), noise...), crcThenMore),
			is:     []error{ErrDamaged, zstd.ErrCRCMismatch},
			reason: "zstd",
		},
		{
			name: "plaintext shorter than its record", stored: good,
			rec:    func() Object { r := goodRec; r.PlainSize++; return r }(),
			is:     []error{ErrDamaged},
			reason: "plaintext is 220000 bytes, the manifest records 220001",
		},
		{
			name: "plaintext longer than its record", stored: good,
			rec:    func() Object { r := goodRec; r.PlainSize--; return r }(),
			is:     []error{ErrDamaged},
			reason: "plaintext is larger than the 219999 bytes",
		},
		{
			name: "plaintext hash differs", stored: good,
			rec:    func() Object { r := goodRec; r.PlainSHA256 = Sum(nil); return r }(),
			is:     []error{ErrDamaged},
			reason: "plaintext sha256 differs from the manifest",
		},
		{
			name: "etcd snapshot failing its own hash", stored: badSnap, rec: recordOf(EtcdObject, snap, badSnap),
			is:     []error{ErrDamaged, ErrTrailingHash},
			reason: "trailing sha256",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			use := ids
			if tc.ids != nil {
				use = tc.ids
			}
			// Through Read, and through WriteTo handing a read-ahead's
			// chunks on as restore's does: the same checks, the same errors.
			for _, o := range []ReadOptions{{}, {Ahead: func(r io.Reader) io.Reader { return &writeToAhead{passAhead{r: r}} }}} {
				tc.check(t, use, o)
			}
		})
	}
}

// refusal is an object the reader must refuse, and how.
type refusal struct {
	name   string
	stored []byte
	rec    Object
	ids    []age.Identity
	is     []error
	not    []error
	reason string
	// maxRead bounds the stored bytes read; 0 means len(stored).
	maxRead int64
}

// check reads the object with ids and o and checks how it was refused.
func (tc refusal) check(t *testing.T, ids []age.Identity, o ReadOptions) {
	t.Helper()
	out, read, err := readObject(t, tc.stored, tc.rec, ids, o)
	if err == nil {
		t.Fatal("read to the end without an error")
	}
	t.Logf("read %d of %d stored bytes, handed out %d; error: %v", read, len(tc.stored), len(out), err)
	for _, s := range tc.is {
		if !errors.Is(err, s) {
			t.Errorf("error does not match %v", s)
		}
	}
	for _, s := range tc.not {
		if errors.Is(err, s) {
			t.Errorf("error matches %v", s)
		}
	}
	if !strings.Contains(err.Error(), tc.reason) {
		t.Errorf("error does not say %q", tc.reason)
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Errorf("error is not one line")
	}
	if int64(len(out)) > tc.rec.PlainSize {
		t.Errorf("handed out %d plaintext bytes, the record allows %d", len(out), tc.rec.PlainSize)
	}
	maxRead := tc.maxRead
	if maxRead == 0 {
		maxRead = int64(len(tc.stored))
	}
	if read > maxRead || read > tc.rec.Size+1 {
		t.Errorf("read %d stored bytes, want at most %d and at most the record's %d + 1", read, maxRead, tc.rec.Size)
	}
}

// TestStoredReaderCheck: Check finds what a reader that stopped early
// left unread, and reads at most one byte past the record.
func TestStoredReaderCheck(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 1000)
	rec := Object{Size: 1000, SHA256: Sum(data)}
	cases := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"whole", data, ""},
		{"short", data[:999], "truncated: 999 of the 1000 bytes the manifest records"},
		{"long", append(bytes.Clone(data), make([]byte, 1<<20)...), "more than the 1000 bytes"},
		{"changed", bytes.Repeat([]byte("y"), 1000), "sha256 mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := &countingReader{r: bytes.NewReader(tc.data)}
			s := NewStoredReader(src, rec)
			io.CopyN(io.Discard, s, 10) // a reader that stopped early
			err := s.Check()
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tc.reason != "" && (!errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.reason)):
				t.Fatalf("Check: %v, want ErrDamaged saying %q", err, tc.reason)
			}
			if src.n > rec.Size+1 {
				t.Errorf("read %d bytes of a 1000-byte record", src.n)
			}
			if again := s.Check(); !errors.Is(again, err) && again != err {
				t.Errorf("second Check %v, first %v", again, err)
			}
		})
	}
	boom := errors.New("connection reset")
	s := NewStoredReader(io.MultiReader(bytes.NewReader(data[:10]), iotestErr{boom}), rec)
	if err := s.Check(); !errors.Is(err, boom) || errors.Is(err, ErrDamaged) {
		t.Fatalf("a failing source gives %v, want its own error and not damage", err)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// writeObject stores plain through the writer under test.
func writeObject(t testing.TB, name string, plain []byte, rs []crypto.Recipient, o WriteOptions) ([]byte, Object) {
	t.Helper()
	var buf bytes.Buffer
	o.Name = name
	w, err := NewObjectWriter(&buf, rs, o)
	if err != nil {
		t.Fatal(err)
	}
	// Uneven writes, as a tar writer and a gRPC stream make them.
	for rest := plain; len(rest) > 0; {
		n := min(len(rest), 1+len(rest)%70000)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	obj, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), obj
}

// passAhead stands in for restore's read-ahead: it passes reads through
// and records that it was closed.
type passAhead struct {
	r      io.Reader
	closed bool
}

func (p *passAhead) Read(b []byte) (int, error) { return p.r.Read(b) }
func (p *passAhead) Close() error               { p.closed = true; return nil }

// writeToAhead is passAhead with a WriteTo, as restore's read-ahead has,
// which ObjectReader.WriteTo hands its chunks straight to.
type writeToAhead struct{ passAhead }

func (p *writeToAhead) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{p.r}) // nil at io.EOF, as an io.WriterTo returns
}

func TestObjectRoundTrip(t *testing.T) {
	ids, rs := testKeys(t, testIdentity, testRecipient)
	random := make([]byte, 3<<20)
	rand.Read(random)
	mixed := append(bytes.Repeat([]byte("bbolt page "), 300000), random...)
	for _, tc := range []struct {
		name   string
		object string
		plain  []byte
	}{
		{"empty", StateObject, nil},
		{"one byte", StateObject, []byte{7}},
		{"mixed", StateObject, mixed},
		{"etcd snapshot", EtcdObject, withTrailingHash(mixed)},
		{"empty etcd snapshot", EtcdObject, withTrailingHash(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored, obj := writeObject(t, tc.object, tc.plain, rs, WriteOptions{Kind: "k"})
			want := Object{Name: tc.object, Kind: "k", PlainSize: int64(len(tc.plain)), PlainSHA256: Sum(tc.plain),
				Size: int64(len(stored)), SHA256: Sum(stored)}
			if obj != want {
				t.Fatalf("record %+v, want %+v", obj, want)
			}
			for _, ahead := range []string{"", "read", "writeTo"} {
				var o ReadOptions
				var pa *passAhead
				switch ahead {
				case "read":
					o.Ahead = func(r io.Reader) io.Reader { pa = &passAhead{r: r}; return pa }
				case "writeTo":
					o.Ahead = func(r io.Reader) io.Reader { w := &writeToAhead{passAhead{r: r}}; pa = &w.passAhead; return w }
				}
				out, _, err := readObject(t, stored, obj, ids, o)
				if err != nil {
					t.Fatalf("ahead %q: %v", ahead, err)
				}
				if !bytes.Equal(out, tc.plain) {
					t.Fatalf("ahead %q: plaintext differs", ahead)
				}
				if ahead != "" && !pa.closed {
					t.Error("the read-ahead was not closed")
				}
			}
		})
	}
}

// TestObjectWriterPlainSum: a producer that hashes its own stream gives
// the sum, and one that did not finish fails the object.
func TestObjectWriterPlainSum(t *testing.T) {
	_, rs := testKeys(t, testIdentity, testRecipient)
	plain := withTrailingHash([]byte("database"))
	_, obj := writeObject(t, EtcdObject, plain, rs, WriteOptions{PlainSHA256: func() string { return Sum(plain) }})
	if obj.PlainSHA256 != Sum(plain) {
		t.Fatalf("PlainSHA256 %s, want the producer's", obj.PlainSHA256)
	}
	w, err := NewObjectWriter(io.Discard, rs, WriteOptions{Name: EtcdObject, PlainSHA256: func() string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err == nil {
		t.Fatal("an object without a plaintext sum was closed")
	}
	if _, err := NewObjectWriter(io.Discard, nil, WriteOptions{}); !errors.Is(err, crypto.ErrNoRecipients) {
		t.Fatalf("no recipients: %v", err)
	}
}

func FuzzOpenObject(f *testing.F) {
	ids, rs := testKeys(f, testIdentity, testRecipient)
	plain := append(bytes.Repeat([]byte("etc/kubernetes/pki/ca.key "), 2000), "end"...)
	written, rec := writeObject(f, StateObject, plain, rs, WriteOptions{})
	seeds := [][]byte{
		written,
		ageSeal(f, zstdFrame(f, plain), rs),
		ageSeal(f, rleBomb(17, 2<<30/(128<<10)), rs),
		ageSeal(f, rleBomb(27, 1), rs),
		ageSeal(f, bigSingleSegment(2<<30), rs),
		ageSeal(f, append(zstdFrame(f, plain), zstdFrame(f, plain)...), rs),
		written[:len(written)/2],
		nil,
	}
	for _, s := range seeds {
		f.Add(s, uint32(len(s)), uint32(len(plain)))
	}
	f.Fuzz(func(t *testing.T, stored []byte, size, plainSize uint32) {
		// The record's stored hash is the input's own, so the fuzzer gets
		// past it to age and zstd; the plaintext must still be plain's.
		r := Object{Name: StateObject, Size: int64(size), SHA256: Sum(stored), PlainSize: int64(plainSize), PlainSHA256: rec.PlainSHA256}
		out, read, err := readObject(t, stored, r, ids, ReadOptions{})
		if read > r.Size+1 {
			t.Fatalf("read %d stored bytes of a %d-byte record", read, r.Size)
		}
		if int64(len(out)) > r.PlainSize {
			t.Fatalf("handed out %d plaintext bytes of a %d-byte record", len(out), r.PlainSize)
		}
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if int64(len(stored)) != r.Size || sha256.Sum256(out) != sha256.Sum256(plain) {
			t.Fatal("no error, yet the object is not the recorded one")
		}
	})
}

// TestOpenObjectBadCall: a record or a call that cannot be right is an
// error of its own kind, not damage, and reads nothing.
func TestOpenObjectBadCall(t *testing.T) {
	ids, rs := testKeys(t, testIdentity, testRecipient)
	plain := []byte("state")
	stored := ageSeal(t, zstdFrame(t, plain), rs)
	rec := recordOf(StateObject, plain, stored)
	for _, tc := range []struct {
		name string
		rec  Object
		ids  []age.Identity
		is   error
	}{
		{"no identities", rec, nil, crypto.ErrNoIdentities},
		{"negative size", func() Object { r := rec; r.Size = -1; return r }(), ids, ErrInvalid},
		{"negative plaintext size", func() Object { r := rec; r.PlainSize = -1; return r }(), ids, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, read, err := readObject(t, stored, tc.rec, tc.ids, ReadOptions{})
			if !errors.Is(err, tc.is) || errors.Is(err, ErrDamaged) {
				t.Fatalf("error %v, want %v and not damage", err, tc.is)
			}
			if read > 0 {
				t.Errorf("read %d bytes", read)
			}
		})
	}
}
