package replay

import (
	"context"
	"io"

	"filippo.io/age"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/storage"
)

// targetSource reads a chain's segments from a target.
type targetSource struct {
	store *catalog.SegmentStore
	segs  []catalog.Segment
	ids   []age.Identity
	next  int
}

// Segments is the Source of segs on t, loose or packed: each body read,
// checked against its head and decrypted with ids when the replay asks
// for it, so one body is in memory at a time.
func Segments(t storage.Target, segs []catalog.Segment, ids []age.Identity) Source {
	return &targetSource{store: catalog.NewSegmentStore(t), segs: segs, ids: ids}
}

func (s *targetSource) Next(ctx context.Context) (*Segment, error) {
	if s.next == len(s.segs) {
		return nil, io.EOF
	}
	seg := s.segs[s.next]
	s.next++
	body, err := s.store.Open(ctx, seg, s.ids)
	if err != nil {
		return nil, err
	}
	return &Segment{Head: seg.Head, Body: body}, nil
}
