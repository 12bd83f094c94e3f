package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// kdr runs the command tree as main does, in process.
func kdr(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), err
}

// testConfig writes a config with one local target and no etcd to
// reach; signing holds the signing section.
func testConfig(t *testing.T, dir, signing string) string {
	t.Helper()
	rs, _ := testenv.AgeKeys(t)
	cfg := filepath.Join(dir, "kdr.yaml")
	data := `clusters:
  - name: prod
    etcd: {endpoints: ["http://127.0.0.1:1"], insecure: true, dialTimeout: 1s}
    state: []
encryption: {recipients: [` + rs[0].Text + `]}
` + signing + `targets:
  - name: usb
    local: {path: ` + filepath.Join(dir, "usb") + `}
retention: {keepLast: 1}
`
	if err := os.MkdirAll(filepath.Join(dir, "usb"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestKeysGenerateSigning(t *testing.T) {
	out := filepath.Join(t.TempDir(), "signing.key")
	pub, err := kdr(t, "keys", "generate", "--signing", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || strings.Count(pub, "\n") != 1 {
		t.Fatalf("printed %q, want one ssh-ed25519 line", pub)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	s, err := manifest.LoadSigner(out)
	if err != nil || s.PublicKey() != strings.Fields(pub)[0]+" "+strings.Fields(pub)[1] {
		t.Fatalf("the key file does not hold the printed key: %v", err)
	}
	if _, err := kdr(t, "keys", "generate", "--signing", "--out", out); err == nil {
		t.Fatal("an existing key file was overwritten")
	}
}

// TestWritersNeedTheSigningKey: a backup or a prune that deletes refuses
// to start without a signing key, naming the setting, before it contacts
// anything; readers need none.
func TestWritersNeedTheSigningKey(t *testing.T) {
	key := testenv.NewSigningKey(t)
	dir := t.TempDir()
	cfg := testConfig(t, dir, "signing: {trustedKeys: [\""+key.Public+"\"]}\n")
	for _, args := range [][]string{{"backup"}, {"prune", "--apply"}} {
		_, err := kdr(t, append([]string{"--config", cfg}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "signing.keyFile") {
			t.Errorf("%v: %v, want an error naming signing.keyFile", args, err)
		}
	}
	identity := filepath.Join(dir, "operator.key")
	if _, err := kdr(t, "keys", "generate", "--out", identity); err != nil {
		t.Fatal(err)
	}
	if _, err := kdr(t, "--config", cfg, "drill", "--identity", identity); err == nil || !strings.Contains(err.Error(), "--no-store") {
		t.Errorf("drill without a signing key: %v, want an error pointing at --no-store", err)
	}
	if _, err := kdr(t, "--config", cfg, "prune"); err != nil {
		t.Errorf("a dry run needs no signing key: %v", err)
	}
	if _, err := kdr(t, "--config", cfg, "list"); err != nil {
		t.Errorf("list needs no signing key: %v", err)
	}
	other := testenv.NewSigningKey(t)
	cfg = testConfig(t, dir, "signing: {trustedKeys: [\""+key.Public+"\"], keyFile: "+other.WriteFile(t, dir)+"}\n")
	if _, err := kdr(t, "--config", cfg, "backup"); err == nil || !strings.Contains(err.Error(), "not among the trusted keys") {
		t.Errorf("backup with a key its own config does not trust: %v", err)
	}
}

// TestListShowsOnlyTrusted: a planted manifest far in the future is not
// listed, and --all shows it marked.
func TestListShowsOnlyTrusted(t *testing.T) {
	key := testenv.NewSigningKey(t)
	dir := t.TempDir()
	cfg := testConfig(t, dir, "signing: {trustedKeys: [\""+key.Public+"\"]}\n")
	usb, err := storage.NewLocal("usb", filepath.Join(dir, "usb"))
	if err != nil {
		t.Fatal(err)
	}
	const planted = "20991231T000000.000Z-abcdef"
	if err := usb.Put(context.Background(), manifest.Key("prod", planted, manifest.ManifestObject), strings.NewReader(""), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := kdr(t, "--config", cfg, "list")
	if err != nil || strings.Contains(out, planted) {
		t.Errorf("list: %q, %v; want the planted set left out, and no failure", out, err)
	}
	out, _ = kdr(t, "--config", cfg, "list", "--all")
	if !strings.Contains(out, planted+" UNTRUSTED") {
		t.Errorf("list --all: %q, want the planted set marked", out)
	}
}

func TestAcceptUnauthenticatedSyntax(t *testing.T) {
	key := testenv.NewSigningKey(t)
	cfg := testConfig(t, t.TempDir(), "signing: {trustedKeys: [\""+key.Public+"\"]}\n")
	for _, bad := range []string{"latest@sha256:" + strings.Repeat("a", 64), "20261124T203000.123Z-3fa9c1", "20261124T203000.123Z-3fa9c1@sha256:abc"} {
		if _, err := kdr(t, "--config", cfg, "--accept-unauthenticated", bad, "list"); err == nil || !strings.Contains(err.Error(), "--accept-unauthenticated") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
