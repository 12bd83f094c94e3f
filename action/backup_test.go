package action

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
)

// TestBackupStoresSignedRunbooks: a backup stores the signed runbook
// beside the set, the same for the CLI and the agent; a set whose
// inventory names no host gets none, and the backup still succeeds.
func TestBackupStoresSignedRunbooks(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{})
	rs, _ := testenv.AgeKeys(t)
	key := testenv.NewSigningKey(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		hosts    []config.Host
		runbooks bool
	}{
		{"inventory with hosts", []config.Host{{Name: "cp1", IP: "127.0.0.1", Roles: []string{"etcd"}}}, true},
		{"no hosts", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			usb := filepath.Join(dir, tc.name)
			if err := os.Mkdir(usb, 0o755); err != nil {
				t.Fatal(err)
			}
			cfg := &config.Config{
				Clusters: []config.Cluster{{Name: "prod", State: []config.FileSet{},
					Etcd:      config.Etcd{Endpoints: etcd.Endpoints(), Insecure: true},
					Inventory: config.Inventory{Hosts: tc.hosts}}},
				Encryption: config.Encryption{Recipients: []string{rs[0].Text}},
				Signing:    config.Signing{KeyFile: key.WriteFile(t, usb), TrustedKeys: []string{key.Public}},
				Targets:    []config.Target{{Name: "usb", Local: &config.LocalTarget{Path: usb}}},
			}
			cfg.ApplyDefaults()
			env, err := Load(context.Background(), cfg, "kdr.yaml", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := env.Backup(context.Background(), cfg.Clusters, BackupOptions{Root: t.TempDir(), Node: "cp1"})
			if err != nil || len(res) != 1 || res[0].Err != nil {
				t.Fatalf("Backup: %v, %+v", err, res)
			}
			id := res[0].Result.Manifest.ID
			sets, err := catalog.Sets(context.Background(), env.Targets[0], "prod")
			if err != nil || len(sets) != 1 {
				t.Fatalf("sets: %v, %v", sets, err)
			}
			var names []string
			for _, o := range sets[0].Objects {
				names = append(names, o.Key[len(manifest.SetPrefix("prod", id)):])
			}
			for _, name := range []string{RunbookMarkdown, RunbookPDF} {
				has := slices.Contains(names, name) && slices.Contains(names, name+".sig")
				if has != tc.runbooks {
					t.Errorf("%s and its signature stored: %v, want %v (objects %v)", name, has, tc.runbooks, names)
				}
				if tc.runbooks {
					if _, err := manifest.ReadSigned(context.Background(), env.Targets[0], manifest.Key("prod", id, name), 16<<20, manifest.NamespaceRunbook, key.Trust); err != nil {
						t.Errorf("%s: %v", name, err)
					}
				}
			}
		})
	}
}
