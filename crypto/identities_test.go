package crypto_test

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/kdr-io/kdr/crypto"
)

// protectBinary encrypts data to a passphrase as `age -p` does without -a,
// at a cheap work factor.
func protectBinary(t *testing.T, data []byte, passphrase string) []byte {
	t.Helper()
	r, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func protectArmored(t *testing.T, data []byte, passphrase string) []byte {
	t.Helper()
	out, err := crypto.ProtectIdentity(data, []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// prompt returns a passphrase callback and a pointer to how often it ran.
func prompt(passphrase string) (func() ([]byte, error), *int) {
	calls := new(int)
	return func() ([]byte, error) {
		*calls++
		return []byte(passphrase), nil
	}, calls
}

func TestLoadIdentities(t *testing.T) {
	ageKey := newAgeKey(t)
	ageKey2 := newAgeKey(t)
	ed := newEd25519Key(t, "")
	edLocked := newEd25519Key(t, "correct horse")
	rsaKey := newRSAKey(t, "")
	rsaLocked := newRSAKey(t, "battery staple")
	ageSecret := strings.Split(string(ageKey.private), "\n")[2]
	rsaPKCS1 := testKey{kind: "rsa-pkcs1", public: rsaKey.public, private: pem.EncodeToMemory(&pem.Block{
		Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaPrivateKey(t)),
	})}
	bothAge := append(bytes.Clone(ageKey.private), ageKey2.private...)
	encryptedToKey := encryptTo(t, ageKey.private, ageKey2.recipient(t))

	tests := []struct {
		name       string
		content    []byte
		passphrase string // "" means no prompt available
		opens      []testKey
		wantPrompt int
		wantErr    string
		wantIs     error
	}{
		{name: "age identity file", content: ageKey.private, opens: []testKey{ageKey}},
		{name: "two age identities", content: bothAge, opens: []testKey{ageKey, ageKey2}},
		{name: "age identity with CRLF", content: []byte(strings.ReplaceAll(string(ageKey.private), "\n", "\r\n")), opens: []testKey{ageKey}},
		{name: "ssh ed25519", content: ed.private, opens: []testKey{ed}},
		{name: "ssh rsa openssh format", content: rsaKey.private, opens: []testKey{rsaKey}},
		{name: "ssh rsa pkcs1 format", content: rsaPKCS1.private, opens: []testKey{rsaKey}},
		{name: "ssh ed25519 with passphrase", content: edLocked.private, passphrase: "correct horse", opens: []testKey{edLocked}, wantPrompt: 1},
		{name: "ssh rsa with passphrase", content: rsaLocked.private, passphrase: "battery staple", opens: []testKey{rsaLocked}, wantPrompt: 1},
		{name: "ssh key wrong passphrase", content: edLocked.private, passphrase: "wrong", wantPrompt: 1, wantIs: crypto.ErrWrongPassphrase},
		{name: "ssh key no prompt", content: edLocked.private, wantIs: crypto.ErrNeedPassphrase},
		{name: "age -p armored", content: protectArmored(t, ageKey.private, "pw"), passphrase: "pw", opens: []testKey{ageKey}, wantPrompt: 1},
		{name: "age -p binary", content: protectBinary(t, bothAge, "pw"), passphrase: "pw", opens: []testKey{ageKey, ageKey2}, wantPrompt: 1},
		{name: "age -p wrapping an ssh key", content: protectBinary(t, ed.private, "pw"), passphrase: "pw", opens: []testKey{ed}, wantPrompt: 1},
		{name: "age -p wrong passphrase", content: protectBinary(t, ageKey.private, "pw"), passphrase: "nope", wantPrompt: 1, wantIs: crypto.ErrWrongPassphrase},
		{name: "age -p no prompt", content: protectArmored(t, ageKey.private, "pw"), wantIs: crypto.ErrNeedPassphrase},
		{name: "age -p truncated", content: protectBinary(t, ageKey.private, "pw")[:150], passphrase: "pw", wantPrompt: 1, wantIs: crypto.ErrCorrupt},
		{name: "age file to a key", content: encryptedToKey, wantErr: "age-encrypted to a key, not a passphrase"},
		{name: "empty", content: nil, wantErr: "is empty"},
		{name: "blank", content: []byte("\n \n"), wantErr: "is empty"},
		{name: "only comments", content: []byte("# nothing\n"), wantErr: "no identities found"},
		{name: "public key", content: []byte("# oops\n" + exampleAge + "\n"), wantErr: ":2: this is a public key"},
		{name: "ssh public key", content: []byte(ed.public + "\n"), wantErr: ":1: this is a public key"},
		{name: "malformed secret", content: []byte(ageSecret[:len(ageSecret)-3] + "QQQ\n"), wantErr: ":1: malformed age secret key"},
		{name: "garbage", content: []byte("hello\n"), wantErr: ":1: not an age identity"},
		{name: "not a key PEM", content: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), wantErr: "not a usable private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "identity")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			var ask func() ([]byte, error)
			calls := new(int)
			if tt.passphrase != "" {
				ask, calls = prompt(tt.passphrase)
			}
			ids, err := crypto.LoadIdentities(path, ask)
			if *calls != tt.wantPrompt {
				t.Errorf("passphrase asked %d times, want %d", *calls, tt.wantPrompt)
			}
			if tt.wantErr != "" || tt.wantIs != nil {
				if err == nil {
					t.Fatal("loaded, want an error")
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("err = %v, want %v", err, tt.wantIs)
				}
				want := tt.wantErr
				if strings.HasPrefix(want, ":") {
					want = path + want
				}
				if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to name %s and say %q", err, path, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				for _, secret := range []string{ageSecret, string(ed.private)} {
					if strings.Contains(err.Error(), secretPart(secret)) {
						t.Errorf("error repeats key material: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) != len(tt.opens) {
				t.Fatalf("got %d identities, want %d", len(ids), len(tt.opens))
			}
			for _, k := range tt.opens {
				ct := encryptTo(t, []byte("payload for "+k.kind), k.recipient(t))
				got, err := decryptAll(ct, ids)
				if err != nil || string(got) != "payload for "+k.kind {
					t.Errorf("identities do not open a stream for the %s key: %q, %v", k.kind, got, err)
				}
			}
		})
	}
}

func rsaPrivateKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	newRSAKey(t, "")
	return rsaPriv
}

func TestLoadIdentitiesMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.key")
	_, err := crypto.LoadIdentities(path, nil)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want not-exist naming the file", err)
	}
}

func TestLoadIdentitiesPromptError(t *testing.T) {
	errNoTTY := errors.New("no terminal")
	for name, content := range map[string][]byte{
		"ssh":    newEd25519Key(t, "pw").private,
		"age -p": protectArmored(t, newAgeKey(t).private, "pw"),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "id")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := crypto.LoadIdentities(path, func() ([]byte, error) { return nil, errNoTTY })
			if !errors.Is(err, errNoTTY) {
				t.Fatalf("err = %v, want the prompt's error", err)
			}
		})
	}
}

func TestGenerateIdentity(t *testing.T) {
	id, rcpt, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	id2, rcpt2, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if id == id2 || rcpt == rcpt2 {
		t.Fatal("two calls made the same key")
	}
	if !strings.HasPrefix(id, "AGE-SECRET-KEY-1") || !strings.HasPrefix(rcpt, "age1") {
		t.Fatalf("got %q / %q", id[:16], rcpt)
	}
	k := testKey{kind: "generated", private: []byte(id + "\n"), public: rcpt}
	ct := encryptTo(t, []byte("ok"), k.recipient(t))
	if got, err := decryptAll(ct, k.identities(t)); err != nil || string(got) != "ok" {
		t.Fatalf("generated pair does not round-trip: %q, %v", got, err)
	}
}

func TestProtectIdentity(t *testing.T) {
	k := newAgeKey(t)
	out, err := crypto.ProtectIdentity(k.private, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, []byte("-----BEGIN AGE ENCRYPTED FILE-----\n")) {
		t.Fatalf("not armored: %.40q", out)
	}
	if bytes.Contains(out, []byte("AGE-SECRET-KEY")) {
		t.Fatal("output contains the identity in clear")
	}
	for name, tc := range map[string]struct{ id, pass string }{
		"empty passphrase": {string(k.private), ""},
		"not an identity":  {"hello\n", "pw"},
		"public key":       {exampleAge + "\n", "pw"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := crypto.ProtectIdentity([]byte(tc.id), []byte(tc.pass)); err == nil {
				t.Fatal("protected, want an error")
			}
		})
	}
}
