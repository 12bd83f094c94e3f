package replay

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
)

// etcd's storage keeps its key index on the heap: every key, with the
// revisions since the last compaction. kdr caps its heap softly (96 MiB by
// default) so that backups stay bounded by their buffers; a replay onto a
// large keyspace would hold the index near or past that cap, and the
// collector would then run without pause (on a 200,000-key cluster it cut
// the replay to a fifth of its speed). The index is what the restored
// member holds in memory too, so the host has room for it: while a replay
// runs, the cap follows the live heap, with room for the collector's
// usual growth. A GOMEMLIMIT the operator set is left alone.
const (
	// heapRoomFactor times the live heap, plus heapRoomSlack, is the cap
	// a replay asks for.
	heapRoomFactor = 3
	heapRoomSlack  = 64 << 20
)

// heapRoom lifts the soft heap cap for one replay.
type heapRoom struct {
	was, now int64
	live     []metrics.Sample
}

// newHeapRoom returns nil when the operator set GOMEMLIMIT.
func newHeapRoom() *heapRoom {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return nil
	}
	was := debug.SetMemoryLimit(-1)
	return &heapRoom{was: was, now: was, live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
}

// fit raises the cap when the live heap, as the last collection found it,
// needs more room.
func (h *heapRoom) fit() {
	if h == nil {
		return
	}
	metrics.Read(h.live)
	if h.live[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	if want := int64(h.live[0].Value.Uint64())*heapRoomFactor + heapRoomSlack; want > h.now {
		h.now = want
		debug.SetMemoryLimit(want)
	}
}

// release puts the cap back as it was.
func (h *heapRoom) release() {
	if h != nil && h.now != h.was {
		debug.SetMemoryLimit(h.was)
	}
}
