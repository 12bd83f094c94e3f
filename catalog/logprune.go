package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// LogTombstoneKind is the kind of a log tombstone. A set's tombstone has
// no kind; its readers refuse unknown fields, so neither kind is ever
// read as the other.
const LogTombstoneKind = "log"

// LogTombstone records that prune removed the captured log of a set it
// kept (Policy.KeepLog), so that readers take the set's log as gone on
// purpose, not as missing or broken. It is stored beside the sets'
// tombstones, LogTombstoneKey, signed in the same namespace. A set that
// prune removes needs none: its own tombstone covers its log too.
type LogTombstone struct {
	Kind string `json:"kind"`
	// ID is the set the log continued, Base the sha256 of that set's
	// manifest.json: the tombstone speaks only for the log of those bytes.
	ID   string `json:"id"`
	Base string `json:"base"`
	// First and Last are the revisions the removed chain held, Head the
	// sha256 of its last segment's head.
	First int64  `json:"first"`
	Last  int64  `json:"last"`
	Head  string `json:"head"`
	// Pruned is when prune decided to remove it.
	Pruned time.Time `json:"pruned"`
}

// String is the tombstone as verify reports it.
func (ts *LogTombstone) String() string {
	return fmt.Sprintf("log removed by prune (tombstone): revisions %d..%d, pruned %s; the set restores at its own revision only",
		ts.First, ts.Last, ts.Pruned.UTC().Format(time.RFC3339))
}

// LogTombstoneKey is the key of the tombstone of set id's log.
func LogTombstoneKey(cluster, id string) string {
	return cluster + "/" + prunedDir + "/" + id + ".log.json"
}

func parseLogTombstone(raw []byte, id string) (*LogTombstone, error) {
	var ts LogTombstone
	if err := decodeStrict(raw, &ts); err != nil {
		return nil, fmt.Errorf("%w: log tombstone: %w", manifest.ErrInvalid, err)
	}
	switch {
	case ts.Kind != LogTombstoneKind:
		return nil, fmt.Errorf("%w: log tombstone of kind %q", manifest.ErrInvalid, ts.Kind)
	case ts.ID != id:
		return nil, fmt.Errorf("%w: log tombstone names %q", manifest.ErrInvalid, ts.ID)
	case !isSHA256(ts.Base) || !isSHA256(ts.Head):
		return nil, fmt.Errorf("%w: log tombstone: base or head is not 64 lowercase hex digits", manifest.ErrInvalid)
	case ts.First <= 0 || ts.Last < ts.First:
		return nil, fmt.Errorf("%w: log tombstone: revisions %d..%d", manifest.ErrInvalid, ts.First, ts.Last)
	}
	return &ts, nil
}

// ReadLogTombstone returns the tombstone prune wrote before it removed
// the log continuing base (whose manifest's sha256 is baseSum), or nil
// when there is none for that manifest. The error wraps what IsForeign
// recognises when the stored tombstone is not one a trusted key signed.
func ReadLogTombstone(ctx context.Context, t storage.Target, trust *manifest.Trust, base *manifest.Manifest, baseSum string) (*LogTombstone, error) {
	key := LogTombstoneKey(base.Cluster, base.ID)
	raw, err := manifest.ReadSigned(ctx, t, key, maxTombstoneRead, manifest.NamespaceTombstone, trust)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ts, err := parseLogTombstone(raw, base.ID)
	if err != nil {
		return nil, fmt.Errorf("%s on target %s: %w", key, t.Name(), err)
	}
	if ts.Base != baseSum {
		return nil, nil
	}
	return ts, nil
}

// LogPruned reports whether prune removed the log continuing base on t:
// ReadChain then gives an empty chain, not a broken one, whatever an
// interrupted removal left. A tombstone no trusted key signed is not
// taken: whoever can write to a target must not be able to hide a log.
// Only a failure to read the target is an error.
func LogPruned(ctx context.Context, t storage.Target, trust *manifest.Trust, base *manifest.Manifest, baseSum string) (bool, error) {
	ts, err := ReadLogTombstone(ctx, t, trust, base, baseSum)
	if IsForeign(err) {
		return false, nil
	}
	return ts != nil, err
}

// checkPrunedLog reports on rep the tombstone of the log continuing m
// (sha256 sum) and returns true when prune removed that log: VerifyLog
// then has nothing more to check. A tombstone that is not trusted is a
// problem, and the log is checked as it is.
func checkPrunedLog(ctx context.Context, t storage.Target, trust *manifest.Trust, m *manifest.Manifest, sum string, rep *Report) bool {
	ts, err := ReadLogTombstone(ctx, t, trust, m, sum)
	if err != nil {
		rep.problem("", err, "log tombstone %s: %v", LogTombstoneKey(m.Cluster, m.ID), err)
		return false
	}
	if ts == nil {
		return false
	}
	rep.checked("%s", ts)
	return true
}

func writeLogTombstone(ctx context.Context, t storage.Target, signer *manifest.Signer, cluster string, ts LogTombstone) error {
	return putTombstone(ctx, t, signer, LogTombstoneKey(cluster, ts.ID), ts)
}

// Reasons in PrunedLog.Reason.
const (
	// LogWithSet: the set the log continues was removed.
	LogWithSet = "set removed"
	// LogLeftover: a removal an earlier prune began (its tombstone is
	// stored) is finished.
	LogLeftover = "removal begun by an earlier prune"
)

// PrunedLog is the captured log of one set that Prune removed, or in a
// dry run would remove, or found locked.
type PrunedLog struct {
	// ID is the set the log continues.
	ID string
	// First and Last are the revisions of its chain as far as it was
	// whole; both 0 when no segment of it was one a trusted key signed.
	First, Last int64
	// Reason is LogWithSet, LogLeftover or "keepLog <duration>".
	Reason string
}

// Revisions is the log's range for people.
func (l PrunedLog) Revisions() string {
	if l.First == 0 {
		return "no trusted segment"
	}
	return fmt.Sprintf("revisions %d..%d", l.First, l.Last)
}

// trustedSet is a complete set whose manifest a trusted key signed.
type trustedSet struct {
	Set
	m   *manifest.Manifest
	sum string
}

// logObjects are the objects under the set's log prefix, whatever a
// writer or a packer stored there.
func (s trustedSet) logObjects() []storage.ObjectInfo {
	prefix := manifest.LogPrefix(s.Cluster, s.ID)
	var out []storage.ObjectInfo
	for _, o := range s.Objects {
		if strings.HasPrefix(o.Key, prefix) {
			out = append(out, o)
		}
	}
	return out
}

// chainLog reads s's chain and names it as a PrunedLog for reason,
// returning the chain too.
func chainLog(ctx context.Context, t storage.Target, trust *manifest.Trust, s trustedSet, reason string) (PrunedLog, *Chain, error) {
	l := PrunedLog{ID: s.ID, Reason: reason}
	c, err := ReadChain(ctx, t, trust, s.m, s.sum)
	if err != nil {
		return l, nil, err
	}
	if len(c.Segments) > 0 {
		l.First, l.Last = c.Segments[0].Head.First, c.End()
	}
	return l, c, nil
}

// shortenLog applies keepLog to the log of s, a kept set that is not the
// newest: the whole chain goes once its last segment was seen longer
// ago than keepLog. A removal an earlier prune began is finished whatever
// keepLog says now, since readers already take that log as gone.
func shortenLog(ctx context.Context, t storage.Target, o PruneOptions, keepLog time.Duration, s trustedSet, now time.Time, rep *PruneReport) {
	objs := s.logObjects()
	if len(objs) == 0 {
		return
	}
	fail := func(err error) {
		rep.Errors = append(rep.Errors, fmt.Errorf("prune the log of %s on target %s: %w", s.ID, t.Name(), err))
	}
	ts, err := ReadLogTombstone(ctx, t, o.Trust, s.m, s.sum)
	switch {
	case IsForeign(err):
		ts = nil // not ours: decided afresh below, and replaced if removed
	case err != nil:
		fail(err)
		return
	}
	if ts != nil {
		removeLog(ctx, t, o, objs, PrunedLog{ID: s.ID, First: ts.First, Last: ts.Last, Reason: LogLeftover}, nil, now, rep)
		return
	}
	if keepLog <= 0 {
		return
	}
	l, c, err := chainLog(ctx, t, o.Trust, s, "keepLog "+configDuration(keepLog))
	if err != nil {
		fail(err)
		return
	}
	// A log without a trusted segment restores nothing, and has no
	// revisions to record: it goes with its set.
	last := c.Last()
	if last == nil || now.Sub(last.Head.SeenLast) <= keepLog {
		return
	}
	removeLog(ctx, t, o, objs, l, &LogTombstone{Kind: LogTombstoneKind, ID: s.ID, Base: s.sum,
		First: l.First, Last: l.Last, Head: last.Sum, Pruned: now.UTC()}, now, rep)
}

// removeLog removes a kept set's log: first its tombstone (unless ts is
// nil: it is stored already), so that readers take what an interrupted
// removal leaves as gone, then every object under the log's prefix. A
// log with any object under retention is left whole and reported.
func removeLog(ctx context.Context, t storage.Target, o PruneOptions, objs []storage.ObjectInfo, l PrunedLog, ts *LogTombstone, now time.Time, rep *PruneReport) {
	fail := func(err error) {
		rep.Errors = append(rep.Errors, fmt.Errorf("prune the log of %s on target %s: %w", l.ID, t.Name(), err))
	}
	s := withRetention(ctx, t, Set{Objects: objs})
	switch {
	case isLocked(s, now):
		rep.LockedLogs = append(rep.LockedLogs, l)
		return
	case o.DryRun:
		rep.Logs = append(rep.Logs, l)
		return
	}
	if ts != nil {
		if err := writeLogTombstone(ctx, t, o.Signer, rep.Cluster, *ts); err != nil {
			fail(err)
			return
		}
	}
	locked, errs := deleteObjects(ctx, t, s.Objects)
	for _, err := range errs {
		fail(err)
	}
	switch {
	case locked:
		rep.LockedLogs = append(rep.LockedLogs, l)
	case len(errs) == 0:
		rep.Logs = append(rep.Logs, l)
	}
}

// configDuration writes a duration as a config holds it: "72h", "90m".
func configDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
