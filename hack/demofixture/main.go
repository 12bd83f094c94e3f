// Command demofixture prepares what `make demo` backs up: it fills an etcd
// with Kubernetes-like objects and lays out a kubeadm-like /etc/kubernetes
// (a real CA, certificates and keys, kubeconfigs, static pod manifests)
// under a directory.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/internal/kubedata"
)

func main() {
	endpoint := flag.String("endpoint", "", "etcd client URL to fill")
	sizeMiB := flag.Int64("size-mib", 16, "approximate MiB of objects to write")
	root := flag.String("root", "", "directory to lay the kubeadm-like host files under")
	flag.Parse()
	if err := run(*endpoint, *sizeMiB<<20, *root); err != nil {
		fmt.Fprintln(os.Stderr, "demofixture:", err)
		os.Exit(1)
	}
}

func run(endpoint string, size int64, root string) error {
	if root != "" {
		if err := hostFiles(root); err != nil {
			return err
		}
	}
	if endpoint == "" {
		return nil
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	keys, err := kubedata.Fill(ctx, cli, kubedata.Options{Bytes: size, Namespaces: 12, Seed: 42})
	if err != nil {
		return err
	}
	fmt.Printf("wrote %d Kubernetes-like keys (%d MiB) under /registry\n", keys, size>>20)
	return nil
}

func hostFiles(root string) error {
	k8s := filepath.Join(root, "etc/kubernetes")
	files := map[string][]byte{}
	// The three CAs of a kubeadm control plane and the leaves each signs,
	// as kubeadm lays them out.
	for _, tree := range []struct {
		ca     string
		leaves []string
	}{
		{"ca", []string{"apiserver", "apiserver-kubelet-client", "admin-client"}},
		{"etcd/ca", []string{"apiserver-etcd-client", "etcd/server", "etcd/peer", "etcd/healthcheck-client"}},
		{"front-proxy-ca", []string{"front-proxy-client"}},
	} {
		ca, caKey, err := newCert(nil, nil, tree.ca, true, nil)
		if err != nil {
			return err
		}
		files["pki/"+tree.ca+".crt"], files["pki/"+tree.ca+".key"] = pemCert(ca), pemKey(caKey)
		for _, leaf := range tree.leaves {
			cert, key, err := newCert(ca, caKey, leaf, false, []net.IP{net.ParseIP("10.0.0.11"), net.ParseIP("10.0.0.10")})
			if err != nil {
				return err
			}
			files["pki/"+leaf+".crt"], files["pki/"+leaf+".key"] = pemCert(cert), pemKey(key)
		}
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	files["pki/sa.key"], files["pki/sa.pub"] = pemKey(sa), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	b64 := func(name string) string { return base64.StdEncoding.EncodeToString(files[name]) }
	files["admin.conf"] = []byte(strings.Join([]string{
		"apiVersion: v1", "kind: Config", "clusters:", "- cluster:",
		"    certificate-authority-data: " + b64("pki/ca.crt"),
		"    server: https://10.0.0.10:6443", "  name: demo",
		"users:", "- name: admin", "  user:",
		"    client-certificate-data: " + b64("pki/admin-client.crt"),
		"    client-key-data: " + b64("pki/admin-client.key"),
		"contexts:", "- context: {cluster: demo, user: admin}", "  name: admin@demo", "current-context: admin@demo", ""}, "\n"))
	// admin.conf holds its credentials; kubeadm keeps no files of them.
	delete(files, "pki/admin-client.crt")
	delete(files, "pki/admin-client.key")
	files["manifests/etcd.yaml"] = []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\n")
	files["manifests/kube-apiserver.yaml"] = []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  namespace: kube-system\n")
	for rel, data := range files {
		p := filepath.Join(k8s, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(rel, ".key") || strings.HasSuffix(rel, ".conf") {
			mode = 0o600
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			return err
		}
	}
	haproxy := filepath.Join(root, "etc/haproxy/haproxy.cfg")
	if err := os.MkdirAll(filepath.Dir(haproxy), 0o755); err != nil {
		return err
	}
	return os.WriteFile(haproxy, []byte("frontend kube-apiserver\n  bind 10.0.0.10:6443\n  default_backend cp\nbackend cp\n  server cp1 10.0.0.11:6443 check\n"), 0o644)
}

func newCert(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool, ips []net.IP) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		IsCA: isCA, BasicConstraintsValid: true, IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
