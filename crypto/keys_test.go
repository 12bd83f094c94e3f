package crypto_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/kdr-io/kdr/crypto"
)

// testKey is one key pair as an operator has it: a private key file and the
// public key line for the config.
type testKey struct {
	kind      string
	private   []byte // file contents
	public    string // recipient text
	sshPublic ssh.PublicKey
}

func (k testKey) write(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), k.kind+".key")
	if err := os.WriteFile(path, k.private, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (k testKey) identities(t *testing.T) []age.Identity {
	t.Helper()
	ids, err := crypto.LoadIdentities(k.write(t), nil)
	if err != nil {
		t.Fatalf("loading %s identity: %v", k.kind, err)
	}
	return ids
}

func (k testKey) recipient(t *testing.T) crypto.Recipient {
	t.Helper()
	r, err := crypto.ParseRecipient(k.public)
	if err != nil {
		t.Fatalf("parsing %s recipient: %v", k.kind, err)
	}
	return r
}

func newAgeKey(t testing.TB) testKey {
	t.Helper()
	id, rcpt, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	file := "# created: by a test\n# public key: " + rcpt + "\n" + id + "\n"
	return testKey{kind: "age", private: []byte(file), public: rcpt}
}

func newEd25519Key(t testing.TB, passphrase string) testKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return sshKey(t, "ed25519", pub, priv, passphrase)
}

var (
	rsaOnce sync.Once
	rsaPriv *rsa.PrivateKey
	rsaErr  error
)

// newRSAKey returns the same 2048-bit key every time: generating one costs
// more than every other key of the tests together.
func newRSAKey(t testing.TB, passphrase string) testKey {
	t.Helper()
	rsaOnce.Do(func() { rsaPriv, rsaErr = rsa.GenerateKey(rand.Reader, 2048) })
	if rsaErr != nil {
		t.Fatal(rsaErr)
	}
	return sshKey(t, "rsa", &rsaPriv.PublicKey, rsaPriv, passphrase)
}

func sshKey(t testing.TB, kind string, pub, priv any, passphrase string) testKey {
	t.Helper()
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "operator@example")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "operator@example", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	public := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " operator@example"
	return testKey{kind: kind, private: pem.EncodeToMemory(block), public: public, sshPublic: sp}
}

// encryptTo encrypts plaintext to recipients with crypto.Encrypt.
func encryptTo(t *testing.T, plaintext []byte, recipients ...crypto.Recipient) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := crypto.Encrypt(&buf, recipients)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plaintext); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// decryptAll decrypts ciphertext and reads the plaintext to the end.
func decryptAll(ciphertext []byte, ids []age.Identity) ([]byte, error) {
	return decryptFrom(bytes.NewReader(ciphertext), ids)
}

func decryptFrom(src io.Reader, ids []age.Identity) ([]byte, error) {
	r, err := crypto.Decrypt(src, ids)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// pattern returns n bytes that differ from chunk to chunk, so a swapped or
// repeated chunk would show.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/65536)
	}
	return b
}
