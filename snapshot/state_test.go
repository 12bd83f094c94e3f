package snapshot

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
)

// kubeadmTree lays out a small kubeadm-like /etc/kubernetes under root.
func kubeadmTree(t *testing.T, root string) *testenv.PKI {
	t.Helper()
	pki := testenv.NewPKI(t, filepath.Join(root, "etc/kubernetes/pki"))
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	write("etc/kubernetes/admin.conf", "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: "+
		b64(ca)+"\n    server: https://10.0.0.10:6443\n", 0o600)
	write("etc/kubernetes/manifests/etcd.yaml", "apiVersion: v1\nkind: Pod\n", 0o600)
	if err := os.Symlink("ca.crt", filepath.Join(root, "etc/kubernetes/pki/current.pem")); err != nil {
		t.Fatal(err)
	}
	return pki
}

func kubeadmSets() []config.FileSet {
	return []config.FileSet{
		{Name: "pki", Paths: []string{"/etc/kubernetes/pki/**"}, Required: true},
		{Name: "kubeconfigs", Paths: []string{"/etc/kubernetes/*.conf"}},
		{Name: "manifests", Paths: []string{"/etc/kubernetes/manifests/*"}},
		{Name: "loadbalancer", Paths: []string{"/etc/haproxy/haproxy.cfg"}},
	}
}

func TestStateCapture(t *testing.T) {
	root := t.TempDir()
	kubeadmTree(t, root)
	plan, err := planState(root, kubeadmSets())
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.warnings) != 1 || !strings.Contains(plan.warnings[0], "haproxy.cfg") {
		t.Errorf("warnings = %q, want one about the missing optional haproxy.cfg", plan.warnings)
	}
	var buf bytes.Buffer
	capture, err := plan.writeState(&buf, "cp1")
	if err != nil {
		t.Fatal(err)
	}

	tr := tar.NewReader(&buf)
	var names []string
	var last []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		last, _ = io.ReadAll(tr)
		if h.Name == "etc/kubernetes/pki/ca.key" && h.Mode&0o777 != 0o600 {
			t.Errorf("ca.key mode %o, want 0600 kept", h.Mode)
		}
		if h.Name == "etc/kubernetes/pki/current.pem" && (h.Typeflag != tar.TypeSymlink || h.Linkname != "ca.crt") {
			t.Errorf("symlink captured as %v -> %q", h.Typeflag, h.Linkname)
		}
	}
	if names[len(names)-1] != manifest.StateIndexPath {
		t.Fatalf("last tar entry %q, want the index", names[len(names)-1])
	}
	idx, err := manifest.ParseIndex(bytes.NewReader(last))
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Entries) != len(names)-1 || idx.Node != "cp1" {
		t.Errorf("index has %d entries for %d tar entries (node %q)", len(idx.Entries), len(names)-1, idx.Node)
	}
	for _, want := range []string{"etc/kubernetes/pki/ca.crt", "etc/kubernetes/admin.conf", "etc/kubernetes/manifests/etcd.yaml"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("%s not captured; got %q", want, names)
		}
	}
	// ca.crt, server.crt, client.crt, and the CA embedded in admin.conf.
	if len(capture.certificates) != 4 {
		t.Errorf("found %d certificates, want 4: %+v", len(capture.certificates), capture.certificates)
	}
	for _, c := range capture.certificates {
		if c.NotAfter.IsZero() || c.Subject == "" {
			t.Errorf("certificate %s recorded without subject or expiry", c.Path)
		}
	}
}

func TestStateRequiredMissing(t *testing.T) {
	_, err := planState(t.TempDir(), kubeadmSets())
	if !errors.Is(err, ErrRequiredMissing) || !strings.Contains(err.Error(), "pki") {
		t.Fatalf("err = %v, want ErrRequiredMissing naming the pki set", err)
	}
}

func TestStateUnreadableFile(t *testing.T) {
	root := t.TempDir()
	kubeadmTree(t, root)
	plan, err := planState(root, kubeadmSets())
	if err != nil {
		t.Fatal(err)
	}
	// A file that vanishes between planning and capture fails the backup by name.
	os.Remove(filepath.Join(root, "etc/kubernetes/admin.conf"))
	_, err = plan.writeState(io.Discard, "cp1")
	if err == nil || !strings.Contains(err.Error(), "admin.conf") {
		t.Fatalf("err = %v, want an error naming admin.conf", err)
	}
}

// TestStateSymlinkedDir: a directory the sets name that is a symlink on
// the host fails the backup by name, since no restore would write
// through it.
func TestStateSymlinkedDir(t *testing.T) {
	root := t.TempDir()
	kubeadmTree(t, root)
	pki := filepath.Join(root, "etc/kubernetes/pki")
	moved := filepath.Join(root, "data-pki")
	if err := os.Rename(pki, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(moved, pki); err != nil {
		t.Fatal(err)
	}
	_, err := planState(root, kubeadmSets())
	if !errors.Is(err, ErrSymlinkedDir) || !strings.Contains(err.Error(), "/etc/kubernetes/pki") {
		t.Fatalf("err = %v, want ErrSymlinkedDir naming /etc/kubernetes/pki", err)
	}
}

// TestStateRequiredEveryPath: one missing path of a required set fails
// the backup even when its other paths match.
func TestStateRequiredEveryPath(t *testing.T) {
	root := t.TempDir()
	kubeadmTree(t, root)
	sets := []config.FileSet{{Name: "pki", Required: true, Paths: []string{"/etc/kubernetes/pki/**", "/etc/kubernetes/pki/etcd/ca.crt"}}}
	_, err := planState(root, sets)
	if !errors.Is(err, ErrRequiredMissing) || !strings.Contains(err.Error(), "etcd/ca.crt") {
		t.Fatalf("err = %v, want ErrRequiredMissing naming etcd/ca.crt", err)
	}
}
