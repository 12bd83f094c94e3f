package storage_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/storage"
)

// ifAbsentTarget makes a new target under test, and a check that nothing a
// Put left behind (temp file, multipart upload) is there for a key.
type ifAbsentTarget struct {
	name string
	new  func(t *testing.T) (s storage.Target, noLeftover func(t *testing.T, key string))
}

func ifAbsentTargets(t *testing.T) []ifAbsentTarget {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	var n atomic.Int64
	local := func(mkdir func(t *testing.T) string) func(t *testing.T) (storage.Target, func(*testing.T, string)) {
		return func(t *testing.T) (storage.Target, func(*testing.T, string)) {
			dir := mkdir(t)
			return newLocal(t, dir), func(t *testing.T, _ string) { assertNoTempFiles(t, dir) }
		}
	}
	targets := []ifAbsentTarget{
		{name: "local", new: local(func(t *testing.T) string { return t.TempDir() })},
		{
			name: "s3",
			new: func(t *testing.T) (storage.Target, func(*testing.T, string)) {
				prefix := fmt.Sprintf("ifabsent/%d", n.Add(1))
				return newS3(t, m, s3Options(m, "kdr", prefix)), func(t *testing.T, key string) {
					if ids := incompleteUploads(t, m, "kdr", prefix+"/"+key); len(ids) != 0 {
						t.Errorf("uploads left for %s: %q", key, ids)
					}
				}
			},
		},
	}
	if os.Geteuid() == 0 {
		targets = append(targets, ifAbsentTarget{
			name: "tmpfs",
			new:  local(func(t *testing.T) string { return mountTmpfs(t, "64m") }),
		})
	}
	return targets
}

// assertNoTempFiles fails when a temp file of a Put is anywhere under dir.
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".kdr-tmp-") {
			t.Errorf("temp file left behind: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func getBytes(t *testing.T, tg storage.Target, key string) []byte {
	t.Helper()
	rc, err := tg.Get(t.Context(), key)
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

// payload is size bytes that differ for every writer.
func payload(writer, size int) []byte {
	return bytes.Repeat([]byte{byte('a' + writer)}, size)
}

// TestIfAbsent: a conditional Put stores a new key, refuses a taken one
// with ErrExist at the first attempt, and of writers racing for one key
// exactly one wins and its bytes are stored; a plain Put still replaces.
func TestIfAbsent(t *testing.T) {
	for _, tg := range ifAbsentTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ctx := t.Context()
			s, noLeftover := tg.new(t)
			ifAbsent := storage.PutOptions{IfAbsent: true}

			if err := s.Put(ctx, "set/lock", bytes.NewReader([]byte("first")), ifAbsent); err != nil {
				t.Fatalf("put of a new key: %v", err)
			}
			err := s.Put(ctx, "set/lock", bytes.NewReader([]byte("second")), ifAbsent)
			t.Logf("put of a taken key: %v", err)
			switch {
			case !errors.Is(err, storage.ErrExist):
				t.Fatalf("put of a taken key: %v, want ErrExist", err)
			case errors.Is(err, storage.ErrPermanent):
				t.Errorf("ErrExist is also ErrPermanent: %v", err)
			case !strings.Contains(err.Error(), "set/lock") || strings.Contains(err.Error(), "\n"):
				t.Errorf("message %q: want one line naming the key", err)
			case strings.Contains(err.Error(), "attempts"):
				t.Errorf("ErrExist was retried: %v", err)
			}
			if got := getBytes(t, s, "set/lock"); string(got) != "first" {
				t.Fatalf("refused put changed the object to %q", got)
			}
			noLeftover(t, "set/lock")

			if err := s.Put(ctx, "set/lock", bytes.NewReader([]byte("plain")), storage.PutOptions{}); err != nil {
				t.Fatalf("plain put over an object: %v", err)
			}
			if got := getBytes(t, s, "set/lock"); string(got) != "plain" {
				t.Fatalf("plain put stored %q, want it replaced", got)
			}
		})
	}
}

func TestIfAbsentRace(t *testing.T) {
	const writers = 6
	for _, tg := range ifAbsentTargets(t) {
		for _, size := range []int{1 << 10, storage.MinPartSize + 1} {
			t.Run(fmt.Sprintf("%s/%d", tg.name, size), func(t *testing.T) {
				s, noLeftover := tg.new(t)
				for round := range 3 {
					key := fmt.Sprintf("race/%d", round)
					var wg sync.WaitGroup
					start := make(chan struct{})
					errs := make([]error, writers)
					for w := range writers {
						wg.Go(func() {
							<-start
							errs[w] = s.Put(t.Context(), key, bytes.NewReader(payload(w, size)), storage.PutOptions{IfAbsent: true})
						})
					}
					close(start)
					wg.Wait()
					winner := -1
					for w, err := range errs {
						switch {
						case err == nil && winner >= 0:
							t.Fatalf("%s: writers %d and %d both won", key, winner, w)
						case err == nil:
							winner = w
						case !errors.Is(err, storage.ErrExist):
							t.Fatalf("%s: writer %d: %v, want ErrExist", key, w, err)
						}
					}
					if winner < 0 {
						t.Fatalf("%s: no writer won: %v", key, errs)
					}
					if got := getBytes(t, s, key); !bytes.Equal(got, payload(winner, size)) {
						t.Fatalf("%s: stored %d bytes not those of winner %d", key, len(got), winner)
					}
					noLeftover(t, key)
				}
			})
		}
	}
}

// dropProxy passes requests to an S3 server, and for the requests drop
// picks, lets the server answer but closes the client's connection
// instead of passing the answer on: the client sees a failure of a request
// that was carried out.
type dropProxy struct {
	upstream string
	drop     func(*http.Request) bool
	dropped  atomic.Int64
	tr       http.Transport
}

func (p *dropProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host // the signature covers it
	out.ContentLength = r.ContentLength
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if p.drop(r) {
		io.Copy(io.Discard, resp.Body)
		p.dropped.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// TestS3IfAbsentRetryAfterSuccess: the answer to a conditional PUT (or
// CompleteMultipartUpload) that the server carried out is lost, and the
// retry is refused. The object being this Put's own makes it a success;
// another writer's object stays ErrExist.
func TestS3IfAbsentRetryAfterSuccess(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	for _, tc := range []struct {
		name  string
		size  int
		taken bool // another writer stored the key first
	}{
		{"single part", 1 << 10, false},
		{"multipart", storage.MinPartSize + 1, false},
		{"single part, key taken", 1 << 10, true},
		{"multipart, key taken", storage.MinPartSize + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			prefix := "retry/" + strings.ReplaceAll(tc.name, " ", "-")
			// The request that stores the object: the PUT of a single-part
			// object, or the POST that completes a multipart upload.
			var once atomic.Bool
			p := &dropProxy{upstream: m.Endpoint(), drop: func(r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, "/"+prefix+"/obj") {
					return false
				}
				stores := r.Method == http.MethodPut && !r.URL.Query().Has("uploadId") ||
					r.Method == http.MethodPost && r.URL.Query().Has("uploadId")
				return stores && once.CompareAndSwap(false, true)
			}}
			p.tr.DisableCompression = true
			srv := httptest.NewServer(p)
			t.Cleanup(srv.Close)

			other := payload(1, 10)
			if tc.taken {
				direct := newS3(t, m, s3Options(m, "kdr", prefix))
				if err := direct.Put(ctx, "obj", bytes.NewReader(other), storage.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			o := s3Options(m, "kdr", prefix)
			o.Endpoint = strings.TrimPrefix(srv.URL, "http://")
			s := newS3(t, m, o)
			mine := payload(0, tc.size)
			err := s.Put(ctx, "obj", bytes.NewReader(mine), storage.PutOptions{IfAbsent: true})
			t.Logf("put: %v", err)
			if p.dropped.Load() != 1 {
				t.Fatalf("dropped %d answers, want 1", p.dropped.Load())
			}
			want := mine
			if tc.taken {
				want = other
				if !errors.Is(err, storage.ErrExist) {
					t.Fatalf("put of a taken key: %v, want ErrExist", err)
				}
			} else if err != nil {
				t.Fatalf("put whose first answer was lost: %v, want success", err)
			}
			if got := getBytes(t, s, "obj"); !bytes.Equal(got, want) {
				t.Fatalf("stored %d bytes, not the expected %d", len(got), len(want))
			}
			if ids := incompleteUploads(t, m, "kdr", prefix+"/obj"); len(ids) != 0 {
				t.Errorf("uploads left: %q", ids)
			}
		})
	}
}
