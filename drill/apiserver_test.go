package drill

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestAPIServerCheckRefusesExec: a restored super-admin.conf whose user
// runs a command fails the kube-apiserver check with the field named, and
// nothing runs: neither the command nor the API server.
func TestAPIServerCheckRefusesExec(t *testing.T) {
	dir := t.TempDir()
	ran := filepath.Join(dir, "plugin-ran")
	plugin := writeScript(t, dir, "plugin", `touch '`+ran+`'
echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}'`)
	started := filepath.Join(dir, "apiserver-started")
	bin := writeScript(t, dir, "kube-apiserver", `touch '`+started+`'
exec sleep 60`)
	ca, err := os.ReadFile(testenv.NewPKI(t, filepath.Join(dir, "pki")).CA)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	conf := filepath.Join(root, "etc/kubernetes/super-admin.conf")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		t.Fatal(err)
	}
	err = os.WriteFile(conf, fmt.Appendf(nil, `apiVersion: v1
kind: Config
current-context: kubernetes-super-admin@kubernetes
contexts:
- name: kubernetes-super-admin@kubernetes
  context: {cluster: kubernetes, user: kubernetes-super-admin}
clusters:
- name: kubernetes
  cluster:
    server: https://127.0.0.1:1
    certificate-authority-data: %s
users:
- name: kubernetes-super-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: %s
      interactiveMode: Never
`, base64.StdEncoding.EncodeToString(ca), plugin), 0o600)
	if err != nil {
		t.Fatal(err)
	}

	rep := &Report{}
	checkAPIServer(context.Background(), rep, bin, root, "/etc/kubernetes", "", []string{"https://127.0.0.1:1"}, dir)
	for _, f := range []string{ran, started} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want it never made", filepath.Base(f), err)
		}
	}
	want := `restored kubeconfig /etc/kubernetes/super-admin.conf: user "kubernetes-super-admin" sets exec: refused`
	if len(rep.Checks) != 1 || rep.Checks[0].Grade != Fail || !strings.Contains(rep.Checks[0].Reason, want) {
		t.Fatalf("checks %+v, want one failed kube-apiserver check with %q", rep.Checks, want)
	}

	// The fixture is live: handed to clientcmd's machinery, as the check
	// once did, the plugin runs at the first request, before any connection.
	cfg, err := clientcmd.BuildConfigFromFlags("", conf)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := hc.Get("https://127.0.0.1:1/"); err == nil {
		resp.Body.Close()
	}
	if _, err := os.Stat(ran); err != nil {
		t.Errorf("clientcmd did not run the plugin either, so the check above proves nothing: %v", err)
	}
}

// TestAdminConfigListsNamespaces: kubeadm's own administrator kubeconfigs,
// read as the drill reads a restored one, list a real API server's
// namespaces. A super-admin.conf that links to a file of the host is not
// followed out of the tree, and admin.conf serves in its stead.
func TestAdminConfigListsNamespaces(t *testing.T) {
	h := testenv.StartKubeadmHost(t, testenv.KubeOptions{})
	list := func(root string) {
		t.Helper()
		cfg, err := adminConfig(root, testenv.KubernetesDir, h.Ports.APIServer)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); err != nil {
			t.Fatalf("namespaces: %v", err)
		}
	}
	list(h.Root)

	other := filepath.Join(t.TempDir(), "root")
	kubeDir := filepath.Join(other, "etc/kubernetes")
	if err := os.MkdirAll(kubeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	admin, err := os.ReadFile(h.Path(testenv.KubernetesDir + "/admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(kubeDir, "admin.conf"), admin, 0o600); err != nil {
		t.Fatal(err)
	}
	hostFile := filepath.Join(t.TempDir(), "host-kubeconfig")
	if err := os.WriteFile(hostFile, []byte("a file of the host, not a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(hostFile, filepath.Join(kubeDir, "super-admin.conf")); err != nil {
		t.Fatal(err)
	}
	list(other)
}

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
