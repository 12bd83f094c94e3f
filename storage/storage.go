package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors that callers branch on. Every target maps its own SDK's
// errors onto these, so code above storage never inspects SDK error types.
var (
	// ErrNotExist: the object is not on the target.
	ErrNotExist = errors.New("object does not exist")
	// ErrLocked: the object is under retention (S3 Object Lock) and cannot be
	// deleted or overwritten before its time.
	ErrLocked = errors.New("object is under retention")
	// ErrExist: an object asked for with PutOptions.IfAbsent is already
	// on the target; another writer stored it first.
	ErrExist = errors.New("object already exists")
	// ErrPermanent marks failures that retrying cannot fix (access denied, no
	// space left, read-only medium, missing bucket).
	ErrPermanent = errors.New("permanent storage error")
)

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key      string
	Size     int64
	Modified time.Time
	// RetainUntil is the end of the object's retention (zero when it has none).
	RetainUntil time.Time
}

// PutOptions change how one object is stored.
type PutOptions struct {
	// RetainUntil asks the target to protect the object from deletion until
	// this time, where the target can (S3 Object Lock). Zero means no retention.
	RetainUntil time.Time
	// ContentType is stored as metadata where the target keeps it.
	ContentType string
	// Executable makes a local target's file 0755 instead of 0444: the
	// recovery kit's binaries must run straight from the disk. Targets
	// without file modes ignore it.
	Executable bool
	// IfAbsent stores the object only if no object has the key yet (S3
	// If-None-Match: *, a local file linked into place without
	// replacing): of two writers racing for one key exactly one
	// succeeds, and the other gets an error wrapping ErrExist. A retry
	// that finds its own earlier attempt stored is a success.
	IfAbsent bool
}

// Target is one place backups are stored: an S3 bucket, a directory on a
// USB disk or NFS. Keys are slash-separated relative paths.
type Target interface {
	// Name is the configured name of the target, used in messages and labels.
	Name() string
	// Put stores everything read from r under key. The object becomes visible
	// only when Put returns nil: an interrupted or failed Put leaves nothing
	// that Get, Stat or List can see. An existing object is replaced only
	// when the target allows it; callers never rely on that.
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) error
	// Get opens the object for reading. The error wraps ErrNotExist when
	// there is no such object.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// GetRange opens length bytes of the object from offset, as Get. A
	// range that does not end inside the object gives fewer bytes:
	// callers hold what they read to the size they expect.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat describes the object, or returns an error wrapping ErrNotExist.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix, in
	// lexical key order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes the object, and what an interrupted Put to the same key
	// left behind. Deleting a missing object is not an error; an object
	// under retention gives an error wrapping ErrLocked.
	Delete(ctx context.Context, key string) error
	// CleanupIncomplete removes what interrupted Puts left behind that is
	// older than the given age (temp files, incomplete multipart uploads),
	// and returns how many it removed.
	CleanupIncomplete(ctx context.Context, olderThan time.Duration) (int, error)
	// Ping checks that the target can be used now: the bucket exists and
	// answers, or the directory exists and is writable. It stores nothing
	// that List can see.
	Ping(ctx context.Context) error
}
