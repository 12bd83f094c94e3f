package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// t0 is the clock of the window tests: revision r is seen, and a set at
// revision r created, r seconds after it.
var t0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

func seenAt(rev int64) time.Time { return t0.Add(time.Duration(rev) * time.Second) }

// windowSet stores a signed set at revision rev, created when rev was
// seen, and returns the log that continues it.
func (f *fixture) windowSet(tg storage.Target, rev int64, signer *manifest.Signer) (builtSet, *testenv.CapturedLog) {
	f.t.Helper()
	b := f.write(setSpec{created: seenAt(rev), editManifest: func(m *manifest.Manifest) { m.Etcd.Revision = rev }}, tg)
	_, rcpts := f.keys()
	return b, &testenv.CapturedLog{Target: tg, Key: &testenv.SigningKey{Signer: signer}, Recipients: rcpts,
		Base: b.manifests[tg.Name()], BaseSum: b.sums[tg.Name()]}
}

// seen are revisions first..last, each creating one key when seenAt says.
func seen(first, last int64) []manifest.LogRevision { return testenv.Creates(first, last, seenAt) }

// windowTarget holds, oldest first:
//
//	set 50, no log (before the log started)
//	set 100: 101..120, 121..150
//	set 140: 141..180, 181..190 (its head removed), 191..200
//	set 210, no log (removed, or the agent was down)
//	set 230: 231..240
//	set 300 signed by a key nobody trusts, with its log
func windowTarget(t *testing.T) storage.Target {
	t.Helper()
	f := newFixture(t)
	usb := newLocal(t, "usb")
	f.windowSet(usb, 50, testSigner)
	b, l := f.windowSet(usb, 100, testSigner)
	l.Append(t, seen(101, 120), nil, nil)
	l.Append(t, seen(121, 150), nil, nil)
	_, l = f.windowSet(usb, 140, testSigner)
	l.Append(t, seen(141, 180), nil, nil)
	removed := l.Append(t, seen(181, 190), nil, nil)
	l.Append(t, seen(191, 200), nil, nil)
	deleteObject(t, usb, removed)
	f.windowSet(usb, 210, testSigner)
	_, l = f.windowSet(usb, 230, testSigner)
	l.Append(t, seen(231, 240), nil, nil)
	// A set and log that a stranger signed, newer than every other.
	stranger, _ := mustSigningKey()
	b, l = f.windowSet(usb, 300, stranger)
	l.Append(t, seen(301, 310), nil, nil)
	key := manifest.Key(testCluster, b.id, manifest.ManifestObject)
	deleteObject(t, usb, manifest.SignatureKey(key))
	deleteObject(t, usb, key)
	if err := manifest.PutSigned(context.Background(), usb, key, b.raw["usb"], manifest.NamespaceManifest, stranger, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return usb
}

// TestReadWindow: the window of a real captured log, its gaps named with
// why, and every revision of it restorable exactly when no gap holds it.
func TestReadWindow(t *testing.T) {
	usb := windowTarget(t)
	ctx := context.Background()
	w, err := ReadWindow(ctx, usb, testTrust, testCluster, WindowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	point := func(rev int64) Point { return Point{rev, seenAt(rev)} }
	if w.Sets != 5 || w.From != point(50) || w.To != point(240) || w.Contiguous != point(230) || w.LogFrom == nil || *w.LogFrom != point(101) {
		t.Errorf("window %d sets, from %+v to %+v, contiguous from %+v, log from %+v; want 5, 50, 240, 230, 101", w.Sets, w.From, w.To, w.Contiguous, w.LogFrom)
	}
	if w.Broken != nil || w.Lost() != 2 || w.Length() != 10*time.Second {
		t.Errorf("broken %v, %d lost, length %v; want nil, 2, 10s", w.Broken, w.Lost(), w.Length())
	}
	want := []struct {
		first, last int64
		expected    bool
		problem     error
		why         string
	}{
		{51, 99, true, nil, "has no captured log"},
		{181, 209, false, ErrGap, "stops at revision 180: target usb: " + testCluster},
		{211, 229, false, nil, "(revision 210) has no captured log"},
	}
	if len(w.Gaps) != len(want) {
		t.Fatalf("gaps %+v, want %d", w.Gaps, len(want))
	}
	for i, g := range w.Gaps {
		wg := want[i]
		if g.First != wg.first || g.Last != wg.last || g.Expected != wg.expected || !g.After.Equal(seenAt(wg.first-1)) || !g.Before.Equal(seenAt(wg.last+1)) {
			t.Errorf("gap %d: %+v, want %d..%d expected %v, between the times of %d and %d", i, g, wg.first, wg.last, wg.expected, wg.first-1, wg.last+1)
		}
		if !strings.Contains(g.Why, wg.why) || strings.Contains(g.Why, "\n") {
			t.Errorf("gap %d says %q, want one line with %q", i, g.Why, wg.why)
		}
		if (g.Problem == nil) != (wg.problem == nil) || wg.problem != nil && !errors.Is(g.Problem, wg.problem) {
			t.Errorf("gap %d: problem %v, want %v", i, g.Problem, wg.problem)
		}
	}
	// The window is what a restore reaches: ChainAt finds a log for every
	// revision outside the gaps and refuses every one inside.
	inGap := func(rev int64) bool {
		for _, g := range w.Gaps {
			if rev >= g.First && rev <= g.Last {
				return true
			}
		}
		return false
	}
	for rev := w.From.Revision - 1; rev <= w.To.Revision+1; rev++ {
		_, err := ChainAt(ctx, usb, testTrust, testCluster, rev)
		switch {
		case rev < w.From.Revision:
			if !errors.Is(err, ErrNoBackup) {
				t.Errorf("revision %d, before the window: %v, want ErrNoBackup", rev, err)
			}
		case rev > w.To.Revision || inGap(rev):
			if !errors.Is(err, ErrGap) {
				t.Errorf("revision %d, outside the window: %v, want ErrGap", rev, err)
			}
		case err != nil:
			t.Errorf("revision %d, inside the window: %v", rev, err)
		}
	}
}

// TestReadWindowEnds: what a target without a window, or with a broken
// newest log, reads as.
func TestReadWindowEnds(t *testing.T) {
	ctx := context.Background()
	if _, err := ReadWindow(ctx, newLocal(t, "usb"), testTrust, testCluster, WindowOptions{}); !errors.Is(err, ErrNoBackup) {
		t.Errorf("an empty target: %v, want ErrNoBackup", err)
	}
	if _, err := ReadWindow(ctx, newLocal(t, "usb"), testTrust, "Not/A/Cluster", WindowOptions{}); err == nil {
		t.Error("an invalid cluster name was read")
	}
	f := newFixture(t)
	usb := newLocal(t, "usb")
	_, l := f.windowSet(usb, 100, testSigner)
	l.Append(t, seen(101, 110), nil, nil)
	damaged := l.Append(t, seen(111, 120), nil, nil)
	l.Append(t, seen(121, 130), nil, nil)
	replaceObject(t, usb, damaged, func(d []byte) []byte { return []byte(strings.Replace(string(d), `"test"`, `"evil"`, 1)) })
	w, err := ReadWindow(ctx, usb, testTrust, testCluster, WindowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w.To.Revision != 110 || w.Broken == nil || !errors.Is(w.Broken, manifest.ErrUntrusted) || len(w.Gaps) != 0 {
		t.Errorf("to %d, broken %v, gaps %v; want 110, the changed head, none", w.To.Revision, w.Broken, w.Gaps)
	}
}

// countingTarget counts the objects read from a target.
type countingTarget struct {
	storage.Target
	gets atomic.Int64
}

func (c *countingTarget) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.gets.Add(1)
	return c.Target.Get(ctx, key)
}

// TestWindowCache: a cached window reads nothing again while the listing
// stays, and sees a removed segment at once.
func TestWindowCache(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	usb := &countingTarget{Target: newLocal(t, "usb")}
	_, l := f.windowSet(usb, 100, testSigner)
	l.Append(t, seen(101, 110), nil, nil)
	l.Append(t, seen(111, 120), nil, nil)
	_, l = f.windowSet(usb, 115, testSigner)
	middle := l.Append(t, seen(116, 130), nil, nil)
	l.Append(t, seen(131, 140), nil, nil)
	var cache ChainCache
	read := func() *Window {
		t.Helper()
		w, err := ReadWindow(ctx, usb, testTrust, testCluster, WindowOptions{Cache: &cache})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	first := read()
	if first.To.Revision != 140 || len(first.Gaps) != 0 {
		t.Fatalf("window to %d with gaps %v, want 140 and none", first.To.Revision, first.Gaps)
	}
	before := usb.gets.Load()
	if again := read(); again.To != first.To || usb.gets.Load() != before {
		t.Errorf("the second read: to %+v after %d reads, want %+v after none", again.To, usb.gets.Load()-before, first.To)
	}
	deleteObject(t, usb, middle)
	w := read()
	if w.To.Revision != 120 || w.Broken == nil || len(w.Gaps) != 0 {
		t.Errorf("after a head was removed: to %d, broken %v, gaps %v; want 120, broken, none", w.To.Revision, w.Broken, w.Gaps)
	}
	// A pruned set is forgotten.
	cache.keepOnly("usb", testCluster, map[string]bool{})
	if n := len(cache.spans); n != 0 {
		t.Errorf("%d sets remembered after all were pruned", n)
	}
}

// TestWindowOf: how ranges join.
func TestWindowOf(t *testing.T) {
	set := func(id string, rev, end int64) span {
		s := span{id: id, rev: rev, created: seenAt(rev), end: end, endSeen: seenAt(end)}
		if end > rev {
			s.logFrom = &Point{rev + 1, seenAt(rev + 1)}
		}
		return s
	}
	for _, tc := range []struct {
		name       string
		spans      []span
		from, to   int64
		contiguous int64
		gaps       []string
	}{
		{"one point", []span{set("a", 10, 10)}, 10, 10, 10, nil},
		{"one log", []span{set("a", 10, 20)}, 10, 20, 10, nil},
		{"overlapping logs", []span{set("b", 15, 30), set("a", 10, 20)}, 10, 30, 10, nil},
		{"logs that meet", []span{set("a", 10, 20), set("b", 21, 30)}, 10, 30, 10, nil},
		{"a log ending early", []span{set("a", 10, 18), set("b", 21, 30)}, 10, 30, 21, []string{"19..20 ends at revision 18, before set b"}},
		{"points", []span{set("a", 10, 10), set("b", 20, 20), set("c", 30, 40)}, 10, 40, 30,
			[]string{"11..19 expected", "21..29 expected"}},
		{"an older log reaching furthest", []span{set("a", 10, 50), set("b", 20, 30), set("c", 52, 60)}, 10, 60, 52,
			[]string{"51..51 the log of a ends at revision 50"}},
		{"two sets at one revision", []span{set("b", 10, 10), set("a", 10, 25)}, 10, 25, 10, nil},
		{"a claimed head", []span{func() span { s := set("a", 10, 18); s.claimed = "h19"; return s }(), set("b", 21, 30)}, 10, 30, 21,
			[]string{"19..20 a writer claimed the next head, h19, and never stored it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := windowOf(testCluster, "usb", tc.spans)
			if w.From.Revision != tc.from || w.To.Revision != tc.to || w.Contiguous.Revision != tc.contiguous {
				t.Errorf("from %d to %d, contiguous from %d; want %d, %d, %d", w.From.Revision, w.To.Revision, w.Contiguous.Revision, tc.from, tc.to, tc.contiguous)
			}
			if !w.To.Time.Equal(seenAt(tc.to)) || !w.From.Time.Equal(seenAt(tc.from)) {
				t.Errorf("times %s..%s, want those of %d..%d", w.From.Time, w.To.Time, tc.from, tc.to)
			}
			var got []string
			for _, g := range w.Gaps {
				s := fmt.Sprintf("%d..%d", g.First, g.Last)
				if g.Expected {
					s += " expected"
				}
				got = append(got, s+" "+g.Why)
			}
			if len(got) != len(tc.gaps) {
				t.Fatalf("gaps %q, want %q", got, tc.gaps)
			}
			for i, g := range got {
				if words := strings.SplitN(tc.gaps[i], " ", 2); !strings.HasPrefix(g, words[0]) || !strings.Contains(g, words[1]) {
					t.Errorf("gap %q, want %q", g, tc.gaps[i])
				}
			}
		})
	}
}
