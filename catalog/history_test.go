package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// historyT0 is the moment the history fixture's seen times count from.
var historyT0 = time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)

// sec is historyT0 plus s seconds.
func sec(s float64) time.Time { return historyT0.Add(time.Duration(s * float64(time.Second))) }

// historyLog is a captured log of three chains on one target, as an
// agent leaves it (revisions counted from the first set's, r0):
//
//	set A at r0:    r0+1..r0+3 seen 1s..3s | r0+4..r0+6 seen 5s..7s
//	set B at r0+5:  r0+6..r0+8 seen 9s..11s (r0+6 again, read late: it
//	                overlaps A's end, as a new chain does)
//	set C at r0+20: r0+21..r0+22 seen 30s..31s (r0+9..r0+20 are in no log)
//
// The namespace "shop" is created at r0+1, marked for deletion at r0+4
// (its deletionTimestamp set), deleted at r0+6 (in both A and B) and
// created again at r0+8, then updated at r0+21; "shopping" is created at
// r0+3; a configmap of shop is created at r0+2 and deleted at r0+7.
type historyLog struct {
	target storage.Target
	r0     int64
}

// markedShop is shop's value once marked for deletion, as a custom
// resource's JSON would say it (kubevalue reads protobuf too).
const markedShop = `{"metadata":{"name":"shop","deletionTimestamp":"2024-06-01T12:00:05Z"}}`

const (
	nsShop     = "/registry/namespaces/shop"
	nsShopping = "/registry/namespaces/shopping"
	cmShop     = "/registry/configmaps/shop/cm"
)

func newHistoryLog(t *testing.T, f *fixture) historyLog {
	t.Helper()
	usb := newLocal(t, "usb")
	_, rcpts := f.keys()
	a := f.write(setSpec{}, usb)
	r0 := a.manifests["usb"].Etcd.Revision
	put := func(key string, created, version int64, value string) manifest.LogEvent {
		return manifest.LogEvent{Key: []byte(key), Value: []byte(value), CreateRevision: created, Version: version}
	}
	del := func(key string) manifest.LogEvent { return manifest.LogEvent{Delete: true, Key: []byte(key)} }
	rev := func(r int64, seen float64, evs ...manifest.LogEvent) manifest.LogRevision {
		return manifest.LogRevision{Revision: r0 + r, Seen: sec(seen), Events: evs}
	}
	chain := func(b builtSet) *testenv.CapturedLog {
		return &testenv.CapturedLog{Target: usb, Key: &testenv.SigningKey{Signer: testSigner}, Recipients: rcpts,
			Base: b.manifests["usb"], BaseSum: b.sums["usb"]}
	}
	deleteShop := rev(6, 7, del(nsShop))
	la := chain(a)
	la.Append(t, []manifest.LogRevision{
		rev(1, 1, put(nsShop, r0+1, 1, "v1")),
		rev(2, 2, put(cmShop, r0+2, 1, "data")),
		rev(3, 3, put(nsShopping, r0+3, 1, "v1")),
	}, nil, nil)
	la.Append(t, []manifest.LogRevision{
		rev(4, 5, put(nsShop, r0+1, 2, markedShop)),
		rev(5, 6, put("/registry/leases/x", r0+5, 1, "l")),
		deleteShop,
	}, nil, nil)
	b := f.write(setSpec{editManifest: func(m *manifest.Manifest) { m.Etcd.Revision = r0 + 5 }}, usb)
	deleteShop.Seen = sec(9)
	chain(b).Append(t, []manifest.LogRevision{
		deleteShop,
		rev(7, 10, del(cmShop)),
		rev(8, 11, put(nsShop, r0+8, 1, "again")),
	}, nil, nil)
	c := f.write(setSpec{editManifest: func(m *manifest.Manifest) { m.Etcd.Revision = r0 + 20 }}, usb)
	chain(c).Append(t, []manifest.LogRevision{
		rev(21, 30, put(nsShop, r0+8, 2, "edited")),
		rev(22, 31, put("/registry/leases/x", r0+5, 2, "l")),
	}, nil, nil)
	return historyLog{target: usb, r0: r0}
}

func TestRevisionAt(t *testing.T) {
	f := newFixture(t)
	l := newHistoryLog(t, f)
	ids, _ := f.keys()
	r0 := l.r0
	for _, tc := range []struct {
		name     string
		at       time.Time
		rev      int64 // from r0
		seen     float64
		nextSeen float64
		err      error
		says     []string
	}{
		{"the first revision's seen time", sec(1), 1, 1, 2, nil, nil},
		{"exactly a revision's seen time, inside a segment", sec(2), 2, 2, 3, nil, nil},
		{"between two revisions of a segment", sec(2.5), 2, 2, 3, nil, nil},
		{"a segment's last seen time", sec(3), 3, 3, 5, nil, nil},
		{"between two segments", sec(4), 3, 3, 5, nil, nil},
		// The next chain holds the next revision mid-segment.
		{"between two chains that overlap", sec(8), 6, 7, 10, nil, nil},
		{"inside the next chain", sec(10.5), 7, 10, 11, nil, nil},
		{"before the window", sec(0.5), 0, 0, 0, ErrOutsideLog, []string{"before", fmt.Sprint(r0+1, "..", r0+22), "2024-06-01T12:00:01.000000Z"}},
		{"in a gap", sec(20), 0, 0, 0, ErrGap, []string{"gap", fmt.Sprint(r0+9, "..", r0+20), "2024-06-01T12:00:11.000000Z", "2024-06-01T12:00:30.000000Z"}},
		{"at the log's end", sec(31), 0, 0, 0, ErrOutsideLog, []string{"after", fmt.Sprint(r0 + 22), "2024-06-01T12:00:31.000000Z"}},
		{"after the log's end", sec(3600), 0, 0, 0, ErrOutsideLog, []string{"after", fmt.Sprint(r0 + 22)}},
		{"in the future", time.Now().Add(time.Hour), 0, 0, 0, ErrOutsideLog, []string{"future", fmt.Sprint(r0 + 22), "2024-06-01T12:00:31.000000Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := RevisionAt(context.Background(), l.target, testTrust, testCluster, tc.at, ids)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("RevisionAt = %+v, %v; want %v", p, err, tc.err)
				}
				mustSay(t, err.Error(), tc.says...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := PointInTime{At: tc.at, Revision: r0 + tc.rev, Seen: sec(tc.seen), NextSeen: sec(tc.nextSeen)}
			if !p.At.Equal(want.At) || p.Revision != want.Revision || !p.Seen.Equal(want.Seen) || !p.NextSeen.Equal(want.NextSeen) {
				t.Fatalf("RevisionAt = %+v, want %+v", *p, want)
			}
			mustSay(t, p.String(), fmt.Sprint("revision ", want.Revision, ","), stamp(want.Seen), stamp(want.NextSeen))
		})
	}
}

// TestRevisionAtDamagedSegment: the segment that holds the moment is
// read whole, and a damaged one is refused by name.
func TestRevisionAtDamagedSegment(t *testing.T) {
	f := newFixture(t)
	l := newHistoryLog(t, f)
	ids, _ := f.keys()
	m := firstManifest(t, l.target)
	deleteObject(t, l.target, manifest.SegmentBodyKey(testCluster, m.ID, l.r0+1, l.r0+3))
	_, err := RevisionAt(context.Background(), l.target, testTrust, testCluster, sec(2), ids)
	if !errors.Is(err, ErrMissing) {
		t.Fatalf("RevisionAt in a missing segment = %v, want ErrMissing", err)
	}
	mustSay(t, err.Error(), fmt.Sprint(l.r0+1, "..", l.r0+3))
}

func TestHistory(t *testing.T) {
	f := newFixture(t)
	l := newHistoryLog(t, f)
	ids, _ := f.keys()
	r0 := l.r0
	// A change, written from r0: "revision what key version size".
	ch := func(rev int64, what, key string, version int64, size int) string {
		return fmt.Sprintf("%d %s %s %d %d", r0+rev, what, key, version, size)
	}
	for _, tc := range []struct {
		name string
		q    HistoryQuery
		want []string
		// undo is the last delete, the revision marking it and the one
		// to restore to, from r0; nil: none.
		undo *Undo
		gaps int
	}{
		{"exact key, across chains, the overlap once", HistoryQuery{Key: nsShop}, []string{
			ch(1, ChangeCreated, nsShop, 1, 2),
			ch(4, ChangeDeleting, nsShop, 2, len(markedShop)),
			ch(6, ChangeDeleted, nsShop, 0, 0),
			ch(8, ChangeCreated, nsShop, 1, 5),
			ch(21, ChangeUpdated, nsShop, 2, 6),
		}, &Undo{Key: nsShop, Deleted: 6, Marked: 4, Revision: 3}, 1},
		{"a prefix", HistoryQuery{Key: "/registry/namespaces/", Prefix: true}, []string{
			ch(1, ChangeCreated, nsShop, 1, 2),
			ch(3, ChangeCreated, nsShopping, 1, 2),
			ch(4, ChangeDeleting, nsShop, 2, len(markedShop)),
			ch(6, ChangeDeleted, nsShop, 0, 0),
			ch(8, ChangeCreated, nsShop, 1, 5),
			ch(21, ChangeUpdated, nsShop, 2, 6),
		}, &Undo{Key: nsShop, Deleted: 6, Marked: 4, Revision: 3}, 1},
		{"an exact key is not a prefix", HistoryQuery{Key: "/registry/namespaces/shopp"}, nil, nil, 1},
		{"another prefix", HistoryQuery{Key: "/registry/configmaps/shop/", Prefix: true}, []string{
			ch(2, ChangeCreated, cmShop, 1, 4),
			ch(7, ChangeDeleted, cmShop, 0, 0),
		}, &Undo{Key: cmShop, Deleted: 7, Revision: 6}, 1},
		{"revision bounds", HistoryQuery{Key: nsShop, From: Bound{Revision: r0 + 4}, To: Bound{Revision: r0 + 8}}, []string{
			ch(4, ChangeDeleting, nsShop, 2, len(markedShop)),
			ch(6, ChangeDeleted, nsShop, 0, 0),
			ch(8, ChangeCreated, nsShop, 1, 5),
		}, &Undo{Key: nsShop, Deleted: 6, Marked: 4, Revision: 3}, 0},
		// r0+6 is seen at 7s by the chain that read it first, at 9s by the next.
		{"time bounds", HistoryQuery{Key: nsShop, From: Bound{Time: sec(5)}, To: Bound{Time: sec(8)}}, []string{
			ch(4, ChangeDeleting, nsShop, 2, len(markedShop)),
			ch(6, ChangeDeleted, nsShop, 0, 0),
		}, &Undo{Key: nsShop, Deleted: 6, Marked: 4, Revision: 3}, 0},
		{"past the gap", HistoryQuery{Key: nsShop, From: Bound{Revision: r0 + 9}}, []string{
			ch(21, ChangeUpdated, nsShop, 2, 6),
		}, nil, 0},
		// The mark is outside the scan: the undo goes back before the delete.
		{"from after the mark", HistoryQuery{Key: nsShop, From: Bound{Revision: r0 + 5}, To: Bound{Revision: r0 + 6}}, []string{
			ch(6, ChangeDeleted, nsShop, 0, 0),
		}, &Undo{Key: nsShop, Deleted: 6, Revision: 5}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			scan, err := History(context.Background(), l.target, testTrust, testCluster, ids, tc.q, func(c Change) error {
				got = append(got, fmt.Sprintf("%d %s %s %d %d", c.Revision, c.What, c.Key, c.Version, c.ValueSize))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			var wantUndo *Undo
			if u := tc.undo; u != nil {
				wantUndo = &Undo{Key: u.Key, Deleted: r0 + u.Deleted, Revision: r0 + u.Revision}
				if u.Marked > 0 {
					wantUndo.Marked = r0 + u.Marked
				}
			}
			if (scan.Undo == nil) != (wantUndo == nil) || (wantUndo != nil && *scan.Undo != *wantUndo) {
				t.Errorf("undo %+v, want %+v", scan.Undo, wantUndo)
			}
			if scan.Changes != len(tc.want) || len(scan.Gaps) != tc.gaps {
				t.Errorf("scan %+v: want %d changes, %d gaps", scan, len(tc.want), tc.gaps)
			}
			if tc.gaps > 0 && scan.Gaps[0] != (RevisionRange{r0 + 9, r0 + 20}) {
				t.Errorf("gaps %v, want %d..%d", scan.Gaps, r0+9, r0+20)
			}
		})
	}
}

// TestHistoryStopsAtDamage: a history does not skip what it cannot read.
func TestHistoryStopsAtDamage(t *testing.T) {
	f := newFixture(t)
	l := newHistoryLog(t, f)
	ids, _ := f.keys()
	m := firstManifest(t, l.target)
	replaceObject(t, l.target, manifest.SegmentBodyKey(testCluster, m.ID, l.r0+4, l.r0+6), flipByte(func(n int) int { return n / 2 }))
	seen := 0
	_, err := History(context.Background(), l.target, testTrust, testCluster, ids, HistoryQuery{Key: nsShop}, func(Change) error {
		seen++
		return nil
	})
	if !errors.Is(err, ErrDamaged) || seen != 1 {
		t.Fatalf("History over a damaged segment = %v after %d changes, want ErrDamaged after 1", err, seen)
	}
}

// firstManifest is the oldest set's manifest on t.
func firstManifest(t *testing.T, tg storage.Target) *manifest.Manifest {
	t.Helper()
	ids, _, err := completeIDs(context.Background(), tg, testCluster)
	if err != nil || len(ids) == 0 {
		t.Fatalf("sets: %v %v", ids, err)
	}
	m, _, err := LoadManifest(context.Background(), tg, testTrust, testCluster, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustSay(t *testing.T, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%q does not say %q", s, w)
		}
	}
}
