package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/storage"
	"github.com/kdr-io/kdr/storage/storagetest"
)

func TestS3(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	var n atomic.Int64
	storagetest.Run(t, func(t *testing.T) storage.Target {
		return newS3(t, m, s3Options(m, "kdr", fmt.Sprintf("suite/%d", n.Add(1))))
	})
}

// s3Options reach the test server with the smallest part size, so that a
// few MiB already make a multipart upload.
func s3Options(m *testenv.MinIO, bucket, prefix string) storage.S3Options {
	return storage.S3Options{
		Endpoint:  m.Endpoint(),
		Insecure:  true,
		PathStyle: true,
		Bucket:    bucket,
		Prefix:    prefix,
		AccessKey: m.AccessKey(),
		SecretKey: m.SecretKey(),
		PartSize:  storage.MinPartSize,
	}
}

func newS3(t *testing.T, m *testenv.MinIO, o storage.S3Options) *storage.S3 {
	t.Helper()
	s, err := storage.NewS3(t.Context(), "s3", o)
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return s
}

// incompleteUploads lists the multipart uploads of exactly this object, the
// one listing MinIO answers from disk, also after a restart.
func incompleteUploads(t *testing.T, m *testenv.MinIO, bucket, object string) []string {
	t.Helper()
	var ids []string
	for u := range m.Client().ListIncompleteUploads(t.Context(), bucket, object, true) {
		if u.Err != nil {
			t.Fatalf("list incomplete uploads of %s: %v", object, u.Err)
		}
		if u.Key == object {
			ids = append(ids, u.UploadID)
		}
	}
	return ids
}

func TestS3ObjectLock(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "locked", true)
	m.CreateBucket(t, "plain", false)
	ctx := t.Context()

	plain := newS3(t, m, s3Options(m, "plain", ""))
	if on, err := plain.Locking(ctx); err != nil || on {
		t.Fatalf("Locking of a bucket without Object Lock: %v, %v", on, err)
	}
	locked := newS3(t, m, s3Options(m, "locked", "p"))
	if on, err := locked.Locking(ctx); err != nil || !on {
		t.Fatalf("Locking of an Object Lock bucket: %v, %v", on, err)
	}

	var n atomic.Int64
	storagetest.RunRetention(t, func(t *testing.T) storage.Target {
		return newS3(t, m, s3Options(m, "locked", fmt.Sprintf("retention/%d", n.Add(1))))
	})

	// LockDays retains every object; the configured mode is used.
	o := s3Options(m, "locked", "days")
	o.LockDays, o.LockMode = 2, "COMPLIANCE"
	days := newS3(t, m, o)
	before := time.Now()
	if err := days.Put(ctx, "obj", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := days.Stat(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if min := before.AddDate(0, 0, 2).Truncate(time.Second); info.RetainUntil.Before(min) {
		t.Fatalf("RetainUntil %v, want at least %v", info.RetainUntil, min)
	}
	mode, _, err := m.Client().GetObjectRetention(ctx, "locked", "days/obj", "")
	if err != nil || mode == nil || *mode != minio.Compliance {
		t.Fatalf("retention mode %v, %v; want COMPLIANCE", mode, err)
	}
	if err := days.Delete(ctx, "obj"); !errors.Is(err, storage.ErrLocked) || !strings.Contains(err.Error(), "under retention until") {
		t.Fatalf("delete: %v, want ErrLocked naming the date", err)
	}
	// The refused delete left no delete marker that hides the object.
	if _, err := days.Stat(ctx, "obj"); err != nil {
		t.Fatalf("stat after the refused delete: %v", err)
	}

	// A plain bucket ignores retention requests rather than failing.
	if err := plain.Put(ctx, "obj", strings.NewReader("x"), storage.PutOptions{RetainUntil: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("put with RetainUntil to a bucket without lock: %v", err)
	}
	if err := plain.Delete(ctx, "obj"); err != nil {
		t.Fatalf("delete: %v", err)
	}
}

// TestS3ObjectLockUnavailable: a target configured to lock refuses to
// store or pass its ping on a bucket without Object Lock, and stores
// nothing there; it still reads, so backups can be restored from it.
func TestS3ObjectLockUnavailable(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "plain", false)
	m.CreateBucket(t, "locked", true)
	ctx := t.Context()
	if err := newS3(t, m, s3Options(m, "plain", "")).Put(ctx, "old", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	for name, edit := range map[string]func(*storage.S3Options){
		"days":      func(o *storage.S3Options) { o.LockDays = 7 },
		"mode only": func(o *storage.S3Options) { o.LockMode = "GOVERNANCE" },
	} {
		t.Run(name, func(t *testing.T) {
			o := s3Options(m, "plain", "")
			edit(&o)
			s := newS3(t, m, o)
			want := "target s3 (http://" + m.Endpoint() + ", bucket plain): object lock: bucket plain has no Object Lock enabled; create it with object locking or remove objectLock from target s3"
			for op, err := range map[string]error{
				"ping":        s.Ping(ctx),
				"put":         s.Put(ctx, "set/state", strings.NewReader("x"), storage.PutOptions{}),
				"put, larger": s.Put(ctx, "set/etcd", io.LimitReader(zeros{}, 2*storage.MinPartSize), storage.PutOptions{}),
			} {
				if !errors.Is(err, storage.ErrPermanent) || err.Error() != want {
					t.Errorf("%s: %v\nwant ErrPermanent: %s", op, err, want)
				}
			}
			if _, err := s.Stat(ctx, "set/state"); !errors.Is(err, storage.ErrNotExist) {
				t.Errorf("stat of the refused object: %v, want ErrNotExist", err)
			}
			if ids := incompleteUploads(t, m, "plain", "set/etcd"); len(ids) != 0 {
				t.Errorf("the refused put left uploads %q", ids)
			}
			if _, err := s.Stat(ctx, "old"); err != nil {
				t.Errorf("reading from the target: %v", err)
			}
		})
	}

	o := s3Options(m, "locked", "")
	o.LockDays = 1
	if err := newS3(t, m, o).Ping(ctx); err != nil {
		t.Fatalf("ping of a locking target on an Object Lock bucket: %v", err)
	}

	// MinIO tells of a missing bucket that it has no Object Lock
	// configuration (with a region given, no location is asked first);
	// that is not taken for a bucket without a lock.
	o = s3Options(m, "no-such-bucket", "")
	o.Region, o.LockDays = "us-east-1", 1
	err := newS3(t, m, o).Put(ctx, "k", strings.NewReader("x"), storage.PutOptions{})
	if !errors.Is(err, storage.ErrPermanent) || !strings.HasSuffix(err.Error(), ": reading object lock configuration: bucket does not exist") {
		t.Fatalf("put to a missing bucket: %v, want ErrPermanent saying the bucket does not exist", err)
	}
}

func TestS3BucketLock(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "plain", false)
	m.CreateBucket(t, "locked", true)
	m.CreateBucket(t, "defaulted", true)
	ctx := t.Context()
	mode, validity, unit := minio.Compliance, uint(3), minio.Days
	if err := m.Client().SetObjectLockConfig(ctx, "defaulted", &mode, &validity, &unit); err != nil {
		t.Fatal(err)
	}
	for bucket, want := range map[string]storage.BucketLock{
		"plain":     {},
		"locked":    {Enabled: true},
		"defaulted": {Enabled: true, DefaultMode: "COMPLIANCE", DefaultValidity: 3, DefaultUnit: "DAYS"},
	} {
		got, err := newS3(t, m, s3Options(m, bucket, "")).BucketLock(ctx)
		if err != nil || got != want {
			t.Errorf("BucketLock of %s: %+v, %v; want %+v", bucket, got, err, want)
		}
	}
}

// TestS3CredentialsNotInErrors: neither an endpoint with credentials in it
// nor a failed connection repeats a key in an error.
func TestS3CredentialsNotInErrors(t *testing.T) {
	const access, secret = "AKIAACCESSPART", "s3cretSECRETPART"
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	ctx := t.Context()
	noKeys := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		t.Logf("%s: %v", what, err)
		for _, s := range []string{access, secret} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: error repeats %q: %v", what, s, err)
			}
		}
	}
	for _, endpoint := range []string{
		"http://" + access + ":" + secret + "@" + m.Endpoint(),
		access + ":" + secret + "@" + m.Endpoint(),
		"http://" + access + ":" + secret + "/+x@" + m.Endpoint(),
		"http://" + access + ":" + secret + "%zz@" + m.Endpoint(),
	} {
		o := s3Options(m, "kdr", "")
		o.Endpoint = endpoint
		_, err := storage.NewS3(ctx, "s3", o)
		noKeys("NewS3 with credentials in the endpoint", err)
	}

	// A refused signature and a server that is not there.
	o := s3Options(m, "kdr", "")
	o.AccessKey, o.SecretKey = m.AccessKey(), secret
	_, err := storage.NewS3(ctx, "s3", o)
	noKeys("NewS3 with the wrong secret", err)
	o = s3Options(m, "kdr", "")
	o.AccessKey, o.SecretKey = access, secret
	o.Endpoint, o.MaxRetries = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), -1
	s, err := storage.NewS3(ctx, "s3", o)
	if err != nil {
		t.Fatalf("NewS3 must tolerate a server that is down: %v", err)
	}
	noKeys("ping of a server that is down", s.Ping(ctx))
	noKeys("put to a server that is down", s.Put(ctx, "k", strings.NewReader("x"), storage.PutOptions{}))
}

func TestS3BadConfiguration(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	for _, tc := range []struct {
		name string
		edit func(*storage.S3Options)
		want string
	}{
		{"wrong secret", func(o *storage.S3Options) { o.SecretKey = "not-the-secret" }, "SignatureDoesNotMatch"},
		{"unknown access key", func(o *storage.S3Options) { o.AccessKey = "nobody" }, "InvalidAccessKeyId"},
		{"missing bucket", func(o *storage.S3Options) { o.Bucket = "no-such-bucket" }, "NoSuchBucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := s3Options(m, "kdr", "")
			tc.edit(&o)
			_, err := storage.NewS3(t.Context(), "s3", o)
			if !errors.Is(err, storage.ErrPermanent) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "target s3 (http://"+m.Endpoint()) {
				t.Fatalf("NewS3: %v, want ErrPermanent naming the target and %s", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		edit func(*storage.S3Options)
	}{
		{"no endpoint", func(o *storage.S3Options) { o.Endpoint = "" }},
		{"https with insecure", func(o *storage.S3Options) { o.Endpoint = "https://" + o.Endpoint }},
		{"bad bucket name", func(o *storage.S3Options) { o.Bucket = "Bad_Bucket" }},
		{"bad prefix", func(o *storage.S3Options) { o.Prefix = "a/../b" }},
		{"small parts", func(o *storage.S3Options) { o.PartSize = 1 << 20 }},
		{"bad lock mode", func(o *storage.S3Options) { o.LockMode = "FOREVER" }},
		{"bad sse", func(o *storage.S3Options) { o.SSE = "rot13" }},
		{"kms key without kms", func(o *storage.S3Options) { o.KMSKeyID = "k" }},
		{"ca file over http", func(o *storage.S3Options) { o.CAFile = "/dev/null" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := s3Options(m, "kdr", "")
			tc.edit(&o)
			if _, err := storage.NewS3(t.Context(), "s3", o); err == nil {
				t.Fatal("NewS3 accepted the options")
			}
		})
	}
}

func TestS3TLS(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{TLS: true})
	m.CreateBucket(t, "kdr", false)
	ctx := t.Context()
	o := s3Options(m, "kdr", "")
	o.Insecure = false
	o.CAFile = m.PKI.CA
	s := newS3(t, m, o)
	if err := s.Put(ctx, "obj", strings.NewReader("over TLS"), storage.PutOptions{}); err != nil {
		t.Fatalf("put over TLS with the CA file: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}

	o.CAFile = ""
	_, err := storage.NewS3(ctx, "s3", o)
	if !errors.Is(err, storage.ErrPermanent) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("NewS3 without the CA: %v, want ErrPermanent about the unknown authority", err)
	}
	o.Endpoint = "https://" + m.Endpoint()
	o.CAFile = m.PKI.CA
	if _, err := storage.NewS3(ctx, "s3", o); err != nil {
		t.Fatalf("NewS3 with an https:// endpoint: %v", err)
	}
}

func TestS3Unreachable(t *testing.T) {
	port := testenv.FreePort(t) // nothing listens there
	endpoint := fmt.Sprintf("127.0.0.1:%d", port)
	// Far longer than the target's own retry bound: the target must give up
	// by itself, not be stopped by the deadline.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := storage.NewS3(ctx, "offsite", storage.S3Options{
		Endpoint: endpoint, Insecure: true, Bucket: "kdr", AccessKey: "a", SecretKey: "b",
	})
	if err != nil {
		t.Fatalf("NewS3 must tolerate a server that is down: %v", err)
	}
	for name, err := range map[string]error{
		"ping": s.Ping(ctx),
		"put":  s.Put(ctx, "k", strings.NewReader("x"), storage.PutOptions{}),
		"stat": func() error { _, err := s.Stat(ctx, "k"); return err }(),
	} {
		if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, storage.ErrPermanent) {
			t.Fatalf("%s: %v, want a retryable error before the deadline", name, err)
		}
		msg := err.Error()
		t.Logf("%s: %s", name, msg)
		for _, want := range []string{"target offsite", "http://" + endpoint, "connection refused", "gave up after"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: message %q lacks %q", name, msg, want)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("%s: message is not one line: %q", name, msg)
		}
	}
}

// TestS3FailedPutAbortsUpload checks on the server that an interrupted Put
// aborted its multipart upload, and that CleanupIncomplete aborts uploads a
// crashed process left, respecting age and prefix.
func TestS3FailedPutAbortsUpload(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	ctx := t.Context()
	s := newS3(t, m, s3Options(m, "kdr", "p"))

	boom := errors.New("source failed")
	r := io.MultiReader(io.LimitReader(zeros{}, 3*storage.MinPartSize), errReader{boom})
	if err := s.Put(ctx, "set/obj", r, storage.PutOptions{}); !errors.Is(err, boom) {
		t.Fatalf("put: %v, want the reader's error", err)
	}
	if ids := incompleteUploads(t, m, "kdr", "p/set/obj"); len(ids) != 0 {
		t.Fatalf("failed put left uploads %q", ids)
	}

	core := minio.Core{Client: m.Client()}
	mine, err := core.NewMultipartUpload(ctx, "kdr", "p/crashed/obj", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.NewMultipartUpload(ctx, "kdr", "other/obj", minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CleanupIncomplete(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("cleanup of uploads older than an hour: removed %d, %v; want 0", n, err)
	}
	if n, err := s.CleanupIncomplete(ctx, 0); err != nil || n != 1 {
		t.Fatalf("cleanup: removed %d, %v; want 1", n, err)
	}
	if ids := incompleteUploads(t, m, "kdr", "p/crashed/obj"); len(ids) != 0 {
		t.Fatalf("upload %s survived cleanup: %q", mine, ids)
	}
	if ids := incompleteUploads(t, m, "kdr", "other/obj"); len(ids) != 1 {
		t.Fatalf("cleanup touched an upload outside the prefix: %q", ids)
	}
}

// TestS3ServerStopsDuringPut kills MinIO between two parts of an upload.
func TestS3ServerStopsDuringPut(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	ctx := t.Context()
	s := newS3(t, m, s3Options(m, "kdr", "p"))

	// The reader pauses once the first part is uploaded (the upload loop
	// reads the second part only then), and goes on when MinIO is dead.
	r := &pausingReader{r: io.LimitReader(zeros{}, 4*storage.MinPartSize), at: storage.MinPartSize + 1,
		paused: make(chan struct{}), resume: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- s.Put(ctx, "set/obj", r, storage.PutOptions{}) }()
	select {
	case <-r.paused:
	case err := <-errc:
		t.Fatalf("put ended before the pause: %v", err)
	}
	m.Stop()
	close(r.resume)
	err := <-errc
	t.Logf("put: %v", err)
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "kdr prune --apply removes it later") {
		t.Fatalf("put with the server gone: %v, want connection refused and a failed abort", err)
	}

	m.Start()
	if _, err := s.Stat(ctx, "set/obj"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("stat after the failed put: %v, want ErrNotExist", err)
	}
	if ids := incompleteUploads(t, m, "kdr", "p/set/obj"); len(ids) != 1 {
		t.Fatalf("uploads after restart: %q, want the one the failed put left", ids)
	}
	if n, err := s.CleanupIncomplete(ctx, 0); err != nil || n != 1 {
		t.Fatalf("cleanup after restart: removed %d, %v; want 1", n, err)
	}
	if ids := incompleteUploads(t, m, "kdr", "p/set/obj"); len(ids) != 0 {
		t.Fatalf("uploads after cleanup: %q", ids)
	}
}

// TestS3LargeUploadMemory streams 256 MiB of unknown length with the default
// part size and reports what the upload cost in memory.
func TestS3LargeUploadMemory(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	ctx := t.Context()
	o := s3Options(m, "kdr", "mem")
	o.PartSize = 0 // the default, DefaultPartSize
	s := newS3(t, m, o)
	const size = 256 << 20

	runtime.GC()
	var start runtime.MemStats
	runtime.ReadMemStats(&start)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	src := io.LimitReader(rand.NewChaCha8([32]byte{7}), size) // no Len, no Seek: unknown length
	err := s.Put(ctx, "big", src, storage.PutOptions{})
	close(stop)
	wg.Wait()
	var end runtime.MemStats
	runtime.ReadMemStats(&end)
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	if info, err := s.Stat(ctx, "big"); err != nil || info.Size != size {
		t.Fatalf("stat: %+v, %v; want %d bytes", info, err, size)
	}
	grew := int64(peak.Load()) - int64(start.HeapInuse)
	alloc := end.TotalAlloc - start.TotalAlloc
	t.Logf("256 MiB upload, part size %d MiB: heap in use %d MiB before, peak %d MiB (+%d MiB); allocated %d MiB in total",
		storage.DefaultPartSize>>20, start.HeapInuse>>20, peak.Load()>>20, grew>>20, alloc>>20)
	// One part buffer plus the HTTP machinery; a fraction of the object.
	if limit := int64(4 * storage.DefaultPartSize); grew > limit {
		t.Errorf("heap grew by %d MiB during the upload, want at most %d MiB", grew>>20, limit>>20)
	}
	if limit := uint64(size / 2); alloc > limit {
		t.Errorf("the upload allocated %d MiB, want at most %d MiB", alloc>>20, limit>>20)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// pausingReader signals paused when a read would go past at bytes and
// waits for resume before reading on.
type pausingReader struct {
	r      io.Reader
	at     int64
	read   int64
	once   sync.Once
	paused chan struct{}
	resume chan struct{}
}

func (p *pausingReader) Read(b []byte) (int, error) {
	if p.read+int64(len(b)) >= p.at {
		p.once.Do(func() {
			close(p.paused)
			<-p.resume
		})
	}
	n, err := p.r.Read(b)
	p.read += int64(n)
	return n, err
}
