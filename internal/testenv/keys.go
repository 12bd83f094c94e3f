package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"filippo.io/age"

	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
)

// AgeKeys makes a fresh age key pair: the recipients backups are
// encrypted to and the identities that open them.
func AgeKeys(t testing.TB) ([]crypto.Recipient, []age.Identity) {
	t.Helper()
	identity, recipient, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := crypto.ParseRecipients([]string{recipient})
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.ParseX25519Identity(identity)
	if err != nil {
		t.Fatal(err)
	}
	return rs, []age.Identity{id}
}

// SigningKey is a fresh Ed25519 signing key: the signer writers use, the
// Trust readers verify with, and the same as files and config values.
type SigningKey struct {
	Signer *manifest.Signer
	Trust  *manifest.Trust
	// Public is the authorized_keys line of signing.trustedKeys.
	Public string
	// Private is the OpenSSH private key, as signing.keyFile holds it.
	Private []byte
}

// NewSigningKey makes a SigningKey trusted by its own Trust.
func NewSigningKey(t testing.TB) *SigningKey {
	t.Helper()
	k, err := generateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// MustSigningKey is NewSigningKey for a package's tests to share, made
// before any test runs.
func MustSigningKey() *SigningKey {
	k, err := generateSigningKey()
	if err != nil {
		panic(err)
	}
	return k
}

func generateSigningKey() (*SigningKey, error) {
	priv, pub, err := manifest.GenerateSigningKey("test")
	if err != nil {
		return nil, err
	}
	s, err := manifest.ParseSigner(priv)
	if err != nil {
		return nil, err
	}
	trust, err := manifest.ParseTrust([]string{pub})
	if err != nil {
		return nil, err
	}
	return &SigningKey{Signer: s, Trust: trust, Public: pub, Private: priv}, nil
}

// WriteFile writes the private key to dir/signing.key (0600) and returns
// its path.
func (k *SigningKey) WriteFile(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(p, k.Private, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
