package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kdr-io/kdr/internal/kubedata"
	"github.com/kdr-io/kdr/internal/testenv"
)

// TestBackupS3StoppedMidUpload kills MinIO while the etcd object is being
// uploaded. The backup must fail naming the target, leave no manifest and
// nothing list shows, and prune must remove what the upload left once
// MinIO is back.
func TestBackupS3StoppedMidUpload(t *testing.T) {
	w := newWorld(t, worldOptions{s3: true})
	// Large enough that the etcd object goes up in several 5 MiB parts,
	// so the upload is still going when it is first seen.
	if _, err := kubedata.Fill(t.Context(), w.etcd.Client(), kubedata.Options{Bytes: 64 << 20, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	spec := w.spec()
	spec.usb = ""
	spec.incompleteGrace = "1ns"
	cfg := writeConfig(t, spec)
	core := minio.Core{Client: w.minio.Client()}

	type outcome struct {
		r   result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := execKdr(t.Context(), w.env(), w.backupArgs(cfg)...)
		done <- outcome{r, err}
	}()

	// Listing every upload of a bucket is answered from MinIO's memory,
	// which is enough while this server runs.
	key := ""
	deadline := time.Now().Add(kdrTimeout)
	for key == "" {
		select {
		case o := <-done:
			t.Fatalf("the backup ended before its etcd object's upload was seen, so MinIO was never stopped and the test proves nothing: %v\n%s", o.err, o.r)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no upload of the etcd object appeared in MinIO")
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		res, err := core.ListMultipartUploads(ctx, bucket, "", "", "", "", 1000)
		cancel()
		if err != nil {
			t.Fatalf("list uploads: %v", err)
		}
		for _, u := range res.Uploads {
			if strings.HasPrefix(u.Key, s3Prefix+"/"+cluster+"/") && strings.HasSuffix(u.Key, "/etcd.db.zst.age") {
				key = u.Key
			}
		}
	}
	w.minio.Stop()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	r := o.r
	if r.code == 0 {
		t.Fatalf("backup succeeded though MinIO was stopped during the upload of %s\n%s", key, r)
	}
	mustContain(t, "the error", failureLine(t, r), "target s3")
	if strings.TrimSpace(r.stdout) != "" {
		t.Errorf("a backup complete nowhere printed an ID: %q", r.stdout)
	}
	id := strings.Split(key, "/")[2]
	setPrefix := s3Key(id, "")

	w.minio.Start()
	for _, e := range w.list(t, cfg) {
		if e.ID == id {
			t.Errorf("list shows the failed backup: %+v", e)
		}
	}
	for _, k := range w.s3Keys(t) {
		if strings.HasSuffix(k, "/manifest.json") {
			t.Errorf("a manifest exists after the failed backup: %s", k)
		}
	}
	if n := len(uploadsOf(t, core, key)); n == 0 {
		t.Fatalf("MinIO holds no upload of %s after the failed backup: prune would have nothing to remove, and the test proves nothing", key)
	}

	r = w.kdr(t, cfg, "prune")
	wantExit(t, r, 0)
	if n := len(uploadsOf(t, core, key)); n == 0 {
		t.Fatalf("prune without --apply removed the upload of %s\n%s", key, r)
	}
	r = w.kdr(t, cfg, "prune", "--apply")
	wantExit(t, r, 0)
	if ids := uploadsOf(t, core, key); len(ids) != 0 {
		t.Errorf("after prune --apply MinIO still holds %d incomplete upload(s) of %s, older than incompleteGrace\n%s", len(ids), key, r)
	}
	for _, k := range w.s3Keys(t) {
		if strings.HasPrefix(k, setPrefix) {
			t.Errorf("after prune --apply %s is still in the bucket", k)
		}
	}
}

// uploadsOf lists the incomplete multipart uploads of exactly one object,
// the listing MinIO answers from disk, so also after a restart.
func uploadsOf(t *testing.T, core minio.Core, key string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := core.ListMultipartUploads(ctx, bucket, key, "", "", "", 1000)
	if err != nil {
		t.Fatalf("list uploads of %s: %v", key, err)
	}
	var ids []string
	for _, u := range res.Uploads {
		if u.Key == key {
			ids = append(ids, u.UploadID)
		}
	}
	return ids
}

// TestVerifyFindsDamage damages the USB copy of a set in the ways media
// rot, and gives verify the wrong key: verify must exit 1 and name the
// target, the object and the reason, while the S3 copy stays ok.
func TestVerifyFindsDamage(t *testing.T) {
	w := newWorld(t, worldOptions{s3: true})
	if _, err := kubedata.Fill(t.Context(), w.etcd.Client(), kubedata.Options{Bytes: 1 << 20, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, w.spec())
	other, _ := w.generateKey(t, "other.key")
	tests := []struct {
		name     string
		damage   func(t *testing.T, path string)
		object   string
		identity string
		// failing are the targets verify must report; the rest must be ok.
		failing []string
		reason  string
	}{
		{name: "byte flipped in the etcd object", damage: flipByte, object: "etcd.db.zst.age",
			failing: []string{"usb"}, reason: "sha256 mismatch"},
		{name: "byte flipped in the state object, with identity", damage: flipByte, object: "state.tar.zst.age",
			identity: w.identity, failing: []string{"usb"}, reason: "sha256 mismatch"},
		{name: "etcd object truncated", damage: truncateHalf, object: "etcd.db.zst.age",
			failing: []string{"usb"}, reason: "truncated"},
		{name: "state object truncated, with identity", damage: truncateHalf, object: "state.tar.zst.age",
			identity: w.identity, failing: []string{"usb"}, reason: "truncated"},
		{name: "wrong identity", object: "state.tar.zst.age", identity: other,
			failing: []string{"s3", "usb"}, reason: "no identity matches"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := w.backup(t, cfg)
			if tt.damage != nil {
				tt.damage(t, w.usbPath(id, tt.object))
			}
			args := []string{"verify", id}
			if tt.identity != "" {
				args = append(args, "--identity", tt.identity)
			}
			r := w.kdr(t, cfg, args...)
			wantExit(t, r, 1)
			failureLine(t, r)
			var failed []string
			for _, line := range strings.Split(r.stdout, "\n") {
				if !strings.HasPrefix(line, "FAILED") {
					continue
				}
				target := ""
				for _, name := range []string{"s3", "usb"} {
					if strings.Contains(line, "target "+name+":") {
						target = name
					}
				}
				failed = append(failed, target)
				mustContain(t, "the FAILED line", line, id, tt.object, tt.reason)
			}
			if !slices.Equal(failed, tt.failing) {
				t.Errorf("verify failed on targets %q, want %q\n%s", failed, tt.failing, r)
			}
			for _, name := range []string{"s3", "usb"} {
				if !slices.Contains(tt.failing, name) && !strings.Contains(r.stdout, id+" on "+name+" ") {
					t.Errorf("no ok line for the undamaged copy on %s\n%s", name, r)
				}
			}
		})
	}
}

// flipByte changes one bit in the middle of a stored object.
func flipByte(t *testing.T, path string) {
	t.Helper()
	data := testenv.ReadFile(t, path)
	makeWritable(t, path)
	data[len(data)/2] ^= 0x01
	testenv.WriteFile(t, path, data, 0o444)
}

// truncateHalf cuts a stored object in half, as an interrupted copy does.
func truncateHalf(t *testing.T, path string) {
	t.Helper()
	data := testenv.ReadFile(t, path)
	makeWritable(t, path)
	testenv.WriteFile(t, path, data[:len(data)/2], 0o444)
}

// makeWritable undoes the read-only mode kdr leaves on stored objects:
// rot and tampering do not ask.
func makeWritable(t *testing.T, path string) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConfigUnknownKey puts a key kdr does not know in each part of the
// config: kdr must refuse it before contacting anything, naming the file,
// the line and the key.
func TestConfigUnknownKey(t *testing.T) {
	dir := t.TempDir()
	r := runKdr(t, nil, "keys", "generate", "--out", filepath.Join(dir, "operator.key"))
	wantExit(t, r, 0)
	_, signingPub := generateSigningKey(t, dir)
	base := configSpec{
		endpoints: []string{"https://127.0.0.1:2379"},
		ca:        "/etc/kubernetes/pki/etcd/ca.crt", cert: "/etc/kubernetes/pki/apiserver-etcd-client.crt", key: "/etc/kubernetes/pki/apiserver-etcd-client.key",
		recipients:  []string{strings.TrimSpace(r.stdout)},
		trustedKeys: []string{signingPub},
		s3Endpoint:  "127.0.0.1:9000", usb: filepath.Join(dir, "usb"), incompleteGrace: "24h",
	}.render()
	env := []string{"S3_ACCESS_KEY=access", "S3_SECRET_KEY=secret"}
	tests := []struct {
		name string
		// after is the line the unknown key follows; empty appends it.
		after, insert, key string
	}{
		{name: "in etcd", after: "      dialTimeout: 2s\n", insert: "      timeout: 5s\n", key: "timeout"},
		{name: "in an s3 target", after: "      pathStyle: true\n", insert: "      sessionToken: abc\n", key: "sessionToken"},
		{name: "in a file set", after: "    state:\n", insert: "      - {name: dns, paths: [/etc/bind/**], optional: true}\n", key: "optional"},
		{name: "at the top level", insert: "retension:\n  keepLast: 3\n", key: "retension"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := len(base)
			if tt.after != "" {
				i := strings.Index(base, tt.after)
				if i < 0 {
					t.Fatalf("the config has no line %q", tt.after)
				}
				at = i + len(tt.after)
			}
			text := base[:at] + tt.insert + base[at:]
			line := strings.Count(base[:at], "\n") + 1
			path := filepath.Join(t.TempDir(), "kdr.yaml")
			testenv.WriteFile(t, path, []byte(text), 0o600)
			r := runKdr(t, env, "--config", path, "backup")
			if r.code == 0 {
				t.Fatalf("a config with the unknown key %q was accepted\n%s", tt.key, r)
			}
			mustContain(t, "the error", failureLine(t, r), fmt.Sprintf("%s:%d:", path, line), strconv.Quote(tt.key))
			if r.stdout != "" {
				t.Errorf("kdr printed %q on stdout", r.stdout)
			}
		})
	}
}

// TestBackupUnreachableEtcd points kdr at a port nothing listens on: the
// backup must fail with an error naming the endpoint, well before the
// run's deadline, and store nothing.
func TestBackupUnreachableEtcd(t *testing.T) {
	w := newWorld(t, worldOptions{})
	endpoint := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	spec := w.spec()
	spec.endpoints = []string{"https://" + endpoint}
	cfg := writeConfig(t, spec)
	// A tighter bound than other runs: with dialTimeout 2s an unreachable
	// member must be given up on in seconds, not hang a scheduled backup.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r, err := execKdr(ctx, w.env(), w.backupArgs(cfg)...)
	if err != nil {
		t.Fatal(err)
	}
	if r.code == 0 {
		t.Fatalf("backup succeeded with no etcd to read\n%s", r)
	}
	mustContain(t, "the error", failureLine(t, r), endpoint)
	if entries, err := os.ReadDir(w.usb); err != nil || len(entries) != 0 {
		t.Errorf("the target holds %v (%v) after a backup that never reached etcd", entries, err)
	}
}

// TestBackupTargetNotWritable makes the USB target read-only: the backup
// must exit non-zero naming it, while S3 still gets a complete, whole set.
func TestBackupTargetNotWritable(t *testing.T) {
	w := newWorld(t, worldOptions{s3: true})
	readOnly(t, w.usb)
	cfg := writeConfig(t, w.spec())
	r := runKdr(t, w.env(), w.backupArgs(cfg)...)
	if r.code == 0 {
		t.Fatalf("backup exited 0 though the set is not complete on usb\n%s", r)
	}
	mustContain(t, "the error", failureLine(t, r), "target usb")
	id := backupID(t, r)
	entries := w.list(t, cfg)
	if len(entries) != 1 || entries[0].ID != id || !slices.Equal(entries[0].Targets, []string{"s3"}) {
		t.Fatalf("list shows %+v, want %s complete on s3 only", entries, id)
	}
	v := w.kdr(t, cfg, "verify", "--identity", w.identity, "--target", "s3", id)
	wantExit(t, v, 0)
}

// readOnly makes dir unwritable for kdr until the test ends: a read-only
// mount for root, whom file modes do not stop, and mode 0555 otherwise.
func readOnly(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV, "size=1m"); err != nil {
			t.Fatalf("mount a read-only tmpfs on %s: %v", dir, err)
		}
		t.Cleanup(func() {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		})
	} else {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
	if f, err := os.CreateTemp(dir, "probe-"); err == nil {
		f.Close()
		os.Remove(f.Name())
		t.Fatalf("%s is still writable: the test would prove nothing", dir)
	}
}

// TestPruneKeepsLockedBackups: with S3 Object Lock, prune reports the
// backups still under retention and deletes nothing of them, in a dry run
// and with --apply.
func TestPruneKeepsLockedBackups(t *testing.T) {
	w := newWorld(t, worldOptions{s3: true})
	w.minio.CreateBucket(t, "locked", true)
	spec := w.spec()
	spec.usb, spec.bucket, spec.objectLockDays, spec.keepLast = "", "locked", 1, 1
	cfg := writeConfig(t, spec)
	first := w.backup(t, cfg)
	w.backup(t, cfg)
	for _, args := range [][]string{{"prune"}, {"prune", "--apply"}} {
		r := w.kdr(t, cfg, args...)
		wantExit(t, r, 0)
		mustContain(t, strings.Join(args, " "), r.stdout, "locked", first)
		if strings.Contains(r.stdout, "remove") && strings.Contains(r.stdout, first+" on s3\n") {
			t.Errorf("%s would remove a locked backup:\n%s", strings.Join(args, " "), r.stdout)
		}
	}
	if got := len(w.list(t, cfg)); got != 2 {
		t.Errorf("%d backups listed after prune, want both (one locked, one kept)", got)
	}
}
