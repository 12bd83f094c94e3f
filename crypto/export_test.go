package crypto

import "filippo.io/age"

// SetScryptWorkFactorForTest makes ProtectIdentity cheap (2^logN) for the
// rest of the test binary; the default stays age's.
func SetScryptWorkFactorForTest(logN int) { scryptLogN = logN }

// ParseIdentities is the parser behind LoadIdentities, for fuzzing without
// a file per input.
func ParseIdentities(name string, data []byte, passphrase func() ([]byte, error)) ([]age.Identity, error) {
	return parseIdentities(name, data, passphrase)
}
