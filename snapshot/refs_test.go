package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
)

// referencingHost lays out the static pod manifests kubeadm wrote for a
// node whose API server encrypts Secrets with a config outside the PKI and
// reads an audit policy mounted from /srv/audit, with every file they
// name, under root.
func referencingHost(t *testing.T, root string) {
	t.Helper()
	fixtures, err := filepath.Glob("../staticpod/testdata/kubeadm/*.yaml")
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("kubeadm manifests: %v %v", fixtures, err)
	}
	write := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range fixtures {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		write("etc/kubernetes/manifests/"+filepath.Base(f), raw)
	}
	for _, name := range []string{"ca.crt", "ca.key", "sa.pub", "sa.key", "apiserver.crt", "apiserver.key",
		"apiserver-etcd-client.crt", "apiserver-etcd-client.key", "apiserver-kubelet-client.crt",
		"apiserver-kubelet-client.key", "front-proxy-ca.crt", "front-proxy-client.crt", "front-proxy-client.key",
		"etcd/ca.crt", "etcd/server.crt", "etcd/server.key", "etcd/peer.crt", "etcd/peer.key"} {
		write("etc/kubernetes/pki/"+name, []byte("x"))
	}
	for _, conf := range []string{"scheduler.conf", "controller-manager.conf"} {
		write("etc/kubernetes/"+conf, []byte("apiVersion: v1\nkind: Config\n"))
	}
	write("etc/kubernetes/enc/encryption.yaml", []byte("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"))
	write("srv/audit/policy.yaml", []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\n"))
}

func TestStateCapturesReferences(t *testing.T) {
	root := t.TempDir()
	referencingHost(t, root)
	plan, err := planState(root, kubeadmSets())
	if err != nil {
		t.Fatal(err)
	}
	var referenced *manifest.FileSet
	for i := range plan.sets {
		if plan.sets[i].Name == manifest.ReferencedSet {
			referenced = &plan.sets[i]
		}
	}
	if referenced == nil || !referenced.Required {
		t.Fatalf("no required set of referenced files: %+v", plan.sets)
	}
	// The PKI and kubeconfigs are the configured sets'; only what they
	// do not name is added.
	want := []string{"/etc/kubernetes/enc/encryption.yaml", "/srv/audit/policy.yaml"}
	if !slices.Equal(referenced.Paths, want) {
		t.Fatalf("referenced set %v, want %v", referenced.Paths, want)
	}
	var rels []string
	for _, e := range plan.entries {
		rels = append(rels, e.rel)
	}
	for _, w := range want {
		if !slices.Contains(rels, strings.TrimPrefix(w, "/")) {
			t.Errorf("%s is not captured: %v", w, rels)
		}
	}
	if slices.Contains(rels, "var/log/kubernetes/audit.log") {
		t.Error("the audit log, an output, is captured")
	}
	cp := plan.controlPlane
	if cp == nil || cp.EtcdDataDir != "/srv/etcd-disk/data" || cp.EtcdName != "cp1" || cp.APIServerAddress != "198.18.0.11" ||
		cp.EtcdManifest != "/etc/kubernetes/manifests/etcd.yaml" || len(cp.Manifests) != 4 {
		t.Fatalf("topology %+v", cp)
	}
	if !slices.ContainsFunc(cp.References, func(r manifest.Reference) bool {
		return r.Path == "/etc/kubernetes/enc/encryption.yaml" && r.Flag == "encryption-provider-config" && r.Component == "kube-apiserver"
	}) {
		t.Fatalf("references %+v", cp.References)
	}
}

// A file the control plane reads and the host lacks fails the backup,
// naming the flag; a state set without the manifests captures nothing
// more.
func TestStateReferenceMissing(t *testing.T) {
	for _, tc := range []struct {
		remove, flag string
	}{
		{"etc/kubernetes/enc/encryption.yaml", "--encryption-provider-config"},
		{"srv/audit/policy.yaml", "--audit-policy-file"},
		{"etc/kubernetes/scheduler.conf", "--authentication-kubeconfig"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			root := t.TempDir()
			referencingHost(t, root)
			if err := os.Remove(filepath.Join(root, tc.remove)); err != nil {
				t.Fatal(err)
			}
			_, err := planState(root, kubeadmSets())
			if !errors.Is(err, ErrReferenceMissing) || !strings.Contains(err.Error(), tc.flag) || !strings.Contains(err.Error(), "/"+tc.remove) {
				t.Fatalf("got %v, want ErrReferenceMissing naming %s and /%s", err, tc.flag, tc.remove)
			}
		})
	}
	root := t.TempDir()
	referencingHost(t, root)
	os.Remove(filepath.Join(root, "etc/kubernetes/enc/encryption.yaml"))
	plan, err := planState(root, kubeadmSets()[:2])
	if err != nil || plan.controlPlane != nil {
		t.Fatalf("without the manifests set: %v, %+v", err, plan)
	}
}

// An etcd under systemd has no static pod: its member's name and data dir
// are recorded from the environment file its unit reads, when a set
// captures that file, and a static pod running etcd wins over it.
func TestStateRecordsEtcdEnv(t *testing.T) {
	envSet := config.FileSet{Name: "etcd-env", Paths: []string{"/etc/etcd.env", "/etc/etcd/etcd.conf"}}
	for _, tc := range []struct {
		name     string
		files    map[string]string
		kubeadm  bool
		captured bool
		// want is the recorded data dir and name; "" records nothing.
		wantDir, wantName string
	}{
		{name: "kubespray", files: map[string]string{"etc/etcd.env": "# Environment file for etcd\nETCD_DATA_DIR=/srv/etcd/data/\nETCD_NAME=etcd1\n"},
			captured: true, wantDir: "/srv/etcd/data", wantName: "etcd1"},
		{name: "red-hat", files: map[string]string{"etc/etcd/etcd.conf": "ETCD_NAME=default\nETCD_DATA_DIR=\"/var/lib/etcd/default.etcd\"\n"},
			captured: true, wantDir: "/var/lib/etcd/default.etcd", wantName: "default"},
		// kubespray's file first, as etcdenv.Paths orders them.
		{name: "both", files: map[string]string{"etc/etcd.env": "ETCD_DATA_DIR=/srv/etcd\n", "etc/etcd/etcd.conf": "ETCD_DATA_DIR=/var/lib/etcd\n"},
			captured: true, wantDir: "/srv/etcd"},
		// A restore would not bring the file back.
		{name: "not-captured", files: map[string]string{"etc/etcd.env": "ETCD_DATA_DIR=/srv/etcd/data\n"}},
		// Relative to a working directory the file does not name.
		{name: "relative", files: map[string]string{"etc/etcd.env": "ETCD_DATA_DIR=data\n"}, captured: true},
		{name: "static-pod-wins", files: map[string]string{"etc/etcd.env": "ETCD_DATA_DIR=/srv/etcd\nETCD_NAME=etcd1\n"},
			kubeadm: true, captured: true, wantDir: "/srv/etcd-disk/data", wantName: "cp1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			var sets []config.FileSet
			if tc.kubeadm {
				referencingHost(t, root)
				sets = kubeadmSets()
			}
			if tc.captured {
				sets = append(sets, envSet)
			}
			for rel, data := range tc.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, rel)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, rel), []byte(data), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if len(sets) == 0 {
				sets = []config.FileSet{{Name: "ssl", Paths: []string{"/etc/ssl/etcd/**"}}}
			}
			plan, err := planState(root, sets)
			if err != nil {
				t.Fatal(err)
			}
			cp := plan.controlPlane
			if tc.wantDir == "" {
				if cp != nil {
					t.Fatalf("recorded %+v, want nothing", cp)
				}
				return
			}
			if cp == nil || cp.EtcdDataDir != tc.wantDir || cp.EtcdName != tc.wantName {
				t.Fatalf("recorded %+v, want data dir %s and name %q", cp, tc.wantDir, tc.wantName)
			}
			// The topology: a static pod runs etcd, or none does.
			if tc.kubeadm != (cp.EtcdManifest != "") {
				t.Errorf("etcdManifest %q for a kubeadm host: %v", cp.EtcdManifest, tc.kubeadm)
			}
			if !tc.kubeadm && (cp.Manifests == nil || len(cp.Manifests) != 0 || len(cp.References) != 0) {
				t.Errorf("an etcd under systemd records static pods: %+v", cp)
			}
		})
	}
}
