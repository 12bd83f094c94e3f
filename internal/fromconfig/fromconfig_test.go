package fromconfig_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/internal/testenv"
)

func recipient(t *testing.T) string {
	t.Helper()
	_, r, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// recipientsFile writes keys as a recipients file, with a comment as
// `kdr keys generate` users keep one.
func recipientsFile(t *testing.T, keys ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "recipients.txt")
	if err := os.WriteFile(path, []byte("# operators\n"+strings.Join(keys, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRecipients(t *testing.T) {
	a, b := recipient(t), recipient(t)
	for _, tc := range []struct {
		name   string
		enc    config.Encryption
		want   []string
		errors string
	}{
		// What kdr init writes: no inline key, one file.
		{"files only", config.Encryption{Recipients: []string{}, RecipientsFiles: []string{recipientsFile(t, a)}}, []string{a}, ""},
		{"inline only", config.Encryption{Recipients: []string{a, b}}, []string{a, b}, ""},
		{"both, one key twice", config.Encryption{Recipients: []string{a}, RecipientsFiles: []string{recipientsFile(t, b, a)}}, []string{a, b}, ""},
		{"two files", config.Encryption{RecipientsFiles: []string{recipientsFile(t, a), recipientsFile(t, b)}}, []string{a, b}, ""},
		{"none", config.Encryption{}, nil, "encryption: no recipients to encrypt to"},
		{"missing file", config.Encryption{Recipients: []string{a}, RecipientsFiles: []string{"/nonexistent/recipients.txt"}}, nil,
			"encryption.recipientsFiles: reading recipients file: open /nonexistent/recipients.txt: no such file or directory"},
		{"bad inline key", config.Encryption{Recipients: []string{"age1x"}, RecipientsFiles: []string{recipientsFile(t, a)}}, nil,
			"encryption.recipients: recipient 1: malformed age public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := fromconfig.Recipients(&config.Config{Encryption: tc.enc})
			if tc.errors != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.errors) {
					t.Fatalf("Recipients: %v, %v; want an error starting %q", rs, err, tc.errors)
				}
				if tc.name == "none" && !errors.Is(err, crypto.ErrNoRecipients) {
					t.Errorf("error %v does not wrap ErrNoRecipients", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Recipients: %v", err)
			}
			var got []string
			for _, r := range rs {
				got = append(got, r.Text)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("recipients %q, want %q", got, tc.want)
			}
		})
	}
}

// TestEtcdCredentialsInEndpoint: a config built in code, not validated,
// cannot carry a password in an etcd endpoint into the snapshot's errors
// and logs.
func TestEtcdCredentialsInEndpoint(t *testing.T) {
	const secret = "s3cretPART"
	c := config.Cluster{Name: "prod", Etcd: config.Etcd{Endpoints: []string{"http://10.0.0.11:2379", "http://root:" + secret + "@10.0.0.12:2379"}, Insecure: true}}
	_, err := fromconfig.Etcd(c)
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "cluster prod: etcd endpoint 2 holds credentials") {
		t.Fatalf("Etcd: %v, want endpoint 2 refused without its password", err)
	}
}

// TestTrustAndSigner: the trusted keys come from the config and its
// files; a writer's key must be one of them; every bad input is one line
// naming the setting, and none repeats key material.
func TestTrustAndSigner(t *testing.T) {
	ours, other := testenv.NewSigningKey(t), testenv.NewSigningKey(t)
	dir := t.TempDir()
	trustedFile := filepath.Join(dir, "trusted.txt")
	if err := os.WriteFile(trustedFile, []byte("# operators\n"+ours.Public+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ourKey, otherKey := ours.WriteFile(t, dir), other.WriteFile(t, t.TempDir())
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		signing config.Signing
		want    string // error prefix; empty for none
	}{
		{"inline", config.Signing{TrustedKeys: []string{ours.Public}, KeyFile: ourKey}, ""},
		{"from a file", config.Signing{TrustedKeysFiles: []string{trustedFile}, KeyFile: ourKey}, ""},
		{"missing trusted file", config.Signing{TrustedKeysFiles: []string{filepath.Join(dir, "nope")}}, "signing.trustedKeysFiles: "},
		{"not an ed25519 key", config.Signing{TrustedKeys: []string{"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ"}}, "signing: trusted key 1"},
		{"no keys", config.Signing{TrustedKeysFiles: []string{recipientsFile(t)}}, "signing: no trusted signing keys"},
		{"no key file", config.Signing{TrustedKeys: []string{ours.Public}}, "signing.keyFile is not set"},
		{"missing key file", config.Signing{TrustedKeys: []string{ours.Public}, KeyFile: filepath.Join(dir, "gone.key")}, "signing.keyFile: signing key: "},
		{"not a key", config.Signing{TrustedKeys: []string{ours.Public}, KeyFile: garbage}, "signing.keyFile: "},
		{"key not trusted", config.Signing{TrustedKeys: []string{ours.Public}, KeyFile: otherKey}, "signing.keyFile: key " + other.Signer.Fingerprint() + " is not among the trusted keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Signing: tc.signing}
			trust, err := fromconfig.Trust(cfg)
			if err == nil {
				_, err = fromconfig.Signer(cfg, trust)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n")):
				t.Fatalf("err = %v, want one line starting %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "OPENSSH PRIVATE"):
				t.Fatalf("err repeats key material: %v", err)
			}
		})
	}
}
