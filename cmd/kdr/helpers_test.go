package main

import (
	"path/filepath"
	"testing"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/storage"
)

// logSetup writes a config of cluster prod with the one local target
// usb that trusts a fresh signing key, and opens usb, for a test that
// writes the sets and captured logs a command reads (testenv.PutSet)
// rather than backing up an etcd. With keyFile the config also signs
// with the key, as a prune that deletes must.
func logSetup(t *testing.T, keyFile bool) (cfg string, key *testenv.SigningKey, usb storage.Target) {
	t.Helper()
	key = testenv.NewSigningKey(t)
	dir := t.TempDir()
	signing := "signing: {trustedKeys: [\"" + key.Public + "\"]}\n"
	if keyFile {
		signing = "signing: {trustedKeys: [\"" + key.Public + "\"], keyFile: " + key.WriteFile(t, dir) + "}\n"
	}
	cfg = testConfig(t, dir, signing)
	usb, err := storage.NewLocal("usb", filepath.Join(dir, "usb"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, key, usb
}
