package pkicheck

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/kdr-io/kdr/internal/testenv"
)

// embedded is a CA, and a client certificate and key it signed, as PEM,
// with the PKI they came from.
type embedded struct {
	ca, cert, key []byte
	pki           *testenv.PKI
}

func newEmbedded(t *testing.T) embedded {
	t.Helper()
	p := testenv.NewPKI(t, t.TempDir())
	read := func(f string) []byte {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return embedded{ca: read(p.CA), cert: read(p.ClientCert), key: read(p.ClientKey), pki: p}
}

// craft writes a kubeconfig as an attacker would: kubeadm's shape with
// embedded data, plus extra lines under the cluster and under the user
// (each indented four spaces). Its server is an address nothing listens
// on, which ClientConfig must not use.
func (e embedded) craft(cluster, user string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
current-context: admin@prod
contexts:
- name: admin@prod
  context: {cluster: prod, user: admin}
clusters:
- name: prod
  cluster:
    server: https://203.0.113.1:6443
    certificate-authority-data: %s
%s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
%s
`, b64(e.ca), cluster, b64(e.cert), b64(e.key), user)
}

// TestClientConfigRefuses: every crafted kubeconfig is refused, with one
// line that names the field; those that ask for more than embedded data
// are marked ErrRefused.
func TestClientConfigRefuses(t *testing.T) {
	e := newEmbedded(t)
	otherKey := newEmbedded(t).key
	const host = "https://127.0.0.1:6443"
	for _, tc := range []struct {
		name          string
		cluster, user string
		raw           string // the whole kubeconfig, instead of a crafted one
		want          string
		refused       bool
	}{
		{name: "exec", user: `    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /bin/sh
      args: ["-c", "touch /tmp/pwned"]
      interactiveMode: Never`, want: `user "admin" sets exec`, refused: true},
		{name: "empty exec", user: `    exec: {}`, want: `user "admin" sets exec`, refused: true},
		{name: "auth-provider", user: `    auth-provider:
      name: oidc
      config: {cmd-path: /bin/sh, cmd-args: "-c id"}`, want: `user "admin" sets auth-provider`, refused: true},
		{name: "token", user: `    token: abc`, want: `user "admin" sets token`, refused: true},
		{name: "tokenFile", user: `    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token`, want: `user "admin" sets tokenFile`, refused: true},
		{name: "username", user: `    username: admin`, want: `user "admin" sets username`, refused: true},
		{name: "password", user: `    password: hunter2`, want: `user "admin" sets password`, refused: true},
		{name: "impersonate", user: `    as: system:admin`, want: `user "admin" sets as`, refused: true},
		{name: "impersonate uid", user: `    as-uid: "0"`, want: `user "admin" sets as-uid`, refused: true},
		{name: "impersonate groups", user: `    as-groups: [system:masters]`, want: `user "admin" sets as-groups`, refused: true},
		{name: "impersonate extra", user: `    as-user-extra: {scopes: [all]}`, want: `user "admin" sets as-user-extra`, refused: true},
		{name: "client-certificate file", user: `    client-certificate: /home/operator/.kube/client.crt`, want: `user "admin" sets client-certificate`, refused: true},
		{name: "client-key file", user: `    client-key: /etc/shadow`, want: `user "admin" sets client-key`, refused: true},
		{name: "certificate-authority file", cluster: `    certificate-authority: /etc/ssl/private/host.pem`, want: `cluster "prod" sets certificate-authority`, refused: true},
		{name: "insecure", cluster: `    insecure-skip-tls-verify: true`, want: `cluster "prod" sets insecure-skip-tls-verify`, refused: true},
		{name: "proxy", cluster: `    proxy-url: socks5://198.51.100.7:1080`, want: `cluster "prod" sets proxy-url`, refused: true},
		{name: "no current context", raw: `apiVersion: v1
kind: Config
clusters: [{name: prod, cluster: {server: "https://203.0.113.1:6443"}}]
users: [{name: admin, user: {exec: {command: /bin/sh}}}]
contexts: [{name: admin@prod, context: {cluster: prod, user: admin}}]
`, want: "has no current-context"},
		{name: "unknown current context", raw: "apiVersion: v1\nkind: Config\ncurrent-context: other\n", want: `current-context "other" is not among its contexts`},
		{name: "missing user", raw: `apiVersion: v1
kind: Config
current-context: x
contexts: [{name: x, context: {cluster: prod, user: nobody}}]
clusters: [{name: prod, cluster: {server: "https://203.0.113.1:6443"}}]
`, want: `context "x" names user "nobody", which it lacks`},
		{name: "no CA data", raw: `apiVersion: v1
kind: Config
current-context: x
contexts: [{name: x, context: {cluster: prod, user: admin}}]
clusters: [{name: prod, cluster: {server: "https://203.0.113.1:6443"}}]
users: [{name: admin, user: {}}]
`, want: `cluster "prod" has no certificate-authority-data`},
		{name: "key of another certificate", raw: strings.Replace(string(e.craft("", "")),
			base64.StdEncoding.EncodeToString(e.key), base64.StdEncoding.EncodeToString(otherKey), 1),
			want: `user "admin": client-certificate-data and client-key-data: tls: private key does not match public key`},
		{name: "CA data not PEM", raw: strings.Replace(string(e.craft("", "")),
			base64.StdEncoding.EncodeToString(e.ca), base64.StdEncoding.EncodeToString([]byte("junk")), 1),
			want: `cluster "prod": certificate-authority-data holds no PEM certificate`},
		{name: "not a kubeconfig", raw: "\x00\x01 {{{", want: "does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.raw)
			if tc.raw == "" {
				data = e.craft(tc.cluster, tc.user)
			}
			cfg, err := ClientConfig(data, host)
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("a config besides the error: %+v", cfg)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line with %q", msg, tc.want)
			}
			if errors.Is(err, ErrRefused) != tc.refused {
				t.Errorf("error %q: errors.Is(ErrRefused) = %v, want %v", msg, !tc.refused, tc.refused)
			}
		})
	}
	if _, err := ClientConfig(e.craft("", ""), ""); err == nil {
		t.Error("a config without a host was accepted")
	}
}

// TestClientConfigEmbedded: a kubeconfig with embedded data only is a
// client that verifies the server with its CA, proves itself with its
// certificate, and goes to the given host, not the kubeconfig's server.
func TestClientConfigEmbedded(t *testing.T) {
	e := newEmbedded(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	serverCert, err := tls.LoadX509KeyPair(e.pki.ServerCert, e.pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AppendCertsFromPEM(e.ca)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: clients, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	cfg, err := ClientConfig(e.craft("", ""), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca, CertData: e.cert, KeyData: e.key}}
	if fmt.Sprintf("%#v", *cfg) != fmt.Sprintf("%#v", want) {
		t.Errorf("config:\n got %#v\nwant %#v", *cfg, want)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL + "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "kdr-client" {
		t.Errorf("the server saw %s %q, want 200 and the client certificate kdr-client", resp.Status, body)
	}
}

// TestClientConfigKubeadm: kubeadm's own kubeconfigs are taken, as they
// embed their credentials; the kubelet's, once it names its rotated
// certificate's file as kubeadm leaves it after the TLS bootstrap, is
// refused.
func TestClientConfigKubeadm(t *testing.T) {
	root := genuine(t)
	use := func(name string) error {
		data, err := os.ReadFile(filepath.Join(root, kdir, name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = ClientConfig(data, "https://127.0.0.1:6443")
		return err
	}
	for _, name := range kubeadmConfs {
		if err := use(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	editKubeconfig(t, root, "kubelet.conf", func(cfg *kubeconfig) {
		cfg.user.ClientCertificateData, cfg.user.ClientKeyData = nil, nil
		cfg.user.ClientCertificate = "/var/lib/kubelet/pki/kubelet-client-current.pem"
		cfg.user.ClientKey = "/var/lib/kubelet/pki/kubelet-client-current.pem"
	})
	if err := use("kubelet.conf"); err == nil || !strings.Contains(err.Error(), "sets client-certificate") {
		t.Errorf("kubelet.conf naming its certificate file: %v, want a refusal of client-certificate", err)
	}
}
