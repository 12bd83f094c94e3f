// Package storage stores backup objects on targets: an S3 bucket (any
// S3-compatible server, through minio-go) or a directory on a USB disk or NFS
// mount. Every target implements Target and decides what its own errors
// mean: ErrNotExist for a missing object, ErrLocked for an object under
// retention, ErrPermanent for failures that retrying cannot fix. Everything
// else is worth retrying.
//
// Objects appear whole or not at all. The local target writes a hidden temp
// file in the destination directory, fsyncs it, renames it into place and
// fsyncs the directory. The S3 target streams readers of unknown length as
// multipart uploads with two part buffers in memory and aborts the upload when
// the Put fails. CleanupIncomplete removes what a crash left behind.
//
// Keys are slash-separated relative paths ("prod/20240101T000000.000Z-0a1b2c/manifest.json").
// Keys with empty, "." or ".." segments, absolute keys and keys that name a
// temp file are refused, so no key can reach outside a target's directory or
// prefix.
package storage
