package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestInitToVerify is a new user's first backup: `kdr init`, an age key
// pair and a signing key pair from `kdr keys generate`, whose printed
// public keys become the recipients and trusted signers files the
// generated config points at, the edits a user cannot avoid (where etcd,
// its client certificate, the key files, the bucket and the USB disk are),
// then backup, list and verify with the config found in the working
// directory. Everything else stays as kdr init wrote it.
func TestInitToVerify(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{Members: 1, TLS: true})
	h := newHost(t, etcd.PKI)
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false) // the example's bucket
	dir := t.TempDir()
	usb := filepath.Join(dir, "usb")
	testenv.Mkdir(t, usb, 0o755)
	// As a user works: in one directory, every path relative to it.
	t.Chdir(dir)

	r := runKdr(t, nil, "init")
	wantExit(t, r, 0)
	mustContain(t, "kdr init's output", r.stdout, "wrote kdr.yaml")

	// `kdr keys generate --out operator.key > recipients.txt`: the
	// identity goes to the file, the recipient to stdout.
	r = runKdr(t, nil, "keys", "generate", "--out", "operator.key")
	wantExit(t, r, 0)
	if !regexp.MustCompile(`^age1[0-9a-z]+\n$`).MatchString(r.stdout) {
		t.Fatalf("keys generate printed %q, want one recipient line\n%s", r.stdout, r)
	}
	recipients := filepath.Join(dir, "recipients.txt")
	testenv.WriteFile(t, recipients, []byte(r.stdout), 0o644)

	// `kdr keys generate --signing --out signing.key > trusted-signers.txt`:
	// the writer's key, and its public key for the readers to trust.
	r = runKdr(t, nil, "keys", "generate", "--signing", "--out", "signing.key")
	wantExit(t, r, 0)
	if !regexp.MustCompile(`^ssh-ed25519 \S+( \S+)?\n$`).MatchString(r.stdout) {
		t.Fatalf("keys generate --signing printed %q, want one ssh-ed25519 line\n%s", r.stdout, r)
	}
	signers := filepath.Join(dir, "trusted-signers.txt")
	testenv.WriteFile(t, signers, []byte(r.stdout), 0o644)

	cfg := string(testenv.ReadFile(t, "kdr.yaml"))
	if !strings.Contains(cfg, "recipientsFiles: [/etc/kdr/recipients.txt]") || regexp.MustCompile(`(?m)^\s+recipients:`).MatchString(cfg) {
		t.Fatalf("kdr init no longer writes a config with a recipients file and no inline recipients: this test is about that config\n%s", cfg)
	}
	for _, e := range []struct{ old, new string }{
		{"        - https://10.0.0.11:2379\n        - https://10.0.0.12:2379\n        - https://10.0.0.13:2379\n",
			"        - " + etcd.Endpoints()[0] + "\n"},
		{"ca: /etc/kubernetes/pki/etcd/ca.crt", "ca: " + h.etcdCA},
		{"cert: /etc/kubernetes/pki/apiserver-etcd-client.crt", "cert: " + h.etcdCert},
		{"key: /etc/kubernetes/pki/apiserver-etcd-client.key", "key: " + h.etcdKey},
		{"/etc/kdr/recipients.txt", recipients},
		{"keyFile: /etc/kdr/signing/signing.key", "keyFile: " + filepath.Join(dir, "signing.key")},
		{"/etc/kdr/trusted-signers.txt", signers},
		{"endpoint: s3.example.internal:9000", "endpoint: " + m.Endpoint()},
		{"# insecure: true", "insecure: true"},
		{"path: /mnt/usb/kdr", "path: " + usb},
	} {
		if n := strings.Count(cfg, e.old); n != 1 {
			t.Fatalf("the generated config holds %q %d times, want once: kdr init's example changed\n%s", e.old, n, cfg)
		}
		cfg = strings.Replace(cfg, e.old, e.new, 1)
	}
	testenv.WriteFile(t, "kdr.yaml", []byte(cfg), 0o600)
	env := []string{"S3_ACCESS_KEY=" + m.AccessKey(), "S3_SECRET_KEY=" + m.SecretKey()}

	// --root stands in for the host's / (the state paths stay kubeadm's).
	r = runKdr(t, env, "backup", "--root", h.root)
	wantExit(t, r, 0)
	id := backupID(t, r)

	r = runKdr(t, env, "list")
	wantExit(t, r, 0)
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + `\s+prod\s.*\ss3,usb$`).MatchString(r.stdout) {
		t.Errorf("list does not show %s of prod on s3 and usb\n%s", id, r)
	}

	r = runKdr(t, env, "verify", "--identity", "operator.key", "latest")
	wantExit(t, r, 0)
	for _, target := range []string{"s3", "usb"} {
		if !regexp.MustCompile(`(?m)^ok\s+prod ` + regexp.QuoteMeta(id) + ` on ` + target + ` \(\d+ checks\)$`).MatchString(r.stdout) {
			t.Errorf("verify does not pass %s on %s\n%s", id, target, r)
		}
	}
	if _, err := os.Stat(filepath.Join(usb, cluster, id)); err != nil {
		t.Errorf("the set is not on the USB target: %v", err)
	}
}
