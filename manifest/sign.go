package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Signature namespaces, one per kind of signed object: SSHSIG binds the
// namespace into what is signed, so a signature made for a drill report
// can never pass as one over a manifest, even for identical bytes.
const (
	NamespaceManifest    = "kdr-manifest"
	NamespaceTombstone   = "kdr-tombstone"
	NamespaceDrillReport = "kdr-drill-report"
	NamespaceRunbook     = "kdr-runbook"
	// NamespaceKit signs the SHA256SUMS of the offline recovery kit.
	NamespaceKit = "kdr-kit"
)

// SignaturePrincipal is the principal of the allowed_signers file that
// `ssh-keygen -Y verify -I` checks; kdr's keys carry no identity of their
// own, only the namespaces they may sign.
const SignaturePrincipal = "kdr"

// signatureSuffix ends the key of a detached signature: an object "k" is
// signed by "k.sig" and may be countersigned by "k.countersig-<key>.sig".
const (
	signatureSuffix   = ".sig"
	countersignPrefix = ".countersig-"
)

// maxSignatureSize bounds what is read of a signature object: an armored
// Ed25519 SSHSIG is under 400 bytes.
const maxSignatureSize = 16 << 10

// signatureHash is what ssh-keygen uses by default, so a signature kdr
// makes is the one `ssh-keygen -Y sign` would make.
const signatureHash = sshsig.HashSHA512

var (
	// ErrUnsigned means an object has no signature.
	ErrUnsigned = errors.New("not signed")
	// ErrUntrusted means a signature exists but does not verify against
	// any trusted key: another key signed it, or the bytes were changed.
	ErrUntrusted = errors.New("signature does not verify against a trusted key")
	// ErrNoTrustedKeys means the config names no key to verify against.
	ErrNoTrustedKeys = errors.New("no trusted signing keys configured (signing.trustedKeys)")
)

// SignatureKey is the key of the signature the writer stores beside key.
func SignatureKey(key string) string { return key + signatureSuffix }

// CountersignatureKey is the key of a countersignature by the key with
// fingerprint fp, stored beside the object it vouches for.
func CountersignatureKey(key, fp string) string {
	s := sha256.Sum256([]byte(fp))
	return key + countersignPrefix + hex.EncodeToString(s[:6]) + signatureSuffix
}

// IsSignatureKey reports whether key names a signature or
// countersignature of the object at object.
func IsSignatureKey(key, object string) bool {
	rest, ok := strings.CutPrefix(key, object)
	return ok && (rest == signatureSuffix ||
		strings.HasPrefix(rest, countersignPrefix) && strings.HasSuffix(rest, signatureSuffix))
}

// Signer signs objects with an Ed25519 key.
type Signer struct {
	s ssh.Signer
}

// NewSigner wraps an Ed25519 private key.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return &Signer{s: s}, nil
}

// ParseSigner reads an unencrypted OpenSSH Ed25519 private key, as
// `kdr keys generate --signing` and `ssh-keygen -t ed25519 -N ""` write it.
// The error never contains key material.
func ParseSigner(pemBytes []byte) (*Signer, error) {
	raw, err := ssh.ParseRawPrivateKey(pemBytes)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, errors.New("signing key is passphrase-protected: the agent signs unattended, use an unprotected key kept in its own Secret")
		}
		return nil, errors.New("signing key is not an OpenSSH private key")
	}
	k, ok := raw.(*ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key is %T, not Ed25519", raw)
	}
	return NewSigner(*k)
}

// LoadSigner reads a signing key file.
func LoadSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	s, err := ParseSigner(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// PublicKey is the signer's public key as an authorized_keys line
// ("ssh-ed25519 AAAA..."), the form trusted keys are configured in.
func (s *Signer) PublicKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.s.PublicKey())))
}

// Fingerprint is the signer's OpenSSH SHA256 fingerprint.
func (s *Signer) Fingerprint() string { return ssh.FingerprintSHA256(s.s.PublicKey()) }

// Sign returns the armored SSHSIG signature of data in namespace: the
// bytes `ssh-keygen -Y verify -n <namespace>` checks.
func (s *Signer) Sign(data []byte, namespace string) ([]byte, error) {
	sig, err := sshsig.SignWithRand(bytes.NewReader(data), rand.Reader, s.s, signatureHash, namespace)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sshsig.Armor(sig), nil
}

// Trust is the set of public keys whose signatures readers accept, and
// the unsigned manifests an operator named exactly.
type Trust struct {
	keys []ssh.PublicKey
	// accepted maps "<cluster>/<id>" to the sha256 of the manifest bytes an
	// operator accepted without a trusted signature.
	accepted map[string]string
}

// ParseTrust reads trusted keys given as authorized_keys lines. Only
// Ed25519 keys sign kdr's objects.
func ParseTrust(lines []string) (*Trust, error) {
	t := &Trust{accepted: map[string]string{}}
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("trusted key %d: not an SSH public key", i+1)
		}
		if pub.Type() != ssh.KeyAlgoED25519 {
			return nil, fmt.Errorf("trusted key %d: %s, not ssh-ed25519", i+1, pub.Type())
		}
		t.keys = append(t.keys, pub)
	}
	return t, nil
}

// Fingerprints lists the trusted keys' fingerprints.
func (t *Trust) Fingerprints() []string {
	var fps []string
	for _, k := range t.keys {
		fps = append(fps, ssh.FingerprintSHA256(k))
	}
	return fps
}

// AllowedSigners renders the trusted keys as an OpenSSH allowed_signers
// file for `ssh-keygen -Y verify -I kdr`, each key limited to kdr's
// namespaces.
func (t *Trust) AllowedSigners() string {
	ns := strings.Join([]string{NamespaceManifest, NamespaceTombstone, NamespaceDrillReport, NamespaceRunbook, NamespaceKit, NamespaceSegment}, ",")
	var b strings.Builder
	for _, k := range t.keys {
		fmt.Fprintf(&b, "%s namespaces=%q %s", SignaturePrincipal, ns, ssh.MarshalAuthorizedKey(k))
	}
	return b.String()
}

// Accept trusts the manifest of cluster/id whose bytes hash to sum even
// without a trusted signature: the operator named it exactly.
func (t *Trust) Accept(cluster, id, sum string) { t.accepted[cluster+"/"+id] = sum }

// Accepted reports whether the manifest bytes of cluster/id were named
// by the operator.
func (t *Trust) Accepted(cluster, id string, data []byte) bool {
	if t == nil {
		return false
	}
	sum, ok := t.accepted[cluster+"/"+id]
	return ok && sum == Sum(data)
}

// Verify checks an armored signature over exactly data in namespace and
// returns the fingerprint of the trusted key that made it. The key named
// in the signature is only a hint: the signature must verify with a key of
// the Trust, and the error says which key signed when it is not trusted.
func (t *Trust) Verify(data, armored []byte, namespace string) (string, error) {
	if t == nil || len(t.keys) == 0 {
		return "", ErrNoTrustedKeys
	}
	if len(armored) > maxSignatureSize {
		return "", fmt.Errorf("%w: signature larger than %d bytes", ErrUntrusted, maxSignatureSize)
	}
	sig, err := sshsig.Unarmor(armored)
	if err != nil {
		return "", fmt.Errorf("%w: signature does not parse", ErrUntrusted)
	}
	if sig.PublicKey == nil {
		return "", fmt.Errorf("%w: signature names no key", ErrUntrusted)
	}
	named := sig.PublicKey.Marshal()
	for _, k := range t.keys {
		if !bytes.Equal(k.Marshal(), named) {
			continue
		}
		if err := sshsig.Verify(bytes.NewReader(data), sig, k, sig.HashAlgorithm, namespace); err != nil {
			return "", fmt.Errorf("%w: signed by %s, but not over these bytes as %s", ErrUntrusted, ssh.FingerprintSHA256(k), namespace)
		}
		return ssh.FingerprintSHA256(k), nil
	}
	return "", fmt.Errorf("%w: signed by %s, which is not a trusted key", ErrUntrusted, ssh.FingerprintSHA256(sig.PublicKey))
}

// GenerateSigningKey makes an Ed25519 key pair: the private key in
// OpenSSH PEM form, and the public key as an authorized_keys line.
func GenerateSigningKey(comment string) (private []byte, public string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		line += " " + comment
	}
	return pem.EncodeToMemory(block), line, nil
}
