package action

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/internal/version"
	"github.com/kdr-io/kdr/kit"
	"github.com/kdr-io/kdr/storage"
)

// TestBackupRefreshesTheKitOnLocalTargets: a backup to a local disk and
// a bucket leaves a verified kit on the disk, holding the set's runbook,
// and nothing of a kit in the bucket.
func TestBackupRefreshesTheKitOnLocalTargets(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{})
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "kdr", false)
	cfg, env := kitEnv(t, etcd, &config.Target{Name: "s3", S3: &config.S3Target{
		Endpoint: m.Endpoint(), Bucket: "kdr", AccessKey: m.AccessKey(), SecretKey: m.SecretKey(), Insecure: true, PathStyle: true,
	}})
	res, err := env.Backup(t.Context(), cfg.Clusters, BackupOptions{Root: t.TempDir(), Node: "cp1"})
	if err != nil || len(res) != 1 || res[0].Err != nil || len(res[0].Result.Complete) != 2 {
		t.Fatalf("Backup: %v, %+v", err, res)
	}
	if len(res[0].KitFailed) != 0 {
		t.Errorf("kit failed on %v", res[0].KitFailed)
	}
	usb := env.Targets[0]
	st, err := kit.Check(t.Context(), usb, env.Trust)
	if err != nil {
		t.Fatalf("the kit on usb: %v", err)
	}
	if st.Version != version.Version {
		t.Errorf("kit version %q, want the running %q", st.Version, version.Version)
	}
	dir := usb.(*storage.Local).Dir()
	md, err := os.ReadFile(filepath.Join(dir, kit.Dir, kit.RunbookFile("prod")))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(filepath.Join(dir, "prod", res[0].Result.Manifest.ID, RunbookMarkdown))
	if err != nil || !bytes.Equal(md, stored) {
		t.Errorf("the kit's runbook is not the one stored beside the set (%v)", err)
	}
	for o := range m.Client().ListObjects(t.Context(), "kdr", minio.ListObjectsOptions{Prefix: kit.Dir + "/", Recursive: true}) {
		t.Errorf("the bucket holds %s (%v): no kit on S3", o.Key, o.Err)
	}
}

// TestBackupSucceedsWithoutItsKit: a disk that takes the set but not the
// kit makes a whole backup, with the failure logged and marked.
func TestBackupSucceedsWithoutItsKit(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{})
	cfg, env := kitEnv(t, etcd, nil)
	var log bytes.Buffer
	env.Log = slog.New(slog.NewTextHandler(&log, nil))
	// A file where the kit's directory goes.
	dir := env.Targets[0].(*storage.Local).Dir()
	if err := os.WriteFile(filepath.Join(dir, kit.Dir), []byte("in the way\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	res, err := env.Backup(t.Context(), cfg.Clusters, BackupOptions{Root: t.TempDir(), Node: "cp1"})
	if err != nil || len(res) != 1 || res[0].Err != nil || len(res[0].Result.Complete) != 1 {
		t.Fatalf("Backup: %v, %+v", err, res)
	}
	if got := res[0].KitFailed; len(got) != 1 || got[0] != "usb" {
		t.Errorf("KitFailed %v, want [usb]", got)
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "recovery kit not refreshed") {
		t.Errorf("no warning about the kit:\n%s", log.String())
	}
	if _, err := kit.Check(t.Context(), env.Targets[0], env.Trust); !errors.Is(err, kit.ErrNoKit) {
		t.Errorf("Check: %v, want no kit", err)
	}
}

// kitEnv is a config of one cluster backed up to the local target usb
// (first) and, when given, another target.
func kitEnv(t *testing.T, etcd *testenv.EtcdCluster, other *config.Target) (*config.Config, *Env) {
	t.Helper()
	rs, _ := testenv.AgeKeys(t)
	key := testenv.NewSigningKey(t)
	usb := t.TempDir()
	cfg := &config.Config{
		Clusters: []config.Cluster{{Name: "prod", State: []config.FileSet{},
			Etcd:      config.Etcd{Endpoints: etcd.Endpoints(), Insecure: true},
			Inventory: config.Inventory{Hosts: []config.Host{{Name: "cp1", IP: "127.0.0.1", Roles: []string{"etcd"}}}}}},
		Encryption: config.Encryption{Recipients: []string{rs[0].Text}},
		Signing:    config.Signing{KeyFile: key.WriteFile(t, t.TempDir()), TrustedKeys: []string{key.Public}},
		Targets:    []config.Target{{Name: "usb", Local: &config.LocalTarget{Path: usb}}},
	}
	if other != nil {
		cfg.Targets = append(cfg.Targets, *other)
	}
	cfg.ApplyDefaults()
	env, err := Load(context.Background(), cfg, "kdr.yaml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, env
}
