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
