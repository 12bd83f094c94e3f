package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// logSets is how many sets a logEnv holds, a day apart, the newest a day
// old.
const logSets = 5

// logEnv is a target whose sets each continue in a captured log written
// as the capture writes it: set i is at revision setRev(i) and its chain
// runs on for a day, in segments of 4 revisions, 2 revisions past the
// next set's revision (the capture stops only once that set is stored),
// its last revision seen when the next set was taken; the newest set's
// chain is 2 segments long and was last seen 8 hours ago.
type logEnv struct {
	f    *fixture
	disk *storage.Local
	hook *hookTarget
	now  time.Time
	sets []builtSet
	// heads are the head keys of each set's chain.
	heads [][]string
}

func setRev(i int) int64 { return int64(10 * (i + 1)) }

// chainEnd is the last revision of set i's chain.
func chainEnd(i int) int64 {
	if i == logSets-1 {
		return setRev(i) + 8
	}
	return setRev(i) + 12
}

func newLogEnv(t *testing.T) *logEnv {
	t.Helper()
	e := &logEnv{f: newFixture(t), disk: newLocal(t, "usb"), now: time.Now().UTC().Truncate(time.Minute)}
	e.hook = &hookTarget{Target: e.disk}
	_, rcpts := e.f.keys()
	for i := range logSets {
		created := e.now.Add(-time.Duration(logSets-i) * 24 * time.Hour)
		rev := setRev(i)
		b := e.f.write(setSpec{created: created, editManifest: func(m *manifest.Manifest) { m.Etcd.Revision = rev }}, e.disk)
		l := &testenv.CapturedLog{Target: e.disk, Key: &testenv.SigningKey{Signer: testSigner, Trust: testTrust},
			Recipients: rcpts, Base: b.manifests["usb"], BaseSum: b.sums["usb"]}
		var heads []string
		for first := rev + 1; first <= chainEnd(i); first += 4 {
			var revs []manifest.LogRevision
			for r := first; r < first+4; r++ {
				revs = append(revs, manifest.LogRevision{Revision: r, Seen: created.Add(time.Duration(r-rev) * 2 * time.Hour),
					Events: []manifest.LogEvent{{Key: fmt.Appendf(nil, "/registry/k%d", r%5), Value: []byte("v"), CreateRevision: r, Version: 1}}})
			}
			heads = append(heads, l.Append(t, revs, nil, nil))
		}
		e.sets = append(e.sets, b)
		e.heads = append(e.heads, heads)
	}
	return e
}

// lastHeadSum is the sha256 of the last head of set i's chain.
func (e *logEnv) lastHeadSum(t *testing.T, i int) string {
	t.Helper()
	return manifest.Sum(readObject(t, e.disk, e.heads[i][len(e.heads[i])-1]))
}

// logKeys are the keys under set i's log prefix.
func (e *logEnv) logKeys(t *testing.T, i int) []string {
	t.Helper()
	var out []string
	for _, k := range keys(t, e.disk) {
		if strings.HasPrefix(k, manifest.LogPrefix(testCluster, e.sets[i].id)) {
			out = append(out, k)
		}
	}
	return out
}

func (e *logEnv) chain(t *testing.T, i int) *Chain {
	t.Helper()
	b := e.sets[i]
	c, err := ReadChain(context.Background(), e.disk, testTrust, b.manifests["usb"], b.sums["usb"])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantLog is a PrunedLog by set index.
type wantLog struct {
	set    int
	reason string
}

func (e *logEnv) prunedLogs(ws []wantLog) []PrunedLog {
	out := make([]PrunedLog, len(ws))
	for i, w := range ws {
		out[i] = PrunedLog{ID: e.sets[w.set].id, First: setRev(w.set) + 1, Last: chainEnd(w.set), Reason: w.reason}
	}
	return out
}

// TestPruneLog: prune keeps the log back to the oldest kept full set (or
// as far as keepLog allows) and no further: every revision from there on
// is restorable and none before; the logs of removed sets go with them,
// keepLog removes whole chains of kept sets, which then restore at their
// own revision only, and the newest chain is never touched.
func TestPruneLog(t *testing.T) {
	keepLog := func(d string) string { return "keepLog " + d }
	cases := []struct {
		name     string
		policy   Policy
		wantLogs []wantLog
		// kept are the sets left; whole those whose chain is left whole.
		kept, whole []int
	}{
		{
			name: "the policy alone", policy: Policy{KeepLast: 3},
			wantLogs: []wantLog{{0, LogWithSet}, {1, LogWithSet}},
			kept:     []int{2, 3, 4}, whole: []int{2, 3, 4},
		},
		{
			name: "keepLog removes the chains last seen before it", policy: Policy{KeepLast: 3, KeepLog: 36 * time.Hour},
			wantLogs: []wantLog{{0, LogWithSet}, {1, LogWithSet}, {2, keepLog("36h")}},
			kept:     []int{2, 3, 4}, whole: []int{3, 4},
		},
		{
			name: "keepLog never removes the newest chain", policy: Policy{KeepLast: 3, KeepLog: time.Hour},
			wantLogs: []wantLog{{0, LogWithSet}, {1, LogWithSet}, {2, keepLog("1h")}, {3, keepLog("1h")}},
			kept:     []int{2, 3, 4}, whole: []int{4},
		},
		{
			name: "keepLog alone keeps every set", policy: Policy{KeepLog: 50 * time.Hour},
			wantLogs: []wantLog{{0, keepLog("50h")}, {1, keepLog("50h")}},
			kept:     []int{0, 1, 2, 3, 4}, whole: []int{2, 3, 4},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e := newLogEnv(t)
			newest := e.logKeys(t, logSets-1)
			sums := map[int]string{}
			for i := range logSets {
				sums[i] = e.lastHeadSum(t, i)
			}
			rep, err := Prune(ctx, e.hook, testCluster, tc.policy, PruneOptions{Trust: testTrust, Signer: testSigner, Now: e.now})
			if err != nil || len(rep.Errors) > 0 {
				t.Fatalf("Prune: %v, %v", err, rep.Errors)
			}
			if want := e.prunedLogs(tc.wantLogs); !slices.Equal(rep.Logs, want) {
				t.Errorf("removed logs\n  %+v\nwant\n  %+v", rep.Logs, want)
			}
			if got := keptIDs(rep); len(got) != len(tc.kept) {
				t.Errorf("kept %v, want sets %v", got, tc.kept)
			}
			if !slices.Equal(e.logKeys(t, logSets-1), newest) {
				t.Error("the newest chain changed")
			}
			for i := range logSets {
				lk := e.logKeys(t, i)
				c := e.chain(t, i)
				switch {
				case slices.Contains(tc.whole, i):
					if c.Broken != nil || c.End() != chainEnd(i) {
						t.Errorf("set %d: chain to %d, broken %v; want it whole to %d", i, c.End(), c.Broken, chainEnd(i))
					}
				case len(lk) > 0 || len(c.Segments) > 0 || c.Broken != nil:
					t.Errorf("set %d: log left: %d segments, broken %v, keys %v", i, len(c.Segments), c.Broken, lk)
				}
				ts, err := ReadLogTombstone(ctx, e.disk, testTrust, e.sets[i].manifests["usb"], e.sets[i].sums["usb"])
				if err != nil {
					t.Fatal(err)
				}
				byKeepLog := slices.Contains(tc.kept, i) && !slices.Contains(tc.whole, i)
				switch {
				case byKeepLog && ts == nil:
					t.Errorf("set %d: log removed by keepLog without a tombstone", i)
				case byKeepLog && (ts.First != setRev(i)+1 || ts.Last != chainEnd(i) || ts.Head != sums[i] || !ts.Pruned.Equal(e.now)):
					t.Errorf("set %d: tombstone %+v, want revisions %d..%d, head %s", i, ts, setRev(i)+1, chainEnd(i), sums[i])
				case !byKeepLog && ts != nil:
					t.Errorf("set %d: a log tombstone, but its log was not removed by keepLog", i)
				}
				if byKeepLog {
					var r Report
					if !checkPrunedLog(ctx, e.disk, testTrust, e.sets[i].manifests["usb"], e.sets[i].sums["usb"], &r) ||
						len(r.Checked) != 1 || !strings.HasPrefix(r.Checked[0], "log removed by prune (tombstone): revisions ") {
						t.Errorf("set %d: verify reports %v %v", i, r.Checked, r.Problems)
					}
				}
			}
			// Restorable: each kept set at its own revision, and every
			// revision a whole chain holds; nothing else.
			for r := int64(1); r <= chainEnd(logSets-1)+1; r++ {
				want := false
				for i := range logSets {
					at := slices.Contains(tc.kept, i) && r == setRev(i)
					in := slices.Contains(tc.whole, i) && r > setRev(i) && r <= chainEnd(i)
					want = want || at || in
				}
				c, err := ChainAt(ctx, e.disk, testTrust, testCluster, r)
				switch {
				case want && err != nil:
					t.Errorf("revision %d is not restorable: %v", r, err)
				case !want && err == nil:
					t.Errorf("revision %d is restorable from %s, though its log is gone", r, c.Base.ID)
				case !want && !errors.Is(err, ErrGap) && !errors.Is(err, ErrNoBackup):
					t.Errorf("revision %d: %v, want ErrGap or ErrNoBackup", r, err)
				case err == nil && (r < c.Base.Etcd.Revision || r > c.End()):
					t.Errorf("revision %d: chain of %s holds %d..%d", r, c.Base.ID, c.Base.Etcd.Revision, c.End())
				}
			}
			if ps := VerifyChain(ctx, e.disk, testTrust, testCluster); len(ps) > 0 {
				t.Errorf("chain after prune:\n%s", problemLines(ps))
			}
		})
	}
}

// TestPruneLogDryRun: a dry run reports the logs it would remove, and
// changes nothing.
func TestPruneLogDryRun(t *testing.T) {
	e := newLogEnv(t)
	before := keys(t, e.disk)
	rep, err := Prune(context.Background(), e.hook, testCluster, Policy{KeepLast: 3, KeepLog: 36 * time.Hour},
		PruneOptions{Trust: testTrust, DryRun: true, Now: e.now})
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("Prune: %v, %v", err, rep.Errors)
	}
	want := e.prunedLogs([]wantLog{{0, LogWithSet}, {1, LogWithSet}, {2, "keepLog 36h"}})
	if !slices.Equal(rep.Logs, want) {
		t.Errorf("dry run reports logs\n  %+v\nwant\n  %+v", rep.Logs, want)
	}
	if calls := e.hook.recorded(""); len(calls) > 0 {
		t.Errorf("dry run wrote or deleted: %v", calls)
	}
	if after := keys(t, e.disk); !slices.Equal(before, after) {
		t.Errorf("keys changed:\n%v\n%v", before, after)
	}
}

// TestPruneSetWithLog: a removed set goes whole, its log with it, in the
// safe order: tombstone, manifest, then every other object under its
// prefix, the log's among them. No log tombstone: the set's covers it.
func TestPruneSetWithLog(t *testing.T) {
	ctx := context.Background()
	e := newLogEnv(t)
	id := e.sets[0].id
	prefix := manifest.SetPrefix(testCluster, id)
	var stored []string
	for _, k := range keys(t, e.disk) {
		if strings.HasPrefix(k, prefix) {
			stored = append(stored, k)
		}
	}
	if len(e.logKeys(t, 0)) == 0 {
		t.Fatal("the set has no log to remove")
	}
	rep, err := Prune(ctx, e.hook, testCluster, Policy{KeepLast: logSets - 1}, PruneOptions{Trust: testTrust, Signer: testSigner, Now: e.now})
	if err != nil || len(rep.Errors) > 0 || !slices.Equal(rep.Removed, []string{id}) {
		t.Fatalf("Prune: %v, %v, removed %v", err, rep.Errors, rep.Removed)
	}
	calls := e.hook.naming(id)
	head := removalHead(id)
	if len(calls) < len(head) || !slices.Equal(calls[:len(head)], head) {
		t.Fatalf("calls\n  %s\nwant them to start with\n  %s", strings.Join(calls, "\n  "), strings.Join(head, "\n  "))
	}
	var deleted []string
	for _, c := range calls[2:] {
		k, ok := strings.CutPrefix(c, "delete ")
		if !ok {
			t.Errorf("after the tombstone: %s", c)
		}
		deleted = append(deleted, k)
	}
	slices.Sort(deleted)
	if !slices.Equal(deleted, stored) {
		t.Errorf("deleted\n  %s\nstored were\n  %s", strings.Join(deleted, "\n  "), strings.Join(stored, "\n  "))
	}
	for _, k := range keys(t, e.disk) {
		if strings.HasPrefix(k, prefix) || k == LogTombstoneKey(testCluster, id) {
			t.Errorf("left after the set was removed: %s", k)
		}
	}
}

// TestPruneLogOrder: keepLog writes the log's tombstone, then deletes
// every object of the log and nothing else of the set.
func TestPruneLogOrder(t *testing.T) {
	e := newLogEnv(t)
	logKeys := e.logKeys(t, 0)
	rep, err := Prune(context.Background(), e.hook, testCluster, Policy{KeepLog: 84 * time.Hour}, PruneOptions{Trust: testTrust, Signer: testSigner, Now: e.now})
	if err != nil || len(rep.Errors) > 0 || len(rep.Logs) != 1 || len(rep.Removed) != 0 {
		t.Fatalf("Prune: %v, %v, logs %v, removed %v", err, rep.Errors, rep.Logs, rep.Removed)
	}
	want := []string{
		"put " + manifest.SignatureKey(LogTombstoneKey(testCluster, e.sets[0].id)),
		"put " + LogTombstoneKey(testCluster, e.sets[0].id),
	}
	for _, k := range logKeys {
		want = append(want, "delete "+k)
	}
	if calls := e.hook.recorded(""); !slices.Equal(calls, want) {
		t.Fatalf("calls\n  %s\nwant\n  %s", strings.Join(calls, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestPruneLogLocked: a log with an object under retention is left
// whole, reported, not an error, and gets no tombstone.
func TestPruneLogLocked(t *testing.T) {
	e := newLogEnv(t)
	prefix := manifest.LogPrefix(testCluster, e.sets[0].id)
	e.hook.retainUntil = func(key string) time.Time {
		if key == e.heads[0][1] {
			return e.now.Add(time.Hour)
		}
		return time.Time{}
	}
	rep, err := Prune(context.Background(), e.hook, testCluster, Policy{KeepLog: 84 * time.Hour}, PruneOptions{Trust: testTrust, Signer: testSigner, Now: e.now})
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("Prune: %v, %v; locked objects are not errors", err, rep.Errors)
	}
	if len(rep.Logs) != 0 || len(rep.LockedLogs) != 1 || rep.LockedLogs[0].ID != e.sets[0].id {
		t.Errorf("logs %v, locked %v; want only %s locked", rep.Logs, rep.LockedLogs, e.sets[0].id)
	}
	for _, c := range e.hook.recorded("") {
		if strings.Contains(c, prefix) || strings.Contains(c, LogTombstoneKey(testCluster, e.sets[0].id)) {
			t.Errorf("touched a locked log: %s", c)
		}
	}
	if c := e.chain(t, 0); c.End() != chainEnd(0) {
		t.Errorf("locked chain reaches %d, want %d", c.End(), chainEnd(0))
	}
}

// TestPruneLogInterrupted: a removal cut off after the tombstone leaves
// a log that readers take as pruned, and the next prune finishes it,
// whatever keepLog then says.
func TestPruneLogInterrupted(t *testing.T) {
	ctx := context.Background()
	e := newLogEnv(t)
	b := e.sets[0]
	boom := errors.New("disk went away")
	e.hook.deleteErr = func(key string) error {
		if key == e.heads[0][1] {
			return boom
		}
		return nil
	}
	rep, err := Prune(ctx, e.hook, testCluster, Policy{KeepLog: 84 * time.Hour}, PruneOptions{Trust: testTrust, Signer: testSigner, Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) != 1 || !errors.Is(rep.Errors[0], boom) || len(rep.Logs) != 0 {
		t.Fatalf("errors %v, logs %v", rep.Errors, rep.Logs)
	}
	if pruned, err := LogPruned(ctx, e.disk, testTrust, b.manifests["usb"], b.sums["usb"]); err != nil || !pruned {
		t.Fatalf("LogPruned = %v, %v after the tombstone was written", pruned, err)
	}
	if len(e.logKeys(t, 0)) == 0 {
		t.Fatal("the interrupted removal left nothing to finish")
	}
	e.hook.deleteErr = nil
	rep, err = Prune(ctx, e.hook, testCluster, Policy{}, PruneOptions{Trust: testTrust, Signer: testSigner, Now: e.now})
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("second prune: %v, %v", err, rep.Errors)
	}
	want := []PrunedLog{{ID: b.id, First: setRev(0) + 1, Last: chainEnd(0), Reason: LogLeftover}}
	if !slices.Equal(rep.Logs, want) {
		t.Errorf("second prune removed logs %+v, want %+v", rep.Logs, want)
	}
	if left := e.logKeys(t, 0); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
}

// TestReadLogTombstone: only a tombstone a trusted key signed for the
// manifest it names counts.
func TestReadLogTombstone(t *testing.T) {
	other, _ := mustSigningKey()
	sum := func(c string) string { return strings.Repeat(c, 64) }
	valid := LogTombstone{Kind: LogTombstoneKind, First: 11, Last: 22, Head: sum("b"), Pruned: time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)}
	for _, tc := range []struct {
		name    string
		write   func(t *testing.T, tg storage.Target, b builtSet)
		want    bool
		foreign bool
	}{
		{"none", func(*testing.T, storage.Target, builtSet) {}, false, false},
		{"trusted", func(t *testing.T, tg storage.Target, b builtSet) {
			ts := valid
			ts.ID, ts.Base = b.id, b.sums[tg.Name()]
			if err := writeLogTombstone(context.Background(), tg, testSigner, testCluster, ts); err != nil {
				t.Fatal(err)
			}
		}, true, false},
		{"another manifest's", func(t *testing.T, tg storage.Target, b builtSet) {
			ts := valid
			ts.ID, ts.Base = b.id, sum("c")
			if err := writeLogTombstone(context.Background(), tg, testSigner, testCluster, ts); err != nil {
				t.Fatal(err)
			}
		}, false, false},
		{"signed by a key not trusted", func(t *testing.T, tg storage.Target, b builtSet) {
			ts := valid
			ts.ID, ts.Base = b.id, b.sums[tg.Name()]
			if err := writeLogTombstone(context.Background(), tg, other, testCluster, ts); err != nil {
				t.Fatal(err)
			}
		}, false, true},
		{"a set's tombstone in its place", func(t *testing.T, tg storage.Target, b builtSet) {
			raw := []byte(fmt.Sprintf(`{"id":%q,"sha256":%q,"pruned":"2024-06-01T00:00:00Z"}`+"\n", b.id, b.sums[tg.Name()]))
			if err := manifest.PutSigned(context.Background(), tg, LogTombstoneKey(testCluster, b.id), raw, manifest.NamespaceTombstone, testSigner, storage.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			usb := newLocal(t, "usb")
			b := f.write(setSpec{}, usb)
			tc.write(t, usb, b)
			ts, err := ReadLogTombstone(ctx, usb, testTrust, b.manifests["usb"], b.sums["usb"])
			if tc.foreign != IsForeign(err) || (!tc.foreign && err != nil) {
				t.Fatalf("ReadLogTombstone error %v, want foreign: %v", err, tc.foreign)
			}
			if (ts != nil) != tc.want {
				t.Errorf("tombstone %+v, want one: %v", ts, tc.want)
			}
			pruned, err := LogPruned(ctx, usb, testTrust, b.manifests["usb"], b.sums["usb"])
			if err != nil || pruned != tc.want {
				t.Errorf("LogPruned = %v, %v; want %v", pruned, err, tc.want)
			}
			var r Report
			if got := checkPrunedLog(ctx, usb, testTrust, b.manifests["usb"], b.sums["usb"], &r); got != tc.want || (len(r.Problems) > 0) != tc.foreign {
				t.Errorf("checkPrunedLog = %v, problems %v; want %v, a problem: %v", got, r.Problems, tc.want, tc.foreign)
			}
		})
	}
	// A set's tombstone reader refuses a log tombstone in its place.
	if _, err := parseTombstone([]byte(`{"kind":"log","id":"x","sha256":"`+sum("a")+`","pruned":"2024-06-01T00:00:00Z"}`), "x"); err == nil {
		t.Error("a set's tombstone reader takes a log tombstone")
	}
}

func TestConfigDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		72 * time.Hour: "72h", 90 * time.Minute: "1h30m", time.Minute: "1m", 30 * time.Second: "30s",
		time.Hour + 30*time.Second: "1h0m30s",
	} {
		if got := configDuration(d); got != want {
			t.Errorf("configDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// FuzzParseTombstones: tombstones are verified before they are parsed,
// but parsing must hold up whatever a trusted writer's bug put there, and
// neither kind is ever read as the other.
func FuzzParseTombstones(f *testing.F) {
	f.Add([]byte(`{"kind":"log","id":"x","base":"` + strings.Repeat("a", 64) + `","first":1,"last":2,"head":"` + strings.Repeat("b", 64) + `","pruned":"2024-06-01T00:00:00Z"}`))
	f.Add([]byte(`{"id":"x","sha256":"` + strings.Repeat("a", 64) + `","pruned":"2024-06-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		set, serr := parseTombstone(raw, "x")
		log, lerr := parseLogTombstone(raw, "x")
		if serr == nil && lerr == nil {
			t.Fatalf("read as both a set's tombstone %+v and a log's %+v", set, log)
		}
		if lerr == nil && (log.First <= 0 || log.Last < log.First) {
			t.Fatalf("accepted revisions %d..%d", log.First, log.Last)
		}
	})
}
