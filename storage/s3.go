package storage

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

const (
	// DefaultPartSize is the multipart part size when S3Options.PartSize is
	// zero. One Put holds two parts in memory (one reading, one sending);
	// 10,000 parts of 8 MiB allow objects up to 78 GiB, far above etcd's
	// largest supported database.
	DefaultPartSize = 8 << 20
	// MinPartSize is S3's smallest part size (every part but the last).
	MinPartSize = 5 << 20
	maxPartSize = 5 << 30
	maxParts    = 10000

	// DefaultMaxRetries is how many times a failed request is tried again
	// when S3Options.MaxRetries is zero.
	DefaultMaxRetries = 3
	maxMaxRetries     = 10

	dialTimeout  = 5 * time.Second
	abortTimeout = 30 * time.Second
)

// S3Options configure an S3 target. The zero value of every optional field
// is a working default.
type S3Options struct {
	// Endpoint is host[:port] ("minio.example:9000", "s3.eu-west-1.amazonaws.com"),
	// or a URL with scheme http:// or https:// and no path.
	Endpoint string
	// Region of the bucket; empty asks the server (GetBucketLocation).
	Region string
	// Bucket must exist; kdr never creates it.
	Bucket string
	// Prefix is prepended to every key ("backups" stores key "a/b" as
	// "backups/a/b"). Leading and trailing slashes are ignored.
	Prefix string
	// AccessKey and SecretKey are static credentials; both empty means
	// anonymous requests.
	AccessKey string
	SecretKey string
	// Insecure talks plain HTTP. Default HTTPS.
	Insecure bool
	// CAFile is a PEM bundle of extra CAs trusted for the endpoint's TLS
	// certificate, on top of the system's.
	CAFile string
	// PathStyle forces path-style requests (endpoint/bucket/key), which most
	// self-hosted servers need. Default: virtual-host style for AWS and
	// Google endpoints, path style for the rest.
	PathStyle bool
	// SSE asks for server-side encryption: "" (none), "AES256" (SSE-S3) or
	// "aws:kms" (SSE-KMS with KMSKeyID, or the bucket's default key when empty).
	SSE      string
	KMSKeyID string
	// StorageClass of new objects; empty is the server's default.
	StorageClass string
	// LockMode is the Object Lock retention mode of new objects,
	// "GOVERNANCE" or "COMPLIANCE". Empty uses the bucket's default mode, or
	// GOVERNANCE when the bucket has none.
	LockMode string
	// LockDays retains every new object for this many days. Zero retains
	// only objects whose PutOptions ask.
	//
	// With LockMode or LockDays set the target must lock: when the bucket
	// has no Object Lock enabled, Put and Ping fail with ErrPermanent
	// rather than store objects anyone with the credentials can delete.
	// Reading still works, so that backups can be restored from it.
	LockDays int
	// PartSize of multipart uploads, at least MinPartSize. Default
	// DefaultPartSize. Memory per Put in progress is two parts.
	PartSize int64
	// MaxRetries is how many times a request that failed in a way that may
	// pass is tried again (at most 10). Zero means DefaultMaxRetries; a
	// negative value disables retries.
	MaxRetries int
}

// S3 is a target in an S3 bucket, on AWS or any S3-compatible server. An S3
// is safe for concurrent use.
type S3 struct {
	name     string
	bucket   string
	prefix   string // "" or ending in "/"
	where    string // endpoint and bucket, for messages
	client   *minio.Client
	core     minio.Core
	sse      encrypt.ServerSide
	class    string
	lockMode minio.RetentionMode
	lockDays int
	partSize int64
	retry    retrier
	bufs     sync.Pool // *[]byte of partSize

	mu        sync.Mutex
	lockKnown bool
	lock      BucketLock
	inflight  map[string]bool           // upload IDs of Puts in progress
	leftovers map[string]leftoverUpload // upload IDs whose abort failed
}

type leftoverUpload struct {
	object  string
	started time.Time
}

var _ Target = (*S3)(nil)

// NewS3 returns a target for the bucket. It asks the bucket whether Object
// Lock is enabled and fails when the answer shows the configuration cannot
// work (no such bucket, unknown access key, wrong secret). A server that
// does not answer is not an error here: the question is asked again at first
// use, so that an agent starts while its S3 endpoint is down.
func NewS3(ctx context.Context, name string, o S3Options) (*S3, error) {
	if name == "" {
		return nil, errors.New("s3 target: empty name")
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("s3 target %s: %s", name, fmt.Sprintf(format, args...))
	}
	host, secure, err := parseEndpoint(o.Endpoint, o.Insecure)
	if err != nil {
		return nil, bad("%v", err)
	}
	if err := s3utils.CheckValidBucketName(o.Bucket); err != nil {
		return nil, bad("bucket %q: %v", o.Bucket, err)
	}
	prefix := strings.Trim(o.Prefix, "/")
	if prefix != "" {
		if err := ValidateKey(prefix); err != nil {
			return nil, bad("prefix: %v", err)
		}
		prefix += "/"
	}
	sse, err := parseSSE(o.SSE, o.KMSKeyID)
	if err != nil {
		return nil, bad("%v", err)
	}
	var mode minio.RetentionMode
	switch m := strings.ToUpper(o.LockMode); m {
	case "":
	case "GOVERNANCE", "COMPLIANCE":
		mode = minio.RetentionMode(m)
	default:
		return nil, bad("lock mode %q: want GOVERNANCE or COMPLIANCE", o.LockMode)
	}
	if o.LockDays < 0 {
		return nil, bad("lock days %d < 0", o.LockDays)
	}
	partSize := o.PartSize
	switch {
	case partSize == 0:
		partSize = DefaultPartSize
	case partSize < MinPartSize || partSize > maxPartSize:
		return nil, bad("part size %d outside [%d, %d]", partSize, MinPartSize, int64(maxPartSize))
	}
	retries := o.MaxRetries
	switch {
	case retries == 0:
		retries = DefaultMaxRetries
	case retries < 0:
		retries = 0
	case retries > maxMaxRetries:
		retries = maxMaxRetries
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, bad("%v", err)
	}
	// An unreachable address must fail in seconds: the default waits 30 s
	// per connection attempt.
	tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	if o.CAFile != "" {
		if !secure {
			return nil, bad("caFile is set but the endpoint is plain HTTP")
		}
		pool, err := caPool(o.CAFile)
		if err != nil {
			return nil, bad("%v", err)
		}
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	lookup := minio.BucketLookupAuto
	if o.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure:       secure,
		Transport:    tr,
		Region:       o.Region,
		BucketLookup: lookup,
		// Retries happen in this package, around whole operations and
		// single parts, with one bound on attempts and time.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, bad("%v", err)
	}
	scheme := "https"
	if !secure {
		scheme = "http"
	}
	s := &S3{
		name:     name,
		bucket:   o.Bucket,
		prefix:   prefix,
		where:    fmt.Sprintf("%s://%s, bucket %s", scheme, host, o.Bucket),
		client:   client,
		core:     minio.Core{Client: client},
		sse:      sse,
		class:    o.StorageClass,
		lockMode: mode,
		lockDays: o.LockDays,
		partSize: partSize,
		retry: retrier{
			attempts: retries + 1,
			base:     250 * time.Millisecond,
			max:      2 * time.Second,
			budget:   20 * time.Second,
		},
		inflight:  map[string]bool{},
		leftovers: map[string]leftoverUpload{},
	}
	s.bufs.New = func() any {
		b := make([]byte, s.partSize)
		return &b
	}
	if _, err := s.Locking(ctx); err != nil && fatalAtStart(err) {
		return nil, err
	}
	return s, nil
}

func parseEndpoint(endpoint string, insecure bool) (host string, secure bool, err error) {
	if endpoint == "" {
		return "", false, errors.New("empty endpoint")
	}
	// Refused first and never echoed: before an "@" stand an access key and
	// its secret, which every later message and the target's name in all
	// its errors would repeat.
	if strings.Contains(endpoint, "@") {
		return "", false, errors.New("endpoint holds credentials (user:secret@): give host[:port] and the keys as AccessKey and SecretKey")
	}
	if !strings.Contains(endpoint, "://") {
		return endpoint, !insecure, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("endpoint: %w", err)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("endpoint %q: only scheme, host and port are allowed", endpoint)
	}
	switch u.Scheme {
	case "http":
		return u.Host, false, nil
	case "https":
		if insecure {
			return "", false, fmt.Errorf("endpoint %q is https but insecure is set", endpoint)
		}
		return u.Host, true, nil
	}
	return "", false, fmt.Errorf("endpoint %q: scheme must be http or https", endpoint)
}

func parseSSE(kind, kmsKey string) (encrypt.ServerSide, error) {
	switch kind {
	case "":
		if kmsKey != "" {
			return nil, errors.New("kmsKeyID needs sse aws:kms")
		}
		return nil, nil
	case "AES256":
		if kmsKey != "" {
			return nil, errors.New("kmsKeyID needs sse aws:kms")
		}
		return encrypt.NewSSE(), nil
	case "aws:kms":
		return encrypt.NewSSEKMS(kmsKey, nil)
	}
	return nil, fmt.Errorf("sse %q: want AES256 or aws:kms", kind)
}

func caPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("caFile: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("caFile %s: no PEM certificates", file)
	}
	return pool, nil
}

// Name returns the configured name of the target.
func (s *S3) Name() string { return s.name }

func (s *S3) object(key string) string { return s.prefix + key }

// call runs one S3 operation with retries and names the target, endpoint,
// operation and key in the error.
func (s *S3) call(ctx context.Context, op, key string, fn func(context.Context) error) error {
	err := s.retry.do(ctx, func(ctx context.Context) error { return classify(fn(ctx)) })
	if err == nil {
		return nil
	}
	return s.wrap(op, key, err)
}

func (s *S3) wrap(op, key string, err error) error {
	if key != "" {
		op += " " + key
	}
	return fmt.Errorf("target %s (%s): %s: %w", s.name, s.where, op, err)
}

// BucketLock is a bucket's Object Lock configuration, as the server
// reports it.
type BucketLock struct {
	// Enabled says that the bucket was made (or configured) with Object
	// Lock: objects in it can be retained.
	Enabled bool
	// DefaultMode, DefaultValidity and DefaultUnit are the retention the
	// bucket gives an object stored without one ("GOVERNANCE", 30,
	// "DAYS"); empty and zero when it has no default.
	DefaultMode     string
	DefaultValidity uint
	DefaultUnit     string
}

// Locking reports whether the bucket has Object Lock enabled; see
// BucketLock.
func (s *S3) Locking(ctx context.Context) (bool, error) {
	l, err := s.BucketLock(ctx)
	return l.Enabled, err
}

// BucketLock reads the bucket's Object Lock configuration. The answer is
// asked once and kept; a failed question is asked again next time.
func (s *S3) BucketLock(ctx context.Context) (BucketLock, error) {
	s.mu.Lock()
	known, l := s.lockKnown, s.lock
	s.mu.Unlock()
	if known {
		return l, nil
	}
	var (
		enabled  string
		mode     *minio.RetentionMode
		validity *uint
		unit     *minio.ValidityUnit
	)
	err := s.call(ctx, "reading object lock configuration", "", func(ctx context.Context) error {
		var err error
		enabled, mode, validity, unit, err = s.client.GetObjectLockConfig(ctx, s.bucket)
		switch s3Code(err) {
		case "ObjectLockConfigurationNotFoundError", "NotImplemented":
			// The bucket has no lock, or the server does not know Object
			// Lock. MinIO answers so for a bucket that does not exist too,
			// which must not pass for a bucket without a lock.
			enabled, mode, validity, unit = "", nil, nil, nil
			exists, err := s.client.BucketExists(ctx, s.bucket)
			if err == nil && !exists {
				return mark(ErrPermanent, nil, "bucket does not exist")
			}
			return err
		}
		return err
	})
	if err != nil {
		return BucketLock{}, err
	}
	l = BucketLock{Enabled: enabled == "Enabled"}
	if mode != nil && mode.IsValid() {
		l.DefaultMode = string(*mode)
		if validity != nil && unit != nil {
			l.DefaultValidity, l.DefaultUnit = *validity, string(*unit)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockKnown, s.lock = true, l
	return l, nil
}

// lockable fails when the target is to lock its objects and the bucket
// cannot: storing them without retention would quietly leave deletable
// backups where the configuration promises locked ones.
func (s *S3) lockable(ctx context.Context) error {
	if s.lockDays == 0 && s.lockMode == "" {
		return nil
	}
	on, err := s.Locking(ctx)
	if err != nil {
		return err
	}
	if !on {
		return s.wrap("object lock", "", mark(ErrPermanent, nil,
			fmt.Sprintf("bucket %s has no Object Lock enabled; create it with object locking or remove objectLock from target %s", s.bucket, s.name)))
	}
	return nil
}

// Get opens the object for reading. The first request is made here, so a
// missing object is reported by Get rather than by the first Read.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return s.get(ctx, key, minio.GetObjectOptions{})
}

// GetRange opens length bytes of the object from offset.
func (s *S3) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("target %s: reading %s: range %d+%d", s.name, key, offset, length)
	}
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	if err := opts.SetRange(offset, offset+length-1); err != nil {
		return nil, fmt.Errorf("target %s: reading %s: %w", s.name, key, err)
	}
	return s.get(ctx, key, opts)
}

func (s *S3) get(ctx context.Context, key string, opts minio.GetObjectOptions) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, fmt.Errorf("target %s: %w", s.name, err)
	}
	var obj *minio.Object
	err := s.call(ctx, "get", key, func(ctx context.Context) error {
		o, err := s.client.GetObject(ctx, s.bucket, s.object(key), opts)
		if err != nil {
			return err
		}
		if _, err := o.Stat(); err != nil {
			o.Close()
			return err
		}
		obj = o
		return nil
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// Stat describes the object, with its retention where the bucket has Object
// Lock.
func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, fmt.Errorf("target %s: %w", s.name, err)
	}
	var info minio.ObjectInfo
	err := s.call(ctx, "stat", key, func(ctx context.Context) error {
		var err error
		info, err = s.client.StatObject(ctx, s.bucket, s.object(key), minio.StatObjectOptions{})
		return err
	})
	if err != nil {
		return ObjectInfo{}, err
	}
	oi := ObjectInfo{Key: key, Size: info.Size, Modified: info.LastModified}
	if v := info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			oi.RetainUntil = t
		}
	}
	s.mu.Lock()
	locking := s.lockKnown && s.lock.Enabled
	s.mu.Unlock()
	if oi.RetainUntil.IsZero() && locking {
		// HEAD leaves the date out for callers without s3:GetObjectRetention
		// on some servers; ask directly. Unknown stays zero.
		if _, until, err := s.client.GetObjectRetention(ctx, s.bucket, s.object(key), info.VersionID); err == nil && until != nil {
			oi.RetainUntil = *until
		}
	}
	return oi, nil
}

// List reports the objects whose keys start with prefix, in key order. After
// a transient failure the listing resumes after the last key reported, so fn
// never sees a key twice. RetainUntil is left zero: Stat tells it, at one
// request per object.
func (s *S3) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if err := validatePrefix(prefix); err != nil {
		return fmt.Errorf("target %s: %w", s.name, err)
	}
	after := ""
	var fnErr error
	err := s.retry.do(ctx, func(ctx context.Context) error {
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		opts := minio.ListObjectsOptions{Prefix: s.object(prefix), Recursive: true, StartAfter: after}
		for obj := range s.client.ListObjectsIter(lctx, s.bucket, opts) {
			if obj.Err != nil {
				return classify(obj.Err)
			}
			if strings.HasSuffix(obj.Key, "/") || !strings.HasPrefix(obj.Key, s.prefix) {
				continue // a "directory" placeholder made by another tool
			}
			if fnErr = fn(ObjectInfo{Key: strings.TrimPrefix(obj.Key, s.prefix), Size: obj.Size, Modified: obj.LastModified}); fnErr != nil {
				return noRetry{fnErr}
			}
			after = obj.Key
		}
		// The iterator ends quietly when ctx does; that is no complete listing.
		return ctx.Err()
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return s.wrap("list", prefix, err)
	}
	return nil
}

// Delete removes the object. In a bucket with Object Lock every version of
// the key is deleted by version ID: deleting by key alone would only add a
// delete marker and hide the object while it stays stored. A version under
// retention or legal hold is refused by the server, and Delete returns an
// error wrapping ErrLocked.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("target %s: %w", s.name, err)
	}
	if err := s.deleteObject(ctx, key); err != nil {
		return err
	}
	return s.abortUploadsOf(ctx, key)
}

// abortUploadsOf aborts unfinished multipart uploads to exactly this key,
// except a Put of this process still running. Asking by the whole object
// name is the one listing every server answers, also after a restart.
func (s *S3) abortUploadsOf(ctx context.Context, key string) error {
	object := s.object(key)
	var ids []string
	err := s.call(ctx, "list incomplete uploads of", key, func(ctx context.Context) error {
		res, err := s.core.ListMultipartUploads(ctx, s.bucket, object, "", "", "", 1000)
		if err != nil {
			return err
		}
		ids = ids[:0]
		for _, u := range res.Uploads {
			if u.Key == object {
				ids = append(ids, u.UploadID)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		s.mu.Lock()
		live := s.inflight[id]
		s.mu.Unlock()
		if live {
			continue
		}
		if err := s.abortUpload(ctx, object, id); err != nil {
			return err
		}
	}
	return nil
}

func (s *S3) deleteObject(ctx context.Context, key string) error {
	locking, err := s.Locking(ctx)
	if err != nil {
		return err
	}
	object := s.object(key)
	if !locking {
		err := s.call(ctx, "delete", key, func(ctx context.Context) error {
			return s.client.RemoveObject(ctx, s.bucket, object, minio.RemoveObjectOptions{})
		})
		if errors.Is(err, ErrNotExist) {
			return nil
		}
		return err
	}
	var versions []string
	err = s.call(ctx, "list versions of", key, func(ctx context.Context) error {
		versions = versions[:0]
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for v := range s.client.ListObjectsIter(lctx, s.bucket, minio.ListObjectsOptions{Prefix: object, Recursive: true, WithVersions: true}) {
			if v.Err != nil {
				return v.Err
			}
			if v.Key == object {
				versions = append(versions, v.VersionID)
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	var locked error
	for _, vid := range versions {
		err := s.call(ctx, "delete", key, func(ctx context.Context) error {
			return s.client.RemoveObject(ctx, s.bucket, object, minio.RemoveObjectOptions{VersionID: vid})
		})
		if err == nil || errors.Is(err, ErrNotExist) {
			continue
		}
		if why := s.heldBecause(ctx, object, vid); why != "" {
			locked = mark(ErrLocked, err, fmt.Sprintf("target %s: %s is %s", s.name, key, why))
			continue
		}
		return err
	}
	return locked
}

// heldBecause says why a version cannot be deleted, or "" when it is not
// under retention or legal hold. Servers word the refusal differently
// (AccessDenied on AWS, InvalidRequest on MinIO), so the version is asked.
func (s *S3) heldBecause(ctx context.Context, object, versionID string) string {
	_, until, err := s.client.GetObjectRetention(ctx, s.bucket, object, versionID)
	if err == nil && until != nil && until.After(time.Now()) {
		return "under retention until " + until.UTC().Format(time.RFC3339)
	}
	hold, err := s.client.GetObjectLegalHold(ctx, s.bucket, object, minio.GetObjectLegalHoldOptions{VersionID: versionID})
	if err == nil && hold != nil && *hold == minio.LegalHoldEnabled {
		return "under legal hold"
	}
	return ""
}

// CleanupIncomplete aborts multipart uploads under the prefix that started
// more than olderThan ago, except those of Puts in progress in this process.
// Uploads whose abort failed in this process come first: some servers (MinIO)
// list incomplete uploads by exact object name only, or forget them on
// restart, so the bucket listing cannot be relied on to find them.
//
// The bucket listing is not narrowed by prefix on the server, for the same
// reason: MinIO answers a prefix that is not a whole object name with
// nothing. Uploads of other prefixes are filtered out here.
func (s *S3) CleanupIncomplete(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	done := map[string]bool{}

	s.mu.Lock()
	leftovers := make(map[string]leftoverUpload, len(s.leftovers))
	for id, l := range s.leftovers {
		leftovers[id] = l
	}
	s.mu.Unlock()
	for id, l := range leftovers {
		if l.started.After(cutoff) {
			continue
		}
		if err := s.abortUpload(ctx, l.object, id); err != nil {
			return removed, err
		}
		s.mu.Lock()
		delete(s.leftovers, id)
		s.mu.Unlock()
		done[id] = true
		removed++
	}

	type upload struct{ object, id string }
	var stale []upload
	err := s.call(ctx, "list incomplete uploads", "", func(ctx context.Context) error {
		stale = stale[:0]
		keyMarker, idMarker := "", ""
		for {
			res, err := s.core.ListMultipartUploads(ctx, s.bucket, "", keyMarker, idMarker, "", 1000)
			if err != nil {
				return err
			}
			for _, u := range res.Uploads {
				if strings.HasPrefix(u.Key, s.prefix) && u.Initiated.Before(cutoff) {
					stale = append(stale, upload{u.Key, u.UploadID})
				}
			}
			if !res.IsTruncated || (res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == idMarker) {
				return nil
			}
			keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
		}
	})
	if err != nil {
		return removed, err
	}
	for _, u := range stale {
		s.mu.Lock()
		live := s.inflight[u.id]
		s.mu.Unlock()
		if live || done[u.id] {
			continue
		}
		if err := s.abortUpload(ctx, u.object, u.id); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}

// Ping checks that the bucket exists and answers with these credentials,
// and that it has Object Lock enabled when the target is to lock.
func (s *S3) Ping(ctx context.Context) error {
	var exists bool
	err := s.call(ctx, "ping", "", func(ctx context.Context) error {
		var err error
		exists, err = s.client.BucketExists(ctx, s.bucket)
		return err
	})
	if err != nil {
		return err
	}
	if !exists {
		return s.wrap("ping", "", mark(ErrPermanent, nil, "bucket does not exist"))
	}
	return s.lockable(ctx)
}
