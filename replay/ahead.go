package replay

import (
	"context"
	"errors"

	"github.com/kdr-io/kdr/manifest"
)

// Reading a segment (decrypting, decompressing, decoding) costs about as
// much as applying it, so the chain is read in its own goroutine while the
// replay applies: the next segment is opened, and the revisions of each
// decoded, a bounded distance ahead.
const (
	// aheadBatch is how many revisions the reader hands over at once, so
	// that the channel costs little per revision.
	aheadBatch = 256
	// aheadBatches is how many batches wait decoded: with the one segment
	// opened ahead (its stored bytes, bounded by its head's record like
	// the one being applied), what the reader adds to the replay's memory.
	aheadBatches = 8
)

// opened is a segment the reader opened, with its revisions decoding.
type opened struct {
	head   *manifest.SegmentHead
	leases []manifest.LeaseRecord
	revs   *ahead
	err    error
}

// chainReader opens a Source's segments one ahead of the replay, until the
// one holding the target.
type chainReader struct {
	ch   chan opened
	stop chan struct{}
}

func readChain(ctx context.Context, src Source, target int64) *chainReader {
	c := &chainReader{ch: make(chan opened), stop: make(chan struct{})}
	go func() {
		defer close(c.ch)
		for !stopped(c.stop) {
			seg, err := src.Next(ctx)
			o := opened{err: err}
			if err == nil && (seg == nil || seg.Head == nil || seg.Body == nil) {
				o.err = errors.New("the log source gave a segment without head or body")
			}
			if o.err == nil {
				o.head, o.leases, o.revs = seg.Head, seg.Body.Leases(), readAhead(seg.Body)
			}
			select {
			case c.ch <- o:
			case <-c.stop:
				if o.revs != nil {
					o.revs.close()
				}
				return
			}
			if o.err != nil || o.head.Last >= target {
				return
			}
		}
	}()
	return c
}

// stopped reports, without waiting, whether stop is closed: a reader told
// to stop reads no further, whichever way its last send went.
func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// next is the next segment opened, or the Source's error (io.EOF after
// the last).
func (c *chainReader) next() opened {
	o, ok := <-c.ch
	if !ok {
		// The reader stops after an error, or once a segment reaches
		// the target: the replay asks no further.
		return opened{err: errors.New("the log reader stopped")}
	}
	return o
}

// close stops the reader and releases the segments it opened and the
// replay did not take.
func (c *chainReader) close() {
	close(c.stop)
	for o := range c.ch {
		if o.revs != nil {
			o.revs.close()
		}
	}
}

// batch is a run of decoded revisions; err ends the body (io.EOF after
// its last revision).
type batch struct {
	revs []*manifest.LogRevision
	err  error
}

// ahead decodes one body's revisions in its own goroutine.
type ahead struct {
	body *manifest.LogReader
	ch   chan batch
	stop chan struct{}
	cur  []*manifest.LogRevision
	err  error
}

func readAhead(body *manifest.LogReader) *ahead {
	a := &ahead{body: body, ch: make(chan batch, aheadBatches), stop: make(chan struct{})}
	go func() {
		defer close(a.ch)
		for !stopped(a.stop) {
			b := batch{revs: make([]*manifest.LogRevision, 0, aheadBatch)}
			for len(b.revs) < aheadBatch && b.err == nil {
				rev, err := body.Next()
				if err != nil {
					b.err = err
				} else {
					b.revs = append(b.revs, rev)
				}
			}
			select {
			case a.ch <- b:
			case <-a.stop:
				return
			}
			if b.err != nil {
				return
			}
		}
	}()
	return a
}

// Next is the body's next revision, as manifest.LogReader.Next.
func (a *ahead) Next() (*manifest.LogRevision, error) {
	for len(a.cur) == 0 {
		if a.err != nil {
			return nil, a.err
		}
		b, ok := <-a.ch
		if !ok {
			return nil, errors.New("the segment's reader stopped")
		}
		a.cur, a.err = b.revs, b.err
	}
	rev := a.cur[0]
	a.cur = a.cur[1:]
	return rev, nil
}

// close stops the decoding, waits until the body is no longer read, and
// closes it: the decoder's goroutines and buffers go with it.
func (a *ahead) close() {
	close(a.stop)
	for range a.ch {
	}
	a.body.Close()
}
