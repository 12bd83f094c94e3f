package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// retention decides the lock of a new object: none unless retention is asked
// for (LockDays or opts.RetainUntil, the later wins) and the bucket has
// Object Lock. A target configured to lock fails on a bucket without it.
func (s *S3) retention(ctx context.Context, opts PutOptions) (minio.RetentionMode, time.Time, error) {
	if err := s.lockable(ctx); err != nil {
		return "", time.Time{}, err
	}
	now := time.Now()
	var until time.Time
	if s.lockDays > 0 {
		until = now.AddDate(0, 0, s.lockDays)
	}
	if opts.RetainUntil.After(until) {
		until = opts.RetainUntil
	}
	if !until.After(now) {
		return "", time.Time{}, nil
	}
	on, err := s.Locking(ctx)
	if err != nil || !on {
		return "", time.Time{}, err
	}
	s.mu.Lock()
	mode := s.lockMode
	if mode == "" {
		mode = minio.RetentionMode(s.lock.DefaultMode)
	}
	s.mu.Unlock()
	if mode == "" {
		mode = minio.Governance
	}
	// S3 keeps retain-until dates in whole seconds; round up so that the
	// object is never released before the time asked for.
	return mode, until.UTC().Truncate(time.Second).Add(time.Second), nil
}

// ctxReader stops a read loop when ctx ends, for readers that do not watch
// a context themselves.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readPart fills buf from r and reports how much it read and whether r is
// exhausted. A read error is the input's failure, returned and never retried.
func readPart(r io.Reader, buf []byte) (int, bool, error) {
	n, err := io.ReadFull(r, buf)
	switch {
	case err == nil:
		return n, false, nil
	// Only the bare sentinels mean a clean end: a source that fails with an
	// error wrapping io.ErrUnexpectedEOF (a truncated stream) must not
	// complete a short object.
	case err == io.EOF, err == io.ErrUnexpectedEOF:
		return n, true, nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return n, false, err
	}
	return n, false, fmt.Errorf("reading input: %w", err)
}

// Put stores r under key. Input up to one part goes up in a single PUT;
// longer input goes up as a multipart upload of PartSize parts through two
// buffers, so memory stays at two parts whatever the size. When the upload fails or ctx ends, it is aborted; if even the abort
// fails (the server went away), CleanupIncomplete of this target retries it.
//
// With opts.IfAbsent the PUT, or the CompleteMultipartUpload, carries
// If-None-Match: *, and the object a random put ID in its metadata, by
// which a retry that is refused tells its own earlier attempt from
// another writer's object (see settle).
func (s *S3) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("target %s: %w", s.name, err)
	}
	if err := ctx.Err(); err != nil {
		return s.wrap("put", key, err)
	}
	mode, until, err := s.retention(ctx, opts)
	if err != nil {
		return err
	}
	popts := minio.PutObjectOptions{
		ContentType:          opts.ContentType,
		StorageClass:         s.class,
		ServerSideEncryption: s.sse,
	}
	var putID string
	if opts.IfAbsent {
		putID = rand.Text()
		popts.UserMetadata = map[string]string{putIDMeta: putID}
	}
	// AWS refuses locked objects without a Content-MD5 (or checksum) header.
	withMD5 := !until.IsZero()
	if withMD5 {
		popts.Mode = mode
		popts.RetainUntilDate = until
	}
	bufp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bufp)
	buf := *bufp
	in := ctxReader{ctx, r}
	n, done, err := readPart(in, buf)
	if err != nil {
		return s.wrap("put", key, err)
	}
	if done {
		data := buf[:n]
		if opts.IfAbsent {
			popts.SetMatchETagExcept("*")
		}
		attempts := 0
		err := s.call(ctx, "put", key, func(ctx context.Context) error {
			attempts++
			return sendPart(data, func(r io.Reader) error {
				_, err := s.core.PutObject(ctx, s.bucket, s.object(key), r, int64(len(data)), md5Of(data, withMD5), "", popts)
				return err
			})
		})
		return s.settle(ctx, key, putID, attempts, err)
	}
	return s.putMultipart(ctx, key, in, buf, popts, withMD5, putID)
}

// putIDMeta is the user metadata (x-amz-meta-kdr-put-id) that holds the
// put ID of an object stored with PutOptions.IfAbsent.
const putIDMeta = "Kdr-Put-Id"

// settle decides a conditional write (putID not empty) that a retry found
// refused: when the first attempt's answer was lost after the server had
// stored the object (a timeout, a reset connection), the retry gets
// PreconditionFailed, or NoSuchUpload for a completed multipart upload. The
// object carrying this Put's ID makes that a success. The ID and not the
// ETag decides: two writers storing the same bytes must not both win, and
// the ETag is no MD5 under SSE-KMS or SSE-C, nor for multipart objects.
func (s *S3) settle(ctx context.Context, key, putID string, attempts int, err error) error {
	if err == nil || putID == "" || attempts < 2 || !(errors.Is(err, ErrExist) || s3Code(err) == "NoSuchUpload") {
		return err
	}
	var info minio.ObjectInfo
	serr := s.retry.do(ctx, func(ctx context.Context) error {
		var err error
		info, err = s.client.StatObject(ctx, s.bucket, s.object(key), minio.StatObjectOptions{})
		return classify(err)
	})
	switch {
	case serr != nil:
		// Neither a success nor proof of another writer.
		return fmt.Errorf("%v; checking whether an earlier attempt stored it: %v", err, serr)
	case info.Metadata.Get("X-Amz-Meta-"+putIDMeta) == putID:
		return nil
	}
	return err
}

// partReader hands one part's bytes to an HTTP request and cuts it off when
// the request is over. net/http may go on reading a request body after a
// failed round trip has returned; the buffer behind it is refilled with the
// next part, and read by the next Put once back in the pool.
type partReader struct {
	mu     sync.Mutex
	r      *bytes.Reader
	closed bool
}

func newPartReader(data []byte) *partReader { return &partReader{r: bytes.NewReader(data)} }

func (p *partReader) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, io.ErrClosedPipe
	}
	return p.r.Read(b)
}

func (p *partReader) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}

// sendPart runs fn with a reader of data that is closed when fn returns.
func sendPart(data []byte, fn func(io.Reader) error) error {
	pr := newPartReader(data)
	defer pr.Close()
	return fn(pr)
}

func md5Of(data []byte, want bool) string {
	if !want {
		return ""
	}
	sum := md5.Sum(data)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// putMultipart uploads buf, which is full, and the rest of r.
// A putID makes the completion conditional, as in Put.
func (s *S3) putMultipart(ctx context.Context, key string, r io.Reader, buf []byte, popts minio.PutObjectOptions, withMD5 bool, putID string) (err error) {
	object := s.object(key)
	var uploadID string
	err = s.call(ctx, "put", key, func(ctx context.Context) error {
		var err error
		uploadID, err = s.core.NewMultipartUpload(ctx, s.bucket, object, popts)
		return err
	})
	if err != nil {
		return err
	}
	started := time.Now()
	s.mu.Lock()
	s.inflight[uploadID] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.inflight, uploadID)
		s.mu.Unlock()
		if err != nil {
			err = s.abort(ctx, key, object, uploadID, started, err)
		}
	}()

	// Two buffers: the next part is read from the input while the previous
	// one uploads, so the producer and the network work at the same time.
	// Memory stays at two parts whatever the size.
	nextp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(nextp)
	bufs := [2][]byte{buf, *nextp}
	type sent struct {
		part minio.ObjectPart
		err  error
	}
	upload := func(num int, data []byte) <-chan sent {
		ch := make(chan sent, 1)
		go func() {
			var part minio.ObjectPart
			err := s.call(ctx, "put", fmt.Sprintf("%s part %d", key, num), func(ctx context.Context) error {
				return sendPart(data, func(r io.Reader) error {
					var err error
					part, err = s.core.PutObjectPart(ctx, s.bucket, object, uploadID, num, r, int64(len(data)),
						minio.PutObjectPartOptions{Md5Base64: md5Of(data, withMD5), DisableContentSha256: !withMD5})
					return err
				})
			})
			ch <- sent{part, err}
		}()
		return ch
	}

	var parts []minio.CompletePart
	cur, data := 0, buf
	for num := 1; ; num++ {
		if num > maxParts {
			return s.wrap("put", key, mark(ErrPermanent, nil, fmt.Sprintf("object larger than %d parts of %d bytes; raise the part size", maxParts, s.partSize)))
		}
		inflight := upload(num, data)
		last := len(data) < len(buf)
		var n int
		var done bool
		var readErr error
		if !last {
			n, done, readErr = readPart(r, bufs[1-cur])
		}
		res := <-inflight
		if res.err != nil {
			return res.err
		}
		parts = append(parts, minio.CompletePart{
			PartNumber:     num,
			ETag:           res.part.ETag,
			ChecksumCRC32:  res.part.ChecksumCRC32,
			ChecksumCRC32C: res.part.ChecksumCRC32C,
			ChecksumSHA1:   res.part.ChecksumSHA1,
			ChecksumSHA256: res.part.ChecksumSHA256,
		})
		if readErr != nil {
			return s.wrap("put", key, readErr)
		}
		if last || (n == 0 && done) {
			break
		}
		cur = 1 - cur
		data = bufs[cur][:n]
	}
	var copts minio.PutObjectOptions
	if putID != "" {
		copts.SetMatchETagExcept("*")
	}
	attempts := 0
	err = s.call(ctx, "put", key, func(ctx context.Context) error {
		attempts++
		_, err := s.core.CompleteMultipartUpload(ctx, s.bucket, object, uploadID, parts, copts)
		return err
	})
	return s.settle(ctx, key, putID, attempts, err)
}

// abort ends a failed multipart upload so that its parts do not linger.
// It runs even when ctx has ended, which is the usual reason to abort.
func (s *S3) abort(ctx context.Context, key, object, uploadID string, started time.Time, cause error) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	err := s.abortRaw(actx, object, uploadID)
	if err == nil {
		return cause
	}
	s.mu.Lock()
	s.leftovers[uploadID] = leftoverUpload{object: object, started: started}
	s.mu.Unlock()
	return fmt.Errorf("%w; the unfinished upload could not be aborted (kdr prune --apply removes it later): %v", cause, err)
}

// abortUpload aborts one multipart upload; one that is gone already counts
// as aborted.
func (s *S3) abortUpload(ctx context.Context, object, uploadID string) error {
	if err := s.abortRaw(ctx, object, uploadID); err != nil {
		return s.wrap("abort upload of", strings.TrimPrefix(object, s.prefix), err)
	}
	return nil
}

func (s *S3) abortRaw(ctx context.Context, object, uploadID string) error {
	return s.retry.do(ctx, func(ctx context.Context) error {
		err := s.core.AbortMultipartUpload(ctx, s.bucket, object, uploadID)
		if s3Code(err) == "NoSuchUpload" {
			return nil
		}
		return classify(err)
	})
}
