package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/internal/kubedata"
	"github.com/kdr-io/kdr/internal/testenv"
)

// bump is the revision bump DESIGN.md prescribes for a restore.
const bump = 1_000_000_000

// TestBreakGlassRestore restores a backup the way an operator does when
// kdr itself is unavailable: only age, zstd, tar and etcdutl touch the
// objects on the USB disk. The restored etcd must serve a key written
// before the backup, and the state tar must give back every file with its
// content, mode, owner and time.
func TestBreakGlassRestore(t *testing.T) {
	w := newWorld(t, worldOptions{})
	ctx := t.Context()
	if _, err := kubedata.Fill(ctx, w.etcd.Client(), kubedata.Options{Bytes: 2 << 20, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	const key = "/registry/configmaps/kube-system/written-before-backup"
	value := fmt.Sprintf("break-glass-%d", time.Now().UnixNano())
	put, err := w.etcd.Client().Put(ctx, key, value)
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, w.spec())
	id := w.backup(t, cfg)
	m := parseManifest(t, testenv.ReadFile(t, w.usbPath(id, "manifest.json")))

	dir := t.TempDir()
	db := filepath.Join(dir, "etcd.db")
	decrypt(t, w.identity, w.usbPath(id, "etcd.db.zst.age"), db)

	tests := []struct {
		name string
		bump bool
	}{
		{name: "bumped and compacted", bump: true},
		{name: "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "restored.etcd")
			peer := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
			client := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
			args := []string{"snapshot", "restore", db, "--data-dir", dataDir, "--name", "restored",
				"--initial-cluster", "restored=" + peer, "--initial-advertise-peer-urls", peer,
				"--initial-cluster-token", "kdr-break-glass"}
			if tt.bump {
				args = append(args, "--bump-revision", fmt.Sprint(bump), "--mark-compacted")
			}
			tool(t, "etcdutl", args...)
			cli := startRestoredEtcd(t, dataDir, "restored", peer, client)

			got, err := cli.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != value || got.Kvs[0].ModRevision != put.Header.Revision {
				t.Fatalf("restored etcd has %s = %v, want %q written at revision %d", key, got.Kvs, value, put.Header.Revision)
			}
			rev := got.Header.Revision
			switch {
			case tt.bump && rev < m.Etcd.Revision+bump:
				t.Errorf("restored revision %d, want at least the backup's %d + %d", rev, m.Etcd.Revision, bump)
			case !tt.bump && (rev < m.Etcd.Revision || rev >= m.Etcd.Revision+bump):
				t.Errorf("restored revision %d, want the backup's %d or a little above", rev, m.Etcd.Revision)
			}
			// Marked compacted, the old revisions are gone: a watcher that
			// resumes from one must start over, not miss updates.
			_, err = cli.Get(ctx, key, clientv3.WithRev(put.Header.Revision))
			if compacted := err != nil && strings.Contains(err.Error(), "compacted"); compacted != tt.bump {
				t.Errorf("read at the old revision %d: %v; want a compacted error only after --mark-compacted", put.Header.Revision, err)
			}
		})
	}

	t.Run("state files", func(t *testing.T) {
		tarball := filepath.Join(dir, "state.tar")
		decrypt(t, w.identity, w.usbPath(id, "state.tar.zst.age"), tarball)
		out := filepath.Join(dir, "restored-root")
		testenv.Mkdir(t, out, 0o755)
		tool(t, "tar", "-x", "-p", "--numeric-owner", "-f", tarball, "-C", out)
		compareTrees(t, w.host.root, out)
		for _, k := range w.host.keyFiles(t) {
			rel, _ := filepath.Rel(w.host.root, k)
			fi, err := os.Lstat(filepath.Join(out, rel))
			if err != nil {
				t.Errorf("key %s was not extracted: %v", rel, err)
			} else if fi.Mode() != 0o600 {
				t.Errorf("extracted key %s has mode %v, want a regular file of mode 0600", rel, fi.Mode())
			}
		}
		checkIndex(t, out)
	})
}

// startRestoredEtcd runs a real etcd on a restored data dir, on loopback
// ports, until the test ends, and returns a client once it serves.
func startRestoredEtcd(t *testing.T, dataDir, name, peerURL, clientURL string) *clientv3.Client {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "etcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Binary(t, "etcd"), "--name", name, "--data-dir", dataDir,
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", name+"="+peerURL, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server dies with the test binary even when cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("etcd (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
		}
	})
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, err := cli.Status(ctx, clientURL)
		cancel()
		if err == nil {
			return cli
		}
		select {
		case <-exited:
			t.Fatalf("etcd on the restored data dir exited: %s", testenv.ReadFile(t, logPath))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd on the restored data dir not serving after a minute: %v\n%s", err, testenv.ReadFile(t, logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// compareTrees checks that every file and symlink under orig came back
// under restored with the same content, mode and time (and owner, when
// tar could restore owners), and that nothing else came back but kdr's
// index.
func compareTrees(t *testing.T, orig, restored string) {
	t.Helper()
	seen := 0
	err := filepath.WalkDir(orig, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(orig, p)
		seen++
		want, err := os.Lstat(p)
		if err != nil {
			return err
		}
		got, err := os.Lstat(filepath.Join(restored, rel))
		if err != nil {
			t.Errorf("%s did not come back: %v", rel, err)
			return nil
		}
		if got.Mode() != want.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, got.Mode(), want.Mode())
		}
		if os.Geteuid() == 0 {
			ws, gs := want.Sys().(*syscall.Stat_t), got.Sys().(*syscall.Stat_t)
			if ws.Uid != gs.Uid || ws.Gid != gs.Gid {
				t.Errorf("%s: owner %d:%d, want %d:%d", rel, gs.Uid, gs.Gid, ws.Uid, ws.Gid)
			}
		}
		switch {
		case want.Mode()&fs.ModeSymlink != 0:
			wl, _ := os.Readlink(p)
			if gl, err := os.Readlink(filepath.Join(restored, rel)); err != nil || gl != wl {
				t.Errorf("%s: links to %q (%v), want %q", rel, gl, err, wl)
			}
		default:
			if string(testenv.ReadFile(t, filepath.Join(restored, rel))) != string(testenv.ReadFile(t, p)) {
				t.Errorf("%s: content differs from the original", rel)
			}
			if got.ModTime().Unix() != want.ModTime().Unix() {
				t.Errorf("%s: modified %s, want %s", rel, got.ModTime(), want.ModTime())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	extracted := 0
	err = filepath.WalkDir(restored, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(restored, p)
		if rel == ".kdr" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return nil
		}
		if _, err := os.Lstat(filepath.Join(orig, rel)); err != nil {
			t.Errorf("%s came back but was not on the host", rel)
		}
		extracted++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen == 0 || extracted != seen {
		t.Errorf("%d files on the host, %d extracted", seen, extracted)
	}
}

// checkIndex reads the index kdr puts in the state tar, as a person would
// with any JSON tool, and checks each file and directory it lists against
// what tar extracted.
func checkIndex(t *testing.T, restored string) {
	t.Helper()
	var idx struct {
		Entries []struct {
			Path   string `json:"path"`
			Type   string `json:"type"`
			Mode   uint32 `json:"mode"`
			Size   int64  `json:"size"`
			SHA256 string `json:"sha256"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(testenv.ReadFile(t, filepath.Join(restored, ".kdr/index.json")), &idx); err != nil {
		t.Fatalf("state index: %v", err)
	}
	files, dirs := 0, 0
	for _, e := range idx.Entries {
		p := filepath.Join(restored, filepath.FromSlash(e.Path))
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("index lists %s, which tar did not extract: %v", e.Path, err)
			continue
		}
		switch e.Type {
		case "file":
			files++
			data := testenv.ReadFile(t, p)
			if int64(len(data)) != e.Size || sum(data) != e.SHA256 {
				t.Errorf("%s: %d bytes sha256 %s; the index records %d bytes sha256 %s", e.Path, len(data), sum(data), e.Size, e.SHA256)
			}
		case "dir":
			dirs++
		}
		if uint32(fi.Mode().Perm()) != e.Mode&0o777 {
			t.Errorf("%s: mode %o, the index records %o", e.Path, fi.Mode().Perm(), e.Mode)
		}
	}
	if files == 0 || dirs == 0 {
		t.Errorf("the index lists %d files and %d directories; want both", files, dirs)
	}
}
