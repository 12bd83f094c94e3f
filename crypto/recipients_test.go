package crypto_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/kdr-io/kdr/crypto"
)

// exampleAge is a public key made by age-keygen; its identity was thrown away.
const exampleAge = "age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh"

func authorizedKey(t *testing.T, pub any) string {
	t.Helper()
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

// secretPart returns 20 characters from the middle of the longest line of
// a key, which no error message may contain.
func secretPart(key string) string {
	longest := ""
	for _, l := range strings.Split(key, "\n") {
		if len(l) > len(longest) {
			longest = l
		}
	}
	mid := len(longest) / 2
	return longest[mid-10 : mid+10]
}

func TestParseRecipient(t *testing.T) {
	ageKey := newAgeKey(t)
	ed := newEd25519Key(t, "")
	rsaKey := newRSAKey(t, "")
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(strings.Split(string(ageKey.private), "\n")[2])

	tests := []struct {
		name     string
		in       string
		wantFP   string // prefix of the fingerprint when valid
		wantErr  string
		isSecret bool
	}{
		{name: "age", in: exampleAge, wantFP: "age:"},
		{name: "age with spaces", in: "  " + exampleAge + "\n", wantFP: "age:"},
		{name: "ssh-ed25519 with comment", in: ed.public, wantFP: "SHA256:"},
		{name: "ssh-rsa", in: rsaKey.public, wantFP: "SHA256:"},
		{name: "empty", in: " ", wantErr: "empty recipient"},
		{name: "age secret key", in: secret, wantErr: "this is a private key; configure the public key (age1...)", isSecret: true},
		{name: "age secret key lowercase", in: strings.ToLower(secret), wantErr: "this is a private key", isSecret: true},
		{name: "ssh private key", in: string(ed.private), wantErr: "this is a private key; configure the public key (the ssh-ed25519", isSecret: true},
		{name: "post-quantum", in: "age1pq1qqqqqqq", wantErr: "post-quantum"},
		{name: "plugin", in: "age1yubikey1qwertyqwerty", wantErr: "plugin"},
		{name: "bad checksum", in: exampleAge[:len(exampleAge)-1] + "q", wantErr: "malformed age public key"},
		{name: "ecdsa", in: authorizedKey(t, &ecKey.PublicKey), wantErr: `SSH key type "ecdsa-sha2-nistp256" cannot be an age recipient`},
		{name: "rsa too small", in: authorizedKey(t, &small.PublicKey), wantErr: "too small"},
		{name: "ssh garbage", in: "ssh-ed25519 AAAAnotbase64!!", wantErr: "malformed SSH public key"},
		{name: "two keys", in: exampleAge + "\n" + ed.public, wantErr: "one line"},
		{name: "unknown", in: "hunter2", wantErr: "unknown recipient type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := crypto.ParseRecipient(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if tt.isSecret {
					if !errors.Is(err, crypto.ErrPrivateKey) {
						t.Errorf("err = %v, want ErrPrivateKey", err)
					}
					if strings.Contains(err.Error(), secretPart(tt.in)) {
						t.Errorf("error repeats the private key: %v", err)
					}
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("error repeats unknown input: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(r.Fingerprint, tt.wantFP) || r.Recipient == nil || r.Text == "" {
				t.Fatalf("got %+v", r)
			}
			again, err := crypto.ParseRecipient(r.Text)
			if err != nil || again.Fingerprint != r.Fingerprint || again.Text != r.Text {
				t.Fatalf("canonical text %q does not parse to the same key: %+v, %v", r.Text, again, err)
			}
		})
	}
}

func TestFingerprints(t *testing.T) {
	r, err := crypto.ParseRecipient(exampleAge)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte(exampleAge))
	if want := "age:" + hex.EncodeToString(h[:8]); r.Fingerprint != want {
		t.Errorf("age fingerprint = %q, want %q", r.Fingerprint, want)
	}

	ed := newEd25519Key(t, "")
	r, err = crypto.ParseRecipient(ed.public)
	if err != nil {
		t.Fatal(err)
	}
	if want := ssh.FingerprintSHA256(ed.sshPublic); r.Fingerprint != want {
		t.Errorf("ssh fingerprint = %q, want %q", r.Fingerprint, want)
	}
	if strings.Contains(r.Text, "operator@example") {
		t.Errorf("canonical text keeps the comment: %q", r.Text)
	}
}

func TestParseRecipientsDeduplicatesAndNumbersErrors(t *testing.T) {
	ed := newEd25519Key(t, "")
	got, err := crypto.ParseRecipients([]string{exampleAge, ed.public, " " + exampleAge, strings.TrimSuffix(ed.public, " operator@example")})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d recipients, want 2: %+v", len(got), got)
	}
	_, err = crypto.ParseRecipients([]string{exampleAge, "nope"})
	if err == nil || !strings.HasPrefix(err.Error(), "recipient 2: ") {
		t.Fatalf("err = %v, want it to name recipient 2", err)
	}
	if _, err := crypto.ParseRecipients(nil); !errors.Is(err, crypto.ErrNoRecipients) {
		t.Fatalf("err = %v, want ErrNoRecipients", err)
	}
}

func TestLoadRecipientsFile(t *testing.T) {
	ed := newEd25519Key(t, "")
	secret := strings.Split(string(newAgeKey(t).private), "\n")[2]
	tests := []struct {
		name    string
		content string
		want    int
		wantErr string // after the file name
	}{
		{name: "keys, comments, blank lines", content: "# operators\n\n" + exampleAge + "\n  # alice's laptop\n" + ed.public + "\n", want: 2},
		{name: "CRLF", content: exampleAge + "\r\n" + ed.public + "\r\n", want: 2},
		{name: "no final newline", content: exampleAge, want: 1},
		{name: "duplicate", content: exampleAge + "\n" + exampleAge + "\n", want: 1},
		{name: "identity on line 3", content: "# keys\n" + exampleAge + "\n" + secret + "\n", wantErr: ":3: this is a private key"},
		{name: "unknown on line 1", content: "github:alice\n", wantErr: ":1: unknown recipient type"},
		{name: "only comments", content: "# nothing yet\n\n", wantErr: ": no recipients to encrypt to"},
		{name: "empty", content: "", wantErr: ": no recipients to encrypt to"},
		{name: "not UTF-8", content: "\xff\xfe\n", wantErr: ":1: not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "recipients.txt")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := crypto.LoadRecipientsFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), path+tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, path+tt.wantErr)
				}
				if strings.Contains(err.Error(), secret[20:]) {
					t.Fatalf("error repeats the private key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want {
				t.Fatalf("got %d recipients, want %d", len(got), tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "absent")
		_, err := crypto.LoadRecipientsFile(path)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Fatalf("err = %v, want not-exist naming the file", err)
		}
	})
}
