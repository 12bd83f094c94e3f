package crypto

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"
)

// ErrPrivateKey means a private key was given where a public key belongs.
// The key itself is never part of the message.
var ErrPrivateKey = errors.New("this is a private key")

// Recipient is a public key a backup is encrypted to.
type Recipient struct {
	age.Recipient
	// Text is the key in its canonical form: "age1..." or
	// "ssh-ed25519 AAAA..." without the comment.
	Text string
	// Fingerprint is the short stable name recorded in manifests; see the
	// package documentation for its format.
	Fingerprint string
}

// maxKeyFileSize bounds what is read of a key file, as age does.
const maxKeyFileSize = 16 << 20

// ParseRecipients parses public keys, one per string: age X25519
// ("age1...") or SSH ("ssh-ed25519 ...", "ssh-rsa ..."). A key given twice
// is kept once. Errors name the position of the bad string, and refuse a
// private key pasted by mistake without repeating it.
func ParseRecipients(texts []string) ([]Recipient, error) {
	var out []Recipient
	seen := map[string]bool{}
	for i, t := range texts {
		r, err := ParseRecipient(t)
		if err != nil {
			return nil, fmt.Errorf("recipient %d: %w", i+1, err)
		}
		if !seen[r.Fingerprint] {
			seen[r.Fingerprint] = true
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, ErrNoRecipients
	}
	return out, nil
}

// ParseRecipient parses one public key; see ParseRecipients.
func ParseRecipient(text string) (Recipient, error) {
	s := strings.TrimSpace(text)
	switch {
	case s == "":
		return Recipient{}, errors.New("empty recipient")
	case looksPrivate(s):
		hint := "age1..."
		if strings.Contains(s, "PRIVATE KEY") {
			hint = "the ssh-ed25519 or ssh-rsa line of the .pub file"
		}
		return Recipient{}, fmt.Errorf("%w; configure the public key (%s)", ErrPrivateKey, hint)
	case strings.ContainsAny(s, "\r\n"):
		return Recipient{}, errors.New("a recipient is one line: one public key")
	case strings.HasPrefix(s, "age1pq1"):
		return Recipient{}, errors.New("post-quantum age1pq1 recipients are not supported: age cannot mix them with X25519 and SSH recipients")
	case strings.HasPrefix(s, "age1") && strings.LastIndexByte(s, '1') > 3:
		// Bech32 data never contains '1', so a second one means a plugin
		// or tag recipient (age1yubikey1..., age1tag1...).
		return Recipient{}, errors.New("age plugin and tag recipients are not supported: use an X25519 key (age1...) or an SSH key")
	case strings.HasPrefix(s, "age1"):
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return Recipient{}, fmt.Errorf("malformed age public key: %w", err)
		}
		text := r.String()
		return Recipient{Recipient: r, Text: text, Fingerprint: ageFingerprint(text)}, nil
	case strings.HasPrefix(s, "ssh-ed25519 ") || strings.HasPrefix(s, "ssh-rsa "):
		return parseSSHRecipient(s)
	case strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-") || strings.HasPrefix(s, "sk-"):
		t, _, _ := strings.Cut(s, " ")
		if !isPrintableToken(t) {
			t = "?"
		}
		return Recipient{}, fmt.Errorf("SSH key type %q cannot be an age recipient: use ssh-ed25519, ssh-rsa or an age key (age1...)", t)
	default:
		// Not echoed: it may be a secret pasted in the wrong place.
		return Recipient{}, errors.New("unknown recipient type: want an age public key (age1...) or an SSH public key (ssh-ed25519, ssh-rsa)")
	}
}

func parseSSHRecipient(s string) (Recipient, error) {
	pk, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return Recipient{}, fmt.Errorf("malformed SSH public key: %s", printable(err.Error()))
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return Recipient{}, errors.New("a recipient is one line: one public key")
	}
	var r age.Recipient
	switch pk.Type() {
	case ssh.KeyAlgoED25519:
		r, err = agessh.NewEd25519Recipient(pk)
	case ssh.KeyAlgoRSA:
		r, err = agessh.NewRSARecipient(pk)
	default:
		// An ssh-rsa prefix with a key of another type inside.
		return Recipient{}, fmt.Errorf("SSH key type %q cannot be an age recipient: use ssh-ed25519 or ssh-rsa", pk.Type())
	}
	if err != nil {
		return Recipient{}, fmt.Errorf("SSH public key %s: %w", ssh.FingerprintSHA256(pk), err)
	}
	return Recipient{
		Recipient:   r,
		Text:        strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))),
		Fingerprint: ssh.FingerprintSHA256(pk),
	}, nil
}

// printable makes a parser's message safe to print on one line: x/crypto/ssh
// quotes bytes of the input in some of its errors.
func printable(s string) string {
	s = strings.ReplaceAll(s, "\n", "; ")
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}

func looksPrivate(s string) bool {
	u := strings.ToUpper(s)
	return strings.HasPrefix(u, "AGE-SECRET-KEY-") || strings.HasPrefix(u, "AGE-PLUGIN-") ||
		strings.Contains(s, "PRIVATE KEY")
}

// ageFingerprint is "age:" and the first 16 hex digits of sha256 of the
// canonical recipient string.
func ageFingerprint(recipient string) string {
	h := sha256.Sum256([]byte(recipient))
	return "age:" + hex.EncodeToString(h[:])[:16]
}

// LoadRecipientsFile reads a file in age's recipients-file format: one
// public key per line, blank lines and lines starting with "#" ignored.
// Errors name the file and line. A key given twice is kept once.
func LoadRecipientsFile(path string) ([]Recipient, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading recipients file: %w", err)
	}
	var out []Recipient
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxKeyFileSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !utf8.ValidString(line) {
			return nil, fmt.Errorf("%s:%d: not valid UTF-8", path, n)
		}
		r, err := ParseRecipient(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if !seen[r.Fingerprint] {
			seen[r.Fingerprint] = true
			out = append(out, r)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", path, ErrNoRecipients)
	}
	return out, nil
}

// readKeyFile reads a whole key file, refusing one larger than any key
// file can be.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%s: larger than %d MiB, not a key file", path, maxKeyFileSize>>20)
	}
	return data, nil
}
