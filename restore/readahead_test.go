package restore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// TestReadahead passes every byte through in order, whatever the sizes,
// and hands on the source's error.
func TestReadahead(t *testing.T) {
	data := make([]byte, 1<<20+123)
	for i := range data {
		data[i] = byte(rand.N(256))
	}
	for _, tc := range []struct {
		name          string
		buffers, size int
		src           func() io.Reader
	}{
		{"big buffers", 4, 64 << 10, func() io.Reader { return bytes.NewReader(data) }},
		{"tiny buffers", 2, 7, func() io.Reader { return bytes.NewReader(data) }},
		{"one byte reads", 3, 1000, func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReadahead(tc.src(), tc.buffers, tc.size)
			defer r.Close()
			got, err := io.ReadAll(iotest.HalfReader(r))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes (%v), want the %d written", len(got), err, len(data))
			}
			// WriteTo hands the buffers on: the same bytes, nil at the end.
			w := newReadahead(tc.src(), tc.buffers, tc.size)
			defer w.Close()
			var buf bytes.Buffer
			if n, err := w.WriteTo(&buf); err != nil || n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
				t.Fatalf("WriteTo wrote %d bytes (%v), want the %d written", n, err, len(data))
			}
		})
	}
	boom := errors.New("boom")
	r := newReadahead(io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(boom)), 2, 64)
	defer r.Close()
	if got, err := io.ReadAll(r); !errors.Is(err, boom) || !bytes.Equal(got, data[:100]) {
		t.Fatalf("read %d bytes and %v, want 100 and the source's error", len(got), err)
	}
	// A source cut off mid-stream says so; it is not the clean end of one.
	cut := newReadahead(io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(io.ErrUnexpectedEOF)), 2, 64)
	defer cut.Close()
	if _, err := io.ReadAll(cut); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a cut-off source read as %v, want io.ErrUnexpectedEOF", err)
	}
	// WriteTo hands on the source's error too, and a cut-off stream stays one.
	for _, want := range []error{boom, io.ErrUnexpectedEOF} {
		w := newReadahead(io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(want)), 2, 64)
		defer w.Close()
		var buf bytes.Buffer
		if _, err := w.WriteTo(&buf); !errors.Is(err, want) || !bytes.Equal(buf.Bytes(), data[:100]) {
			t.Fatalf("WriteTo wrote %d bytes and %v, want 100 and %v", buf.Len(), err, want)
		}
	}
	// Closed early, the reader stops even when nothing reads on.
	early := newReadahead(bytes.NewReader(data), 2, 16)
	early.Close()
}
