package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/internal/kubedata"

	"github.com/kdr-io/kdr/internal/testenv"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestBackupListVerifyDecrypt is the whole happy path through the binary:
// a TLS etcd of three members, MinIO and a local directory; then the etcd
// object is taken from the bucket and opened with age and zstd alone, and
// must be exactly what etcd streamed and hold the keyspace the manifest
// describes.
func TestBackupListVerifyDecrypt(t *testing.T) {
	w := newWorld(t, worldOptions{members: 3, s3: true})
	if _, err := kubedata.Fill(t.Context(), w.etcd.Client(), kubedata.Options{Bytes: 8 << 20, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, w.spec())
	id := w.backup(t, cfg)

	entries := w.list(t, cfg)
	if len(entries) != 1 || entries[0].ID != id {
		t.Fatalf("list shows %+v, want the one backup %s", entries, id)
	}
	e := entries[0]
	if e.Cluster != cluster || e.Revision <= 0 || e.Size <= 0 || e.Created.IsZero() || !slices.Equal(e.Targets, []string{"s3", "usb"}) {
		t.Errorf("list entry %+v: want cluster %s, a revision, a size, a time and targets [s3 usb]", e, cluster)
	}

	for _, args := range [][]string{{"verify"}, {"verify", "--identity", w.identity}} {
		r := w.kdr(t, cfg, args...)
		wantExit(t, r, 0)
		for _, target := range []string{"s3", "usb"} {
			if !regexp.MustCompile(`(?m)^ok\s+` + cluster + ` ` + id + ` on ` + target + ` `).MatchString(r.stdout) {
				t.Errorf("%v: no ok line for target %s\n%s", args, target, r)
			}
		}
	}

	m := parseManifest(t, w.getS3(t, s3Key(id, "manifest.json")))
	if m.ID != id || m.Cluster != cluster || m.Etcd.Revision != e.Revision || len(m.Etcd.Members) != 3 || !m.Created.Equal(e.Created) {
		t.Errorf("manifest says id %s cluster %s revision %d members %d created %s; list says %+v",
			m.ID, m.Cluster, m.Etcd.Revision, len(m.Etcd.Members), m.Created, e)
	}
	plainSize, plainSHA, size, sha := m.object(t, "etcd.db.zst.age")
	stored := w.getS3(t, s3Key(id, "etcd.db.zst.age"))
	if int64(len(stored)) != size || sum(stored) != sha {
		t.Errorf("stored etcd object: %d bytes sha256 %s; manifest records %d bytes sha256 %s", len(stored), sum(stored), size, sha)
	}
	// One stream went to every target: the USB copy is the same bytes.
	if usb := testenv.ReadFile(t, w.usbPath(id, "etcd.db.zst.age")); !bytes.Equal(usb, stored) {
		t.Errorf("the usb copy of the etcd object differs from the s3 copy")
	}

	dir := t.TempDir()
	enc := filepath.Join(dir, "etcd.db.zst.age")
	testenv.WriteFile(t, enc, stored, 0o600)
	db := filepath.Join(dir, "etcd.db")
	decrypt(t, w.identity, enc, db)
	plain := testenv.ReadFile(t, db)
	if int64(len(plain)) != plainSize || sum(plain) != plainSHA {
		t.Fatalf("decrypted snapshot: %d bytes sha256 %s; the manifest records what etcd streamed: %d bytes sha256 %s",
			len(plain), sum(plain), plainSize, plainSHA)
	}
	var hk struct {
		Hash uint32 `json:"hash"`
	}
	out := tool(t, "etcdutl", "hashkv", db, "--rev", fmt.Sprint(m.Etcd.Revision), "-w", "json")
	if err := json.Unmarshal(out, &hk); err != nil {
		t.Fatalf("etcdutl hashkv output %q: %v", out, err)
	}
	if hk.Hash == 0 || hk.Hash != m.Etcd.HashKV {
		t.Errorf("etcdutl hashkv at revision %d of the decrypted snapshot = %d, manifest hashKV = %d", m.Etcd.Revision, hk.Hash, m.Etcd.HashKV)
	}
}

// TestNoSecretReachesATarget scans every stored byte, in the bucket and
// on the local target, and everything kdr printed, for key material: the
// PEM header, every line of every captured key file, the key inside a
// kubeconfig, a private key stored in etcd, and the S3 secret.
func TestNoSecretReachesATarget(t *testing.T) {
	w := newWorld(t, worldOptions{s3: true})
	body := make([]byte, 48)
	rand.Read(body)
	secret := "-----BEGIN RSA PRIVATE KEY-----\n" + b64(body) + "\n-----END RSA PRIVATE KEY-----\n"
	if _, err := w.etcd.Client().Put(t.Context(), "/registry/secrets/kube-system/bootstrap-signer", secret); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, w.spec())
	r := runKdr(t, w.env(), w.backupArgs(cfg)...)
	wantExit(t, r, 0)
	id := backupID(t, r)

	needles := map[string]string{
		"a PEM private key header":     "PRIVATE KEY",
		"the private key kept in etcd": b64(body),
		"the S3 secret key":            w.minio.SecretKey(),
	}
	for _, k := range w.host.keyFiles(t) {
		for i, line := range strings.Split(string(testenv.ReadFile(t, k)), "\n") {
			if line != "" {
				needles[fmt.Sprintf("line %d of %s", i+1, k)] = line
			}
		}
	}
	kubeconfig := string(testenv.ReadFile(t, filepath.Join(w.host.root, "etc/kubernetes/admin.conf")))
	keyData := regexp.MustCompile(`client-key-data: (\S+)`).FindStringSubmatch(kubeconfig)
	if keyData == nil {
		t.Fatal("admin.conf holds no client key: the check on it would prove nothing")
	}
	needles["the client key inside admin.conf"] = keyData[1]

	scan := func(where string, data []byte) {
		for what, n := range needles {
			if bytes.Contains(data, []byte(n)) {
				t.Errorf("%s holds %s in clear", where, what)
			}
		}
	}
	inSet := 0
	for _, key := range w.s3Keys(t) {
		scan("s3 object "+key, w.getS3(t, key))
		if strings.HasPrefix(key, s3Key(id, "")) {
			inSet++
		}
	}
	files, kitFiles := 0, 0
	err := filepath.WalkDir(w.usb, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		inKit := strings.HasPrefix(p, filepath.Join(w.usb, "kit")+string(filepath.Separator))
		if info, err := d.Info(); err != nil || inKit && info.Mode().Perm()&0o111 != 0 {
			// The recovery kit's binaries are copies of programs, kdr's
			// own among them, whose code names "PRIVATE KEY": what they
			// hold is not this cluster's data.
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if inKit {
			kitFiles++
		} else {
			files++
		}
		scan("usb file "+p, data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The etcd and state objects, the manifest, the two runbooks, and
	// the signature of each of those three.
	if inSet != 8 || files != 8 {
		t.Errorf("scanned %d objects of the set in the bucket and %d files on usb; want the 8 objects on each", inSet, files)
	}
	// The kit's config, README, runbook, allowed_signers, VERSION and
	// SHA256SUMS with its signature.
	if kitFiles != 7 {
		t.Errorf("scanned %d files of the recovery kit on usb, want 7", kitFiles)
	}
	scan("kdr's output", []byte(r.stdout+r.stderr))
}

// TestKeysGenerateRefusesToOverwrite checks that an identity, the one
// secret an operator keeps, is never replaced by a new one.
func TestKeysGenerateRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "operator.key")
	testenv.WriteFile(t, path, []byte("AGE-SECRET-KEY-1KEEPME\n"), 0o600)
	r := runKdr(t, nil, "keys", "generate", "--out", path)
	if r.code == 0 {
		t.Fatalf("keys generate overwrote an existing identity\n%s", r)
	}
	failureLine(t, r)
	if got := string(testenv.ReadFile(t, path)); got != "AGE-SECRET-KEY-1KEEPME\n" {
		t.Errorf("the existing identity changed to %q", got)
	}
}

// TestProtectedIdentity: an identity written with --protect opens only
// with its passphrase, and the file holds no key in clear.
func TestProtectedIdentity(t *testing.T) {
	w := newWorld(t, worldOptions{})
	key := filepath.Join(w.dir, "protected.key")
	env := append(w.env(), "KDR_IDENTITY_PASSPHRASE=correct horse")
	r := runKdr(t, env, "keys", "generate", "--protect", "--out", key)
	wantExit(t, r, 0)
	recipient := strings.TrimSpace(r.stdout)
	if data := testenv.ReadFile(t, key); strings.Contains(string(data), "AGE-SECRET-KEY") {
		t.Fatal("the protected identity file holds the key in clear")
	}
	spec := w.spec()
	spec.recipients = []string{recipient}
	cfg := writeConfig(t, spec)
	id := w.backup(t, cfg)
	r = runKdr(t, env, "--config", cfg, "verify", "--identity", key, id)
	wantExit(t, r, 0)
	wrong := append(w.env(), "KDR_IDENTITY_PASSPHRASE=wrong")
	r = runKdr(t, wrong, "--config", cfg, "verify", "--identity", key, id)
	if r.code == 0 {
		t.Fatalf("verify with a wrong passphrase succeeded\n%s", r)
	}
	mustContain(t, "the error", failureLine(t, r), "passphrase")
}
