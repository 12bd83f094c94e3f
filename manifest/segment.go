package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kdr-io/kdr/storage"
)

// The captured log: between full sets the agent ships every etcd revision
// in segments. A segment is two objects in its chain's directory, beside
// the full set the chain continues (docs/format.md, "The captured log"):
//
//	<cluster>/<set>/log/<first>.json              the head: plain JSON, signed
//	<cluster>/<set>/log/<first>.json.sig          its signature, stored first
//	<cluster>/<set>/log/<first>-<last>.log.zst.age the body: the revisions
//
// Revisions are written as 20 digits so that keys sort by revision. The
// head is keyed by the first revision alone: two writers that both
// believe they continue the chain race for the same head key, and
// conditional creation lets exactly one win (a fork would need two heads
// with one first revision).
const (
	logDir         = "log/"
	headSuffix     = ".json"
	bodySuffix     = ".log.zst.age"
	revisionDigits = 20
	// KindLog is the kind of a segment's body.
	KindLog = "etcd-log"
	// NamespaceSegment signs segment heads.
	NamespaceSegment = "kdr-log-segment"
	// MaxSegmentPlain bounds a segment body's plaintext: readers refuse a
	// head recording more, and a replay holds one body's records at most.
	MaxSegmentPlain = 64 << 20
	// maxSegmentStored bounds a body's stored bytes: zstd may grow
	// incompressible data by a little, age by 16 bytes a 64 KiB chunk
	// plus its header. Readers hold a body's stored bytes whole.
	maxSegmentStored = MaxSegmentPlain + MaxSegmentPlain/64 + 64<<10
	// maxHeadSize bounds what is read of a head.
	maxHeadSize = 64 << 10
	// MaxHeadRead and MaxSignatureRead bound what readers read of a
	// segment's head and of a signature.
	MaxHeadRead      = maxHeadSize
	MaxSignatureRead = maxSignatureSize
)

// ErrGap means the captured log does not hold a revision asked for: a
// segment is missing, or the chain ends before it.
var ErrGap = errors.New("captured log has a gap")

// ErrLost means a segment's head key was taken by another writer: the
// writer that gets it no longer continues the chain and must stop.
var ErrLost = errors.New("another writer stored this segment first")

// SegmentHead describes one segment: which revisions its body holds, the
// segment before it, and what the writer saw. It is signed; the body is
// held to its record as a set's objects are held to the manifest.
type SegmentHead struct {
	FormatVersion int    `json:"formatVersion"`
	KdrVersion    string `json:"kdrVersion"`
	Cluster       string `json:"cluster"`
	// Base is the full set the chain continues: its ID and the sha256 of
	// its manifest's bytes. Its revision plus one is the chain's first.
	Base Link `json:"base"`
	// First and Last are the revisions the body holds, every one between.
	First int64 `json:"first"`
	Last  int64 `json:"last"`
	// Prev is the segment before this one; absent on the chain's first.
	Prev *SegmentLink `json:"prev,omitempty"`
	// SeenFirst and SeenLast are when the writer received First and Last
	// from etcd: an upper bound on their commit times.
	SeenFirst time.Time `json:"seenFirst"`
	SeenLast  time.Time `json:"seenLast"`
	// Body is the record of the body object.
	Body Object `json:"body"`
	// Leases counts the lease records in the body.
	Leases int `json:"leases,omitempty"`
	// HashKV, when set, is etcd's HashKV at Last, with the compaction it
	// covered: a replay to Last proves itself against it.
	HashKV *LogHash `json:"hashKV,omitempty"`
	// Writer names the agent that wrote the segment.
	Writer     string   `json:"writer"`
	Recipients []string `json:"recipients"`
}

// SegmentLink names a segment by its revisions and the sha256 of its
// head's bytes.
type SegmentLink struct {
	First  int64  `json:"first"`
	Last   int64  `json:"last"`
	SHA256 string `json:"sha256"`
}

// LogHash is an etcd HashKV answer.
type LogHash struct {
	Revision        int64  `json:"revision"`
	CompactRevision int64  `json:"compactRevision"`
	Hash            uint32 `json:"hash"`
}

// LogPrefix is the directory of the chain that continues set id.
func LogPrefix(cluster, id string) string { return SetPrefix(cluster, id) + logDir }

func revisionName(rev int64) string {
	s := strconv.FormatInt(rev, 10)
	return strings.Repeat("0", revisionDigits-len(s)) + s
}

// SegmentHeadKey is the key of the head of the segment starting at first.
func SegmentHeadKey(cluster, id string, first int64) string {
	return LogPrefix(cluster, id) + revisionName(first) + headSuffix
}

// SegmentBodyName is the name of the body of the segment first..last.
func SegmentBodyName(first, last int64) string {
	return revisionName(first) + "-" + revisionName(last) + bodySuffix
}

// SegmentBodyKey is the key of the body of the segment first..last.
func SegmentBodyKey(cluster, id string, first, last int64) string {
	return LogPrefix(cluster, id) + SegmentBodyName(first, last)
}

// ParseHeadKey returns the first revision of a head key of the chain
// under prefix (a LogPrefix); ok is false for any other key.
func ParseHeadKey(prefix, key string) (first int64, ok bool) {
	name, found := strings.CutPrefix(key, prefix)
	if !found {
		return 0, false
	}
	digits, found := strings.CutSuffix(name, headSuffix)
	if !found || len(digits) != revisionDigits {
		return 0, false
	}
	first, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || first <= 0 {
		return 0, false
	}
	return first, true
}

// ParseBodyKey returns the first revision of a body key of the chain
// under prefix; ok is false for any other key.
func ParseBodyKey(prefix, key string) (first int64, ok bool) {
	name, found := strings.CutPrefix(key, prefix)
	if !found {
		return 0, false
	}
	name, found = strings.CutSuffix(name, bodySuffix)
	if !found {
		return 0, false
	}
	first, _, ok = parseRange(name)
	return first, ok
}

// parseRange reads "<first>-<last>", each 20 digits, first..last a
// range of revisions.
func parseRange(name string) (first, last int64, ok bool) {
	if len(name) != 2*revisionDigits+1 || name[revisionDigits] != '-' {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(name[:revisionDigits], 10, 64)
	last, err2 := strconv.ParseInt(name[revisionDigits+1:], 10, 64)
	return first, last, err1 == nil && err2 == nil && first > 0 && last >= first
}

// Marshal renders the head as stored.
func (h *SegmentHead) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode segment head: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseSegmentHead decodes and checks a head's bytes, which the caller
// has verified against the trusted keys. Unknown fields are refused.
func ParseSegmentHead(data []byte) (*SegmentHead, error) {
	if len(data) > maxHeadSize {
		return nil, fmt.Errorf("%w: segment head larger than %d bytes", ErrInvalid, maxHeadSize)
	}
	var probe struct {
		FormatVersion int `json:"formatVersion"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: segment head: %v", ErrInvalid, err)
	}
	if probe.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("%w (segment format %d, this kdr reads up to %d)", ErrNewerFormat, probe.FormatVersion, FormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var h SegmentHead
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("%w: segment head: %v", ErrInvalid, err)
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return &h, nil
}

// Validate checks the fields readers rely on.
func (h *SegmentHead) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: segment head: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case h.FormatVersion < 2:
		return bad("formatVersion %d", h.FormatVersion)
	case !ValidCluster(h.Cluster):
		return bad("cluster %q", h.Cluster)
	case !ValidID(h.Base.ID) || !sha256Pattern.MatchString(h.Base.SHA256):
		return bad("base %q", h.Base.ID)
	case h.First <= 0 || h.Last < h.First:
		return bad("revisions %d..%d", h.First, h.Last)
	case h.SeenFirst.IsZero() || h.SeenLast.Before(h.SeenFirst):
		return bad("seen times %s..%s", h.SeenFirst, h.SeenLast)
	case h.Body.Name != SegmentBodyName(h.First, h.Last) || h.Body.Kind != KindLog:
		return bad("body %q of kind %q", h.Body.Name, h.Body.Kind)
	case !sha256Pattern.MatchString(h.Body.SHA256) || !sha256Pattern.MatchString(h.Body.PlainSHA256):
		return bad("body sha256 must be 64 hex digits")
	case h.Body.Size < 0 || h.Body.Size > maxSegmentStored || h.Body.PlainSize < 0 || h.Body.PlainSize > MaxSegmentPlain:
		return bad("body sizes %d and %d", h.Body.Size, h.Body.PlainSize)
	case h.Leases < 0:
		return bad("lease count %d", h.Leases)
	}
	if p := h.Prev; p != nil && (p.Last != h.First-1 || p.First <= 0 || p.First > p.Last || !sha256Pattern.MatchString(p.SHA256)) {
		return bad("previous segment %d..%d does not end at %d", p.First, p.Last, h.First-1)
	}
	if hk := h.HashKV; hk != nil && (hk.Revision != h.Last || hk.CompactRevision > hk.Revision) {
		return bad("hashKV at %d (compacted %d) for a segment ending at %d", hk.Revision, hk.CompactRevision, h.Last)
	}
	return nil
}

// Link names this segment for the next one; sum is the sha256 of the
// head's stored bytes.
func (h *SegmentHead) Link(sum string) *SegmentLink {
	return &SegmentLink{First: h.First, Last: h.Last, SHA256: sum}
}

// PutSegmentHead stores a signed head only if no head starts at its first
// revision yet: the signature first, then the head, both created
// conditionally. Losing either race returns an error wrapping ErrLost;
// the head is then another writer's and is left alone. A signature left
// without its head (a writer that died between the two) blocks the key
// for good: readers see the chain end before it, and the next writer
// starts a new chain. Ed25519 signs deterministically, so a writer that
// stores the same head again after a failure finds its own signature and
// goes on.
func PutSegmentHead(ctx context.Context, t storage.Target, key string, data []byte, s *Signer) error {
	if s == nil {
		return errors.New("no signing key configured (signing.keyFile): readers trust only signed objects")
	}
	sig, err := s.Sign(data, NamespaceSegment)
	if err != nil {
		return err
	}
	if err := PutNew(ctx, t, SignatureKey(key), sig, "text/plain"); err != nil {
		return err
	}
	return PutNew(ctx, t, key, data, "application/json")
}

// PutNew stores data under key only if the key is free, and counts a key
// that already holds exactly data as stored: a writer storing a segment
// again after a failure meets its own objects. Any other content there
// is another writer's: the error wraps ErrLost.
func PutNew(ctx context.Context, t storage.Target, key string, data []byte, contentType string) error {
	err := t.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{IfAbsent: true, ContentType: contentType})
	if !errors.Is(err, storage.ErrExist) {
		if err != nil {
			return fmt.Errorf("store %s on target %s: %w", key, t.Name(), err)
		}
		return nil
	}
	there, rerr := ReadBounded(ctx, t, key, int64(len(data)))
	switch {
	case rerr == nil && bytes.Equal(there, data):
		return nil
	case rerr != nil && !errors.Is(rerr, ErrInvalid):
		return fmt.Errorf("store %s on target %s: it exists, and reading it failed: %w", key, t.Name(), rerr)
	}
	return fmt.Errorf("%s on target %s: %w", key, t.Name(), ErrLost)
}

// ReadSegmentHead reads, verifies and parses the head at key, and returns
// it with the sha256 of its bytes (what the next head's Prev holds).
func ReadSegmentHead(ctx context.Context, t storage.Target, key string, trust *Trust) (*SegmentHead, string, error) {
	data, err := ReadSigned(ctx, t, key, maxHeadSize, NamespaceSegment, trust)
	if err != nil {
		return nil, "", err
	}
	h, err := ParseSegmentHead(data)
	if err != nil {
		return nil, "", fmt.Errorf("%s on target %s: %w", key, t.Name(), err)
	}
	return h, Sum(data), nil
}
