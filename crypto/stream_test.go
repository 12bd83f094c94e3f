package crypto_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"

	"github.com/kdr-io/kdr/crypto"
)

func TestRoundTripEveryRecipientDecrypts(t *testing.T) {
	keys := []testKey{newAgeKey(t), newEd25519Key(t, ""), newRSAKey(t, "")}
	var rcpts []crypto.Recipient
	for _, k := range keys {
		rcpts = append(rcpts, k.recipient(t))
	}
	sizes := []int{0, 1, 64 << 10, 64<<10 + 1, 300 << 10}
	for _, size := range sizes {
		plaintext := pattern(size)
		ciphertext := encryptTo(t, plaintext, rcpts...)
		for _, k := range keys {
			t.Run(fmt.Sprintf("%s/%d", k.kind, size), func(t *testing.T) {
				got, err := decryptAll(ciphertext, k.identities(t))
				if err != nil {
					t.Fatalf("decrypt: %v", err)
				}
				if !bytes.Equal(got, plaintext) {
					t.Fatalf("plaintext differs: got %d bytes, want %d", len(got), len(plaintext))
				}
			})
		}
	}
}

func TestEncryptRefusesNoRecipients(t *testing.T) {
	for name, rcpts := range map[string][]crypto.Recipient{
		"none":   nil,
		"no key": {{Text: "age1x", Fingerprint: "age:0"}},
	} {
		t.Run(name, func(t *testing.T) {
			if w, err := crypto.Encrypt(io.Discard, rcpts); err == nil {
				w.Close()
				t.Fatal("Encrypt succeeded without a usable recipient")
			}
		})
	}
}

func TestDecryptRefusesNoIdentities(t *testing.T) {
	ct := encryptTo(t, []byte("x"), newAgeKey(t).recipient(t))
	if _, err := crypto.Decrypt(bytes.NewReader(ct), nil); !errors.Is(err, crypto.ErrNoIdentities) {
		t.Fatalf("err = %v, want ErrNoIdentities", err)
	}
}

func TestDecryptWrongIdentity(t *testing.T) {
	ed := newEd25519Key(t, "")
	rsaKey := newRSAKey(t, "")
	ct := encryptTo(t, []byte("secret"), newAgeKey(t).recipient(t), newAgeKey(t).recipient(t), ed.recipient(t), rsaKey.recipient(t))

	other := newAgeKey(t)
	otherSSH := newEd25519Key(t, "")
	ids := append(other.identities(t), otherSSH.identities(t)...)
	_, err := decryptAll(ct, ids)
	if !errors.Is(err, crypto.ErrWrongIdentity) {
		t.Fatalf("err = %v, want ErrWrongIdentity", err)
	}
	if errors.Is(err, crypto.ErrCorrupt) {
		t.Fatalf("a wrong key is reported as corruption: %v", err)
	}
	msg := err.Error()
	wants := []string{
		"no identity matches any recipient of this backup (recipients: ",
		"2 X25519",
		"ssh-ed25519 " + ssh.FingerprintSHA256(ed.sshPublic)[:12] + "...",
		"ssh-rsa " + ssh.FingerprintSHA256(rsaKey.sshPublic)[:12] + "...",
	}
	for _, want := range wants {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message is not one line: %q", msg)
	}
}

// headerEnd returns the offset just past the header's MAC line.
func headerEnd(t *testing.T, ct []byte) int {
	t.Helper()
	i := bytes.Index(ct, []byte("\n--- "))
	if i < 0 {
		t.Fatal("no MAC line in ciphertext")
	}
	j := bytes.IndexByte(ct[i+1:], '\n')
	return i + 1 + j + 1
}

func TestDecryptCorrupt(t *testing.T) {
	key := newAgeKey(t)
	plaintext := pattern(200 << 10) // four chunks, the last short
	ct := encryptTo(t, plaintext, key.recipient(t))
	hdr := headerEnd(t, ct)
	payload := hdr + 16 // after the stream nonce
	const encChunk = 64<<10 + 16

	flip := func(i int) []byte {
		c := bytes.Clone(ct)
		c[i] ^= 0x01
		return c
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated in the version line", ct[:10]},
		{"truncated in the header", ct[:hdr-5]},
		{"truncated after the header", ct[:hdr]},
		{"truncated in the nonce", ct[:hdr+8]},
		{"truncated after the nonce", ct[:payload]},
		{"truncated at a chunk boundary", ct[:payload+encChunk]},
		{"truncated inside a chunk", ct[:payload+encChunk+100]},
		{"last byte missing", ct[:len(ct)-1]},
		{"trailing byte", append(bytes.Clone(ct), 0)},
		{"bit flipped in the version line", flip(3)},
		{"bit flipped in the MAC", flip(hdr - 3)},
		{"bit flipped in the nonce", flip(hdr + 2)},
		{"bit flipped in the first chunk", flip(payload + 10)},
		{"bit flipped in a middle chunk", flip(payload + 2*encChunk + 7)},
		{"bit flipped in the tag of the last chunk", flip(len(ct) - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decryptAll(tt.data, key.identities(t))
			if !errors.Is(err, crypto.ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if errors.Is(err, crypto.ErrWrongIdentity) {
				t.Fatalf("corruption reported as a wrong key: %v", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

// A damaged X25519 stanza cannot be told from one for another key: this
// pins the documented behaviour.
func TestDecryptDamagedStanzaLooksLikeWrongKey(t *testing.T) {
	key := newAgeKey(t)
	ct := encryptTo(t, []byte("x"), key.recipient(t))
	body := bytes.Index(ct, []byte("\n-> X25519 "))
	body += bytes.IndexByte(ct[body+1:], '\n') + 2 // first byte of the stanza body
	if ct[body] == 'A' {
		ct[body] = 'B'
	} else {
		ct[body] = 'A'
	}
	_, err := decryptAll(ct, key.identities(t))
	if !errors.Is(err, crypto.ErrWrongIdentity) {
		t.Fatalf("err = %v, want ErrWrongIdentity", err)
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

func TestDecryptSourceErrorIsNotCorruption(t *testing.T) {
	key := newAgeKey(t)
	ct := encryptTo(t, pattern(200<<10), key.recipient(t))
	errNetwork := errors.New("connection reset by peer")
	for _, cut := range []int{0, 20, headerEnd(t, ct) + 4, len(ct) / 2, len(ct) - 1} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			src := io.MultiReader(bytes.NewReader(ct[:cut]), failingReader{errNetwork})
			_, err := decryptFrom(src, key.identities(t))
			if !errors.Is(err, errNetwork) {
				t.Fatalf("err = %v, want the source's error", err)
			}
			if errors.Is(err, crypto.ErrCorrupt) || errors.Is(err, crypto.ErrWrongIdentity) {
				t.Fatalf("a read error is reported as %v", err)
			}
		})
	}
}

// An identity kind this package does not know failing (here: no passphrase
// for an encrypted SSH key) says nothing about the backup.
func TestDecryptForeignIdentityErrorIsNotCorruption(t *testing.T) {
	k := newEd25519Key(t, "pw")
	ct := encryptTo(t, []byte("x"), k.recipient(t))
	errNoTTY := errors.New("no terminal")
	id, err := agessh.NewEncryptedSSHIdentity(k.sshPublic, k.private, func() ([]byte, error) { return nil, errNoTTY })
	if err != nil {
		t.Fatal(err)
	}
	_, err = decryptAll(ct, []age.Identity{id})
	if err == nil || errors.Is(err, crypto.ErrCorrupt) || errors.Is(err, crypto.ErrWrongIdentity) {
		t.Fatalf("err = %v, want a plain identity error", err)
	}
	if !strings.Contains(err.Error(), "no terminal") {
		t.Fatalf("err = %v, want it to say why the identity failed", err)
	}
}

// countingSource yields n bytes of a pattern and counts what it has given.
type countingSource struct {
	n, given int64
	produced *atomic.Int64
}

func (c *countingSource) Read(p []byte) (int, error) {
	if c.given >= c.n {
		return 0, io.EOF
	}
	if rem := c.n - c.given; int64(len(p)) > rem {
		p = p[:rem]
	}
	for i := range p {
		p[i] = byte((c.given + int64(i)) * 31 >> 3)
	}
	c.given += int64(len(p))
	c.produced.Store(c.given)
	return len(p), nil
}

// TestStreamsWithoutBuffering pushes 64 MiB through Encrypt and Decrypt
// joined by a pipe. A pipe has no buffer, so if either side held the
// stream whole, the first plaintext would reach the reader only after the
// producer had given everything.
func TestStreamsWithoutBuffering(t *testing.T) {
	const total = 64 << 20
	key := newAgeKey(t)
	rcpt, ids := key.recipient(t), key.identities(t)

	var produced atomic.Int64
	wantHash := sha256.New()
	if _, err := io.Copy(wantHash, &countingSource{n: total, produced: new(atomic.Int64)}); err != nil {
		t.Fatal(err)
	}

	pr, pw := io.Pipe()
	go func() {
		w, err := crypto.Encrypt(pw, []crypto.Recipient{rcpt})
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		if _, err := io.Copy(w, &countingSource{n: total, produced: &produced}); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(w.Close())
	}()

	r, err := crypto.Decrypt(pr, ids)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(r, first); err != nil {
		t.Fatal(err)
	}
	if p := produced.Load(); p > 8<<20 {
		t.Errorf("producer had given %d bytes when the first MiB came out: the stream is buffered", p)
	}
	h := sha256.New()
	h.Write(first)
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	if n+int64(len(first)) != total {
		t.Fatalf("got %d bytes, want %d", n+int64(len(first)), total)
	}
	if !bytes.Equal(h.Sum(nil), wantHash.Sum(nil)) {
		t.Fatal("plaintext differs")
	}
}
