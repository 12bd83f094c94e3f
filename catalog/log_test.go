package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// writeLog stores n segments of per revisions each after the set, signed
// by signer, as the capture does, one a minute, and returns their head
// keys.
func (f *fixture) writeLog(tg storage.Target, b builtSet, n, per int, signer *manifest.Signer) []string {
	f.t.Helper()
	ctx := context.Background()
	_, rcpts := f.keys()
	m := b.manifests[tg.Name()]
	next := m.Etcd.Revision + 1
	var prev *manifest.SegmentLink
	var keys []string
	seen := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	for range n {
		var enc manifest.LogEncoder
		enc.AddLease(manifest.LeaseRecord{ID: 9, TTL: 60, Revision: next})
		for r := next; r < next+int64(per); r++ {
			err := enc.AddRevision(manifest.LogRevision{Revision: r, Seen: seen, Events: []manifest.LogEvent{
				{Key: []byte(fmt.Sprintf("/registry/k%d", r%7)), Value: []byte("v"), CreateRevision: r, Version: 1, Lease: 9},
			}})
			if err != nil {
				f.t.Fatal(err)
			}
		}
		first, last := next, next+int64(per)-1
		var body bytes.Buffer
		w, err := manifest.NewObjectWriter(&body, rcpts, manifest.WriteOptions{Name: manifest.SegmentBodyName(first, last), Kind: manifest.KindLog})
		if err != nil {
			f.t.Fatal(err)
		}
		if _, err := enc.WriteTo(w); err != nil {
			f.t.Fatal(err)
		}
		obj, err := w.Close()
		if err != nil {
			f.t.Fatal(err)
		}
		h := &manifest.SegmentHead{FormatVersion: manifest.FormatVersion, Cluster: testCluster,
			Base: manifest.Link{ID: b.id, SHA256: b.sums[tg.Name()]}, First: first, Last: last, Prev: prev,
			SeenFirst: seen, SeenLast: seen, Body: obj, Leases: 1, Writer: "test"}
		raw, err := h.Marshal()
		if err != nil {
			f.t.Fatal(err)
		}
		if err := tg.Put(ctx, manifest.SegmentBodyKey(testCluster, b.id, first, last), bytes.NewReader(body.Bytes()), storage.PutOptions{IfAbsent: true}); err != nil {
			f.t.Fatal(err)
		}
		key := manifest.SegmentHeadKey(testCluster, b.id, first)
		if err := manifest.PutSegmentHead(ctx, tg, key, raw, signer); err != nil {
			f.t.Fatal(err)
		}
		keys = append(keys, key)
		prev = h.Link(manifest.Sum(raw))
		next = last + 1
		seen = seen.Add(time.Minute)
	}
	return keys
}

func TestLogWhole(t *testing.T) {
	f := newFixture(t)
	usb := newLocal(t, "usb")
	b := f.write(setSpec{}, usb)
	f.writeLog(usb, b, 4, 5, testSigner)
	ctx := context.Background()
	ids, _ := f.keys()
	m := b.manifests["usb"]
	c, err := ChainAt(ctx, usb, testTrust, testCluster, m.Etcd.Revision+12)
	if err != nil {
		t.Fatal(err)
	}
	if c.Broken != nil || len(c.Segments) != 4 || c.End() != m.Etcd.Revision+20 {
		t.Fatalf("chain: %d segments to %d, broken %v", len(c.Segments), c.End(), c.Broken)
	}
	if segs, err := c.Covering(m.Etcd.Revision + 12); err != nil || len(segs) != 3 {
		t.Fatalf("Covering = %d segments, %v", len(segs), err)
	}
	if _, err := ChainAt(ctx, usb, testTrust, testCluster, m.Etcd.Revision+21); !errors.Is(err, ErrGap) {
		t.Fatalf("ChainAt past the end = %v, want ErrGap", err)
	}
	rep := VerifyLog(ctx, usb, testTrust, testCluster, b.id, ids)
	if !rep.OK() || len(rep.Checked) != 1 {
		t.Fatalf("VerifyLog: %v %v", rep.Problems, rep.Checked)
	}
}

// TestLogDamage: every way a segment can be wrong is refused by the
// reader, naming the segment, and the revisions before it stay readable.
func TestLogDamage(t *testing.T) {
	other, _ := mustSigningKey()
	for _, tc := range []struct {
		name string
		// broken: the chain reader stops before segment 2 (of 0..3);
		// else only reading the body finds it.
		broken bool
		want   error
		spoil  func(t *testing.T, f *fixture, tg storage.Target, b builtSet, keys []string)
	}{
		{"missing head", true, ErrGap, func(t *testing.T, f *fixture, tg storage.Target, b builtSet, keys []string) {
			deleteObject(t, tg, keys[2])
		}},
		{"unsigned head", true, manifest.ErrUnsigned, func(t *testing.T, f *fixture, tg storage.Target, b builtSet, keys []string) {
			deleteObject(t, tg, manifest.SignatureKey(keys[2]))
		}},
		{"head changed", true, manifest.ErrUntrusted, func(t *testing.T, f *fixture, tg storage.Target, b builtSet, keys []string) {
			replaceObject(t, tg, keys[2], func(d []byte) []byte { return bytes.Replace(d, []byte(`"test"`), []byte(`"evil"`), 1) })
		}},
		{"foreign head", true, manifest.ErrUntrusted, func(t *testing.T, f *fixture, tg storage.Target, b builtSet, keys []string) {
			raw := readObject(t, tg, keys[2])
			deleteObject(t, tg, manifest.SignatureKey(keys[2]))
			deleteObject(t, tg, keys[2])
			if err := manifest.PutSegmentHead(context.Background(), tg, keys[2], raw, other); err != nil {
				t.Fatal(err)
			}
		}},
		{"reordered", true, manifest.ErrInvalid, func(t *testing.T, f *fixture, tg storage.Target, b builtSet, keys []string) {
			raw3 := readObject(t, tg, keys[3])
			deleteObject(t, tg, manifest.SignatureKey(keys[2]))
			deleteObject(t, tg, keys[2])
			if err := manifest.PutSegmentHead(context.Background(), tg, keys[2], raw3, testSigner); err != nil {
				t.Fatal(err)
			}
		}},
		{"damaged body", false, ErrDamaged, func(t *testing.T, f *fixture, tg storage.Target, b builtSet, keys []string) {
			h := headAt(t, tg, keys[2])
			replaceObject(t, tg, manifest.SegmentBodyKey(testCluster, b.id, h.First, h.Last), flipByte(func(n int) int { return n / 2 }))
		}},
		{"missing body", false, ErrMissing, func(t *testing.T, f *fixture, tg storage.Target, b builtSet, keys []string) {
			h := headAt(t, tg, keys[2])
			deleteObject(t, tg, manifest.SegmentBodyKey(testCluster, b.id, h.First, h.Last))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			usb := newLocal(t, "usb")
			b := f.write(setSpec{}, usb)
			keys := f.writeLog(usb, b, 4, 5, testSigner)
			tc.spoil(t, f, usb, b, keys)
			ctx := context.Background()
			ids, _ := f.keys()
			m := b.manifests["usb"]
			c, err := ReadChain(ctx, usb, testTrust, m, b.sums["usb"])
			if err != nil {
				t.Fatal(err)
			}
			if tc.broken {
				if c.Broken == nil || !errors.Is(c.Broken, tc.want) || len(c.Segments) != 2 {
					t.Fatalf("chain: %d segments, broken %v; want 2, %v", len(c.Segments), c.Broken, tc.want)
				}
				// Named by its key, or by its revisions when it is missing.
				if first := fmt.Sprint(m.Etcd.Revision + 11); !strings.Contains(c.Broken.Error(), first) {
					t.Errorf("%q does not name the segment starting at %s", c.Broken.Error(), first)
				}
			}
			rep := VerifyLog(ctx, usb, testTrust, testCluster, b.id, ids)
			if len(rep.Problems) != 1 || !errors.Is(rep.Problems[0], tc.want) {
				t.Fatalf("VerifyLog problems %v, want one %v", rep.Problems, tc.want)
			}
			if want := fmt.Sprintf("restorable to revision %d", m.Etcd.Revision+10); !strings.Contains(rep.Problems[0].Reason, want) {
				t.Errorf("%q does not say %q", rep.Problems[0].Reason, want)
			}
			// The revisions before it stay restorable.
			if _, err := ChainAt(ctx, usb, testTrust, testCluster, m.Etcd.Revision+10); err != nil && tc.broken {
				t.Errorf("ChainAt before the damage: %v", err)
			}
		})
	}
}

func headAt(t *testing.T, tg storage.Target, key string) *manifest.SegmentHead {
	t.Helper()
	h, err := manifest.ParseSegmentHead(readObject(t, tg, key))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestChainAtPrefersTheChainThatHoldsIt: a revision just after a newer
// set's recorded revision may already be inside that set's snapshot, so
// the older chain that runs past it is the exact one to restore from.
func TestChainAtPrefersTheChainThatHoldsIt(t *testing.T) {
	f := newFixture(t)
	usb := newLocal(t, "usb")
	old := f.write(setSpec{}, usb)
	f.writeLog(usb, old, 4, 5, testSigner) // revisions R+1..R+20
	newer := f.write(setSpec{editManifest: func(m *manifest.Manifest) {
		m.Etcd.Revision = old.manifests["usb"].Etcd.Revision + 15
	}}, usb)
	f.writeLog(usb, newer, 2, 5, testSigner) // its revision +1 .. +10
	ctx := context.Background()
	r0 := old.manifests["usb"].Etcd.Revision
	for _, tc := range []struct {
		rev  int64
		want string
	}{
		{r0 + 3, old.id},
		{r0 + 16, old.id},   // after the newer set's recorded revision, still in the older log
		{r0 + 20, old.id},   // the older log's end
		{r0 + 21, newer.id}, // only the newer log holds it
		{r0 + 25, newer.id},
	} {
		c, err := ChainAt(ctx, usb, testTrust, testCluster, tc.rev)
		if err != nil {
			t.Fatalf("ChainAt(%d): %v", tc.rev, err)
		}
		if c.Base.ID != tc.want {
			t.Errorf("ChainAt(%d) = the log of %s, want %s", tc.rev, c.Base.ID, tc.want)
		}
	}
}
