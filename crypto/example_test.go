package crypto_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/kdr-io/kdr/crypto"
)

// Encrypt a stream to the configured recipients, then decrypt it with an
// identity file kept offline.
func Example() {
	identity, recipient, err := crypto.GenerateIdentity()
	if err != nil {
		log.Fatal(err)
	}
	recipients, err := crypto.ParseRecipients([]string{recipient})
	if err != nil {
		log.Fatal(err)
	}

	var backup bytes.Buffer
	w, err := crypto.Encrypt(&backup, recipients)
	if err != nil {
		log.Fatal(err)
	}
	io.WriteString(w, "etcd snapshot bytes")
	if err := w.Close(); err != nil { // seals the last chunk
		log.Fatal(err)
	}

	dir, _ := os.MkdirTemp("", "kdr-example")
	defer os.RemoveAll(dir)
	keyFile := filepath.Join(dir, "operator.key")
	os.WriteFile(keyFile, []byte(identity+"\n"), 0o600)
	ids, err := crypto.LoadIdentities(keyFile, nil)
	if err != nil {
		log.Fatal(err)
	}
	r, err := crypto.Decrypt(&backup, ids)
	if err != nil {
		log.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(plain))
	// Output: etcd snapshot bytes
}

// Fingerprints are what the manifest records for each recipient.
func ExampleParseRecipients() {
	recipients, err := crypto.ParseRecipients([]string{
		"age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(recipients[0].Fingerprint)

	_, err = crypto.ParseRecipients([]string{"AGE-SECRET-KEY-1QQQQ..."})
	fmt.Println(errors.Is(err, crypto.ErrPrivateKey), err)
	// Output:
	// age:bdbac69fb02fa393
	// true recipient 1: this is a private key; configure the public key (age1...)
}

// Decrypting with the wrong key is told apart from a damaged backup.
func ExampleDecrypt_wrongIdentity() {
	_, recipient, _ := crypto.GenerateIdentity()
	recipients, _ := crypto.ParseRecipients([]string{recipient})
	var backup bytes.Buffer
	w, _ := crypto.Encrypt(&backup, recipients)
	w.Close()

	other, _, _ := crypto.GenerateIdentity()
	dir, _ := os.MkdirTemp("", "kdr-example")
	defer os.RemoveAll(dir)
	keyFile := filepath.Join(dir, "other.key")
	os.WriteFile(keyFile, []byte(other+"\n"), 0o600)
	ids, _ := crypto.LoadIdentities(keyFile, nil)

	_, err := crypto.Decrypt(&backup, ids)
	switch {
	case errors.Is(err, crypto.ErrWrongIdentity):
		fmt.Println(err)
	case errors.Is(err, crypto.ErrCorrupt):
		fmt.Println("damaged backup")
	}
	// Output: no identity matches any recipient of this backup (recipients: 1 X25519)
}
