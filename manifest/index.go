package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// maxIndexSize bounds what ParseIndex reads; the index of a control-plane
// host's files is tens of KiB.
const maxIndexSize = 64 << 20

// StateIndex is the last entry of the state tar: what was captured, so a
// reader can prove every file whole without trusting tar headers alone.
type StateIndex struct {
	Node    string       `json:"node"`
	Entries []IndexEntry `json:"entries"`
}

// Entry types in the index.
const (
	EntryFile    = "file"
	EntryDir     = "dir"
	EntrySymlink = "symlink"
)

// IndexEntry is one captured path. Path is relative to the filesystem root
// (no leading slash), exactly as in the tar, so `tar -x -C /` puts it back.
type IndexEntry struct {
	Path    string    `json:"path"`
	Set     string    `json:"set"`
	Type    string    `json:"type"`
	Size    int64     `json:"size"`
	Mode    uint32    `json:"mode"`
	UID     int       `json:"uid"`
	GID     int       `json:"gid"`
	ModTime time.Time `json:"modTime"`
	SHA256  string    `json:"sha256,omitempty"`
	Target  string    `json:"target,omitempty"`
}

// ParseIndex decodes and checks a state index.
func ParseIndex(r io.Reader) (*StateIndex, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("read state index: %w", err)
	}
	if len(data) > maxIndexSize {
		return nil, fmt.Errorf("%w: state index larger than %d bytes", ErrInvalid, maxIndexSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var idx StateIndex
	if err := dec.Decode(&idx); err != nil {
		return nil, fmt.Errorf("%w: state index: %v", ErrInvalid, err)
	}
	seen := make(map[string]bool, len(idx.Entries))
	for _, e := range idx.Entries {
		if err := ValidEntryPath(e.Path); err != nil {
			return nil, fmt.Errorf("%w: state index: %v", ErrInvalid, err)
		}
		if seen[e.Path] {
			return nil, fmt.Errorf("%w: state index: %s listed twice", ErrInvalid, e.Path)
		}
		seen[e.Path] = true
		switch e.Type {
		case EntryFile:
			if !sha256Pattern.MatchString(e.SHA256) || e.Size < 0 {
				return nil, fmt.Errorf("%w: state index: %s: bad size or sha256", ErrInvalid, e.Path)
			}
		case EntryDir, EntrySymlink:
		default:
			return nil, fmt.Errorf("%w: state index: %s: unknown type %q", ErrInvalid, e.Path, e.Type)
		}
	}
	return &idx, nil
}

// ValidEntryPath refuses paths that could escape the directory they are
// restored into: absolute paths, "..", and unclean forms.
func ValidEntryPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "." ||
		p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("unsafe path %q", p)
	}
	return nil
}
