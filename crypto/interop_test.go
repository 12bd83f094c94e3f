package crypto_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/crypto"
)

// ageTool finds a program of the Debian age package. The break-glass
// restore path depends on it, so its absence fails the test.
func ageTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make tools` (Debian package age): %v", name, err)
	}
	return path
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdin = strings.NewReader("") // never wait on a prompt
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func interopKeys(t *testing.T) []testKey {
	return []testKey{newAgeKey(t), newEd25519Key(t, ""), newRSAKey(t, "")}
}

// TestAgeCLIDecryptsOurStreams: what kdr writes, the stock age CLI reads
// with each kind of key, which is what the runbook's break-glass path does.
func TestAgeCLIDecryptsOurStreams(t *testing.T) {
	age := ageTool(t, "age")
	keys := interopKeys(t)
	var rcpts []crypto.Recipient
	for _, k := range keys {
		rcpts = append(rcpts, k.recipient(t))
	}
	plaintext := pattern(150 << 10)
	ct := filepath.Join(t.TempDir(), "etcd.db.zst.age")
	if err := os.WriteFile(ct, encryptTo(t, plaintext, rcpts...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		t.Run(k.kind, func(t *testing.T) {
			got := run(t, age, "-d", "-i", k.write(t), ct)
			if !bytes.Equal(got, plaintext) {
				t.Fatalf("age -d gave %d bytes, want %d", len(got), len(plaintext))
			}
		})
	}
}

// TestWeDecryptAgeCLIStreams: files the age CLI wrote to age and SSH
// recipients (given as -r and as a -R recipients file) open here.
func TestWeDecryptAgeCLIStreams(t *testing.T) {
	age := ageTool(t, "age")
	keys := interopKeys(t)
	dir := t.TempDir()
	rfile := filepath.Join(dir, "recipients.txt")
	if err := os.WriteFile(rfile, []byte("# ssh keys\n"+keys[1].public+"\n"+keys[2].public+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "plain")
	plaintext := pattern(100<<10 + 3)
	if err := os.WriteFile(in, plaintext, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "plain.age")
	run(t, age, "-e", "-r", keys[0].public, "-R", rfile, "-o", out, in)
	ct, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := crypto.LoadRecipientsFile(rfile)
	if err != nil || len(fromFile) != 2 {
		t.Fatalf("our reading of the recipients file age used: %v, %v", fromFile, err)
	}
	for _, k := range keys {
		t.Run(k.kind, func(t *testing.T) {
			got, err := decryptAll(ct, k.identities(t))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plaintext) {
				t.Fatalf("got %d bytes, want %d", len(got), len(plaintext))
			}
		})
	}
}

// TestAgeKeygenFiles: a key made by age-keygen loads as an identity, and
// its public key (age-keygen -y) as a recipient.
func TestAgeKeygenFiles(t *testing.T) {
	keygen := ageTool(t, "age-keygen")
	age := ageTool(t, "age")
	dir := t.TempDir()
	idFile := filepath.Join(dir, "operator.key")
	run(t, keygen, "-o", idFile)
	pub := strings.TrimSpace(string(run(t, keygen, "-y", idFile)))

	rcpts, err := crypto.ParseRecipients([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := crypto.LoadIdentities(idFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ct := encryptTo(t, []byte("made by age-keygen"), rcpts...)
	if got, err := decryptAll(ct, ids); err != nil || string(got) != "made by age-keygen" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	ctFile := filepath.Join(dir, "x.age")
	if err := os.WriteFile(ctFile, ct, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := run(t, age, "-d", "-i", idFile, ctFile); string(got) != "made by age-keygen" {
		t.Fatalf("age -d: %q", got)
	}
}
