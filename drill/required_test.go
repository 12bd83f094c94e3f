package drill

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/pkicheck"
	"github.com/kdr-io/kdr/restore"
)

// TestRequiredLayout: the files a drill requires follow the source's
// topology. An external etcd's come from its environment file, the
// required sets and the config's etcd TLS files a set captures, never
// from kubeadm's list; a kubeadm backup's are kubeadm's and its required
// sets'.
func TestRequiredLayout(t *testing.T) {
	root := t.TempDir()
	write := func(p, data string) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("/etc/etcd.env", "# kubespray\nETCD_NAME=etcd1\nETCD_CERT_FILE=/etc/ssl/etcd/ssl/member-node1.pem\nexport ETCD_KEY_FILE=\"/etc/ssl/etcd/ssl/member-node1-key.pem\"\nETCD_TRUSTED_CA_FILE=relative.pem\n")
	write("/etc/ssl/etcd/ssl/ca.pem", "")
	m := &manifest.Manifest{State: manifest.State{Sets: []manifest.FileSet{
		{Name: "etcd-pki", Required: true, Paths: []string{"/etc/ssl/etcd/ssl/**"}},
		{Name: "etcd-env", Required: true, Paths: []string{"/etc/etcd.env"}},
		{Name: "lb", Required: true, Paths: []string{"/etc/haproxy/*.cfg"}},
		{Name: "dns", Paths: []string{"/etc/coredns/**"}},
	}}}
	tls := []string{"/etc/ssl/etcd/ssl/ca.pem", "/etc/ssl/etcd/ssl/admin-node1.pem", "/etc/kdr/own-client.key", ""}
	l := requiredLayout(m, root, "/etc/kubernetes", tls)
	if l.topology != restore.TopologySystemd {
		t.Fatalf("topology %s, want systemd", l.topology)
	}
	want := []pkicheck.Required{
		{Path: "/etc/ssl/etcd/ssl/member-node1.pem", Why: "etcd reads it (ETCD_CERT_FILE in /etc/etcd.env)"},
		{Path: "/etc/ssl/etcd/ssl/member-node1-key.pem", Why: "etcd reads it (ETCD_KEY_FILE in /etc/etcd.env)"},
		{Path: "/etc/ssl/etcd/ssl/ca.pem", Why: "the cluster's config names it for etcd's client TLS, and state set etcd-pki captures it"},
		{Path: "/etc/ssl/etcd/ssl/admin-node1.pem", Why: "the cluster's config names it for etcd's client TLS, and state set etcd-pki captures it"},
		{Path: "/etc/etcd.env", Why: "state set etcd-env requires it"},
	}
	if !slices.Equal(l.required, want) {
		t.Errorf("required:\n%+v\nwant\n%+v", l.required, want)
	}
	if len(l.unmatched) != 1 || l.unmatched[0].Subject != "/etc/haproxy/*.cfg" || l.unmatched[0].Grade != Fail {
		t.Errorf("unmatched %+v, want the lb set's glob alone", l.unmatched)
	}
	if want := []string{"/etc/ssl/etcd/ssl", "/etc/kubernetes/pki"}; !slices.Equal(l.dirs, want) {
		t.Errorf("dirs %v, want %v", l.dirs, want)
	}

	m.State.ControlPlane = &manifest.ControlPlane{EtcdManifest: "/etc/kubernetes/manifests/etcd.yaml",
		References: []manifest.Reference{{Component: "kube-apiserver", Flag: "encryption-provider-config", Path: "/etc/kubernetes/enc.yaml"}}}
	m.State.Sets = []manifest.FileSet{{Name: manifest.ReferencedSet, Required: true, Paths: []string{"/etc/kubernetes/enc.yaml"}}}
	l = requiredLayout(m, root, "/etc/kubernetes", tls)
	if l.topology != restore.TopologyKubeadm || l.dirs != nil {
		t.Fatalf("topology %s, dirs %v: want kubeadm's", l.topology, l.dirs)
	}
	kubeadm := pkicheck.KubeadmRequired("/etc/kubernetes")
	if len(l.required) != len(kubeadm)+1 || !slices.Equal(l.required[:len(kubeadm)], kubeadm) ||
		l.required[len(kubeadm)] != (pkicheck.Required{Path: "/etc/kubernetes/enc.yaml", Why: "kube-apiserver reads it (--encryption-provider-config)"}) {
		t.Errorf("required %+v, want kubeadm's and the referenced encryption config", l.required)
	}
}
