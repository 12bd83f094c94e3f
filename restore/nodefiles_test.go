package restore

import (
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/pkicheck"
)

// A kubelet.conf issued for a node fits that node and no other, and keeps
// the restored file's clusters with the node's own API server.
func TestKubeletConf(t *testing.T) {
	root := t.TempDir()
	testenv.KubeadmInit(t, root, testenv.KubeOptions{NodeName: "cp1", AdvertiseAddress: "198.18.0.11"})
	read := func(p string) []byte {
		raw, err := os.ReadFile(root + p)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	ca, err := pkicheck.ParseCert(read("/etc/kubernetes/pki/ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := pkicheck.ParseKey(read("/etc/kubernetes/pki/ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	noFiles := func(p string) ([]byte, error) { return nil, os.ErrNotExist }
	now := time.Now()
	restored := read("/etc/kubernetes/kubelet.conf")
	if err := kubeletConfFits(restored, noFiles, ca, "cp1", now); err != nil {
		t.Fatalf("kubeadm's own kubelet.conf does not fit its node: %v", err)
	}
	if err := kubeletConfFits(restored, noFiles, ca, "cp2", now); err == nil || !strings.Contains(err.Error(), "system:node:cp1") {
		t.Fatalf("cp1's kubelet.conf fits cp2: %v", err)
	}
	if err := kubeletConfFits(restored, noFiles, ca, "cp1", now.AddDate(0, 11, 15)); err == nil {
		t.Fatal("a kubelet.conf with two weeks left is kept")
	}

	p := &Plan{Manifest: &manifest.Manifest{Node: "cp1", Inventory: manifest.Inventory{
		APIEndpoint: "https://198.18.0.10:6443",
		Hosts:       []manifest.Host{{Name: "cp1", IP: "198.18.0.11"}, {Name: "cp2", IP: "198.18.0.12"}},
	}}}
	cp2 := Node{Name: "cp2", IP: "198.18.0.12"}
	issued, err := issueKubeletConf(restored, ca, caKey, "cp2", p.serverFor(cp2), now)
	if err != nil {
		t.Fatal(err)
	}
	if err := kubeletConfFits(issued, noFiles, ca, "cp2", now); err != nil {
		t.Fatalf("the issued kubelet.conf does not fit cp2: %v", err)
	}
	cfg, err := clientcmd.Load(issued)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		if c.Server != "https://198.18.0.12:6443" {
			t.Fatalf("the issued kubelet.conf asks %s, not cp2's own API server", c.Server)
		}
	}

	// Another CA's certificate does not verify.
	other := testenv.NewPKI(t, t.TempDir())
	otherCA, err := pkicheck.ParseCert(readAbs(t, other.CA))
	if err != nil {
		t.Fatal(err)
	}
	var unknown x509.UnknownAuthorityError
	if err := kubeletConfFits(issued, noFiles, otherCA, "cp2", now); !errors.As(err, &unknown) {
		t.Fatalf("a kubelet.conf from another CA: %v, want x509.UnknownAuthorityError", err)
	}
}

func readAbs(t *testing.T, p string) []byte {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestServerFor(t *testing.T) {
	p := &Plan{Manifest: &manifest.Manifest{Node: "cp1", Inventory: manifest.Inventory{
		APIEndpoint: "https://198.18.0.10:6443",
		Hosts:       []manifest.Host{{Name: "cp1", IP: "198.18.0.11"}},
	}}}
	for _, tc := range []struct {
		endpoint string
		node     Node
		in, want string
	}{
		{"", Node{Name: "cp1", IP: "198.18.0.11"}, "https://198.18.0.11:6443", "https://198.18.0.11:6443"},
		{"", Node{Name: "cp3", IP: "198.18.0.23"}, "https://198.18.0.11:6443", "https://198.18.0.23:6443"},
		{"", Node{Name: "cp3", IP: "198.18.0.23"}, "https://198.18.0.10:6443", "https://198.18.0.10:6443"},
		{"https://198.18.1.10:6443", Node{Name: "cp3", IP: "198.18.0.23"}, "https://198.18.0.10:6443", "https://198.18.1.10:6443"},
		{"", Node{Name: "cp3", IP: "fd00::3"}, "https://198.18.0.11:6443", "https://[fd00::3]:6443"},
		{"", Node{Name: "cp3", IP: "198.18.0.23"}, "https://198.18.0.11", "https://198.18.0.23"},
	} {
		p.Options.APIEndpoint = tc.endpoint
		if got := p.serverFor(tc.node)(tc.in); got != tc.want {
			t.Errorf("%s on %s (endpoint %q): %s, want %s", tc.in, tc.node.Name, tc.endpoint, got, tc.want)
		}
	}
}
