package storage

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// tempPrefix starts the name of every file or object a target uses while a
// Put is in progress. Keys may not contain a segment with this prefix, so a
// temp file can never be mistaken for an object or overwritten by one.
const tempPrefix = ".kdr-tmp-"

// maxKeyLen is S3's limit on object names; applied to every target so that a
// key that works on a USB disk also works in a bucket.
const maxKeyLen = 1024

// ValidateKey reports whether key is acceptable to every target. The error
// wraps ErrPermanent: a bad key never gets better by retrying.
func ValidateKey(key string) error {
	if key == "" {
		return invalidKey(key, "empty key")
	}
	if len(key) > maxKeyLen {
		return invalidKey(key, fmt.Sprintf("longer than %d bytes", maxKeyLen))
	}
	if !utf8.ValidString(key) {
		return invalidKey(key, "not valid UTF-8")
	}
	if strings.HasPrefix(key, "/") {
		return invalidKey(key, "absolute key")
	}
	for _, seg := range strings.Split(key, "/") {
		if err := validSegment(key, seg); err != nil {
			return err
		}
	}
	return nil
}

// validatePrefix checks a List prefix: every complete segment must be valid
// as in a key; the last, partial segment is only compared as a string and
// may be empty (a prefix ending in "/").
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > maxKeyLen || !utf8.ValidString(prefix) || strings.HasPrefix(prefix, "/") || strings.ContainsRune(prefix, 0) {
		return invalidKey(prefix, "invalid prefix")
	}
	segs := strings.Split(prefix, "/")
	for _, seg := range segs[:len(segs)-1] {
		if err := validSegment(prefix, seg); err != nil {
			return err
		}
	}
	return nil
}

func validSegment(key, seg string) error {
	switch {
	case seg == "":
		return invalidKey(key, "empty path segment")
	case seg == "." || seg == "..":
		return invalidKey(key, fmt.Sprintf("%q segment", seg))
	case strings.HasPrefix(seg, tempPrefix):
		return invalidKey(key, "segment uses the reserved prefix "+tempPrefix)
	case strings.ContainsRune(seg, 0):
		return invalidKey(key, "NUL byte")
	}
	return nil
}

func invalidKey(key, why string) error {
	return mark(ErrPermanent, nil, fmt.Sprintf("invalid key %q: %s", key, why))
}

// listDir is the part of a List prefix up to and including its last "/":
// the deepest directory that can hold every matching key.
func listDir(prefix string) string {
	return prefix[:strings.LastIndex(prefix, "/")+1]
}
