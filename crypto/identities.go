package crypto

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"
)

var (
	// ErrWrongPassphrase means the passphrase does not open a protected
	// identity file; the caller may ask again.
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrNeedPassphrase means an identity file is protected and no way to
	// ask for its passphrase was given.
	ErrNeedPassphrase = errors.New("identity file is passphrase-protected and no passphrase prompt is available")
)

// LoadIdentities reads the private keys in the file at path: an age
// identity file ("AGE-SECRET-KEY-1..." lines, "#" comments), an SSH private
// key (ed25519 or rsa, in OpenSSH or PEM format), or an age identity file
// encrypted with a passphrase ("age -p", binary or armored). passphrase is
// called, once, only when the file is protected; it may be nil when no
// prompt is possible. Errors name the file and never contain key material.
func LoadIdentities(path string, passphrase func() ([]byte, error)) ([]age.Identity, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading identity file: %w", err)
	}
	return parseIdentities(path, data, passphrase)
}

// GenerateIdentity makes a new age X25519 key pair: the identity
// ("AGE-SECRET-KEY-1...") for the operators to keep offline, and the
// recipient ("age1...") for the config.
func GenerateIdentity() (identity, recipient string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", "", fmt.Errorf("generating age identity: %w", err)
	}
	return id.String(), id.Recipient().String(), nil
}

// scryptLogN is the scrypt work factor of ProtectIdentity; 0 keeps age's
// default (2^18, about a second). Only tests change it.
var scryptLogN = 0

// ProtectIdentity encrypts an age identity file (AGE-SECRET-KEY-1...
// lines) with a passphrase, as "age -p -a" does: the result is armored
// text that LoadIdentities, and age itself, open with the passphrase. It is
// for `kdr keys generate --protect`, so an identity need never be written
// in clear.
func ProtectIdentity(identityFile, passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("protecting identity: empty passphrase")
	}
	if _, err := parseIdentityLines("identity", identityFile); err != nil {
		return nil, fmt.Errorf("protecting identity: %w", err)
	}
	r, err := age.NewScryptRecipient(string(passphrase))
	if err != nil {
		return nil, fmt.Errorf("protecting identity: %w", err)
	}
	if scryptLogN != 0 {
		r.SetWorkFactor(scryptLogN)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, r)
	if err != nil {
		return nil, fmt.Errorf("protecting identity: %w", err)
	}
	if _, err := w.Write(identityFile); err != nil {
		return nil, fmt.Errorf("protecting identity: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("protecting identity: %w", err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("protecting identity: %w", err)
	}
	return buf.Bytes(), nil
}

func parseIdentities(name string, data []byte, passphrase func() ([]byte, error)) ([]age.Identity, error) {
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, fmt.Errorf("identity file %s is empty", name)
	case bytes.HasPrefix(data, []byte("age-encryption.org/")) || bytes.HasPrefix(trimmed, []byte(armor.Header)):
		plain, err := openProtected(name, data, passphrase)
		if err != nil {
			return nil, err
		}
		defer clear(plain)
		if bytes.HasPrefix(plain, []byte("age-encryption.org/")) || bytes.Contains(plain, []byte(armor.Header)) {
			return nil, fmt.Errorf("identity file %s: encrypted more than once", name)
		}
		if bytes.HasPrefix(bytes.TrimSpace(plain), []byte("-----BEGIN")) {
			return parseSSHIdentity(name, plain, nil)
		}
		return parseIdentityLines(name, plain)
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		return parseSSHIdentity(name, data, passphrase)
	default:
		return parseIdentityLines(name, data)
	}
}

// openProtected decrypts an "age -p" file and returns its plaintext.
func openProtected(name string, data []byte, passphrase func() ([]byte, error)) ([]byte, error) {
	open := func() io.Reader {
		if bytes.HasPrefix(bytes.TrimSpace(data), []byte(armor.Header)) {
			return armor.NewReader(bytes.NewReader(data))
		}
		return bytes.NewReader(data)
	}
	hdr, err := age.ExtractHeader(open())
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w: %w", name, ErrCorrupt, oneLine{err})
	}
	if !bytes.Contains(hdr, []byte("\n-> scrypt ")) {
		return nil, fmt.Errorf("identity file %s is age-encrypted to a key, not a passphrase: decrypt it with age first", name)
	}
	if passphrase == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNeedPassphrase)
	}
	pass, err := passphrase()
	if err != nil {
		return nil, fmt.Errorf("identity file %s: reading passphrase: %w", name, err)
	}
	defer clear(pass)
	if len(pass) == 0 {
		return nil, fmt.Errorf("identity file %s: %w (empty)", name, ErrWrongPassphrase)
	}
	id, err := age.NewScryptIdentity(string(pass))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", name, err)
	}
	r, err := age.Decrypt(open(), id)
	var noMatch *age.NoIdentityMatchError
	if errors.As(err, &noMatch) {
		return nil, fmt.Errorf("identity file %s: %w", name, ErrWrongPassphrase)
	}
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w: %w", name, ErrCorrupt, oneLine{err})
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		clear(plain)
		return nil, fmt.Errorf("identity file %s: %w: %w", name, ErrCorrupt, oneLine{err})
	}
	return plain, nil
}

// parseIdentityLines parses age identity lines. Errors say what is wrong
// with a line, never what it holds.
func parseIdentityLines(name string, data []byte) ([]age.Identity, error) {
	var ids []age.Identity
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4<<10), maxKeyFileSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var id age.Identity
		var err error
		switch {
		case strings.HasPrefix(line, "AGE-SECRET-KEY-PQ-1"):
			id, err = age.ParseHybridIdentity(line)
		case strings.HasPrefix(line, "AGE-SECRET-KEY-1"):
			id, err = age.ParseX25519Identity(line)
		case strings.HasPrefix(line, "AGE-PLUGIN-"):
			return nil, fmt.Errorf("%s:%d: age plugin identities are not supported", name, n)
		case strings.HasPrefix(line, "age1"), strings.HasPrefix(line, "ssh-"):
			return nil, fmt.Errorf("%s:%d: this is a public key; an identity file holds the private key (AGE-SECRET-KEY-1... or an SSH private key)", name, n)
		default:
			return nil, fmt.Errorf("%s:%d: not an age identity (want AGE-SECRET-KEY-1... lines, an SSH private key, or an age -p encrypted identity file)", name, n)
		}
		if err != nil {
			// age's message may quote characters of the key.
			return nil, fmt.Errorf("%s:%d: malformed age secret key", name, n)
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("identity file %s: %w", name, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("identity file %s: no identities found", name)
	}
	return ids, nil
}

// parseSSHIdentity decrypts a protected key at once rather than when a
// stanza matches (as age's EncryptedSSHIdentity does): the operator named
// this key to restore with it, and a wrong passphrase is best said here.
func parseSSHIdentity(name string, pemBytes []byte, passphrase func() ([]byte, error)) ([]age.Identity, error) {
	key, err := ssh.ParseRawPrivateKey(pemBytes)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if passphrase == nil {
			return nil, fmt.Errorf("%s: %w", name, ErrNeedPassphrase)
		}
		pass, perr := passphrase()
		if perr != nil {
			return nil, fmt.Errorf("SSH key %s: reading passphrase: %w", name, perr)
		}
		key, err = ssh.ParseRawPrivateKeyWithPassphrase(pemBytes, pass)
		clear(pass)
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, fmt.Errorf("SSH key %s: %w", name, ErrWrongPassphrase)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("SSH key %s: not a usable private key: %s", name, printable(err.Error()))
	}
	var id age.Identity
	switch k := key.(type) {
	case *ed25519.PrivateKey:
		id, err = agessh.NewEd25519Identity(*k)
	case ed25519.PrivateKey:
		id, err = agessh.NewEd25519Identity(k)
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("SSH key %s: RSA key of %d bits is too small (age needs 2048 or more)", name, k.N.BitLen())
		}
		id, err = agessh.NewRSAIdentity(k)
	default:
		return nil, fmt.Errorf("SSH key %s: key type %T cannot be an age identity: use ed25519 or rsa", name, key)
	}
	if err != nil {
		return nil, fmt.Errorf("SSH key %s: %w", name, err)
	}
	return []age.Identity{id}, nil
}
