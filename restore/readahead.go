package restore

import (
	"io"
	"sync"
)

// readahead reads src in its own goroutine into a few buffers ahead of
// the consumer, so what produces the bytes (download, age, zstd) and what
// consumes them (hashing, writing) run on two cores instead of taking
// turns on one. Close stops the reader and waits for it.
type readahead struct {
	full  chan []byte
	free  chan []byte
	err   error  // set before full is closed
	buf   []byte // the buffer being read from, whole
	off   int
	stop  chan struct{}
	close sync.Once
	done  chan struct{}
}

func newReadahead(src io.Reader, buffers, size int) *readahead {
	r := &readahead{full: make(chan []byte, buffers), free: make(chan []byte, buffers),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range buffers {
		r.free <- make([]byte, size)
	}
	go r.fill(src)
	return r
}

func (r *readahead) fill(src io.Reader) {
	defer close(r.done)
	defer close(r.full)
	for {
		var buf []byte
		select {
		case buf = <-r.free:
		case <-r.stop:
			return
		}
		n, err := fillBuf(src, buf[:cap(buf)])
		if n > 0 {
			select {
			case r.full <- buf[:n]:
			case <-r.stop:
				return
			}
		}
		if err != nil {
			r.err = err
			return
		}
	}
}

// fillBuf reads into buf until it is full or src fails, keeping src's own
// error: io.ReadFull would turn a source's io.ErrUnexpectedEOF (a cut-off
// stream) into the clean end of one.
func fillBuf(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (r *readahead) Read(p []byte) (int, error) {
	if r.buf == nil {
		buf, ok := <-r.full
		if !ok {
			return 0, r.err
		}
		r.buf, r.off = buf, 0
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	if r.off == len(r.buf) {
		r.free <- r.buf[:cap(r.buf)]
		r.buf = nil
	}
	return n, nil
}

// WriteTo hands each buffer to w as it was filled, without the copy into
// a caller's buffer that Read makes. It returns nil when src ended with
// io.EOF, and src's error otherwise.
func (r *readahead) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if r.buf == nil {
			buf, ok := <-r.full
			if !ok {
				if r.err == io.EOF {
					return total, nil
				}
				return total, r.err
			}
			r.buf, r.off = buf, 0
		}
		n, err := w.Write(r.buf[r.off:])
		total += int64(n)
		r.off += n
		if r.off == len(r.buf) {
			r.free <- r.buf[:cap(r.buf)]
			r.buf = nil
		}
		switch {
		case err != nil:
			return total, err
		case r.buf != nil:
			return total, io.ErrShortWrite
		}
	}
}

func (r *readahead) Close() error {
	r.close.Do(func() { close(r.stop) })
	<-r.done
	return nil
}
