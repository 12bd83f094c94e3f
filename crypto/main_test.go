package crypto_test

import (
	"os"
	"testing"

	"github.com/kdr-io/kdr/crypto"
)

func TestMain(m *testing.M) {
	// scrypt at age's default costs a second and 256 MiB per call.
	crypto.SetScryptWorkFactorForTest(10)
	os.Exit(m.Run())
}
