package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kdr-io/kdr/storage"
	"github.com/kdr-io/kdr/storage/storagetest"
)

func TestLocal(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Target {
		return newLocal(t, t.TempDir())
	})
}

func newLocal(t *testing.T, dir string) *storage.Local {
	t.Helper()
	l, err := storage.NewLocal("usb", dir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// inUserNamespace is set in the environment of a test binary that re-runs a
// test as root of its own user and mount namespace.
const inUserNamespace = "KDR_TEST_IN_USERNS"

// asRoot runs the calling test in a child process that is root in a new user
// and mount namespace, where it may mount a tmpfs, when the test binary is
// not root itself. It reports whether the caller should go on (it is root).
func asRoot(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() == 0 {
		return true
	}
	if os.Getenv(inUserNamespace) != "" {
		t.Fatal("not root inside the user namespace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), inUserNamespace+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("%s in a user namespace: %v\n%s", t.Name(), err, out)
	}
	t.Logf("ran as root of a user namespace:\n%s", out)
	return false
}

// mountTmpfs mounts a tmpfs of the given size on a new temp directory and
// unmounts it when the test ends.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// assertNoTempFiles fails when anything but the named entries is in dir.
func assertDirHolds(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", dir, got, want)
	}
}

func TestLocalNoSpace(t *testing.T) {
	if !asRoot(t) {
		return
	}
	dir := mountTmpfs(t, "1m")
	l := newLocal(t, dir)
	ctx := t.Context()
	err := l.Put(ctx, "backups/x", io.LimitReader(zeros{}, 4<<20), storage.PutOptions{})
	if !errors.Is(err, storage.ErrPermanent) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("put on a full disk: %v, want ErrPermanent and ENOSPC", err)
	}
	if want := "target usb: no space left on device writing backups/x"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	// The temp file is gone, so the space is free again.
	assertDirHolds(t, filepath.Join(dir, "backups"))
	if err := l.Put(ctx, "backups/small", strings.NewReader("fits"), storage.PutOptions{}); err != nil {
		t.Fatalf("small put after the failed one: %v", err)
	}
}

func TestLocalNotWritable(t *testing.T) {
	ctx := t.Context()
	var dir, reason string
	if os.Geteuid() == 0 {
		// Root ignores permission bits; a read-only filesystem stops it.
		dir, reason = mountTmpfs(t, "1m"), "read-only file system"
		if err := newLocal(t, dir).Put(ctx, "old/obj", strings.NewReader("before"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
			t.Fatalf("remount read-only: %v: %s", err, out)
		}
	} else {
		dir, reason = t.TempDir(), "permission denied"
		if err := newLocal(t, dir).Put(ctx, "old/obj", strings.NewReader("before"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{filepath.Join(dir, "old"), dir} {
			if err := os.Chmod(d, 0o555); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(d, 0o755) })
		}
	}
	l := newLocal(t, dir)
	err := l.Put(ctx, "backups/x", strings.NewReader("data"), storage.PutOptions{})
	if !errors.Is(err, storage.ErrPermanent) {
		t.Fatalf("put: %v, want ErrPermanent", err)
	}
	if want := "target usb: " + reason + " writing backups/x"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if err := l.Ping(ctx); !errors.Is(err, storage.ErrPermanent) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("ping: %v, want ErrPermanent saying %q", err, reason)
	}
	if err := l.Delete(ctx, "old/obj"); !errors.Is(err, storage.ErrPermanent) {
		t.Fatalf("delete: %v, want ErrPermanent", err)
	}
	rc, err := l.Get(ctx, "old/obj")
	if err != nil {
		t.Fatalf("get from a read-only target: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "before" {
		t.Fatalf("get: %q", b)
	}
}

func TestLocalMissingDirectory(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "not-mounted")
	l := newLocal(t, dir)
	for name, err := range map[string]error{
		"put":     l.Put(ctx, "a/b", strings.NewReader("x"), storage.PutOptions{}),
		"ping":    l.Ping(ctx),
		"delete":  l.Delete(ctx, "a/b"),
		"list":    l.List(ctx, "", func(storage.ObjectInfo) error { return nil }),
		"stat":    func() error { _, err := l.Stat(ctx, "a/b"); return err }(),
		"get":     func() error { _, err := l.Get(ctx, "a/b"); return err }(),
		"cleanup": func() error { _, err := l.CleanupIncomplete(ctx, 0); return err }(),
	} {
		if !errors.Is(err, storage.ErrPermanent) || errors.Is(err, storage.ErrNotExist) || !strings.Contains(err.Error(), "is the disk mounted?") {
			t.Errorf("%s: %v, want ErrPermanent about the missing directory", name, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the target created its own directory: %v", err)
	}
}

func TestLocalKeysStayInside(t *testing.T) {
	ctx := t.Context()
	outer := t.TempDir()
	l := newLocal(t, filepath.Join(outer, "target"))
	if err := os.Mkdir(l.Dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"../outside", "a/../../outside", "/outside", "a//b", "./x"} {
		if err := l.Put(ctx, key, strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrPermanent) {
			t.Errorf("put %q: %v, want ErrPermanent", key, err)
		}
	}
	assertDirHolds(t, outer, "target")
	assertDirHolds(t, l.Dir())
}

func TestLocalObjectFiles(t *testing.T) {
	ctx := t.Context()
	l := newLocal(t, t.TempDir())
	if err := l.Put(ctx, "set/a/obj", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(l.Dir(), "set", "a", "obj"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Fatalf("object mode %v, want 0444", fi.Mode().Perm())
	}
	assertDirHolds(t, filepath.Join(l.Dir(), "set", "a"), "obj")
	if err := l.Delete(ctx, "set/a/obj"); err != nil {
		t.Fatalf("delete of a read-only object: %v", err)
	}
	// Directories emptied by the delete go too.
	assertDirHolds(t, l.Dir())

	if err := l.Put(ctx, "kit/tool", strings.NewReader("#!/bin/sh\n"), storage.PutOptions{Executable: true}); err != nil {
		t.Fatal(err)
	}
	fi, err = os.Stat(filepath.Join(l.Dir(), "kit", "tool"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("executable object mode %v, want 0755", fi.Mode().Perm())
	}
}

func TestLocalCleanupIncomplete(t *testing.T) {
	ctx := t.Context()
	l := newLocal(t, t.TempDir())
	if err := l.Put(ctx, "set/obj", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// Temp files as a crashed Put leaves them: one old, one still fresh.
	old := filepath.Join(l.Dir(), "set", ".kdr-tmp-big-123")
	fresh := filepath.Join(l.Dir(), "set", ".kdr-tmp-other-456")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-3 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := l.List(ctx, "", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"set/obj"}) {
		t.Fatalf("list shows temp files: %q", keys)
	}
	n, err := l.CleanupIncomplete(ctx, time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("cleanup: removed %d, %v; want 1", n, err)
	}
	assertDirHolds(t, filepath.Join(l.Dir(), "set"), ".kdr-tmp-other-456", "obj")
	if n, err := l.CleanupIncomplete(ctx, 0); err != nil || n != 1 {
		t.Fatalf("cleanup with age 0: removed %d, %v; want 1", n, err)
	}
	assertDirHolds(t, filepath.Join(l.Dir(), "set"), "obj")
}

func TestLocalCancelledPutRemovesTempFile(t *testing.T) {
	l := newLocal(t, t.TempDir())
	ctx, cancel := context.WithCancel(t.Context())
	r := &cancelAfter{limit: 3 << 20, cancel: cancel}
	err := l.Put(ctx, "set/obj", r, storage.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("put: %v, want context.Canceled", err)
	}
	assertDirHolds(t, filepath.Join(l.Dir(), "set"))
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// cancelAfter returns zeros and cancels once limit bytes are read.
type cancelAfter struct {
	limit  int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	c.limit -= len(p)
	if c.limit <= 0 {
		c.cancel()
	}
	return zeros{}.Read(p)
}
