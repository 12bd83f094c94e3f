package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kdr-io/kdr/storage"
)

// interruptAt is how far into an object the interrupted Puts fail: past
// the first 5 MiB part of an S3 target configured with the minimum part
// size, so that a multipart upload has really begun.
const interruptAt = 6 << 20

// Run runs the suite. newTarget returns an empty target for one subtest;
// targets of different subtests must not see each other's objects.
func Run(t *testing.T, newTarget func(t *testing.T) storage.Target) {
	tests := []struct {
		name string
		fn   func(*testing.T, storage.Target)
	}{
		{"PutGetStat", testPutGetStat},
		{"GetRange", testGetRange},
		{"EmptyObject", testEmptyObject},
		{"NotExist", testNotExist},
		{"List", testList},
		{"ListCallbackError", testListCallbackError},
		{"Delete", testDelete},
		{"InvalidKeys", testInvalidKeys},
		{"InterruptedReader", testInterruptedReader},
		{"CancelledContext", testCancelledContext},
		{"LargeObject", testLargeObject},
		{"ConcurrentPuts", testConcurrentPuts},
		{"CleanupAfterInterruptedPut", testCleanupAfterInterruptedPut},
		{"Ping", testPing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newTarget(t)) })
	}
}

// RunRetention checks that an object stored with retention cannot be
// deleted before its time and stays readable. Only targets with locking
// (an S3 bucket with Object Lock) run it.
func RunRetention(t *testing.T, newTarget func(t *testing.T) storage.Target) {
	tg := newTarget(t)
	ctx := testContext(t)
	until := time.Now().Add(time.Hour)
	data := randomBytes(1, 4096)
	if err := tg.Put(ctx, "locked/obj", bytes.NewReader(data), storage.PutOptions{RetainUntil: until}); err != nil {
		t.Fatalf("put with retention: %v", err)
	}
	info, err := tg.Stat(ctx, "locked/obj")
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	if info.RetainUntil.Before(until.Truncate(time.Second)) {
		t.Errorf("stat: RetainUntil %v, want at least %v", info.RetainUntil, until)
	}
	err = tg.Delete(ctx, "locked/obj")
	if !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("delete of a retained object: %v, want an error wrapping ErrLocked", err)
	}
	if got := get(t, tg, "locked/obj"); !bytes.Equal(got, data) {
		t.Errorf("retained object changed after the refused delete")
	}
	if keys := listKeys(t, tg, ""); !slices.Equal(keys, []string{"locked/obj"}) {
		t.Errorf("list after the refused delete: %q", keys)
	}

	// An object stored without retention in the same place can be deleted.
	put(t, tg, "locked/free", []byte("x"))
	if info, err := tg.Stat(ctx, "locked/free"); err != nil || !info.RetainUntil.IsZero() {
		t.Fatalf("stat of an object put without retention: %+v, %v; want no RetainUntil", info, err)
	}
	if err := tg.Delete(ctx, "locked/free"); err != nil {
		t.Fatalf("delete of an object without retention: %v", err)
	}
	if _, err := tg.Stat(ctx, "locked/free"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("stat after delete: %v, want ErrNotExist", err)
	}
}

func testPutGetStat(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	data := randomBytes(2, 100_000)
	err := tg.Put(ctx, "a/b/c.bin", bytes.NewReader(data), storage.PutOptions{ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	if got := get(t, tg, "a/b/c.bin"); !bytes.Equal(got, data) {
		t.Fatalf("get: %d bytes differ from the %d put", len(got), len(data))
	}
	info, err := tg.Stat(ctx, "a/b/c.bin")
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	if info.Key != "a/b/c.bin" || info.Size != int64(len(data)) || info.Modified.IsZero() {
		t.Fatalf("stat: %+v, want key a/b/c.bin, size %d, a modification time", info, len(data))
	}
	if !info.RetainUntil.IsZero() {
		t.Fatalf("stat: RetainUntil %v for an object put without retention", info.RetainUntil)
	}
}

func testGetRange(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	data := randomBytes(3, 10_000)
	put(t, tg, "pack", data)
	for _, r := range []struct{ off, n, want int64 }{
		{0, 10, 10}, {1234, 4000, 4000}, {9990, 10, 10}, {9990, 100, 10}, {500, 0, 0},
	} {
		rc, err := tg.GetRange(ctx, "pack", r.off, r.n)
		if err != nil {
			t.Fatalf("range %d+%d: %v", r.off, r.n, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("range %d+%d: %v", r.off, r.n, err)
		}
		if !bytes.Equal(got, data[r.off:r.off+r.want]) {
			t.Errorf("range %d+%d: %d bytes, not the %d stored there", r.off, r.n, len(got), r.want)
		}
	}
	if rc, err := tg.GetRange(ctx, "missing", 0, 10); !errors.Is(err, storage.ErrNotExist) {
		if rc != nil {
			rc.Close()
		}
		t.Errorf("range of a missing object: %v, want ErrNotExist", err)
	}
}

func testEmptyObject(t *testing.T, tg storage.Target) {
	put(t, tg, "empty", nil)
	if got := get(t, tg, "empty"); len(got) != 0 {
		t.Fatalf("get: %d bytes, want 0", len(got))
	}
	info, err := tg.Stat(testContext(t), "empty")
	if err != nil || info.Size != 0 {
		t.Fatalf("stat: %+v, %v; want size 0", info, err)
	}
}

func testNotExist(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	put(t, tg, "dir/obj", []byte("x"))
	for _, key := range []string{"missing", "dir/missing", "dir", "missing/deeper/obj", "dir/obj/below"} {
		if rc, err := tg.Get(ctx, key); !errors.Is(err, storage.ErrNotExist) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("get %s: %v, want ErrNotExist", key, err)
		}
		if _, err := tg.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("stat %s: %v, want ErrNotExist", key, err)
		}
	}
}

func testList(t *testing.T, tg storage.Target) {
	// Chosen so that key order differs from a depth-first walk: '-' < '/' < '0'.
	sorted := []string{"l/a-c", "l/a/b", "l/a/c/d", "l/a0", "l/b", "m/x"}
	order := []int{3, 0, 5, 1, 4, 2}
	for _, i := range order {
		put(t, tg, sorted[i], bytes.Repeat([]byte{'x'}, i+1))
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"l/", sorted[:5]},
		{"l/a", sorted[:4]},
		{"l/a/", []string{"l/a/b", "l/a/c/d"}},
		{"l/a/c/d", []string{"l/a/c/d"}},
		{"m", []string{"m/x"}},
		{"nope/", nil},
		{"l/a/c/d/e", nil},
	} {
		if got := listKeys(t, tg, tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("list %q: %q, want %q", tc.prefix, got, tc.want)
		}
	}
	err := tg.List(testContext(t), "", func(o storage.ObjectInfo) error {
		i := slices.Index(sorted, o.Key)
		if o.Size != int64(i+1) {
			return fmt.Errorf("%s: size %d, want %d", o.Key, o.Size, i+1)
		}
		if o.Modified.IsZero() {
			return fmt.Errorf("%s: no modification time", o.Key)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"../", "/abs", "a//"} {
		if err := tg.List(testContext(t), bad, func(storage.ObjectInfo) error { return nil }); err == nil {
			t.Errorf("list %q: no error", bad)
		}
	}
}

func testListCallbackError(t *testing.T, tg storage.Target) {
	for _, k := range []string{"x/1", "x/2", "x/3"} {
		put(t, tg, k, []byte(k))
	}
	stop := errors.New("stop here")
	calls := 0
	err := tg.List(testContext(t), "x/", func(storage.ObjectInfo) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("list: %v after %d calls, want the callback's error after 2", err, calls)
	}
}

func testDelete(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	put(t, tg, "d/a/b", []byte("1"))
	put(t, tg, "d/a/c", []byte("2"))
	if err := tg.Delete(ctx, "d/a/b"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := tg.Stat(ctx, "d/a/b"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("stat after delete: %v, want ErrNotExist", err)
	}
	if got := listKeys(t, tg, ""); !slices.Equal(got, []string{"d/a/c"}) {
		t.Fatalf("list after delete: %q, want [d/a/c]", got)
	}
	for _, key := range []string{"d/a/b", "never/was", "d"} {
		if err := tg.Delete(ctx, key); err != nil {
			t.Errorf("delete of missing %s: %v, want nil", key, err)
		}
	}
	if got := get(t, tg, "d/a/c"); string(got) != "2" {
		t.Fatalf("sibling after deletes: %q", got)
	}
	// Deleting the last object in a place and writing there again works.
	if err := tg.Delete(ctx, "d/a/c"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	put(t, tg, "d/a/c", []byte("3"))
	if got := get(t, tg, "d/a/c"); string(got) != "3" {
		t.Fatalf("after delete and put: %q", got)
	}
}

func testInvalidKeys(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	for _, key := range []string{"", "/abs", "../escape", "a/../../b", "a//b", "a/./b", "a/", ".", "..", "a/.kdr-tmp-x"} {
		err := tg.Put(ctx, key, bytes.NewReader([]byte("x")), storage.PutOptions{})
		if !errors.Is(err, storage.ErrPermanent) {
			t.Errorf("put %q: %v, want an error wrapping ErrPermanent", key, err)
		}
		if rc, err := tg.Get(ctx, key); err == nil {
			rc.Close()
			t.Errorf("get %q: no error", key)
		}
		if _, err := tg.Stat(ctx, key); err == nil {
			t.Errorf("stat %q: no error", key)
		}
		if err := tg.Delete(ctx, key); err == nil {
			t.Errorf("delete %q: no error", key)
		}
	}
	if got := listKeys(t, tg, ""); len(got) != 0 {
		t.Fatalf("list after refused puts: %q", got)
	}
}

// failingReader returns data, then err once limit bytes have been read.
type failingReader struct {
	r     io.Reader
	limit int64
	err   error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.limit <= 0 {
		return 0, f.err
	}
	if int64(len(p)) > f.limit {
		p = p[:f.limit]
	}
	n, err := f.r.Read(p)
	f.limit -= int64(n)
	return n, err
}

// cancellingReader cancels its context once limit bytes have been read and
// goes on returning data: only a target that watches ctx stops.
type cancellingReader struct {
	r      io.Reader
	limit  int64
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.limit -= int64(n)
	if c.limit <= 0 {
		c.cancel()
	}
	return n, err
}

func testInterruptedReader(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	// A truncated source says so with an error wrapping io.ErrUnexpectedEOF;
	// a target must not take that for the end of the data.
	boom := fmt.Errorf("source truncated: %w", io.ErrUnexpectedEOF)
	r := &failingReader{r: randomReader(3), limit: interruptAt, err: boom}
	err := tg.Put(ctx, "broken/obj", r, storage.PutOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("put: %v, want an error wrapping the reader's", err)
	}
	assertInvisible(t, tg, "broken/obj")
}

func testCancelledContext(t *testing.T, tg storage.Target) {
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	r := &cancellingReader{r: io.LimitReader(randomReader(4), 64<<20), limit: interruptAt, cancel: cancel}
	err := tg.Put(ctx, "cancelled/obj", r, storage.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("put: %v, want an error wrapping context.Canceled", err)
	}
	assertInvisible(t, tg, "cancelled/obj")

	err = tg.Put(ctx, "cancelled/before", bytes.NewReader([]byte("x")), storage.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a cancelled context: %v, want an error wrapping context.Canceled", err)
	}
	assertInvisible(t, tg, "cancelled/before")
}

func testLargeObject(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	const size = 23<<20 + 12345 // several parts and a short last one
	want := sha256.New()
	if err := tg.Put(ctx, "large/obj", io.TeeReader(io.LimitReader(randomReader(5), size), want), storage.PutOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	rc, err := tg.Get(ctx, "large/obj")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer rc.Close()
	got := sha256.New()
	n, err := io.Copy(got, rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("read %d bytes, sha256 %x; want %d bytes, sha256 %x", n, got.Sum(nil), size, want.Sum(nil))
	}
	if info, err := tg.Stat(ctx, "large/obj"); err != nil || info.Size != size {
		t.Fatalf("stat: %+v, %v; want size %d", info, err, size)
	}
}

func testConcurrentPuts(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = tg.Put(ctx, fmt.Sprintf("c/%d/obj", i), bytes.NewReader(randomBytes(uint64(100+i), 300_000+i)), storage.PutOptions{})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent puts: %v", err)
	}
	var want []string
	for i := range n {
		key := fmt.Sprintf("c/%d/obj", i)
		want = append(want, key)
		if got := get(t, tg, key); !bytes.Equal(got, randomBytes(uint64(100+i), 300_000+i)) {
			t.Errorf("%s: content differs", key)
		}
	}
	if got := listKeys(t, tg, "c/"); !slices.Equal(got, want) {
		t.Fatalf("list: %q, want %q", got, want)
	}
}

func testCleanupAfterInterruptedPut(t *testing.T, tg storage.Target) {
	ctx := testContext(t)
	put(t, tg, "keep/obj", []byte("kept"))
	boom := errors.New("source failed")
	if err := tg.Put(ctx, "gc/obj", &failingReader{r: randomReader(6), limit: interruptAt, err: boom}, storage.PutOptions{}); err == nil {
		t.Fatal("interrupted put: no error")
	}
	if _, err := tg.CleanupIncomplete(ctx, 0); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	assertInvisible(t, tg, "gc/obj")
	if got := get(t, tg, "keep/obj"); string(got) != "kept" {
		t.Fatalf("complete object after cleanup: %q", got)
	}
	// The key is usable again.
	put(t, tg, "gc/obj", []byte("second try"))
	if got := get(t, tg, "gc/obj"); string(got) != "second try" {
		t.Fatalf("put after cleanup: %q", got)
	}
	if n, err := tg.CleanupIncomplete(ctx, 0); err != nil || n != 0 {
		t.Fatalf("cleanup with nothing left over: removed %d, %v", n, err)
	}
	if got := listKeys(t, tg, ""); !slices.Equal(got, []string{"gc/obj", "keep/obj"}) {
		t.Fatalf("list after cleanup: %q", got)
	}
}

func testPing(t *testing.T, tg storage.Target) {
	if err := tg.Ping(testContext(t)); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if got := listKeys(t, tg, ""); len(got) != 0 {
		t.Fatalf("ping left objects: %q", got)
	}
}

// assertInvisible fails unless key is absent from Get, Stat and List.
func assertInvisible(t *testing.T, tg storage.Target, key string) {
	t.Helper()
	ctx := testContext(t)
	if _, err := tg.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("stat %s: %v, want ErrNotExist", key, err)
	}
	if rc, err := tg.Get(ctx, key); !errors.Is(err, storage.ErrNotExist) {
		if rc != nil {
			rc.Close()
		}
		t.Errorf("get %s: %v, want ErrNotExist", key, err)
	}
	if got := listKeys(t, tg, ""); slices.Contains(got, key) {
		t.Errorf("list shows %s: %q", key, got)
	}
}

// testContext bounds a subtest's storage calls so that a hung target fails
// the test instead of the whole run.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, tg storage.Target, key string, data []byte) {
	t.Helper()
	if err := tg.Put(testContext(t), key, bytes.NewReader(data), storage.PutOptions{}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func get(t *testing.T, tg storage.Target, key string) []byte {
	t.Helper()
	rc, err := tg.Get(testContext(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func listKeys(t *testing.T, tg storage.Target, prefix string) []string {
	t.Helper()
	var keys []string
	err := tg.List(testContext(t), prefix, func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return keys
}

// randomReader is an endless deterministic stream of bytes.
func randomReader(seed uint64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	return rand.NewChaCha8(key)
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	io.ReadFull(randomReader(seed), b)
	return b
}
