package snapshot

import (
	"context"
	"errors"
	"io"

	"github.com/kdr-io/kdr/storage"
)

// errTargetStopped unblocks a writer whose target returned before reading
// everything, which a correct target never does.
var errTargetStopped = errors.New("target stopped reading")

// fanout writes one stream to several targets' Puts at once. A target that
// fails is dropped and the others go on: a full USB disk must not cost the
// S3 copy of the same backup.
type fanout struct {
	sinks []*sink
}

type sink struct {
	target storage.Target
	pw     *io.PipeWriter
	done   chan struct{}
	err    error // the Put's result, valid after done
	failed bool
}

func newFanout(ctx context.Context, targets []storage.Target, key string) *fanout {
	f := &fanout{}
	for _, t := range targets {
		pr, pw := io.Pipe()
		s := &sink{target: t, pw: pw, done: make(chan struct{})}
		go func() {
			defer close(s.done)
			s.err = t.Put(ctx, key, pr, storage.PutOptions{})
			if s.err != nil {
				pr.CloseWithError(s.err)
			} else {
				pr.CloseWithError(errTargetStopped)
			}
		}()
		f.sinks = append(f.sinks, s)
	}
	return f
}

// Write hands p to every target still going; it fails only when none is.
func (f *fanout) Write(p []byte) (int, error) {
	alive := 0
	for _, s := range f.sinks {
		if s.failed {
			continue
		}
		if _, err := s.pw.Write(p); err != nil {
			// The Put's own error, collected in finish, says why.
			s.failed = true
			continue
		}
		alive++
	}
	if alive == 0 {
		<-f.waitAll()
		return 0, f.joined()
	}
	return len(p), nil
}

// finish ends the stream and waits for every Put; it returns the errors of
// the targets that did not store the object.
func (f *fanout) finish() map[string]error {
	for _, s := range f.sinks {
		s.pw.Close()
	}
	<-f.waitAll()
	return f.failures()
}

// dead reports whether every target has failed: a Write error then is
// theirs, not the source's.
func (f *fanout) dead() bool {
	for _, s := range f.sinks {
		if !s.failed {
			return false
		}
	}
	return true
}

// failures are the errors of the targets that failed, once their Puts
// returned.
func (f *fanout) failures() map[string]error {
	failed := map[string]error{}
	for _, s := range f.sinks {
		if s.err != nil {
			failed[s.target.Name()] = s.err
		} else if s.failed {
			failed[s.target.Name()] = errTargetStopped
		}
	}
	return failed
}

// abort ends every Put with err, so none stores a partial object.
func (f *fanout) abort(err error) {
	for _, s := range f.sinks {
		s.pw.CloseWithError(err)
	}
	<-f.waitAll()
}

func (f *fanout) waitAll() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for _, s := range f.sinks {
			<-s.done
		}
		close(ch)
	}()
	return ch
}

func (f *fanout) joined() error {
	var errs []error
	for _, s := range f.sinks {
		if s.err != nil {
			errs = append(errs, s.err)
		}
	}
	if len(errs) == 0 {
		return errTargetStopped
	}
	return errors.Join(errs...)
}
