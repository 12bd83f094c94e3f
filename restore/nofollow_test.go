package restore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
)

// The steps after restore-files read and write what a backup restored.
// These tests plant symlinks where a backup (or an earlier run) could have
// put them, each pointing into a canary directory beside the root that
// holds files a step that followed the link would read or replace, and
// assert that the step stops with a one-line error naming the path and
// that the canary is exactly as it was.

// nofollowEnv is an Env for node cp-new at 10.0.0.21, restoring a backup
// of cp1 at 10.0.0.11, with a new API endpoint: every kubeadm step of the
// node applies. root and a canary directory beside it are fresh.
func nofollowEnv(t *testing.T) (e *Env, canary string) {
	t.Helper()
	base := t.TempDir()
	root, canary := filepath.Join(base, "root"), filepath.Join(base, "canary")
	for _, d := range []string{root, canary} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "cp1",
		Inventory: config.Inventory{APIEndpoint: "https://10.0.0.10:6443", Hosts: []config.Host{{Name: "cp1", IP: "10.0.0.11", Roles: []string{"etcd"}}}}}
	plan, err := BuildPlan(m, Source{Kind: "local", Path: "/mnt/usb"}, Options{
		Nodes: []Node{{Name: "cp-new", IP: "10.0.0.21"}}, APIEndpoint: "https://10.0.0.20:6443"})
	if err != nil {
		t.Fatal(err)
	}
	e = &Env{Plan: plan, Node: plan.Options.Nodes[0], Root: root, WaitTimeout: 2 * time.Second, Log: slog.New(slog.DiscardHandler)}
	if err := os.MkdirAll(e.staging(), 0o700); err != nil {
		t.Fatal(err)
	}
	if e.journal, err = openJournal(e.journalPath(), plan.BackupID, 0, e.Node.Name); err != nil {
		t.Fatal(err)
	}
	return e, canary
}

// treeState records every file, directory and symlink below dir with its
// content, mode and modification time.
func treeState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String() + " " + fi.ModTime().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			v += " -> " + target
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(data)
		}
		out[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTree fails the test unless dir is as before recorded it.
func sameTree(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := treeState(t, dir)
	for p, v := range after {
		if before[p] != v {
			t.Errorf("%s changed or appeared: %q", p, v)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s is gone", p)
		}
	}
}

// plant makes the symlink rel below e.Root pointing at target, "@"
// standing for the canary directory.
func plant(t *testing.T, e *Env, canary, rel, target string) {
	t.Helper()
	dst := filepath.Join(e.Root, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(strings.Replace(target, "@", canary, 1), dst); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the regular files and directories below src to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}

const kubeconfigWithServer = "clusters:\n- cluster:\n    server: https://10.0.0.10:6443\n  name: k\n"

// TestConfigureNodeDoesNotFollowSymlinks: configure-node reads the PKI and
// kubeconfigs, and replaces certificates and kubeconfigs, only through no
// symlink. Each canary holds a PKI that a step following the link would
// issue certificates from and replace.
func TestConfigureNodeDoesNotFollowSymlinks(t *testing.T) {
	cases := []struct {
		name  string
		plant func(t *testing.T, e *Env, canary string)
		want  string // part of the error, after the root
	}{
		{"pki directory", func(t *testing.T, e *Env, canary string) {
			copyDir(t, filepath.Join(e.Root, "etc/kubernetes/pki"), filepath.Join(canary, "pki"))
			plant(t, e, canary, "etc/kubernetes/pki", "@/pki")
		}, "/etc/kubernetes/pki is a symlink on this host, which kdr does not follow"},
		{"Kubernetes directory", func(t *testing.T, e *Env, canary string) {
			copyDir(t, filepath.Join(e.Root, "etc/kubernetes"), filepath.Join(canary, "kubernetes"))
			plant(t, e, canary, "etc/kubernetes", "@/kubernetes")
		}, "/etc/kubernetes is a symlink on this host, which kdr does not follow"},
		{"etcd pki directory, relative", func(t *testing.T, e *Env, canary string) {
			copyDir(t, filepath.Join(e.Root, "etc/kubernetes/pki/etcd"), filepath.Join(canary, "etcd"))
			// From root/etc/kubernetes/pki, ../../../../canary is the canary.
			plant(t, e, canary, "etc/kubernetes/pki/etcd", "../../../../canary/etcd")
		}, "/etc/kubernetes/pki/etcd is a symlink on this host, which kdr does not follow"},
		{"node certificate", func(t *testing.T, e *Env, canary string) {
			copyDir(t, filepath.Join(e.Root, "etc/kubernetes/pki"), filepath.Join(canary, "pki"))
			plant(t, e, canary, "etc/kubernetes/pki/apiserver.crt", "@/pki/apiserver.crt")
		}, "/etc/kubernetes/pki/apiserver.crt: a symlink, which kdr does not follow"},
		{"CA key", func(t *testing.T, e *Env, canary string) {
			copyDir(t, filepath.Join(e.Root, "etc/kubernetes/pki"), filepath.Join(canary, "pki"))
			plant(t, e, canary, "etc/kubernetes/pki/ca.key", "@/pki/ca.key")
		}, "/etc/kubernetes/pki/ca.key: a symlink, which kdr does not follow"},
		{"kubeconfig", func(t *testing.T, e *Env, canary string) {
			if err := os.WriteFile(filepath.Join(canary, "shadow"), []byte(kubeconfigWithServer), 0o600); err != nil {
				t.Fatal(err)
			}
			plant(t, e, canary, "etc/kubernetes/admin.conf", "@/shadow")
		}, "/etc/kubernetes/admin.conf: a symlink, which kdr does not follow"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, canary := nofollowEnv(t)
			kubeadmPKI(t, filepath.Join(e.Root, "etc/kubernetes/pki"))
			if err := os.WriteFile(filepath.Join(e.Root, "etc/kubernetes/admin.conf"), []byte(kubeconfigWithServer), 0o600); err != nil {
				t.Fatal(err)
			}
			tc.plant(t, e, canary)
			before := treeState(t, canary)
			err := configureNode(context.Background(), e)
			sameTree(t, canary, before)
			oneLineRefusal(t, err, e.Root+tc.want)
			if err := checkConfigured(context.Background(), e); err == nil {
				t.Error("the check passes through the symlink")
			}
		})
	}
}

// etcdManifest is a staged etcd static pod manifest of cp1.
const etcdManifest = `apiVersion: v1
kind: Pod
metadata: {name: etcd, labels: {component: etcd}}
spec:
  containers:
  - name: etcd
    command:
    - etcd
    - --name=cp1
    - --initial-advertise-peer-urls=https://10.0.0.11:2380
    - --data-dir=/var/lib/etcd
    volumeMounts:
    - {name: etcd-data, mountPath: /var/lib/etcd}
  volumes:
  - {name: etcd-data, hostPath: {path: /var/lib/etcd}}
`

// stage writes a staged static pod manifest, as restore-files leaves it.
func stage(t *testing.T, e *Env, name, data string) string {
	t.Helper()
	p := filepath.Join(e.stagedDir(), "etc/kubernetes/manifests", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEtcdManifestDoesNotFollowSymlinks: the staged etcd manifest is read
// and rewritten only when it is a regular file reached through no symlink.
func TestEtcdManifestDoesNotFollowSymlinks(t *testing.T) {
	staged := "/var/lib/kdr/restore/prod/20261124T200000.000Z-000001/manifests/etc/kubernetes/manifests"
	cases := []struct {
		name, link, target, want string
	}{
		{"manifest to a file of the host", "etcd.yaml", "@/shadow", staged + "/etcd.yaml: a symlink, which kdr does not follow"},
		{"manifests directory", "", "@", staged + " is a symlink on this host, which kdr does not follow"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, canary := nofollowEnv(t)
			if err := os.WriteFile(filepath.Join(canary, "shadow"), []byte(etcdManifest), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(canary, "etcd.yaml"), []byte(etcdManifest), 0o600); err != nil {
				t.Fatal(err)
			}
			p := stage(t, e, "kube-apiserver.yaml", "apiserver")
			if tc.link != "" {
				p = filepath.Join(filepath.Dir(p), tc.link)
			} else {
				p = filepath.Dir(p)
			}
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(strings.Replace(tc.target, "@", canary, 1), p); err != nil {
				t.Fatal(err)
			}
			before := treeState(t, canary)
			err := configureEtcdManifest(e)
			sameTree(t, canary, before)
			oneLineRefusal(t, err, e.Root+tc.want)
			oneLineRefusal(t, checkEtcdManifest(e), e.Root+tc.want)
		})
	}

	t.Run("regular manifest", func(t *testing.T) {
		e, _ := nofollowEnv(t)
		p := stage(t, e, "etcd.yaml", etcdManifest)
		if err := configureEtcdManifest(e); err != nil {
			t.Fatal(err)
		}
		if err := checkEtcdManifest(e); err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(p)
		if !strings.Contains(string(raw), "--name=cp-new") {
			t.Errorf("staged etcd manifest not pointed at this node:\n%s", raw)
		}
	})
}

// TestInstallManifestsDoesNotFollowSymlinks: a staged manifest linked to a
// file of the host is refused, not copied into the kubelet's directory;
// the kubelet's directory is written through no symlink; and the stop step
// moves aside nothing but this host's manifests.
func TestInstallManifestsDoesNotFollowSymlinks(t *testing.T) {
	ctx := context.Background()
	manifests := "/etc/kubernetes/manifests"

	t.Run("staged manifest linked to a file of the host", func(t *testing.T) {
		e, canary := nofollowEnv(t)
		if err := os.WriteFile(filepath.Join(canary, "shadow"), []byte("root:secret:"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := stage(t, e, "kube-apiserver.yaml", "apiserver")
		if err := os.Symlink(filepath.Join(canary, "shadow"), filepath.Join(filepath.Dir(p), "kube-scheduler.yaml")); err != nil {
			t.Fatal(err)
		}
		before := treeState(t, canary)
		err := HostRunner{}.StartControlPlane(ctx, e)
		sameTree(t, canary, before)
		oneLineRefusal(t, err, e.stagedDir()+manifests+"/kube-scheduler.yaml: a symlink, which kdr does not follow")
		if _, err := os.Lstat(filepath.Join(e.Root, manifests, "kube-scheduler.yaml")); err == nil {
			t.Error("the linked manifest was copied into the kubelet's directory")
		}
	})

	t.Run("staged manifest that is a fifo", func(t *testing.T) {
		e, _ := nofollowEnv(t)
		p := stage(t, e, "kube-apiserver.yaml", "apiserver")
		if err := unix.Mkfifo(filepath.Join(filepath.Dir(p), "etcd.yaml"), 0o600); err != nil {
			t.Fatal(err)
		}
		oneLineRefusal(t, HostRunner{}.StartEtcd(ctx, e), e.stagedDir()+manifests+"/etcd.yaml: not a regular file")
	})

	t.Run("kubelet's directory is a symlink", func(t *testing.T) {
		e, canary := nofollowEnv(t)
		stage(t, e, "etcd.yaml", etcdManifest)
		plant(t, e, canary, "etc/kubernetes/manifests", "@")
		err := HostRunner{}.StartEtcd(ctx, e)
		emptyDir(t, canary)
		oneLineRefusal(t, err, e.Root+manifests+" is a symlink on this host, which kdr does not follow")
	})

	t.Run("stop with the kubelet's directory a symlink", func(t *testing.T) {
		e, canary := nofollowEnv(t)
		if err := os.WriteFile(filepath.Join(canary, "etcd.yaml"), []byte(etcdManifest), 0o600); err != nil {
			t.Fatal(err)
		}
		plant(t, e, canary, "etc/kubernetes/manifests", "@")
		before := treeState(t, canary)
		err := HostRunner{}.StopControlPlane(ctx, e)
		sameTree(t, canary, before)
		oneLineRefusal(t, err, e.Root+manifests+" is a symlink on this host, which kdr does not follow")
	})

	t.Run("regular manifests", func(t *testing.T) {
		e, canary := nofollowEnv(t)
		host := filepath.Join(e.Root, manifests)
		if err := os.MkdirAll(host, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(host, "etcd.yaml"), []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		// A link on the host is moved aside itself, not what it points to.
		if err := os.Symlink(filepath.Join(canary, "x.yaml"), filepath.Join(host, "x.yaml")); err != nil {
			t.Fatal(err)
		}
		if err := (HostRunner{}).StopControlPlane(ctx, e); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"etcd.yaml", "x.yaml"} {
			if _, err := os.Lstat(filepath.Join(host+e.Plan.AsideSuffix(), name)); err != nil {
				t.Errorf("%s not moved aside: %v", name, err)
			}
		}
		stage(t, e, "etcd.yaml", etcdManifest)
		stage(t, e, "kube-apiserver.yaml", "apiserver")
		if err := (HostRunner{}).StartEtcd(ctx, e); err != nil {
			t.Fatal(err)
		}
		if err := (HostRunner{}).StartControlPlane(ctx, e); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"etcd.yaml": etcdManifest, "kube-apiserver.yaml": "apiserver"} {
			p := filepath.Join(host, name)
			fi, err := os.Lstat(p)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v, %v; want a regular file of mode 0600", name, fi, err)
			}
			if got, _ := os.ReadFile(p); string(got) != want {
				t.Errorf("%s holds %q, want %q", name, got, want)
			}
		}
		emptyDir(t, canary)
	})
}

// TestCheckAPIServerAdminConf: the API check authenticates with admin.conf's
// embedded certificate and key only, at the plan's address; it runs no
// command the kubeconfig names and reads admin.conf through no symlink.
func TestCheckAPIServerAdminConf(t *testing.T) {
	ca, caKey := testCertificate(t, nil, nil, "kubernetes", true)
	server, serverKey := testCertificate(t, ca, caKey, "kube-apiserver", false)
	client, clientKey := testCertificate(t, ca, caKey, "kubernetes-admin", false)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != "kubernetes-admin" {
			http.Error(w, "who are you", http.StatusForbidden)
			return
		}
		w.Write([]byte("ok"))
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{server.Raw}, PrivateKey: serverKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pool,
	}
	srv.StartTLS()
	defer srv.Close()

	adminConf := func(t *testing.T, edit func(*clientcmdapi.AuthInfo)) []byte {
		t.Helper()
		keyDER, err := x509.MarshalECPrivateKey(clientKey)
		if err != nil {
			t.Fatal(err)
		}
		user := &clientcmdapi.AuthInfo{
			ClientCertificateData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: client.Raw}),
			ClientKeyData:         pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		}
		if edit != nil {
			edit(user)
		}
		cfg := clientcmdapi.Config{
			// Not where the check goes: the plan says where the API server is.
			Clusters: map[string]*clientcmdapi.Cluster{"k": {Server: "https://192.0.2.1:6443",
				CertificateAuthorityData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})}},
			AuthInfos:      map[string]*clientcmdapi.AuthInfo{"admin": user},
			Contexts:       map[string]*clientcmdapi.Context{"admin@k": {Cluster: "k", AuthInfo: "admin"}},
			CurrentContext: "admin@k",
		}
		raw, err := clientcmd.Write(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	setup := func(t *testing.T, conf []byte) (*Env, string) {
		t.Helper()
		e, canary := nofollowEnv(t)
		e.APIServer = srv.URL
		p := filepath.Join(e.Root, "etc/kubernetes/admin.conf")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, conf, 0o600); err != nil {
			t.Fatal(err)
		}
		return e, canary
	}
	ctx := context.Background()

	t.Run("embedded credentials", func(t *testing.T) {
		e, _ := setup(t, adminConf(t, nil))
		if err := checkAPIServer(ctx, e); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("exec plugin", func(t *testing.T) {
		var ran string
		e, canary := setup(t, nil)
		ran = filepath.Join(canary, "ran")
		conf := adminConf(t, func(u *clientcmdapi.AuthInfo) {
			u.Exec = &clientcmdapi.ExecConfig{Command: "/bin/sh", Args: []string{"-c", "touch " + ran}, APIVersion: "client.authentication.k8s.io/v1", InteractiveMode: clientcmdapi.NeverExecInteractiveMode}
		})
		if err := os.WriteFile(filepath.Join(e.Root, "etc/kubernetes/admin.conf"), conf, 0o600); err != nil {
			t.Fatal(err)
		}
		err := checkAPIServer(ctx, e)
		oneLineRefusal(t, err, "restored admin kubeconfig "+e.Root+`/etc/kubernetes/admin.conf: user "admin" sets exec`)
		emptyDir(t, canary)
	})
	t.Run("token file", func(t *testing.T) {
		e, canary := setup(t, nil)
		conf := adminConf(t, func(u *clientcmdapi.AuthInfo) { u.TokenFile = filepath.Join(canary, "token") })
		if err := os.WriteFile(filepath.Join(e.Root, "etc/kubernetes/admin.conf"), conf, 0o600); err != nil {
			t.Fatal(err)
		}
		oneLineRefusal(t, checkAPIServer(ctx, e), `user "admin" sets tokenFile`)
	})
	t.Run("admin.conf linked out of the root", func(t *testing.T) {
		e, canary := setup(t, nil)
		if err := os.WriteFile(filepath.Join(canary, "admin.conf"), adminConf(t, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		plant(t, e, canary, "etc/kubernetes/admin.conf", "@/admin.conf")
		oneLineRefusal(t, checkAPIServer(ctx, e), e.Root+"/etc/kubernetes/admin.conf: a symlink, which kdr does not follow")
	})
}

// testCertificate issues an ECDSA certificate for cn (and 127.0.0.1), signed
// by parent, or self-signed when parent is nil.
func testCertificate(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}
