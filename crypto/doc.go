// Package crypto encrypts and decrypts backup objects with age
// (age-encryption.org/v1), and loads the keys that do it.
//
// It is a thin layer over filippo.io/age's streaming API: [Encrypt] and
// [Decrypt] never hold more than one 64 KiB chunk of a stream, whatever its
// size. What the layer adds is what a backup tool needs around age: errors a
// caller can branch on ([ErrWrongIdentity], [ErrCorrupt]), recipients that
// are public keys only, identities loaded from the files operators keep
// offline, and a stable fingerprint per recipient for the manifest.
//
// # Keys
//
// Recipients (public keys, the only keys the agent holds) are age X25519
// keys ("age1...") or SSH keys ("ssh-ed25519 ...", "ssh-rsa ..." of at least
// 2048 bits). Identities (private keys, kept offline) are age identity files
// ("AGE-SECRET-KEY-1..." lines, as written by age-keygen), SSH private keys
// (optionally passphrase-protected), or an age identity file encrypted with a
// passphrase ("age -p", binary or armored).
//
// # Fingerprints
//
// Each recipient has a short, stable, non-secret fingerprint recorded in the
// manifest, so an operator can tell which keys open a backup:
//
//   - SSH keys: the standard OpenSSH SHA-256 fingerprint, "SHA256:" followed
//     by the unpadded base64 of sha256 of the wire-format public key, exactly
//     what `ssh-keygen -lf key.pub` prints.
//   - age X25519 keys: "age:" followed by the first 16 hex digits of sha256
//     of the canonical (lowercase) "age1..." string. age itself has no
//     fingerprint format; this one can be computed with
//     `printf %s age1... | sha256sum | cut -c1-16`.
//
// Everything here is safe to log except identities, passphrases and
// plaintext: no error message of this package contains key material.
package crypto
