package manifest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleHead() *SegmentHead {
	sum := strings.Repeat("ab", 32)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	return &SegmentHead{
		FormatVersion: FormatVersion, Cluster: "prod",
		Base:  Link{ID: "20261207T100000.000Z-abcdef", SHA256: sum},
		First: 101, Last: 150,
		Prev:      &SegmentLink{First: 51, Last: 100, SHA256: sum},
		SeenFirst: t0, SeenLast: t0.Add(9 * time.Second),
		Body:   Object{Name: SegmentBodyName(101, 150), Kind: KindLog, PlainSize: 10, PlainSHA256: sum, Size: 200, SHA256: sum},
		HashKV: &LogHash{Revision: 150, CompactRevision: 90, Hash: 7},
		Writer: "agent-a",
	}
}

func TestSegmentHeadRoundTrip(t *testing.T) {
	h := sampleHead()
	raw, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSegmentHead(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.First != 101 || got.Last != 150 || got.Prev.Last != 100 || got.HashKV.CompactRevision != 90 {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestSegmentHeadInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(h *SegmentHead)
	}{
		{"old format", func(h *SegmentHead) { h.FormatVersion = 1 }},
		{"bad cluster", func(h *SegmentHead) { h.Cluster = "Prod/" }},
		{"bad base", func(h *SegmentHead) { h.Base.ID = "x" }},
		{"empty range", func(h *SegmentHead) { h.Last = 100 }},
		{"zero first", func(h *SegmentHead) { h.First = 0 }},
		{"seen backwards", func(h *SegmentHead) { h.SeenLast = h.SeenFirst.Add(-time.Second) }},
		{"body of another range", func(h *SegmentHead) { h.Body.Name = SegmentBodyName(101, 151) }},
		{"body kind", func(h *SegmentHead) { h.Body.Kind = KindState }},
		{"body too large", func(h *SegmentHead) { h.Body.PlainSize = MaxSegmentPlain + 1 }},
		{"stored too large", func(h *SegmentHead) { h.Body.Size = 1 << 40 }},
		{"prev not adjacent", func(h *SegmentHead) { h.Prev.Last = 99 }},
		{"prev sum", func(h *SegmentHead) { h.Prev.SHA256 = "x" }},
		{"hash elsewhere", func(h *SegmentHead) { h.HashKV.Revision = 149 }},
		{"hash compacted ahead", func(h *SegmentHead) { h.HashKV.CompactRevision = 151 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := sampleHead()
			tc.edit(h)
			raw, err := h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseSegmentHead(raw); !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseSegmentHead = %v, want ErrInvalid", err)
			}
		})
	}
	raw, _ := sampleHead().Marshal()
	if _, err := ParseSegmentHead(bytes.Replace(raw, []byte(`"writer"`), []byte(`"extra": 1, "writer"`), 1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown field: %v, want ErrInvalid", err)
	}
	if _, err := ParseSegmentHead(bytes.Replace(raw, []byte(`"formatVersion": 2`), []byte(`"formatVersion": 9`), 1)); !errors.Is(err, ErrNewerFormat) {
		t.Errorf("newer format: %v, want ErrNewerFormat", err)
	}
}

func TestHeadKeys(t *testing.T) {
	prefix := LogPrefix("prod", "20261207T100000.000Z-abcdef")
	key := SegmentHeadKey("prod", "20261207T100000.000Z-abcdef", 42)
	if key != prefix+"00000000000000000042.json" {
		t.Fatalf("head key %q", key)
	}
	if first, ok := ParseHeadKey(prefix, key); !ok || first != 42 {
		t.Fatalf("ParseHeadKey = %d, %v", first, ok)
	}
	for _, k := range []string{key + ".sig", prefix + SegmentBodyName(1, 2), prefix + "42.json", prefix + "00000000000000000000.json", "other/" + key} {
		if _, ok := ParseHeadKey(prefix, k); ok {
			t.Errorf("ParseHeadKey(%q) accepted", k)
		}
	}
}

// sampleRevisions are three revisions: a put on a lease, a delete with a
// put of an older key seen before it (the clock stepped back), and a put
// seen a second later with a time that is not a whole microsecond (the
// body keeps microseconds).
func sampleRevisions() []LogRevision {
	seen := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	return []LogRevision{
		{Revision: 10, Seen: seen, Events: []LogEvent{{Key: []byte("a"), Value: []byte("1"), CreateRevision: 10, Version: 1, Lease: 7}}},
		{Revision: 11, Seen: seen.Add(-3 * time.Millisecond), Events: []LogEvent{{Key: []byte("a"), Delete: true}, {Key: []byte("b"), Value: []byte{}, CreateRevision: 5, Version: 3}}},
		{Revision: 12, Seen: seen.Add(time.Second + 1500*time.Nanosecond), Events: []LogEvent{{Key: []byte("c"), Value: bytes.Repeat([]byte("x"), 300), CreateRevision: 12, Version: 1}}},
	}
}

func sampleLeases() []LeaseRecord {
	return []LeaseRecord{{ID: 7, TTL: 60, Revision: 10}, {ID: 8, Revoked: true, Revision: 12}}
}

func encodeSample(t testing.TB) []byte {
	var e LogEncoder
	for _, l := range sampleLeases() {
		e.AddLease(l)
	}
	for _, r := range sampleRevisions() {
		if err := e.AddRevision(r); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if _, err := e.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// encodeV1 writes the sample as a "kdr-log 1" body, the format before:
// each revision's number, nanoseconds, whole create revisions.
func encodeV1(revs []LogRevision, leases []LeaseRecord) []byte {
	b := []byte(logMagicV1)
	b = binary.AppendUvarint(b, uint64(len(leases)))
	for _, l := range leases {
		if l.Revoked {
			b = binary.AppendVarint(append(b, 'r'), l.ID)
		} else {
			b = binary.AppendVarint(binary.AppendVarint(append(b, 'g'), l.ID), l.TTL)
		}
		b = binary.AppendVarint(b, l.Revision)
	}
	b = binary.AppendUvarint(b, uint64(len(revs)))
	field := func(b, f []byte) []byte { return append(binary.AppendUvarint(b, uint64(len(f))), f...) }
	for _, r := range revs {
		b = binary.AppendUvarint(b, uint64(r.Revision))
		b = binary.AppendVarint(b, r.Seen.UnixNano())
		b = binary.AppendUvarint(b, uint64(len(r.Events)))
		for _, ev := range r.Events {
			if ev.Delete {
				b = field(append(b, 1), ev.Key)
				continue
			}
			b = field(field(append(b, 0), ev.Key), ev.Value)
			b = binary.AppendVarint(binary.AppendVarint(binary.AppendVarint(b, ev.CreateRevision), ev.Version), ev.Lease)
		}
	}
	return b
}

// oneRevision is a kdr-log 2 body of revision first alone, seen at seen
// µs, one put of key a whose create revision is back before it.
func oneRevision(first int64, seen int64, back uint64) []byte {
	b := append([]byte(logMagic), 0, 1)
	b = binary.AppendUvarint(b, uint64(first))
	b = binary.AppendVarint(b, seen)
	b = append(b, 1, 0, 1, 'a', 1, 'v')
	b = binary.AppendUvarint(b, back)
	return append(b, 2, 0) // version 1, no lease
}

func TestLogEncoderRefuses(t *testing.T) {
	seen := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for name, r := range map[string]LogRevision{
		"created at 0":          {Revision: 10, Seen: seen, Events: []LogEvent{{Key: []byte("a"), Version: 1}}},
		"created after":         {Revision: 10, Seen: seen, Events: []LogEvent{{Key: []byte("a"), CreateRevision: 11, Version: 1}}},
		"version 0":             {Revision: 10, Seen: seen, Events: []LogEvent{{Key: []byte("a"), CreateRevision: 10}}},
		"no key":                {Revision: 10, Seen: seen, Events: []LogEvent{{Delete: true}}},
		"seen in the year 3000": {Revision: 10, Seen: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), Events: []LogEvent{{Key: []byte("a"), Delete: true}}},
	} {
		var e LogEncoder
		if err := e.AddRevision(r); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
	// What the reader takes, the encoder takes: the smallest body.
	lr, err := NewLogReader(bytes.NewReader(oneRevision(10, 1, 1)), int64(len(oneRevision(10, 1, 1))), 10, 10)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := lr.Next(); err != nil || r.Events[0].CreateRevision != 9 || !r.Seen.Equal(time.UnixMicro(1)) {
		t.Fatalf("the smallest body: %+v, %v", r, err)
	}
}

// decodeAll reads a body of 10..12 whole.
func decodeAll(t *testing.T, plain []byte) ([]LeaseRecord, []LogRevision) {
	t.Helper()
	lr, err := NewLogReader(bytes.NewReader(plain), int64(len(plain)), 10, 12)
	if err != nil {
		t.Fatal(err)
	}
	var got []LogRevision
	for {
		r, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, *r)
	}
	return lr.Leases(), got
}

func TestLogBodyRoundTrip(t *testing.T) {
	want := sampleRevisions()
	for i := range want {
		want[i].Seen = want[i].Seen.Truncate(time.Microsecond)
	}
	leases, got := decodeAll(t, encodeSample(t))
	if !reflect.DeepEqual(leases, sampleLeases()) {
		t.Errorf("leases %+v, want %+v", leases, sampleLeases())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v\nwant %+v", got, want)
	}
}

// TestLogBodyV1 reads a body written in the format before, whose times
// were nanoseconds.
func TestLogBodyV1(t *testing.T) {
	want := sampleRevisions()
	leases, got := decodeAll(t, encodeV1(want, sampleLeases()))
	if !reflect.DeepEqual(leases, sampleLeases()) {
		t.Errorf("leases %+v, want %+v", leases, sampleLeases())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v\nwant %+v", got, want)
	}
}

// TestLogBodySmaller: what the format saves on a revision beside the
// format before, with etcd's own kind of revision: one put of a key
// whose create revision is far back, in a batch seen together.
func TestLogBodySmaller(t *testing.T) {
	var revs []LogRevision
	seen := time.Date(2026, 12, 7, 10, 0, 0, 123456789, time.UTC)
	for i := range int64(100) {
		revs = append(revs, LogRevision{Revision: 3_000_000 + i, Seen: seen.Add(time.Duration(i/10) * 1234567),
			Events: []LogEvent{{Key: []byte("/registry/configmaps/a/b"), Value: []byte("v"), CreateRevision: 1_000_000 + i, Version: 7}}})
	}
	var e LogEncoder
	for _, r := range revs {
		if err := e.AddRevision(r); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	e.WriteTo(&b)
	v1 := encodeV1(revs, nil)
	if per := (len(v1) - b.Len()) / len(revs); per < 10 {
		t.Errorf("a revision takes %d bytes less than in the format before, want at least 10 (%d against %d in all)", per, b.Len(), len(v1))
	}
}

func TestLogBodyDamaged(t *testing.T) {
	plain := encodeSample(t)
	for _, tc := range []struct {
		name        string
		plain       []byte
		first, last int64
	}{
		{"truncated", plain[:len(plain)-5], 10, 12},
		{"trailing bytes", append(append([]byte(nil), plain...), 0), 10, 12},
		{"other range, same count (the body states its first)", plain, 11, 13},
		{"fewer revisions", plain, 10, 13},
		{"magic", append([]byte("kdr-log 3\n"), plain[10:]...), 10, 12},
		{"kdr-log 1, other range", encodeV1(sampleRevisions(), sampleLeases()), 11, 13},
		{"kdr-log 1, truncated", encodeV1(sampleRevisions(), sampleLeases())[:40], 10, 12},
		{"created at 0", oneRevision(10, 0, 10), 10, 10},
		{"created before 0", oneRevision(10, 0, 1<<63), 10, 10},
		{"seen past 2262", oneRevision(10, maxSeen+1, 1), 10, 10},
		{"seen before 1677", oneRevision(10, -maxSeen-1, 1), 10, 10},
		{"seen overflowing", oneRevision(10, math.MinInt64, 1), 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lr, err := NewLogReader(bytes.NewReader(tc.plain), int64(len(tc.plain)), tc.first, tc.last)
			for err == nil {
				_, err = lr.Next()
			}
			if !errors.Is(err, ErrLogBody) {
				t.Fatalf("err = %v, want ErrLogBody", err)
			}
		})
	}
	var e LogEncoder
	if err := e.AddRevision(LogRevision{Revision: 3, Seen: time.Unix(1, 0), Events: []LogEvent{{Key: []byte("a"), Delete: true}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.AddRevision(LogRevision{Revision: 5, Seen: time.Unix(1, 0), Events: []LogEvent{{Key: []byte("a"), Delete: true}}}); err == nil {
		t.Error("a gap in the revisions was encoded")
	}
}

// FuzzLogReader: a body's plaintext comes from a target; whatever it
// holds, decoding ends in an error or io.EOF, never a panic or an
// allocation beyond what the plaintext can hold.
func FuzzLogReader(f *testing.F) {
	f.Add(encodeSample(f), int64(10), int64(12))
	f.Add([]byte(logMagic+"\x00\x01\x0a\x00\x01\x00\x01a\x01b\x00\x02\x00"), int64(10), int64(10))
	f.Add(encodeV1(sampleRevisions(), sampleLeases()), int64(10), int64(12))
	f.Fuzz(func(t *testing.T, plain []byte, first, last int64) {
		if first <= 0 || last < first || last-first > 1<<20 {
			return
		}
		lr, err := NewLogReader(bytes.NewReader(plain), int64(len(plain)), first, last)
		for i := 0; err == nil; i++ {
			_, err = lr.Next()
			if i > len(plain) {
				t.Fatal("more revisions than bytes")
			}
		}
		if err != io.EOF && !errors.Is(err, ErrLogBody) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// FuzzParseSegmentHead: heads are verified before parsing, but parsing
// must hold up whatever a trusted writer's bug put there.
func FuzzParseSegmentHead(f *testing.F) {
	raw, _ := sampleHead().Marshal()
	f.Add(raw)
	f.Add([]byte(`{"formatVersion":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseSegmentHead(data)
		if err == nil && (h.First <= 0 || h.Last < h.First) {
			t.Fatalf("accepted %d..%d", h.First, h.Last)
		}
	})
}

// FuzzParsePackIndex: an index is read before anything in it is
// verified, so parsing must hold up whatever a writer to the target put
// there, and what it accepts must lie in the pack, one body after another.
func FuzzParsePackIndex(f *testing.F) {
	raw, _ := (&PackIndex{Format: PackFormat, Cluster: "prod", Set: "20240601T000000.000Z-abcdef", First: 10, Last: 12, Size: 7,
		SHA256: strings.Repeat("a", 64), Segments: []PackedSegment{{Head: []byte("{}"), Signature: []byte("sig"), Size: 7}}}).Marshal()
	f.Add(raw)
	f.Add([]byte(`{"format":"kdr-log-pack 1","segments":[{"offset":-1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePackIndex(data)
		if err != nil {
			return
		}
		var at int64
		for _, s := range p.Segments {
			if s.Offset != at || s.Size < 0 {
				t.Fatalf("accepted a segment at %d (+%d) where %d was due", s.Offset, s.Size, at)
			}
			at += s.Size
		}
		if at != p.Size || p.First <= 0 || p.Last < p.First {
			t.Fatalf("accepted a pack of %d bytes holding %d, revisions %d..%d", p.Size, at, p.First, p.Last)
		}
	})
}

// TestParseRangeKeys: body and pack index keys give their revisions;
// anything else under the chain's prefix does not parse.
func TestParseRangeKeys(t *testing.T) {
	prefix := LogPrefix("prod", "20240601T000000.000Z-abcdef")
	for _, tc := range []struct {
		key         string
		body, index bool
		first, last int64
	}{
		{key: SegmentBodyKey("prod", "20240601T000000.000Z-abcdef", 10, 12), body: true, first: 10, last: 12},
		{key: PackIndexKey("prod", "20240601T000000.000Z-abcdef", 10, 99), index: true, first: 10, last: 99},
		{key: PackKey("prod", "20240601T000000.000Z-abcdef", 10, 99)},
		{key: SegmentHeadKey("prod", "20240601T000000.000Z-abcdef", 10)},
		{key: prefix + revisionName(12) + "-" + revisionName(10) + bodySuffix},
		{key: prefix + packPrefix + revisionName(0) + "-" + revisionName(10) + packIndexSuffix},
		{key: prefix + packPrefix + "1-2" + packIndexSuffix},
	} {
		first, ok := ParseBodyKey(prefix, tc.key)
		if ok != tc.body || (ok && first != tc.first) {
			t.Errorf("ParseBodyKey(%s) = %d, %v", tc.key, first, ok)
		}
		first, last, ok := ParsePackIndexKey(prefix, tc.key)
		if ok != tc.index || (ok && (first != tc.first || last != tc.last)) {
			t.Errorf("ParsePackIndexKey(%s) = %d..%d, %v", tc.key, first, last, ok)
		}
	}
}
