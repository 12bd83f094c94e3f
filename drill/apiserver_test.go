package drill

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
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

// TestAPIServerReachesNothingLive: a restored ValidatingWebhookConfiguration
// names a webhook that is live on this host's loopback. The drill's
// kube-apiserver, started on the restored data, loads it and tries to
// call it (a create is refused for the failed call), yet the webhook
// never hears from it: the API server runs in a network namespace of its
// own. The live API server the data came from does reach the webhook, so
// the fixture would catch a drill that leaked into the host's network.
func TestAPIServerReachesNothingLive(t *testing.T) {
	var calls atomic.Int32
	hook := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
			return
		}
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		review.Request = nil
		json.NewEncoder(w).Encode(&review)
	}))
	defer hook.Close()

	h := testenv.StartKubeadmHost(t, testenv.KubeOptions{})
	ctx := t.Context()
	cfg, err := clientcmd.BuildConfigFromFlags("", h.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	live := kubernetes.NewForConfigOrDie(cfg)
	fail := admissionregv1.Fail
	none := admissionregv1.SideEffectClassNone
	url := hook.URL + "/validate"
	_, err = live.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "live-hook"},
		Webhooks: []admissionregv1.ValidatingWebhook{{
			Name:         "namespaces.kdr.test",
			ClientConfig: admissionregv1.WebhookClientConfig{URL: &url, CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw})},
			Rules: []admissionregv1.RuleWithOperations{{
				Operations: []admissionregv1.OperationType{admissionregv1.Create},
				Rule:       admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"namespaces"}},
			}},
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	createNamespace := func(cs *kubernetes.Clientset, name string) error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		return err
	}
	// The API server sees a new webhook configuration a moment after it
	// is stored: until it calls the hook, each try takes a new name.
	deadline := time.Now().Add(time.Minute)
	for try := 0; calls.Load() == 0; try++ {
		err := createNamespace(live, fmt.Sprintf("live-check-%d", try))
		if calls.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live API server never called the webhook: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	before := calls.Load()

	// The data as a drill restores it: the API server stopped, etcd
	// served in this process over plain http on the same data dir.
	h.Stop()
	_, client := testenv.StartEmbedded(t, testenv.EmbeddedOptions{Name: argValue(h.Etcd.Args, "--name"), Dir: argValue(h.Etcd.Args, "--data-dir")})

	as, err := startAPIServer(ctx, testenv.Binary(t, "kube-apiserver"), h.Root, testenv.KubernetesDir, "", []string{client}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer as.stop()
	cs := kubernetes.NewForConfigOrDie(as.cfg)
	deadline = time.Now().Add(2 * time.Minute)
	for {
		err := createNamespace(cs, "drill-check")
		if err == nil {
			t.Fatal("the drill's API server created a namespace that the restored webhook must judge")
		}
		if strings.Contains(err.Error(), "failed calling webhook") {
			t.Logf("the drill's API server could not call the webhook: %v", err)
			break
		}
		select {
		case <-as.exited:
			t.Fatalf("the drill's API server exited: %s", lastLine(as.log))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the drill's API server never tried the restored webhook: %v (its log: %s)", err, lastLine(as.log))
		}
		time.Sleep(250 * time.Millisecond)
	}
	if n := calls.Load(); n != before {
		t.Fatalf("the webhook on the host's loopback got %d calls from the drill's API server", n-before)
	}
}

func argValue(args []string, flag string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
