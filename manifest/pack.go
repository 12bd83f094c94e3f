package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// A pack holds many closed segments of one chain in two objects, so that a
// target keeps a few large objects an hour instead of thousands of small
// ones (costly per request, and each under Object Lock for its period):
//
//	<cluster>/<set>/log/pack-<first>-<last>.pack  the segments' stored bodies, one after another
//	<cluster>/<set>/log/pack-<first>-<last>.json  the index: each segment's head and signature, and where its body is
//
// The index is not signed itself: every head in it carries the signature
// its writer made, verified as a loose head's is, and every body is held
// to the sha256 its head records. A forged index can only point at the
// wrong bytes, which readers refuse, or leave segments out, which they see
// as a gap. A pack is visible only once its index is stored, and the loose
// objects it copies are removed only after that.
const (
	packPrefix      = "pack-"
	packIndexSuffix = ".json"
	packSuffix      = ".pack"
	// PackFormat is the first line of an index's format field.
	PackFormat = "kdr-log-pack 1"
	// MaxPackIndex bounds what is read of an index: a head and its
	// signature take about 2 KiB, so this holds thousands of segments.
	MaxPackIndex = 32 << 20
	// MaxPackSegments bounds how many segments one pack holds.
	MaxPackSegments = 10000
)

// PackIndex is what a pack holds: consecutive segments of one chain.
type PackIndex struct {
	Format  string `json:"format"`
	Cluster string `json:"cluster"`
	// Set is the ID of the full set the chain continues.
	Set   string `json:"set"`
	First int64  `json:"first"`
	Last  int64  `json:"last"`
	// Size and SHA256 are the pack object's.
	Size     int64           `json:"size"`
	SHA256   string          `json:"sha256"`
	Segments []PackedSegment `json:"segments"`
}

// PackedSegment is one segment in a pack: its head's stored bytes, the
// signature stored beside it, and where its body is in the pack.
type PackedSegment struct {
	Head      []byte `json:"head"`
	Signature []byte `json:"signature"`
	Offset    int64  `json:"offset"`
	Size      int64  `json:"size"`
}

// PackIndexKey is the key of the index of the pack first..last.
func PackIndexKey(cluster, id string, first, last int64) string {
	return LogPrefix(cluster, id) + packName(first, last) + packIndexSuffix
}

// PackKey is the key of the pack object first..last.
func PackKey(cluster, id string, first, last int64) string {
	return LogPrefix(cluster, id) + packName(first, last) + packSuffix
}

func packName(first, last int64) string {
	return packPrefix + revisionName(first) + "-" + revisionName(last)
}

// ParsePackIndexKey returns the revisions of a pack index key of the chain
// under prefix (a LogPrefix); ok is false for any other key.
func ParsePackIndexKey(prefix, key string) (first, last int64, ok bool) {
	name, found := strings.CutPrefix(key, prefix+packPrefix)
	if !found {
		return 0, 0, false
	}
	name, found = strings.CutSuffix(name, packIndexSuffix)
	if !found {
		return 0, 0, false
	}
	return parseRange(name)
}

// IsPackObject reports whether key, under a chain's prefix, is part of a
// pack (its index or its object).
func IsPackObject(prefix, key string) bool {
	return strings.HasPrefix(key, prefix+packPrefix)
}

// Marshal renders the index as stored.
func (p *PackIndex) Marshal() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode pack index: %w", err)
	}
	return append(b, '\n'), nil
}

// ParsePackIndex decodes an index and checks its shape: the segments'
// bodies lie one after another, filling the pack. What the heads say is
// checked by the reader, which verifies each before it parses it.
func ParsePackIndex(data []byte) (*PackIndex, error) {
	if len(data) > MaxPackIndex {
		return nil, fmt.Errorf("%w: pack index larger than %d bytes", ErrInvalid, MaxPackIndex)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p PackIndex
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: pack index: %v", ErrInvalid, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: pack index: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case p.Format != PackFormat:
		return nil, bad("format %q", p.Format)
	case !ValidCluster(p.Cluster) || !ValidID(p.Set):
		return nil, bad("set %q/%q", p.Cluster, p.Set)
	case p.First <= 0 || p.Last < p.First:
		return nil, bad("revisions %d..%d", p.First, p.Last)
	case !sha256Pattern.MatchString(p.SHA256):
		return nil, bad("sha256 must be 64 hex digits")
	case len(p.Segments) == 0 || len(p.Segments) > MaxPackSegments:
		return nil, bad("%d segments", len(p.Segments))
	}
	var at int64
	for i, s := range p.Segments {
		if s.Offset != at || s.Size < 0 || s.Size > maxSegmentStored || len(s.Head) == 0 || len(s.Head) > maxHeadSize ||
			len(s.Signature) == 0 || len(s.Signature) > maxSignatureSize {
			return nil, bad("segment %d at %d (+%d), where %d was due", i, s.Offset, s.Size, at)
		}
		at += s.Size
	}
	if at != p.Size {
		return nil, bad("its segments fill %d bytes of a %d-byte pack", at, p.Size)
	}
	return &p, nil
}
