package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

func TestMinIOStartStopRestart(t *testing.T) {
	m := StartMinIO(t, MinIOOptions{})
	m.CreateBucket(t, "plain", false)
	m.CreateBucket(t, "locked", true)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := m.Client()
	want := []byte("hello")
	if _, err := c.PutObject(ctx, "plain", "k", bytes.NewReader(want), int64(len(want)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	lock, _, _, _, err := c.GetObjectLockConfig(ctx, "locked")
	if err != nil || lock != "Enabled" {
		t.Fatalf("bucket locked: object lock %q, %v; want Enabled", lock, err)
	}

	m.Stop()
	if conn, err := net.DialTimeout("tcp", m.Endpoint(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", m.Endpoint())
	}
	m.Stop() // a second Stop is harmless

	m.Start()
	obj, err := c.GetObject(ctx, "plain", "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after restart: read %q, %v; want %q", got, err, want)
	}
	if b, err := os.ReadFile(m.LogPath()); err != nil || len(b) == 0 {
		t.Fatalf("minio log %s is empty or missing: %v", m.LogPath(), err)
	}
}

func TestBinaryModuleRoot(t *testing.T) {
	t.Setenv("KDR_BIN_DIR", t.TempDir()) // empty: the module root must be found
	root, ok := moduleRoot()
	if !ok {
		t.Fatal("module root not found from the package directory")
	}
	if got := goModModule(filepath.Join(root, "go.mod")); got != modulePath {
		t.Fatalf("module at %s is %q", root, got)
	}
	got := Binary(t, "minio")
	if !strings.HasPrefix(got, filepath.Join(root, "bin")) {
		t.Fatalf("Binary(minio) = %s, want it under %s/bin", got, root)
	}
}

func TestBinaryPrefersKDRBinDir(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "minio")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KDR_BIN_DIR", dir)
	if got := Binary(t, "minio"); got != fake {
		t.Fatalf("Binary(minio) = %s, want %s", got, fake)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestBinaryMissingFails(t *testing.T) {
	t.Setenv("KDR_BIN_DIR", t.TempDir())
	t.Setenv("PATH", t.TempDir())
	rec := &fatalRecorder{TB: t}
	done := make(chan string)
	go func() {
		defer close(done)
		done <- Binary(rec, "kdr-no-such-tool")
	}()
	if got, ok := <-done; ok {
		t.Fatalf("Binary returned %q for a missing tool", got)
	}
	if want := "kdr-no-such-tool not found: run `make tools`"; !strings.HasPrefix(rec.msg, want) {
		t.Fatalf("message %q, want it to start with %q", rec.msg, want)
	}
}
