package manifest_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

func newKey(t *testing.T) (*manifest.Signer, string) {
	k := testenv.NewSigningKey(t)
	return k.Signer, k.Public
}

func trust(t *testing.T, pubs ...string) *manifest.Trust {
	t.Helper()
	tr, err := manifest.ParseTrust(pubs)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestVerify(t *testing.T) {
	ours, ourPub := newKey(t)
	theirs, _ := newKey(t)
	data := []byte(`{"formatVersion": 2}` + "\n")
	sig := func(s *manifest.Signer, d []byte, ns string) []byte {
		b, err := s.Sign(d, ns)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		trust  *manifest.Trust
		data   []byte
		sig    []byte
		is     error
		reason string
	}{
		{"genuine", trust(t, ourPub), data, sig(ours, data, manifest.NamespaceManifest), nil, ""},
		{"untrusted key", trust(t, ourPub), data, sig(theirs, data, manifest.NamespaceManifest), manifest.ErrUntrusted, "which is not a trusted key"},
		{"other bytes", trust(t, ourPub), append([]byte(" "), data...), sig(ours, data, manifest.NamespaceManifest), manifest.ErrUntrusted, "not over these bytes"},
		{"other namespace", trust(t, ourPub), data, sig(ours, data, manifest.NamespaceDrillReport), manifest.ErrUntrusted, "not over these bytes"},
		{"garbage", trust(t, ourPub), data, []byte("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"), manifest.ErrUntrusted, "does not parse"},
		{"no trusted keys", trust(t), data, sig(ours, data, manifest.NamespaceManifest), manifest.ErrNoTrustedKeys, ""},
		{"too large", trust(t, ourPub), data, bytes.Repeat([]byte("A"), 17<<10), manifest.ErrUntrusted, "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fp, err := tc.trust.Verify(tc.data, tc.sig, manifest.NamespaceManifest)
			if tc.is == nil {
				if err != nil || fp != ours.Fingerprint() {
					t.Fatalf("Verify: %q, %v", fp, err)
				}
				return
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.reason) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Verify: %v, want %v with %q on one line", err, tc.is, tc.reason)
			}
		})
	}
}

func TestParseTrustRefuses(t *testing.T) {
	for _, line := range []string{"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "not a key", "age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh"} {
		if _, err := manifest.ParseTrust([]string{line}); err == nil {
			t.Errorf("ParseTrust(%q) took it", line)
		}
	}
	if _, err := manifest.ParseSigner([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n")); err == nil || strings.Contains(err.Error(), "xx") {
		t.Errorf("ParseSigner of garbage: %v", err)
	}
}

// TestRotation: a set signed by the old key verifies while both keys are
// trusted, is refused once the old key is removed, and verifies again
// once a current key countersigned it.
func TestRotation(t *testing.T) {
	ctx := context.Background()
	old, oldPub := newKey(t)
	cur, curPub := newKey(t)
	dir := t.TempDir()
	tg, err := storage.NewLocal("usb", dir)
	if err != nil {
		t.Fatal(err)
	}
	key := "prod/20260101T000000.000Z-000001/manifest.json"
	data := []byte("{}\n")
	if err := manifest.PutSigned(ctx, tg, key, data, manifest.NamespaceManifest, old, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.ReadSigned(ctx, tg, key, 1<<10, manifest.NamespaceManifest, trust(t, oldPub, curPub)); err != nil {
		t.Fatalf("both keys trusted: %v", err)
	}
	_, err = manifest.ReadSigned(ctx, tg, key, 1<<10, manifest.NamespaceManifest, trust(t, curPub))
	if !errors.Is(err, manifest.ErrUntrusted) || !strings.Contains(err.Error(), old.Fingerprint()) {
		t.Fatalf("old key removed: %v, want it refused naming %s", err, old.Fingerprint())
	}
	if err := manifest.Countersign(ctx, tg, key, data, manifest.NamespaceManifest, cur); err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.ReadSigned(ctx, tg, key, 1<<10, manifest.NamespaceManifest, trust(t, curPub)); err != nil {
		t.Fatalf("countersigned by the current key: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, filepath.FromSlash(manifest.SignatureKey(key)))); err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.ReadSigned(ctx, tg, key, 1<<10, manifest.NamespaceManifest, trust(t, curPub)); err != nil {
		t.Fatalf("the countersignature alone: %v", err)
	}
	unsigned := "prod/20260101T000000.000Z-000002/manifest.json"
	if err := tg.Put(ctx, unsigned, bytes.NewReader(data), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.ReadSigned(ctx, tg, unsigned, 1<<10, manifest.NamespaceManifest, trust(t, curPub)); !errors.Is(err, manifest.ErrUnsigned) {
		t.Fatalf("unsigned: %v, want ErrUnsigned", err)
	}
}

// TestBreakGlassSSHKeygen: the signature kdr stores is one OpenSSH's own
// ssh-keygen verifies with the allowed_signers file the runbook prints,
// and ssh-keygen rejects a forged one.
func TestBreakGlassSSHKeygen(t *testing.T) {
	bin, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Fatal("ssh-keygen not found: install openssh-client (apt-get install openssh-client)")
	}
	ours, pub := newKey(t)
	forger, _ := newKey(t)
	dir := t.TempDir()
	data := []byte(`{"id": "x"}` + "\n")
	allowed := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(trust(t, pub).AllowedSigners()), 0o644); err != nil {
		t.Fatal(err)
	}
	verify := func(sig []byte, content []byte) error {
		sigFile := filepath.Join(dir, "manifest.json.sig")
		if err := os.WriteFile(sigFile, sig, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-Y", "verify", "-f", allowed, "-I", manifest.SignaturePrincipal, "-n", manifest.NamespaceManifest, "-s", sigFile)
		cmd.Stdin = bytes.NewReader(content)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return errors.New(strings.TrimSpace(string(out)))
		}
		return nil
	}
	genuine, err := ours.Sign(data, manifest.NamespaceManifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(genuine, data); err != nil {
		t.Fatalf("ssh-keygen refuses a genuine signature: %v", err)
	}
	forged, err := forger.Sign(data, manifest.NamespaceManifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(forged, data); err == nil {
		t.Fatal("ssh-keygen accepts a signature by an untrusted key")
	}
	if err := verify(genuine, append(data, ' ')); err == nil {
		t.Fatal("ssh-keygen accepts a signature over other bytes")
	}
}

// BenchmarkSignVerify: what signing adds to a backup and verifying to a
// read, for a manifest of typical size (a few KiB).
func BenchmarkSignVerify(b *testing.B) {
	k := testenv.NewSigningKey(b)
	data := bytes.Repeat([]byte(`{"path": "etc/kubernetes/pki/ca.crt"}`), 100)
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.Signer.Sign(data, manifest.NamespaceManifest); err != nil {
				b.Fatal(err)
			}
		}
	})
	sig, err := k.Signer.Sign(data, manifest.NamespaceManifest)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.Trust.Verify(data, sig, manifest.NamespaceManifest); err != nil {
				b.Fatal(err)
			}
		}
	})
}
