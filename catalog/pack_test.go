package catalog

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// packFixture is a set with nine segments of five revisions, one a
// minute from 2024-06-01T00:00Z, and every revision they hold as read
// before any pack.
type packFixture struct {
	f    *fixture
	t    storage.Target
	b    builtSet
	m    *manifest.Manifest
	sums []string
	revs map[int64]string
}

func newPackFixture(t *testing.T, tg storage.Target) *packFixture {
	f := newFixture(t)
	b := f.write(setSpec{}, tg)
	f.writeLog(tg, b, 9, 5, testSigner)
	p := &packFixture{f: f, t: tg, b: b, m: b.manifests[tg.Name()]}
	c := p.chain(t)
	for _, s := range c.Segments {
		p.sums = append(p.sums, s.Sum)
	}
	p.revs = p.read(t, c)
	return p
}

func (p *packFixture) chain(t *testing.T) *Chain {
	t.Helper()
	c, err := ReadChain(context.Background(), p.t, testTrust, p.m, p.b.sums[p.t.Name()])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// read decodes every revision of the chain's segments.
func (p *packFixture) read(t *testing.T, c *Chain) map[int64]string {
	t.Helper()
	ids, _ := p.f.keys()
	out := map[int64]string{}
	store := NewSegmentStore(p.t)
	for _, s := range c.Segments {
		lr, err := store.Open(context.Background(), s, ids)
		if err != nil {
			t.Fatal(err)
		}
		for {
			r, err := lr.Next()
			if err != nil {
				break
			}
			out[r.Revision] = string(r.Events[0].Key)
		}
	}
	return out
}

// pack runs Pack with 3-minute packs at 00:20 on the segments' clock.
func (p *packFixture) pack(t *testing.T, tg storage.Target) *PackReport {
	t.Helper()
	return p.packAt(t, tg, time.Date(2024, 6, 1, 0, 20, 0, 0, time.UTC))
}

func (p *packFixture) packAt(t *testing.T, tg storage.Target, now time.Time) *PackReport {
	t.Helper()
	rep, err := Pack(context.Background(), tg, testTrust, testCluster, PackOptions{Every: 3 * time.Minute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// same holds a chain to the one before packing: the same heads, every
// revision readable.
func (p *packFixture) same(t *testing.T, c *Chain, packed int) {
	t.Helper()
	if c.Broken != nil || len(c.Segments) != len(p.sums) {
		t.Fatalf("chain: %d segments, broken %v; want %d", len(c.Segments), c.Broken, len(p.sums))
	}
	n := 0
	for i, s := range c.Segments {
		if s.Sum != p.sums[i] {
			t.Fatalf("segment %d: head sum %s, want %s", i, s.Sum, p.sums[i])
		}
		if s.Pack != nil {
			n++
		}
	}
	if n != packed {
		t.Errorf("%d segments read from packs, want %d", n, packed)
	}
	got := p.read(t, c)
	if len(got) != len(p.revs) {
		t.Fatalf("%d revisions readable, want %d", len(got), len(p.revs))
	}
	for r, k := range p.revs {
		if got[r] != k {
			t.Fatalf("revision %d: %q, want %q", r, got[r], k)
		}
	}
}

func looseKeys(t *testing.T, tg storage.Target, m *manifest.Manifest) (loose, packs []string) {
	prefix := manifest.LogPrefix(m.Cluster, m.ID)
	for _, k := range keys(t, tg) {
		switch {
		case !strings.HasPrefix(k, prefix):
		case manifest.IsPackObject(prefix, k):
			packs = append(packs, k)
		default:
			loose = append(loose, k)
		}
	}
	return loose, packs
}

// TestPack: the closed intervals' segments go to one pack each, the loose
// copies go, and the chain reads the same; the interval still open stays
// loose, and a second run changes nothing.
func TestPack(t *testing.T) {
	usb := newLocal(t, "usb")
	p := newPackFixture(t, usb)
	rep := p.pack(t, usb)
	if len(rep.Packs) != 2 || rep.Segments() != 6 || rep.Removed != 18 || len(rep.Errors) != 0 {
		t.Fatalf("report: %+v", rep)
	}
	if first := rep.Packs[0]; first.First != p.m.Etcd.Revision+1 || first.Last != p.m.Etcd.Revision+15 || first.Segments != 3 {
		t.Errorf("first pack: %+v", first)
	}
	p.same(t, p.chain(t), 6)
	loose, packs := looseKeys(t, usb, p.m)
	if len(loose) != 9 || len(packs) != 4 {
		t.Errorf("after the pack: %d loose objects (want the 3 open segments' 9), %d pack objects (want 4)", len(loose), len(packs))
	}
	ids, _ := p.f.keys()
	if rep := VerifyLog(context.Background(), usb, testTrust, testCluster, p.b.id, ids); !rep.OK() {
		t.Errorf("verify after the pack: %v", rep.Problems)
	}
	if again := p.pack(t, usb); len(again.Packs) != 0 || again.Removed != 0 {
		t.Errorf("a second run: %+v", again)
	}
	// A newer set closes this chain: its last interval is packed too,
	// once it has stayed closed one interval (by the target's clock).
	p.f.write(setSpec{}, usb)
	if early := p.packAt(t, usb, time.Now()); len(early.Packs) != 0 {
		t.Errorf("just after a newer set: %+v", early)
	}
	if last := p.packAt(t, usb, time.Now().Add(time.Hour)); len(last.Packs) != 1 || last.Segments() != 3 {
		t.Errorf("once the chain is closed: %+v", last)
	}
	p.same(t, p.chain(t), 9)
}

// TestPackInterrupted: a run on a full disk stores nothing; a run that
// stored the pack object but not its index leaves the chain as it was; the next run checks and keeps the
// object, and a damaged one is refused.
func TestPackInterrupted(t *testing.T) {
	usb := newLocal(t, "usb")
	p := newPackFixture(t, usb)
	now := time.Date(2024, 6, 1, 0, 20, 0, 0, time.UTC)
	rep, err := Pack(context.Background(), putFailing{usb, ".pack"}, testTrust, testCluster, PackOptions{Every: 3 * time.Minute, Now: now})
	if err != nil || len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0].Error(), "no space left on device") || len(rep.Packs) != 0 || rep.Removed != 0 {
		t.Fatalf("a run on a full disk: %+v, %v", rep, err)
	}
	if _, packs := looseKeys(t, usb, p.m); len(packs) != 0 {
		t.Fatalf("a run on a full disk left %v", packs)
	}
	p.same(t, p.chain(t), 0)
	rep, err = Pack(context.Background(), putFailing{usb, ".json"}, testTrust, testCluster, PackOptions{Every: 3 * time.Minute, Now: now})
	if err != nil || len(rep.Errors) != 1 || len(rep.Packs) != 0 || rep.Removed != 0 {
		t.Fatalf("a run whose index fails: %+v, %v", rep, err)
	}
	p.same(t, p.chain(t), 0)

	first, last := p.m.Etcd.Revision+1, p.m.Etcd.Revision+15
	packKey := manifest.PackKey(testCluster, p.b.id, first, last)
	good := readObject(t, usb, packKey)
	replaceObject(t, usb, packKey, flipByte(func(n int) int { return n / 2 }))
	if rep := p.pack(t, usb); len(rep.Errors) != 1 || len(rep.Packs) != 0 || !errors.Is(rep.Errors[0], ErrDamaged) {
		t.Fatalf("a damaged pack left over: %+v", rep)
	}
	p.same(t, p.chain(t), 0)

	replaceObject(t, usb, packKey, func([]byte) []byte { return good })
	if rep := p.pack(t, usb); len(rep.Packs) != 2 || len(rep.Errors) != 0 {
		t.Fatalf("the run after: %+v", rep)
	}
	p.same(t, p.chain(t), 6)
}

// putFailing refuses to store the pack objects whose keys end in suffix:
// ".json", a run stopped between a pack object and its index; ".pack", a
// full disk.
type putFailing struct {
	storage.Target
	suffix string
}

func (f putFailing) Put(ctx context.Context, key string, r io.Reader, o storage.PutOptions) error {
	if strings.Contains(key, "/log/pack-") && strings.HasSuffix(key, f.suffix) {
		io.Copy(io.Discard, r)
		return errors.New("target usb: write: no space left on device")
	}
	return f.Target.Put(ctx, key, r, o)
}

// TestPackReaders: a reader that read the chain before the pack finds
// each segment in the pack; loose copies a pack holds are ignored and the
// next run removes them; a damaged pack is named, a forged index is
// refused.
func TestPackReaders(t *testing.T) {
	ctx := context.Background()
	usb := newLocal(t, "usb")
	p := newPackFixture(t, usb)
	before := p.chain(t)
	headRaw := readObject(t, usb, before.Segments[1].Key)
	p.pack(t, usb)

	// Read as planned before: the loose objects are gone.
	p.same(t, before, 0)
	head, sig, err := NewSegmentStore(usb).Head(ctx, before.Segments[1])
	if err != nil || !bytes.Equal(head, headRaw) || len(sig) == 0 {
		t.Fatalf("head of a segment packed since: %d bytes, %v", len(head), err)
	}

	// A loose head put back inside a pack (a stale writer) is ignored.
	if err := usb.Put(ctx, before.Segments[1].Key, bytes.NewReader(headRaw), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	c := p.chain(t)
	p.same(t, c, 6)
	if len(c.Leftovers) != 1 {
		t.Errorf("leftovers: %v", c.Leftovers)
	}
	if rep := p.pack(t, usb); rep.Removed != 1 {
		t.Errorf("the next run removed %d leftovers, want 1", rep.Removed)
	}

	// A damaged pack is named by the reader.
	first, last := p.m.Etcd.Revision+1, p.m.Etcd.Revision+15
	packKey := manifest.PackKey(testCluster, p.b.id, first, last)
	replaceObject(t, usb, packKey, flipByte(func(n int) int { return n - 10 }))
	ids, _ := p.f.keys()
	rep := VerifyLog(ctx, usb, testTrust, testCluster, p.b.id, ids)
	if rep.OK() || !strings.Contains(rep.Problems[0].Error(), packKey) {
		t.Errorf("verify of a damaged pack: %v", rep.Problems)
	}

	// A forged index (a head it holds not signed by a trusted key) is
	// refused, naming it; the chain stops before it.
	idxKey := manifest.PackIndexKey(testCluster, p.b.id, first, last)
	other, _ := mustSigningKey()
	replaceObject(t, usb, idxKey, func(b []byte) []byte {
		idx, err := manifest.ParsePackIndex(b)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := other.Sign(idx.Segments[0].Head, manifest.NamespaceSegment)
		if err != nil {
			t.Fatal(err)
		}
		idx.Segments[0].Signature = sig
		raw, err := idx.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	})
	c = p.chain(t)
	if c.Broken == nil || c.Broken.Object != idxKey || len(c.Segments) != 0 || !errors.Is(c.Broken.Err, ErrForeign) {
		t.Errorf("a forged index: %d segments, broken %+v", len(c.Segments), c.Broken)
	}
}

// TestPackLocked: loose objects under retention stay, counted, and the
// chain reads the pack.
func TestPackLocked(t *testing.T) {
	usb := newLocal(t, "usb")
	p := newPackFixture(t, usb)
	h := &hookTarget{Target: usb, deleteErr: lockedErr}
	rep, err := Pack(context.Background(), h, testTrust, testCluster, PackOptions{Every: 3 * time.Minute, Now: time.Date(2024, 6, 1, 0, 20, 0, 0, time.UTC)})
	if err != nil || len(rep.Packs) != 2 || rep.Locked != 18 || rep.Removed != 0 || len(rep.Errors) != 0 {
		t.Fatalf("report: %+v, %v", rep, err)
	}
	c := p.chain(t)
	p.same(t, c, 6)
	if len(c.Leftovers) != 18 {
		t.Errorf("%d leftovers, want 18", len(c.Leftovers))
	}
}

// TestPackOverlapping: two packers that grouped differently (one read
// the chain before the other packed and removed the loose copies) leave
// packs that overlap; readers enter a pack where the chain is due, also
// inside it, and every revision stays readable.
func TestPackOverlapping(t *testing.T) {
	ctx := context.Background()
	usb := newLocal(t, "usb")
	p := newPackFixture(t, usb)
	before := p.chain(t)
	if rep := p.pack(t, usb); len(rep.Packs) != 2 {
		t.Fatalf("first packer: %+v", rep)
	}
	// The second packer groups the first five segments, as read before.
	made, err := writePack(ctx, usb, testTrust, NewSegmentStore(usb), p.m, before.Segments[:5])
	if err != nil || made == nil || made.Segments != 5 {
		t.Fatalf("second packer: %+v, %v", made, err)
	}
	c := p.chain(t)
	p.same(t, c, 6)
	if !c.usesPack(made.index) {
		t.Errorf("the longer pack is not read: %+v", c.packed)
	}
}

// TestPackForgedIndexKeepsLooseCopies: an index built from the signed
// heads on the target, pointing at a pack object that is not there, is
// read (its heads verify), but no loose copy goes on its word, and every
// body is still read, loose.
func TestPackForgedIndexKeepsLooseCopies(t *testing.T) {
	ctx := context.Background()
	usb := newLocal(t, "usb")
	p := newPackFixture(t, usb)
	c := p.chain(t)
	idx := &manifest.PackIndex{Format: manifest.PackFormat, Cluster: testCluster, Set: p.b.id, SHA256: strings.Repeat("0", 64)}
	store := NewSegmentStore(usb)
	for _, s := range c.Segments[:3] {
		head, sig, err := store.Head(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		idx.Segments = append(idx.Segments, manifest.PackedSegment{Head: head, Signature: sig, Offset: idx.Size, Size: s.Head.Body.Size})
		idx.Size += s.Head.Body.Size
	}
	idx.First, idx.Last = c.Segments[0].Head.First, c.Segments[2].Head.Last
	raw, err := idx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := usb.Put(ctx, manifest.PackIndexKey(testCluster, p.b.id, idx.First, idx.Last), bytes.NewReader(raw), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	p.same(t, p.chain(t), 3)
	rep := p.packAt(t, usb, time.Date(2024, 6, 1, 0, 20, 0, 0, time.UTC))
	if len(rep.Errors) == 0 || !errors.Is(rep.Errors[0], ErrMissing) {
		t.Errorf("a pack run on the forged index: %+v", rep)
	}
	for _, s := range c.Segments[:3] {
		if _, err := usb.Stat(ctx, manifest.SegmentBodyKey(testCluster, p.b.id, s.Head.First, s.Head.Last)); err != nil {
			t.Errorf("the loose body of %d..%d went on a forged index's word: %v", s.Head.First, s.Head.Last, err)
		}
	}
	// The next interval was packed as usual.
	p.same(t, p.chain(t), 6)
}

// usesPack reports whether the chain reads the pack whose index is key.
func (c *Chain) usesPack(key string) bool {
	for _, p := range c.packed {
		if p.index == key {
			return true
		}
	}
	return false
}
