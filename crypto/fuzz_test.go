package crypto_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/crypto"
)

func FuzzParseRecipient(f *testing.F) {
	for _, seed := range []string{
		exampleAge,
		newEd25519Key(f, "").public,
		newRSAKey(f, "").public,
		strings.Split(string(newAgeKey(f).private), "\n")[2],
		"age1pq1qqqq",
		"age1yubikey1qqqq",
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI",
		"ecdsa-sha2-nistp256 AAAA",
		"",
		"# comment",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := crypto.ParseRecipient(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if r.Recipient == nil || r.Fingerprint == "" || r.Text == "" {
			t.Fatalf("incomplete recipient %+v", r)
		}
		again, err := crypto.ParseRecipient(r.Text)
		if err != nil || again.Fingerprint != r.Fingerprint {
			t.Fatalf("canonical text %q does not parse back: %v", r.Text, err)
		}
	})
}

func FuzzParseIdentities(f *testing.F) {
	age := newAgeKey(f)
	ed := newEd25519Key(f, "")
	for _, seed := range [][]byte{
		age.private,
		append(bytes.Clone(age.private), newAgeKey(f).private...),
		ed.private,
		newEd25519Key(f, "pw").private,
		newRSAKey(f, "").private,
		[]byte("-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IHNjcnlwdA==\n-----END AGE ENCRYPTED FILE-----\n"),
		[]byte("age-encryption.org/v1\n-> scrypt c2FsdHNhbHRzYWx0c2FsdA 10\nAAAA\n--- AAAA\n"),
		[]byte(exampleAge + "\n"),
		[]byte("# only a comment\n"),
		nil,
	} {
		f.Add(seed)
	}
	errNoPrompt := errors.New("no prompt while fuzzing")
	noPrompt := func() ([]byte, error) { return nil, errNoPrompt }
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := crypto.ParseIdentities("fuzz.key", data, noPrompt)
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("error is not one line: %q", msg)
			}
			if !strings.Contains(msg, "fuzz.key") {
				t.Fatalf("error does not name the file: %q", msg)
			}
			// A secret key line in the input must not come back out.
			for _, line := range strings.Split(string(data), "\n") {
				line = strings.TrimSpace(line)
				if strings.HasPrefix(line, "AGE-SECRET-KEY-") && len(line) > 40 && strings.Contains(msg, line[16:40]) {
					t.Fatalf("error repeats key material: %q", msg)
				}
			}
			return
		}
		if len(ids) == 0 {
			t.Fatal("no error and no identities")
		}
		for i, id := range ids {
			if id == nil {
				t.Fatalf("identity %d is nil", i)
			}
		}
	})
}
