package crypto

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
)

var (
	// ErrWrongIdentity means none of the identities given to Decrypt can
	// open the stream: the backup was encrypted to other keys.
	ErrWrongIdentity = errors.New("no identity matches any recipient of this backup")
	// ErrCorrupt means the stream is not a whole, untampered age file: it is
	// truncated, has trailing data, or a byte of its header or payload
	// changed. Retrying the same bytes cannot succeed.
	ErrCorrupt = errors.New("encrypted data is corrupt or truncated")
	// ErrNoRecipients means Encrypt was given no recipient, which would make
	// a backup nobody can decrypt.
	ErrNoRecipients = errors.New("no recipients to encrypt to")
	// ErrNoIdentities means Decrypt was given no identity.
	ErrNoIdentities = errors.New("no identities to decrypt with")
)

// Encrypt starts an age stream to recipients on dst. What is written to the
// returned WriteCloser is encrypted in 64 KiB chunks as it comes; Close
// seals the last chunk and must be called, and its error checked, or the
// stream is truncated. Close does not close dst.
func Encrypt(dst io.Writer, recipients []Recipient) (io.WriteCloser, error) {
	if len(recipients) == 0 {
		return nil, ErrNoRecipients
	}
	rs := make([]age.Recipient, len(recipients))
	for i, r := range recipients {
		if r.Recipient == nil {
			return nil, fmt.Errorf("recipient %d (%s) has no key: build recipients with ParseRecipients", i, r.Fingerprint)
		}
		rs[i] = r.Recipient
	}
	w, err := age.Encrypt(dst, rs...)
	if err != nil {
		return nil, fmt.Errorf("starting age stream: %w", err)
	}
	return w, nil
}

// Decrypt reads the age header from src, finds the file key with one of
// identities and returns a reader of the plaintext, decrypted and
// authenticated one 64 KiB chunk at a time.
//
// Errors, from Decrypt or from the reader's Read:
//   - ErrWrongIdentity: no identity opens the stream. A damaged recipient
//     stanza in the header cannot be told apart from a wrong key (age's
//     X25519 stanzas are anonymous by design) and gives this error too.
//   - ErrCorrupt: the header or a payload chunk fails to parse or
//     authenticate, or the stream ends early. Plaintext returned by earlier
//     Reads was authenticated, but the whole is not: discard it.
//   - an error wrapping src's own error when reading src fails, so a
//     transient network error is not mistaken for a corrupt backup.
//
// A reader only reports the end of the plaintext (io.EOF) after the final
// chunk authenticated, so reading to io.EOF proves the stream whole.
func Decrypt(src io.Reader, identities []age.Identity) (io.Reader, error) {
	if len(identities) == 0 {
		return nil, ErrNoIdentities
	}
	ids := make([]age.Identity, 0, len(identities)+1)
	for i, id := range identities {
		if id == nil {
			return nil, fmt.Errorf("identity %d is nil", i)
		}
		ids = append(ids, foreignSafe(id))
	}
	// age tries identities in order (its native kinds first) and stops at
	// the first match, so the spy, last, is asked only when nothing
	// matched: it records the stanzas to name the recipients in the error.
	spy := &stanzaSpy{}
	ids = append(ids, spy)

	in := &srcReader{r: src}
	plain, err := age.Decrypt(in, ids...)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		switch {
		case in.err != nil:
			return nil, fmt.Errorf("reading encrypted stream: %w", in.err)
		case errors.As(err, &noMatch):
			return nil, fmt.Errorf("%w (recipients: %s)", ErrWrongIdentity, describeStanzas(spy.stanzas, noMatch.StanzaTypes))
		case errors.Is(err, errIdentity):
			return nil, err
		default:
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, oneLine{err})
		}
	}
	return &plainReader{r: plain, src: in}, nil
}

// srcReader remembers the first real error of the underlying reader, so a
// failure of the transport is reported as such and not as corruption.
type srcReader struct {
	r   io.Reader
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// plainReader classifies the errors of age's payload reader.
type plainReader struct {
	r   io.Reader
	src *srcReader
	err error
}

func (p *plainReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.r.Read(b)
	switch {
	case err == nil || err == io.EOF:
		return n, err
	case p.src.err != nil:
		p.err = fmt.Errorf("reading encrypted stream: %w", p.src.err)
	default:
		p.err = fmt.Errorf("%w: %w", ErrCorrupt, oneLine{err})
	}
	return n, p.err
}

// oneLine keeps an error's chain but prints it on one line: some of age's
// parse errors quote input or add a note on a second line.
type oneLine struct{ err error }

func (e oneLine) Error() string { return printable(e.err.Error()) }
func (e oneLine) Unwrap() error { return e.err }

// errIdentity marks errors that come from an identity of a kind this
// package does not know (an encrypted SSH key asking for a passphrase, a
// plugin): those say nothing about the stream, so they are not ErrCorrupt.
var errIdentity = errors.New("identity failed")

// foreignSafe returns known identities as they are (age sorts its own kinds
// first, by type) and wraps others so their errors are kept apart. Every
// error a known identity returns, other than not matching, comes from a
// malformed header stanza.
func foreignSafe(id age.Identity) age.Identity {
	switch id.(type) {
	case *age.X25519Identity, *age.HybridIdentity, *age.ScryptIdentity,
		*agessh.Ed25519Identity, *agessh.RSAIdentity:
		return id
	}
	return foreignIdentity{id}
}

type foreignIdentity struct{ age.Identity }

func (f foreignIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	key, err := f.Identity.Unwrap(stanzas)
	if err != nil && !errors.Is(err, age.ErrIncorrectIdentity) {
		return nil, fmt.Errorf("%w: %w", errIdentity, err)
	}
	return key, err
}

type stanzaSpy struct{ stanzas []*age.Stanza }

func (s *stanzaSpy) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	s.stanzas = stanzas
	return nil, age.ErrIncorrectIdentity
}

// describeStanzas names the recipients of a header as far as it can: an
// SSH stanza carries the first 4 bytes of the key's SHA-256, which are the
// first 5 characters of its "SHA256:" fingerprint; X25519 stanzas are
// anonymous and only counted.
func describeStanzas(stanzas []*age.Stanza, types []string) string {
	if len(stanzas) == 0 {
		if len(types) == 0 {
			return "none"
		}
		return fmt.Sprintf("%d", len(types))
	}
	var parts []string
	counts := map[string]int{}
	var order []string
	for _, s := range stanzas {
		if (s.Type == "ssh-ed25519" || s.Type == "ssh-rsa") && len(s.Args) > 0 && isSSHTag(s.Args[0]) {
			parts = append(parts, s.Type+" SHA256:"+s.Args[0][:5]+"...")
			continue
		}
		t := s.Type
		if !isPrintableToken(t) {
			t = "unknown"
		}
		if counts[t] == 0 {
			order = append(order, t)
		}
		counts[t]++
	}
	for _, t := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[t], t))
	}
	return strings.Join(parts, ", ")
}

// isSSHTag reports whether s is the unpadded base64 of 4 bytes, as age
// writes the SSH key tag.
func isSSHTag(s string) bool {
	if len(s) != 6 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", c) {
			return false
		}
	}
	return true
}

// isPrintableToken keeps a hostile header from putting odd bytes in an
// error message.
func isPrintableToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
