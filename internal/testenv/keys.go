package testenv

import (
	"testing"

	"filippo.io/age"

	"github.com/kdr-io/kdr/crypto"
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
