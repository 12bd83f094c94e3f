package restore

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/etcdenv"
	"github.com/kdr-io/kdr/manifest"
)

// A kubespray etcd.env restored from node1 onto node2 names node2: its
// member, URLs, the new cluster, the data dir, and node2's own member
// certificate, which kubespray puts on every etcd host.
func TestConfigureEtcdEnv(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"etc/etcd.env": "# Environment file for etcd\nETCD_DATA_DIR=/var/lib/etcd\nETCD_NAME=node1\n" +
			"ETCD_ADVERTISE_CLIENT_URLS=https://10.0.0.11:2379\nETCD_INITIAL_CLUSTER_STATE=existing\n" +
			"ETCD_LISTEN_CLIENT_URLS=https://10.0.0.11:2379,https://127.0.0.1:2379\nETCD_INITIAL_CLUSTER=node1=https://10.0.0.11:2380\n" +
			"ETCD_CERT_FILE=/etc/ssl/etcd/ssl/member-node1.pem\nETCD_KEY_FILE=/etc/ssl/etcd/ssl/member-node1-key.pem\n" +
			"ETCD_TRUSTED_CA_FILE=/etc/ssl/etcd/ssl/ca.pem\nETCDCTL_CERT=/etc/ssl/etcd/ssl/admin-node1.pem\n",
		"etc/ssl/etcd/ssl/member-node2.pem":     "x",
		"etc/ssl/etcd/ssl/member-node2-key.pem": "x",
		"etc/ssl/etcd/ssl/ca.pem":               "x",
	}
	for rel, data := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	m := &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "node1",
		Inventory: config.Inventory{Hosts: []config.Host{{Name: "node1", IP: "10.0.0.11"}, {Name: "node2", IP: "10.0.0.12"}}}}
	plan, err := BuildPlan(m, Source{Kind: "local", Path: "/mnt/usb"}, Options{Topology: TopologySystemd, EtcdDataDir: "/srv/etcd"})
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Plan: plan, Node: plan.Options.Nodes[1], Root: root, Log: slog.New(slog.DiscardHandler)}
	if err := checkEtcdEnv(e); err == nil {
		t.Fatal("the check passes before the file is the node's: it proves nothing")
	}
	if err := configureEtcdEnv(e); err != nil {
		t.Fatal(err)
	}
	if err := checkEtcdEnv(e); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "etc/etcd.env"))
	if err != nil {
		t.Fatal(err)
	}
	env := etcdenv.Parse(raw)
	for name, want := range map[string]string{
		"ETCD_NAME": "node2", "ETCD_DATA_DIR": "/srv/etcd",
		"ETCD_ADVERTISE_CLIENT_URLS": "https://10.0.0.12:2379",
		"ETCD_LISTEN_CLIENT_URLS":    "https://127.0.0.1:2379,https://10.0.0.12:2379",
		"ETCD_INITIAL_CLUSTER":       plan.InitialCluster,
		"ETCD_INITIAL_CLUSTER_STATE": "existing",
		"ETCD_CERT_FILE":             "/etc/ssl/etcd/ssl/member-node2.pem",
		"ETCD_KEY_FILE":              "/etc/ssl/etcd/ssl/member-node2-key.pem",
		"ETCD_TRUSTED_CA_FILE":       "/etc/ssl/etcd/ssl/ca.pem",
		// node2 has no admin certificate of its own in the tree: kept.
		"ETCDCTL_CERT": "/etc/ssl/etcd/ssl/admin-node1.pem",
	} {
		if got, _ := env.Get(name); got != want {
			t.Errorf("%s=%s, want %s", name, got, want)
		}
	}
	if !strings.HasPrefix(string(raw), "# Environment file for etcd\n") {
		t.Errorf("the file's comments and order were not kept:\n%s", raw)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/etcd.env")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v (%v), want the restored 0640", fi.Mode(), err)
	}
	aside, err := os.ReadFile(filepath.Join(e.staging(), "aside/etc/etcd.env"))
	if err != nil || string(aside) != files["etc/etcd.env"] {
		t.Errorf("the restored original is not kept aside: %v", err)
	}
}
