package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestApplyPolicy(t *testing.T) {
	// Times are given newest first, as Prune passes them.
	cases := []struct {
		name   string
		policy Policy
		times  []string
		// want maps an index into times to the rules that keep it; any
		// index not listed is removed.
		want map[int][]string
	}{
		{
			name:   "empty policy keeps everything",
			policy: Policy{},
			times:  []string{"2024-01-03T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"},
			want:   map[int][]string{0: {RuleNoPolicy}, 1: {RuleNoPolicy}, 2: {RuleNoPolicy}},
		},
		{
			name:   "keep last",
			policy: Policy{KeepLast: 2},
			times:  []string{"2024-01-01T05:00:00Z", "2024-01-01T04:00:00Z", "2024-01-01T03:00:00Z", "2024-01-01T02:00:00Z"},
			want:   map[int][]string{0: {RuleLast}, 1: {RuleLast}},
		},
		{
			name:   "keep last, more than there are",
			policy: Policy{KeepLast: 10},
			times:  []string{"2024-01-01T05:00:00Z", "2024-01-01T04:00:00Z"},
			want:   map[int][]string{0: {RuleLast}, 1: {RuleLast}},
		},
		{
			name:   "hourly keeps the newest of each hour",
			policy: Policy{KeepHourly: 2},
			times: []string{
				"2024-01-01T12:30:00Z",
				"2024-01-01T11:50:00Z", "2024-01-01T11:10:00Z",
				"2024-01-01T10:40:00Z", "2024-01-01T10:05:00Z",
			},
			want: map[int][]string{0: {RuleHourly}, 1: {RuleHourly}},
		},
		{
			name:   "daily, with the oldest kept while buckets are left",
			policy: Policy{KeepDaily: 5},
			times: []string{
				"2024-01-03T23:00:00Z", "2024-01-03T01:00:00Z",
				"2024-01-02T12:00:00Z",
				"2024-01-01T18:00:00Z", "2024-01-01T06:00:00Z",
			},
			// Three days use three buckets; with two left, the oldest set
			// is kept as well, as restic does.
			want: map[int][]string{0: {RuleDaily}, 2: {RuleDaily}, 3: {RuleDaily}, 4: {RuleDaily}},
		},
		{
			name:   "weekly buckets are ISO weeks, across a year end",
			policy: Policy{KeepWeekly: 2},
			times: []string{
				"2021-01-04T00:00:00Z", // 2021-W01
				"2021-01-03T00:00:00Z", // 2020-W53
				"2020-12-28T00:00:00Z", // 2020-W53
				"2020-12-27T00:00:00Z", // 2020-W52
			},
			want: map[int][]string{0: {RuleWeekly}, 1: {RuleWeekly}},
		},
		{
			name:   "monthly and yearly",
			policy: Policy{KeepMonthly: 2, KeepYearly: 3},
			times: []string{
				"2024-03-15T00:00:00Z",
				"2024-02-20T00:00:00Z", "2024-02-01T00:00:00Z",
				"2023-12-31T00:00:00Z", "2023-06-01T00:00:00Z",
				"2022-05-01T00:00:00Z",
				"2021-01-01T00:00:00Z",
			},
			want: map[int][]string{
				0: {RuleMonthly, RuleYearly},
				1: {RuleMonthly},
				3: {RuleYearly},
				5: {RuleYearly},
			},
		},
		{
			name:   "a set kept by several rules names them all",
			policy: Policy{KeepLast: 1, KeepDaily: 2, KeepWeekly: 1},
			times:  []string{"2024-05-08T10:00:00Z", "2024-05-08T09:00:00Z", "2024-05-07T10:00:00Z", "2024-04-01T10:00:00Z"},
			want: map[int][]string{
				0: {RuleLast, RuleDaily, RuleWeekly},
				2: {RuleDaily},
			},
		},
		{
			name:   "buckets are UTC, whatever the zone of the time",
			policy: Policy{KeepDaily: 1, KeepLast: 0},
			// 23:30 at UTC-5 is 04:30 UTC the next day: the same UTC day
			// as the newer set, so only the newer one is kept.
			times: []string{"2024-01-02T06:00:00Z", "2024-01-01T23:30:00-05:00", "2024-01-01T12:00:00Z"},
			want:  map[int][]string{0: {RuleDaily}},
		},
		{
			name:   "a negative count keeps every bucket",
			policy: Policy{KeepDaily: -1},
			times:  []string{"2024-01-03T10:00:00Z", "2024-01-03T09:00:00Z", "2024-01-02T10:00:00Z", "2023-01-01T10:00:00Z"},
			want:   map[int][]string{0: {RuleDaily}, 2: {RuleDaily}, 3: {RuleDaily}},
		},
		{
			name:   "one yearly bucket goes to the newest set",
			policy: Policy{KeepYearly: 1},
			times:  []string{"2024-01-03T10:00:00Z", "2024-01-02T10:00:00Z", "2023-01-02T10:00:00Z"},
			want:   map[int][]string{0: {RuleYearly}},
		},
		{name: "no sets", policy: Policy{KeepLast: 3}, want: map[int][]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			times := make([]time.Time, len(tc.times))
			for i, s := range tc.times {
				times[i] = ts(s)
			}
			got := applyPolicy(tc.policy, times)
			if len(got) != len(times) {
				t.Fatalf("%d results for %d sets", len(got), len(times))
			}
			for i := range times {
				if want := tc.want[i]; !reflect.DeepEqual(got[i], want) && (len(want) > 0 || len(got[i]) > 0) {
					t.Errorf("set %d (%s): kept by %v, want %v", i, tc.times[i], got[i], want)
				}
			}
		})
	}
}

// TestApplyPolicyNewest: whichever single rule is set, the newest set is
// kept.
func TestApplyPolicyNewest(t *testing.T) {
	for _, p := range []Policy{{KeepLast: 1}, {KeepHourly: 1}, {KeepDaily: 1}, {KeepWeekly: 1}, {KeepMonthly: 1}, {KeepYearly: 1}} {
		got := applyPolicy(p, []time.Time{ts("2024-01-02T00:00:00Z"), ts("2024-01-01T00:00:00Z")})
		if len(got[0]) == 0 {
			t.Errorf("policy %+v drops the newest set", p)
		}
	}
}

// pruneEnv is a target with six complete sets over four days, oldest first.
type pruneEnv struct {
	f    *fixture
	disk *storage.Local
	hook *hookTarget
	sets []builtSet
}

func newPruneEnv(t *testing.T) *pruneEnv {
	t.Helper()
	e := &pruneEnv{f: newFixture(t), disk: newLocal(t, "usb")}
	e.hook = &hookTarget{Target: e.disk}
	for _, c := range []string{
		"2024-04-01T10:00:00Z", "2024-04-02T09:00:00Z", "2024-04-02T21:00:00Z",
		"2024-04-03T08:00:00Z", "2024-04-04T07:00:00Z", "2024-04-04T19:00:00Z",
	} {
		e.sets = append(e.sets, e.f.write(setSpec{created: ts(c)}, e.disk))
	}
	return e
}

func (e *pruneEnv) ids(idx ...int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, e.sets[i].id)
	}
	return out
}

func keptIDs(r *PruneReport) []string {
	var out []string
	for _, k := range r.Kept {
		out = append(out, k.ID)
	}
	return out
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name        string
		policy      Policy
		wantKept    []int // newest first
		wantRemoved []int // oldest first
	}{
		{"keep last 2", Policy{KeepLast: 2}, []int{5, 4}, []int{0, 1, 2, 3}},
		{"keep daily 2", Policy{KeepDaily: 2}, []int{5, 3}, []int{0, 1, 2, 4}},
		{"keep daily 3 and last 1", Policy{KeepLast: 1, KeepDaily: 3}, []int{5, 3, 2}, []int{0, 1, 4}},
		{"empty policy", Policy{}, []int{5, 4, 3, 2, 1, 0}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newPruneEnv(t)
			rep, err := Prune(ctx, e.hook, testCluster, tc.policy, PruneOptions{Trust: testTrust, Signer: testSigner})
			if err != nil || len(rep.Errors) > 0 {
				t.Fatalf("Prune: %v, %v", err, rep.Errors)
			}
			if got := keptIDs(rep); !slices.Equal(got, e.ids(tc.wantKept...)) {
				t.Errorf("kept %v, want %v", got, e.ids(tc.wantKept...))
			}
			if !slices.Equal(rep.Removed, e.ids(tc.wantRemoved...)) {
				t.Errorf("removed %v, want %v", rep.Removed, e.ids(tc.wantRemoved...))
			}
			sets, err := Sets(ctx, e.disk, testCluster)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, s := range sets {
				if !s.Complete || len(s.Objects) != 4 {
					t.Errorf("set %s left with %d objects, complete %v", s.ID, len(s.Objects), s.Complete)
				}
				left = append(left, s.ID)
			}
			slices.Reverse(left)
			if !slices.Equal(left, e.ids(tc.wantKept...)) {
				t.Errorf("sets left %v, want %v", left, e.ids(tc.wantKept...))
			}
			for _, id := range e.ids(tc.wantRemoved...) {
				tomb, err := readTombstone(ctx, e.disk, testTrust, testCluster, id)
				if err != nil {
					t.Errorf("no tombstone for %s: %v", id, err)
					continue
				}
				for _, s := range e.sets {
					if s.id == id && tomb.SHA256 != s.sums["usb"] {
						t.Errorf("tombstone of %s records %s, manifest was %s", id, tomb.SHA256, s.sums["usb"])
					}
				}
			}
			// The gaps are deliberate: the chain still verifies, and so
			// does every set left.
			if ps := VerifyChain(ctx, e.disk, testTrust, testCluster); len(ps) > 0 {
				t.Errorf("chain after prune:\n%s", problemLines(ps))
			}
			ids, _ := e.f.keys()
			for _, id := range left {
				if r := Verify(ctx, e.disk, testCluster, id, VerifyOptions{Trust: testTrust, Identities: ids}); !r.OK() {
					t.Errorf("set %s after prune:\n%s", id, problemLines(r.Problems))
				}
			}
		})
	}
}

// TestPruneOrder: tombstone, then manifest, then the other objects, so an
// interrupted prune never leaves a complete set with objects missing.
func TestPruneOrder(t *testing.T) {
	e := newPruneEnv(t)
	rep, err := Prune(context.Background(), e.hook, testCluster, Policy{KeepLast: 5}, PruneOptions{Trust: testTrust, Signer: testSigner})
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("Prune: %v, %v", err, rep.Errors)
	}
	id := e.sets[0].id
	calls := e.hook.naming(id)
	want := append(removalHead(id),
		"delete "+manifest.Key(testCluster, id, manifest.EtcdObject),
		"delete "+manifest.SignatureKey(manifest.Key(testCluster, id, manifest.ManifestObject)),
		"delete "+manifest.Key(testCluster, id, manifest.StateObject),
	)
	if !slices.Equal(calls, want) {
		t.Fatalf("calls\n  %s\nwant\n  %s", strings.Join(calls, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestPruneDryRun(t *testing.T) {
	e := newPruneEnv(t)
	old := filepath.Join(e.disk.Dir(), ".kdr-tmp-leftover")
	if err := os.WriteFile(old, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-72 * time.Hour)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	inc := e.f.write(setSpec{noManifest: true}, e.disk)
	before := keys(t, e.disk)
	rep, err := Prune(context.Background(), e.hook, testCluster, Policy{KeepLast: 1},
		PruneOptions{Trust: testTrust, Signer: testSigner, DryRun: true, Now: time.Now().Add(48 * time.Hour)})
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("Prune: %v, %v", err, rep.Errors)
	}
	if !rep.DryRun || len(rep.Removed) != 5 || !slices.Equal(rep.IncompleteRemoved, []string{inc.id}) || rep.CleanedUp != 0 {
		t.Errorf("dry run reports removed %v, incomplete %v, cleaned %d", rep.Removed, rep.IncompleteRemoved, rep.CleanedUp)
	}
	if calls := e.hook.recorded(""); len(calls) > 0 {
		t.Errorf("dry run wrote or deleted: %v", calls)
	}
	if after := keys(t, e.disk); !slices.Equal(before, after) {
		t.Errorf("keys changed:\n%v\n%v", before, after)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("dry run cleaned up a leftover: %v", err)
	}
}

func TestPruneIncomplete(t *testing.T) {
	cases := []struct {
		name        string
		grace       time.Duration
		since       time.Duration // Now minus the set's write time
		wantRemoved bool
	}{
		{"older than the grace", time.Hour, 2 * time.Hour, true},
		{"younger than the grace", time.Hour, 30 * time.Minute, false},
		{"default grace keeps a day-old set", 0, 23 * time.Hour, false},
		{"default grace removes an older set", 0, 25 * time.Hour, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e := newPruneEnv(t)
			inc := e.f.write(setSpec{noManifest: true}, e.disk)
			// Leftovers of interrupted uploads, as old as the set.
			tmp := filepath.Join(e.disk.Dir(), ".kdr-tmp-upload")
			if err := os.WriteFile(tmp, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			grace := tc.grace
			if grace == 0 {
				grace = DefaultIncompleteGrace
			}
			old := time.Now().Add(-grace - time.Hour)
			if err := os.Chtimes(tmp, old, old); err != nil {
				t.Fatal(err)
			}
			rep, err := Prune(ctx, e.hook, testCluster, Policy{}, PruneOptions{Trust: testTrust, Signer: testSigner, IncompleteGrace: tc.grace, Now: time.Now().Add(tc.since)})
			if err != nil || len(rep.Errors) > 0 {
				t.Fatalf("Prune: %v, %v", err, rep.Errors)
			}
			sets, err := Sets(ctx, e.disk, testCluster)
			if err != nil {
				t.Fatal(err)
			}
			present := slices.ContainsFunc(sets, func(s Set) bool { return s.ID == inc.id })
			if tc.wantRemoved {
				if present || !slices.Equal(rep.IncompleteRemoved, []string{inc.id}) || len(rep.IncompleteKept) != 0 {
					t.Errorf("present %v, removed %v, kept %v; want it removed", present, rep.IncompleteRemoved, rep.IncompleteKept)
				}
			} else if !present || len(rep.IncompleteRemoved) != 0 || !slices.Equal(rep.IncompleteKept, []string{inc.id}) {
				t.Errorf("present %v, removed %v, kept %v; want it kept", present, rep.IncompleteRemoved, rep.IncompleteKept)
			}
			if len(rep.Kept) != len(e.sets) {
				t.Errorf("empty policy kept %d of %d complete sets", len(rep.Kept), len(e.sets))
			}
			if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) || rep.CleanedUp != 1 {
				t.Errorf("leftover upload not cleaned up (stat: %v, cleaned %d)", err, rep.CleanedUp)
			}
		})
	}
}

func TestPruneLocked(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		// lock sets up the hook for the oldest set's keys.
		lock          func(h *hookTarget, id string)
		wantDeletes   bool // whether any delete of the set was tried
		wantComplete  bool // whether the set stays complete
		wantLockedIDs int
	}{
		{
			name: "manifest under retention",
			lock: func(h *hookTarget, id string) {
				h.deleteErr = func(key string) error {
					if key == manifest.Key(testCluster, id, manifest.ManifestObject) {
						return lockedErr(key)
					}
					return nil
				}
			},
			wantDeletes: true, wantComplete: true, wantLockedIDs: 1,
		},
		{
			name: "retention seen in the listing",
			lock: func(h *hookTarget, id string) {
				h.retainUntil = func(key string) time.Time {
					if strings.Contains(key, id) {
						return time.Now().Add(24 * time.Hour)
					}
					return time.Time{}
				}
			},
			wantDeletes: false, wantComplete: true, wantLockedIDs: 1,
		},
		{
			name: "an object under retention after the manifest went",
			lock: func(h *hookTarget, id string) {
				h.deleteErr = func(key string) error {
					if key == manifest.Key(testCluster, id, manifest.EtcdObject) {
						return lockedErr(key)
					}
					return nil
				}
			},
			wantDeletes: true, wantComplete: false, wantLockedIDs: 1,
		},
		{
			name: "expired retention does not hold",
			lock: func(h *hookTarget, id string) {
				h.retainUntil = func(string) time.Time { return time.Now().Add(-time.Hour) }
			},
			wantDeletes: true, wantComplete: false, wantLockedIDs: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newPruneEnv(t)
			id := e.sets[0].id
			tc.lock(e.hook, id)
			rep, err := Prune(ctx, e.hook, testCluster, Policy{KeepLast: 5}, PruneOptions{Trust: testTrust, Signer: testSigner})
			if err != nil || len(rep.Errors) > 0 {
				t.Fatalf("Prune: %v, errors %v; locked objects are not errors", err, rep.Errors)
			}
			if len(rep.Locked) != tc.wantLockedIDs || (tc.wantLockedIDs > 0 && rep.Locked[0] != id) {
				t.Errorf("locked %v, want %d (%s)", rep.Locked, tc.wantLockedIDs, id)
			}
			if tc.wantLockedIDs > 0 && slices.Contains(rep.Removed, id) {
				t.Errorf("locked set %s reported removed", id)
			}
			deletes := 0
			for _, c := range e.hook.recorded("delete ") {
				if strings.Contains(c, id) {
					deletes++
				}
			}
			if (deletes > 0) != tc.wantDeletes {
				t.Errorf("%d deletes of the set, want some: %v", deletes, tc.wantDeletes)
			}
			_, _, lerr := LoadManifest(ctx, e.disk, testTrust, testCluster, id)
			if (lerr == nil) != tc.wantComplete {
				t.Errorf("set complete: %v, want %v", lerr == nil, tc.wantComplete)
			}
		})
	}
}

// TestPruneInterrupted: a delete that fails after the manifest went leaves
// an incomplete set, never a complete one with a hole; the next prune
// past the grace finishes the job.
func TestPruneInterrupted(t *testing.T) {
	ctx := context.Background()
	e := newPruneEnv(t)
	id := e.sets[0].id
	boom := errors.New("disk went away")
	e.hook.deleteErr = func(key string) error {
		if key == manifest.Key(testCluster, id, manifest.StateObject) {
			return boom
		}
		return nil
	}
	rep, err := Prune(ctx, e.hook, testCluster, Policy{KeepLast: 5}, PruneOptions{Trust: testTrust, Signer: testSigner})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) != 1 || !errors.Is(rep.Errors[0], boom) || slices.Contains(rep.Removed, id) {
		t.Fatalf("errors %v, removed %v", rep.Errors, rep.Removed)
	}
	if _, err := Resolve(ctx, e.disk, testTrust, testCluster, id); !errors.Is(err, ErrUnknownBackup) {
		t.Fatalf("half-pruned set still resolves: %v", err)
	}
	if ps := VerifyChain(ctx, e.disk, testTrust, testCluster); len(ps) > 0 {
		t.Errorf("chain after a half prune:\n%s", problemLines(ps))
	}
	e.hook.deleteErr = nil
	rep, err = Prune(ctx, e.hook, testCluster, Policy{KeepLast: 5}, PruneOptions{Trust: testTrust, Signer: testSigner, Now: time.Now().Add(25 * time.Hour)})
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("second prune: %v, %v", err, rep.Errors)
	}
	if !slices.Equal(rep.IncompleteRemoved, []string{id}) {
		t.Fatalf("second prune removed incomplete %v, want %s", rep.IncompleteRemoved, id)
	}
}

func TestPruneRefuses(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name    string
		ctx     context.Context
		target  storage.Target
		cluster string
		o       PruneOptions
		is      error
	}{
		{"invalid cluster", context.Background(), newLocal(t, "usb"), "", PruneOptions{Trust: testTrust, Signer: testSigner}, nil},
		{"negative grace", context.Background(), newLocal(t, "usb"), testCluster, PruneOptions{Trust: testTrust, Signer: testSigner, IncompleteGrace: -time.Second}, nil},
		{"unlistable target", context.Background(), missingLocal(t, "gone"), testCluster, PruneOptions{Trust: testTrust, Signer: testSigner}, storage.ErrPermanent},
		{"cancelled", cancelled, newLocal(t, "usb"), testCluster, PruneOptions{Trust: testTrust, Signer: testSigner}, context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Prune(tc.ctx, tc.target, tc.cluster, Policy{KeepLast: 1}, tc.o)
			if rep == nil {
				t.Fatal("nil report")
			}
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("error %v, want one matching %v", err, tc.is)
			}
		})
	}
}
