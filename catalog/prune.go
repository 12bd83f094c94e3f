package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// DefaultIncompleteGrace is how old an incomplete set must be before Prune
// removes it when PruneOptions does not say: far longer than any backup
// runs, so a backup in progress is never taken for a failed one.
const DefaultIncompleteGrace = 24 * time.Hour

// Policy says which complete sets Prune keeps, as restic's forget does:
// KeepLast keeps the newest n sets; each other rule keeps the newest set
// of each of the newest n hours, days, ISO weeks, months or years (UTC)
// that hold a set, plus the oldest set while a rule has buckets unused, so
// the history reaches back as far as the policy allows. A set kept by any
// rule stays. A negative count keeps every bucket. All zero keeps every
// set, and the newest set is always kept.
//
// The captured log of a set is kept as long as the set: a removed set's
// log goes with it, so every revision from the oldest kept set on stays
// restorable and none before it. KeepLog can shorten that: the log of a
// kept set goes once its chain's last segment was seen (SeenLast) longer
// ago than KeepLog, the whole chain at once (a chain is useless without
// its start), and never the log of the newest set, which is the live one.
// The set then restores only at its own revision.
type Policy struct {
	KeepLast    int
	KeepHourly  int
	KeepDaily   int
	KeepWeekly  int
	KeepMonthly int
	KeepYearly  int
	// KeepLog, when positive, is how long after its last revision was
	// seen the log of a kept set is kept (retention.keepLog).
	KeepLog time.Duration
}

// Empty reports whether no rule that keeps sets is set: KeepLog alone
// keeps every set.
func (p Policy) Empty() bool {
	p.KeepLog = 0
	return p == Policy{}
}

// PruneOptions change how Prune runs.
type PruneOptions struct {
	// DryRun reports what would be removed and changes nothing.
	DryRun bool
	// IncompleteGrace is how long since its newest object was written an
	// incomplete set is left alone, in case a backup is still writing it
	// (default DefaultIncompleteGrace). Also the age of the leftovers
	// (temp files, multipart uploads) the target cleans up.
	IncompleteGrace time.Duration
	// Now is the time the grace is measured from (default time.Now()).
	Now time.Time
	// Trust decides which sets are ours: only those are counted by the
	// policy or removed.
	Trust *manifest.Trust
	// Signer signs the tombstones; a prune that removes a set needs it.
	Signer *manifest.Signer
}

// KeptSet is a complete set that Prune keeps, and why.
type KeptSet struct {
	ID      string
	Created time.Time
	// Rules name what kept it: "last", "hourly", "daily", "weekly",
	// "monthly", "yearly", "newest" or "no policy".
	Rules []string
	// Reason is Rules as one phrase, for people.
	Reason string
}

// PruneReport says what Prune did on one target, or in a dry run would do.
type PruneReport struct {
	Target  string
	Cluster string
	DryRun  bool
	// Kept are the complete sets the policy keeps, newest first.
	Kept []KeptSet
	// Removed are the complete sets removed, oldest first.
	Removed []string
	// Logs are the captured logs removed, by the ID of their set: with
	// their set, or alone by Policy.KeepLog.
	Logs []PrunedLog
	// LockedLogs are the logs KeepLog gives up that are (in whole or in
	// part) under retention: kept by the target, not an error.
	LockedLogs []PrunedLog
	// Locked are the sets the policy or the grace gives up but that are
	// (in whole or in part) under retention: kept by the target, not an
	// error. A set whose manifest is locked stays complete.
	Locked []string
	// IncompleteRemoved are the sets without a manifest removed because
	// they were older than the grace.
	IncompleteRemoved []string
	// IncompleteKept are the sets without a manifest younger than the
	// grace: perhaps a backup still running.
	IncompleteKept []string
	// Foreign are the sets with a manifest that no trusted key signed:
	// never counted, never removed, reported with the reason.
	Foreign []ForeignSet
	// CleanedUp is how many leftovers of interrupted uploads the target
	// removed.
	CleanedUp int
	// Errors are what failed; the rest of the prune went on.
	Errors []error
}

// ForeignSet is a set on a target whose manifest is not ours.
type ForeignSet struct {
	ID     string
	Reason string
}

// Prune applies the retention policy to the complete sets of a cluster on
// a target and removes incomplete sets older than the grace, then asks the
// target to clean up leftovers of interrupted uploads.
//
// A complete set is removed in an order that never leaves a complete set
// with missing objects: first a tombstone (TombstoneKey) recording the
// sha256 of its manifest, so the next set's chain link stays explainable;
// then the manifest, which makes the set incomplete; then the other
// objects, its captured log among them. An interrupted prune leaves an
// incomplete set that the next prune removes.
//
// Then Policy.KeepLog shortens the logs of the kept sets but the newest:
// a log tombstone (LogTombstoneKey) first, recording the chain's
// revisions and its last head's sha256, so that readers take the log as
// removed on purpose; then every object under the log's prefix. An
// interrupted removal is finished by the next prune.
//
// Failures to remove one set are in the report's Errors and do not stop
// the others. The returned error is for failures that stop the whole
// prune (invalid arguments, a target that cannot be listed, a cancelled
// context); the report is returned with it, holding what was done.
func Prune(ctx context.Context, t storage.Target, cluster string, p Policy, o PruneOptions) (*PruneReport, error) {
	rep := &PruneReport{Target: t.Name(), Cluster: cluster, DryRun: o.DryRun}
	if !manifest.ValidCluster(cluster) {
		return rep, fmt.Errorf("prune: cluster name %q is not valid", cluster)
	}
	if o.IncompleteGrace < 0 {
		return rep, fmt.Errorf("prune: negative grace %s", o.IncompleteGrace)
	}
	if !o.DryRun && o.Signer == nil {
		return rep, errors.New("prune: no signing key configured (signing.keyFile): removing a set writes a signed tombstone")
	}
	grace := o.IncompleteGrace
	if grace == 0 {
		grace = DefaultIncompleteGrace
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	sets, err := Sets(ctx, t, cluster)
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	var complete []trustedSet
	var incomplete []Set
	for i := len(sets) - 1; i >= 0; i-- { // newest first
		s := sets[i]
		if !s.Complete {
			incomplete = append(incomplete, s)
			continue
		}
		// Only a set whose manifest a trusted key signed counts, or the
		// word of a planted manifest would decide what is deleted.
		m, sum, err := LoadManifest(ctx, t, o.Trust, cluster, s.ID)
		switch {
		case IsForeign(err):
			rep.Foreign = append(rep.Foreign, ForeignSet{ID: s.ID, Reason: err.Error()})
		case errors.Is(err, storage.ErrNotExist):
			// Removed since the listing.
		case err != nil:
			// Counting without it could remove a set the policy keeps.
			return rep, fmt.Errorf("prune: %w", err)
		default:
			complete = append(complete, trustedSet{Set: s, m: m, sum: sum})
		}
	}

	times := make([]time.Time, len(complete))
	for i, s := range complete {
		// The ID is the creation time to the millisecond in UTC: the same
		// hour, day, week, month and year as the manifest's Created,
		// without reading every manifest.
		times[i], _ = manifest.IDTime(s.ID)
	}
	rules := applyPolicy(p, times)
	var drop, kept []trustedSet
	for i, s := range complete {
		if len(rules[i]) == 0 {
			drop = append(drop, s)
			continue
		}
		kept = append(kept, s)
		rep.Kept = append(rep.Kept, KeptSet{ID: s.ID, Created: times[i], Rules: rules[i], Reason: strings.Join(rules[i], ", ")})
	}

	for i := len(drop) - 1; i >= 0; i-- { // oldest first
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
		s := drop[i]
		s.Set = withRetention(ctx, t, s.Set)
		if isLocked(s.Set, now) {
			rep.Locked = append(rep.Locked, s.ID)
			continue
		}
		var log *PrunedLog
		if len(s.logObjects()) > 0 {
			// Read before the set goes, for the report: the log's
			// revisions are known only from its trusted heads.
			l, _, err := chainLog(ctx, t, o.Trust, s, LogWithSet)
			if err != nil {
				rep.Errors = append(rep.Errors, fmt.Errorf("prune %s on target %s: %w", s.ID, t.Name(), err))
				continue
			}
			log = &l
		}
		if o.DryRun {
			rep.Removed = append(rep.Removed, s.ID)
		} else if !removeComplete(ctx, t, o, s.Set, now, rep) {
			continue
		}
		if log != nil {
			rep.Logs = append(rep.Logs, *log)
		}
	}

	// kept[0] is the newest set: its log is the live one.
	for i := len(kept) - 1; i >= 1; i-- { // oldest first
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
		shortenLog(ctx, t, o, p.KeepLog, kept[i], now, rep)
	}
	slices.SortFunc(rep.Logs, func(a, b PrunedLog) int { return strings.Compare(a.ID, b.ID) })

	for i := len(incomplete) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
		s := incomplete[i]
		// A target that gives no times cannot say a set is old: keep it.
		if s.Newest.IsZero() || now.Sub(s.Newest) <= grace {
			rep.IncompleteKept = append(rep.IncompleteKept, s.ID)
			continue
		}
		switch {
		case isLocked(s, now):
			rep.Locked = append(rep.Locked, s.ID)
		case o.DryRun:
			rep.IncompleteRemoved = append(rep.IncompleteRemoved, s.ID)
		default:
			locked, errs := deleteObjects(ctx, t, withLayout(s))
			rep.Errors = append(rep.Errors, errs...)
			switch {
			case locked:
				rep.Locked = append(rep.Locked, s.ID)
			case len(errs) == 0:
				rep.IncompleteRemoved = append(rep.IncompleteRemoved, s.ID)
			}
		}
	}

	if !o.DryRun {
		n, err := t.CleanupIncomplete(ctx, grace)
		rep.CleanedUp = n
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("clean up interrupted uploads on target %s: %w", t.Name(), err))
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	return rep, nil
}

// withRetention fills in the retention of the set's objects where the
// listing did not say it (S3 listings never do; asking costs a request per
// object, so only sets about to be removed are asked about).
func withRetention(ctx context.Context, t storage.Target, s Set) Set {
	objs := make([]storage.ObjectInfo, len(s.Objects))
	for i, o := range s.Objects {
		objs[i] = o
		if o.RetainUntil.IsZero() {
			if info, err := t.Stat(ctx, o.Key); err == nil {
				objs[i].RetainUntil = info.RetainUntil
			}
		}
	}
	s.Objects = objs
	return s
}

// isLocked reports whether any object of the set is under retention now,
// so that nothing of it is touched: deleting the unlocked part would only
// break the set.
func isLocked(s Set, now time.Time) bool {
	for _, o := range s.Objects {
		if o.RetainUntil.After(now) {
			return true
		}
	}
	return false
}

// removeComplete removes one complete set: tombstone, manifest, objects.
// It returns whether the set is gone whole.
func removeComplete(ctx context.Context, t storage.Target, o PruneOptions, s Set, now time.Time, rep *PruneReport) bool {
	fail := func(err error) {
		rep.Errors = append(rep.Errors, fmt.Errorf("prune %s on target %s: %w", s.ID, t.Name(), err))
	}
	_, sum, err := LoadManifest(ctx, t, o.Trust, s.Cluster, s.ID)
	if err != nil {
		fail(err)
		return false
	}
	if ts, err := readTombstone(ctx, t, o.Trust, s.Cluster, s.ID); err != nil || ts.SHA256 != sum {
		if err := writeTombstone(ctx, t, o.Signer, s.Cluster, Tombstone{ID: s.ID, SHA256: sum, Pruned: now.UTC()}); err != nil {
			fail(err)
			return false
		}
	}
	mkey := manifest.Key(s.Cluster, s.ID, manifest.ManifestObject)
	err = t.Delete(ctx, mkey)
	switch {
	case errors.Is(err, storage.ErrLocked):
		// The tombstone stays: it is only read when the manifest is gone.
		rep.Locked = append(rep.Locked, s.ID)
		return false
	case err != nil:
		fail(fmt.Errorf("delete %s: %w", mkey, err))
		return false
	}
	var rest []storage.ObjectInfo
	for _, o := range s.Objects {
		if o.Key != mkey {
			rest = append(rest, o)
		}
	}
	locked, errs := deleteObjects(ctx, t, rest)
	for _, err := range errs {
		fail(err)
	}
	switch {
	case locked:
		rep.Locked = append(rep.Locked, s.ID)
	case len(errs) == 0:
		rep.Removed = append(rep.Removed, s.ID)
		return true
	}
	return false
}

// deleteObjects deletes every object, going on past failures. Objects
// under retention are not errors; locked says whether there were any.
// withLayout adds the set's object names that the listing did not show:
// an upload cut off mid-way is not listed, and deleting its key is what
// makes a target drop the unfinished upload (S3 lists those reliably only
// by exact key).
func withLayout(s Set) []storage.ObjectInfo {
	objs := append([]storage.ObjectInfo(nil), s.Objects...)
	for _, name := range []string{manifest.StateObject, manifest.EtcdObject} {
		key := manifest.Key(s.Cluster, s.ID, name)
		if !slices.ContainsFunc(objs, func(o storage.ObjectInfo) bool { return o.Key == key }) {
			objs = append(objs, storage.ObjectInfo{Key: key})
		}
	}
	return objs
}

func deleteObjects(ctx context.Context, t storage.Target, objs []storage.ObjectInfo) (locked bool, errs []error) {
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return locked, append(errs, err)
		}
		err := t.Delete(ctx, o.Key)
		switch {
		case errors.Is(err, storage.ErrLocked):
			locked = true
		case err != nil:
			errs = append(errs, fmt.Errorf("delete %s: %w", o.Key, err))
		}
	}
	return locked, errs
}

// Rule names in KeptSet.Rules.
const (
	RuleLast     = "last"
	RuleHourly   = "hourly"
	RuleDaily    = "daily"
	RuleWeekly   = "weekly"
	RuleMonthly  = "monthly"
	RuleYearly   = "yearly"
	RuleNewest   = "newest"
	RuleNoPolicy = "no policy"
)

// applyPolicy returns, for creation times sorted newest first, the rules
// that keep each; an empty entry means the set goes.
func applyPolicy(p Policy, times []time.Time) [][]string {
	kept := make([][]string, len(times))
	if len(times) == 0 {
		return kept
	}
	if p.Empty() {
		for i := range kept {
			kept[i] = []string{RuleNoPolicy}
		}
		return kept
	}
	buckets := []struct {
		name  string
		count int
		key   func(t time.Time, nr int) int
		last  int
		any   bool
	}{
		{RuleLast, p.KeepLast, func(_ time.Time, nr int) int { return nr }, 0, false},
		{RuleHourly, p.KeepHourly, func(t time.Time, _ int) int {
			return t.Year()*1000000 + int(t.Month())*10000 + t.Day()*100 + t.Hour()
		}, 0, false},
		{RuleDaily, p.KeepDaily, func(t time.Time, _ int) int { return t.Year()*10000 + int(t.Month())*100 + t.Day() }, 0, false},
		{RuleWeekly, p.KeepWeekly, func(t time.Time, _ int) int { y, w := t.ISOWeek(); return y*100 + w }, 0, false},
		{RuleMonthly, p.KeepMonthly, func(t time.Time, _ int) int { return t.Year()*100 + int(t.Month()) }, 0, false},
		{RuleYearly, p.KeepYearly, func(t time.Time, _ int) int { return t.Year() }, 0, false},
	}
	oldest := len(times) - 1
	for nr, created := range times {
		created = created.UTC()
		for i := range buckets {
			b := &buckets[i]
			if b.count == 0 {
				continue
			}
			k := b.key(created, nr)
			// The oldest set is kept too while a rule has buckets left,
			// so the history is as long as the policy allows.
			if !b.any || k != b.last || nr == oldest {
				kept[nr] = append(kept[nr], b.name)
				b.last, b.any = k, true
				if b.count > 0 {
					b.count--
				}
			}
		}
	}
	if len(kept[0]) == 0 {
		kept[0] = []string{RuleNewest}
	}
	return kept
}
