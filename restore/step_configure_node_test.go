package restore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/pkicheck"
)

// kubeadmPKI writes CAs and node certificates for cp1 at 10.0.0.11, as
// kubeadm lays them out.
func kubeadmPKI(t *testing.T, pki string) {
	t.Helper()
	issue := func(name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, cn string, dns []string, ips []string) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0), IsCA: isCA, BasicConstraintsValid: true,
			DNSNames: dns, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		for _, ip := range ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		os.MkdirAll(filepath.Dir(filepath.Join(pki, name)), 0o755)
		os.WriteFile(filepath.Join(pki, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		os.WriteFile(filepath.Join(pki, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
		c, _ := x509.ParseCertificate(der)
		return c, key
	}
	ca, caKey := issue("ca", nil, nil, true, "kubernetes", nil, nil)
	issue("apiserver", ca, caKey, false, "kube-apiserver", []string{"cp1", "kubernetes"}, []string{"10.96.0.1", "10.0.0.11", "10.0.0.10"})
	eca, ecaKey := issue("etcd/ca", nil, nil, true, "etcd-ca", nil, nil)
	issue("etcd/server", eca, ecaKey, false, "cp1", []string{"cp1", "localhost"}, []string{"10.0.0.11", "127.0.0.1"})
	issue("etcd/peer", eca, ecaKey, false, "cp1", []string{"cp1", "localhost"}, []string{"10.0.0.11", "127.0.0.1"})
}

func TestConfigureNodeReissuesForANewNode(t *testing.T) {
	root := t.TempDir()
	pki := filepath.Join(root, "etc/kubernetes/pki")
	kubeadmPKI(t, pki)
	conf := filepath.Join(root, "etc/kubernetes/admin.conf")
	os.WriteFile(conf, []byte("clusters:\n- cluster:\n    server: https://10.0.0.10:6443\n  name: k\n"), 0o600)
	keyBefore, _ := os.ReadFile(filepath.Join(pki, "apiserver.key"))

	m := &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "cp1",
		Inventory: config.Inventory{APIEndpoint: "https://10.0.0.10:6443", Hosts: []config.Host{{Name: "cp1", IP: "10.0.0.11", Roles: []string{"etcd"}}}}}
	plan, err := BuildPlan(m, Source{Kind: "local", Path: "/mnt/usb"}, Options{
		Nodes: []Node{{Name: "cp-new", IP: "10.0.0.21"}}, APIEndpoint: "https://10.0.0.20:6443"})
	if err != nil {
		t.Fatal(err)
	}
	steps, err := plan.NodeSteps("cp-new")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(steps, func(s Step) bool { return s.ID == StepConfigureNode }) {
		t.Fatal("a node with a new name and address gets no configure-node step")
	}
	e := &Env{Plan: plan, Node: plan.Options.Nodes[0], Root: root, Log: slog.New(slog.DiscardHandler)}
	if err := os.MkdirAll(e.staging(), 0o700); err != nil {
		t.Fatal(err)
	}
	if e.journal, err = openJournal(e.journalPath(), plan.BackupID, 0, e.Node.Name); err != nil {
		t.Fatal(err)
	}
	if err := checkConfigured(context.Background(), e); err == nil {
		t.Fatal("check passes before the step ran: it proves nothing")
	}
	if err := configureNode(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if err := checkConfigured(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"apiserver.crt", "etcd/server.crt", "etcd/peer.crt"} {
		c := certFile(t, filepath.Join(pki, name))
		var ips []string
		for _, ip := range c.IPAddresses {
			ips = append(ips, ip.String())
		}
		if slices.Contains(ips, "10.0.0.11") || !slices.Contains(ips, "10.0.0.21") || !slices.Contains(c.DNSNames, "cp-new") || slices.Contains(c.DNSNames, "cp1") {
			t.Errorf("%s names %v %v, want the new node's name and address instead of cp1's", name, c.DNSNames, ips)
		}
	}
	if name := "apiserver.crt"; true {
		c := certFile(t, filepath.Join(pki, name))
		if !slices.ContainsFunc(c.IPAddresses, func(ip net.IP) bool { return ip.String() == "10.96.0.1" }) {
			t.Error("the service IP was dropped from the API server certificate")
		}
	}
	if keyAfter, _ := os.ReadFile(filepath.Join(pki, "apiserver.key")); string(keyAfter) != string(keyBefore) {
		t.Error("the node key changed; only the certificate should be issued again")
	}
	raw, _ := os.ReadFile(conf)
	if !strings.Contains(string(raw), "server: https://10.0.0.20:6443") {
		t.Errorf("admin.conf not pointed at the new endpoint:\n%s", raw)
	}
	aside := filepath.Join(root, plan.Staging(), "aside", "etc/kubernetes/pki/apiserver.crt")
	if _, err := os.Stat(aside); err != nil {
		t.Errorf("the restored original certificate was not kept aside: %v", err)
	}
}

// certFile parses the certificate file at p.
func certFile(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pkicheck.ParseCert(raw)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return c
}
