package restore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kdr-io/kdr/pkicheck"
	"github.com/kdr-io/kdr/staticpod"
)

// nodeCertMinLife is how long a host's own certificate must still be
// valid to be kept rather than issued again: a restored cluster should not
// need a renewal within the month.
const nodeCertMinLife = 30 * 24 * time.Hour

// kubeletUser and kubeletGroup are who a node's kubelet authenticates as.
func kubeletUser(node string) string { return "system:node:" + node }

const kubeletGroup = "system:nodes"

// NodeFile says what a restore did with one file that names the node.
type NodeFile struct {
	Path string `json:"path"`
	// Action is "restored" (the backup's file fits the node), "kept" (the
	// host's own survived and fits), or "reissued" (made again from the
	// restored CA).
	Action string `json:"action"`
	Why    string `json:"why,omitempty"`
}

// Node file actions.
const (
	NodeFileRestored = "restored"
	NodeFileKept     = "kept"
	NodeFileReissued = "reissued"
)

// kubeconfigUser returns the credentials of a kubeconfig's current
// context (or its only user).
func kubeconfigUser(cfg *clientcmdapi.Config) (*clientcmdapi.AuthInfo, error) {
	if c, ok := cfg.Contexts[cfg.CurrentContext]; ok {
		if u, ok := cfg.AuthInfos[c.AuthInfo]; ok {
			return u, nil
		}
	}
	if len(cfg.AuthInfos) == 1 {
		for _, u := range cfg.AuthInfos {
			return u, nil
		}
	}
	return nil, errors.New("no user in its current context")
}

// kubeletConfFits says why a kubelet.conf does not authenticate as node
// against the restored CA for at least nodeCertMinLife; nil when it does.
// read resolves a file the kubeconfig names (a rotated kubelet names
// /var/lib/kubelet/pki/kubelet-client-current.pem), below the restore
// root.
func kubeletConfFits(raw []byte, read func(string) ([]byte, error), ca *x509.Certificate, node string, now time.Time) error {
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		return fmt.Errorf("not a kubeconfig: %w", err)
	}
	u, err := kubeconfigUser(cfg)
	if err != nil {
		return err
	}
	certPEM, keyPEM := u.ClientCertificateData, u.ClientKeyData
	if len(certPEM) == 0 && u.ClientCertificate != "" {
		if certPEM, err = read(u.ClientCertificate); err != nil {
			return fmt.Errorf("its client certificate: %w", err)
		}
	}
	if len(keyPEM) == 0 && u.ClientKey != "" {
		if keyPEM, err = read(u.ClientKey); err != nil {
			return fmt.Errorf("its client key: %w", err)
		}
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return errors.New("it holds no client certificate and key")
	}
	cert, err := pkicheck.ParseCert(certPEM)
	if err != nil {
		return fmt.Errorf("its client certificate: %w", err)
	}
	key, err := pkicheck.ParseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("its client key: %w", err)
	}
	return clientCertFits(cert, key, ca, kubeletUser(node), kubeletGroup, now)
}

// clientCertFits says why cert (with key) is not a client certificate of
// user in group from ca, valid for nodeCertMinLife more.
func clientCertFits(cert *x509.Certificate, key crypto.Signer, ca *x509.Certificate, user, group string, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("its client certificate does not verify against the restored CA: %w", err)
	}
	if cert.Subject.CommonName != user || !slices.Contains(cert.Subject.Organization, group) {
		return fmt.Errorf("its client certificate is for %s in %v, not %s in %s", cert.Subject.CommonName, cert.Subject.Organization, user, group)
	}
	if left := cert.NotAfter.Sub(now); left < nodeCertMinLife {
		return fmt.Errorf("its client certificate expires %s, in less than %d days", cert.NotAfter.Format(time.DateOnly), int(nodeCertMinLife.Hours()/24))
	}
	if !pkicheck.SamePublicKey(cert.PublicKey, key.Public()) {
		return errors.New("its client key does not match its certificate")
	}
	return nil
}

// issueKubeletConf makes kubelet.conf for node from the restored one:
// the same clusters and contexts, servers as server maps them, and a new
// key and client certificate for system:node:<node> from the restored CA.
func issueKubeletConf(restored []byte, ca *x509.Certificate, caKey crypto.Signer, node string, server func(string) string, now time.Time) ([]byte, error) {
	cfg, err := clientcmd.Load(restored)
	if err != nil {
		return nil, fmt.Errorf("restored kubelet.conf: %w", err)
	}
	u, err := kubeconfigUser(cfg)
	if err != nil {
		return nil, fmt.Errorf("restored kubelet.conf: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: kubeletUser(node), Organization: []string{kubeletGroup}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     minTime(now.AddDate(1, 0, 0), ca.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("sign with the restored CA: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	u.ClientCertificate, u.ClientKey = "", ""
	u.ClientCertificateData = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	u.ClientKeyData = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	mapServers(cfg, server)
	return clientcmd.Write(*cfg)
}

// rewriteServers points a kubeconfig's clusters where server maps them;
// changed is false when none moved, and the file is then left as it is.
func rewriteServers(raw []byte, server func(string) string) (out []byte, changed bool, err error) {
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		return nil, false, fmt.Errorf("not a kubeconfig: %w", err)
	}
	if !mapServers(cfg, server) {
		return raw, false, nil
	}
	out, err = clientcmd.Write(*cfg)
	return out, true, err
}

func mapServers(cfg *clientcmdapi.Config, server func(string) string) bool {
	changed := false
	for _, c := range cfg.Clusters {
		if s := server(c.Server); s != c.Server {
			c.Server, changed = s, true
		}
	}
	return changed
}

// serverFor maps an API server URL of the backup to the node's: the
// source host's own address becomes the node's (kubeadm points a node's
// kubelet, controller-manager and scheduler at its local API server), and
// the backup's API endpoint becomes the plan's when it moved.
func (p *Plan) serverFor(n Node) func(string) string {
	_, srcIP := p.sourceHost()
	oldEndpoint, newEndpoint := p.Manifest.Inventory.APIEndpoint, p.Options.APIEndpoint
	return func(s string) string {
		if newEndpoint != "" && oldEndpoint != "" && s == oldEndpoint {
			return newEndpoint
		}
		u, err := url.Parse(s)
		if err != nil || srcIP == "" || u.Hostname() != srcIP || srcIP == n.IP {
			return s
		}
		if port := u.Port(); port != "" {
			u.Host = hostPort(n.IP, port)
		} else {
			u.Host = strings.TrimSuffix(hostPort(n.IP, ""), ":")
		}
		return u.String()
	}
}

// kubeconfigNames are kubeadm's kubeconfigs: kubeadm points the kubelet's,
// controller-manager's and scheduler's at the node's own API server.
var kubeconfigNames = []string{"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", kubeletConf}

const kubeletConf = "kubelet.conf"

// configureKubeconfigs makes every kubeconfig the node's: servers moved
// to the node's own API server (or the plan's new endpoint), and
// kubelet.conf authenticating as this node.
func (e *Env) configureKubeconfigs(root *beneath) error {
	server := e.Plan.serverFor(e.Node)
	return e.eachKubeconfig(root, func(conf, rel string, raw []byte) error {
		if conf == kubeletConf {
			if err := e.configureKubeletConf(root, rel, raw, server); err != nil {
				return fmt.Errorf("%s: %w", root.at(rel), err)
			}
			return nil
		}
		out, changed, err := rewriteServers(raw, server)
		if err != nil {
			return fmt.Errorf("%s: %w", root.at(rel), err)
		}
		if !changed {
			return nil
		}
		if err := e.keepAside(rel, raw); err != nil {
			return err
		}
		return root.writeFile(rel, out, 0o600, 0)
	})
}

// configureKubeletConf keeps the restored kubelet.conf when it is this
// node's, else the host's own when it survived and still fits the
// restored cluster, else issues one from the restored CA.
func (e *Env) configureKubeletConf(root *beneath, rel string, raw []byte, server func(string) string) error {
	pki := hostPath(e.Plan.Options.KubernetesDir, "pki")
	ca, _, err := readCertAt(root, rootRel(hostPath(pki, "ca.crt")))
	if err != nil {
		return err
	}
	now := time.Now()
	read := func(p string) ([]byte, error) { return pkicheck.ReadFile(e.Root, p) }
	if why := kubeletConfFits(raw, read, ca, e.Node.Name, now); why == nil {
		out, changed, err := rewriteServers(raw, server)
		if err != nil || !changed {
			return errors.Join(err, e.noteNodeFileOnce(rel, NodeFileRestored, ""))
		}
		if err := e.keepAside(rel, raw); err != nil {
			return err
		}
		return errors.Join(root.writeFile(rel, out, 0o600, 0), e.noteNodeFile(rel, NodeFileRestored, "its API server moved"))
	} else if own, err := e.hostOwn(rel); err == nil && kubeletConfFits(own, read, ca, e.Node.Name, now) == nil {
		if err := e.keepAside(rel, raw); err != nil {
			return err
		}
		return errors.Join(root.writeFile(rel, own, 0o600, 0), e.noteNodeFile(rel, NodeFileKept, "the restored one: "+why.Error()))
	}
	caKey, err := readKeyAt(root, rootRel(hostPath(pki, "ca.key")))
	if err != nil {
		return err
	}
	why := kubeletConfFits(raw, read, ca, e.Node.Name, now)
	out, err := issueKubeletConf(raw, ca, caKey, e.Node.Name, server, now)
	if err != nil {
		return err
	}
	if err := e.keepAside(rel, raw); err != nil {
		return err
	}
	return errors.Join(root.writeFile(rel, out, 0o600, 0), e.noteNodeFile(rel, NodeFileReissued, "the restored one: "+why.Error()))
}

// hostOwn reads the host's own copy of a file that restore-files moved
// aside in this restore.
func (e *Env) hostOwn(rel string) ([]byte, error) {
	aside, err := openBeneath(filepath.Join(e.staging(), "aside"))
	if err != nil {
		return nil, err
	}
	defer aside.Close()
	raw, _, err := aside.readFile(rel)
	return raw, err
}

// keepHostCert puts back the host's own certificate and key of c when
// restore-files moved them aside and they still fit the restored cluster:
// signed by the restored CA, naming this node, the key matching, and
// nodeCertMinLife left. Reports whether it did.
func (e *Env) keepHostCert(root *beneath, pki string, c nodeCert, oldName, oldIP string) (bool, error) {
	certRel, keyRel := rootRel(hostPath(pki, c.cert)), rootRel(hostPath(pki, c.key))
	certRaw, err := e.hostOwn(certRel)
	if err != nil {
		return false, nil // the host had none: a blank machine
	}
	keyRaw, err := e.hostOwn(keyRel)
	if err != nil {
		return false, nil
	}
	cert, err := pkicheck.ParseCert(certRaw)
	if err != nil {
		return false, nil
	}
	key, err := pkicheck.ParseKey(keyRaw)
	if err != nil || !pkicheck.SamePublicKey(cert.PublicKey, key.Public()) {
		return false, nil
	}
	ca, _, err := readCertAt(root, rootRel(hostPath(pki, c.ca)))
	if err != nil {
		return false, err
	}
	if cert.CheckSignatureFrom(ca) != nil || time.Until(cert.NotAfter) < nodeCertMinLife ||
		e.certFits(cert, c.cert, oldName, oldIP) != nil {
		return false, nil
	}
	for _, f := range []struct {
		rel string
		raw []byte
	}{{keyRel, keyRaw}, {certRel, certRaw}} {
		old, info, err := root.readFile(f.rel)
		if err != nil {
			return false, err
		}
		if err := e.keepAside(f.rel, old); err != nil {
			return false, err
		}
		if err := root.writeFile(f.rel, f.raw, info.Mode().Perm(), 0); err != nil {
			return false, err
		}
	}
	return true, nil
}

// noteNodeFileOnce records what became of a node file unless a run
// before an interruption already did: a file kept or issued then fits now.
func (e *Env) noteNodeFileOnce(rel, action, why string) error {
	for _, f := range e.journal.NodeFiles {
		if f.Path == "/"+rel {
			return nil
		}
	}
	return e.noteNodeFile(rel, action, why)
}

// noteNodeFile records in the journal what became of a node file.
func (e *Env) noteNodeFile(rel, action, why string) error {
	f := NodeFile{Path: "/" + rel, Action: action, Why: why}
	e.Log.Info("node file "+action, "node", e.Node.Name, "path", f.Path, "why", why)
	return e.record(func(j *Journal) {
		j.NodeFiles = slices.DeleteFunc(j.NodeFiles, func(o NodeFile) bool { return o.Path == f.Path })
		j.NodeFiles = append(j.NodeFiles, f)
	})
}

// checkKubeconfigs proves no kubeconfig still asks the source host's API
// server for another node, and kubelet.conf is this node's.
func (e *Env) checkKubeconfigs(root *beneath) error {
	server := e.Plan.serverFor(e.Node)
	return e.eachKubeconfig(root, func(conf, rel string, raw []byte) error {
		if _, changed, err := rewriteServers(raw, server); err != nil || changed {
			return errors.Join(err, fmt.Errorf("%s still asks an API server of the backup's host, not %s's", root.at(rel), e.Node.Name))
		}
		if conf != kubeletConf {
			return nil
		}
		ca, _, err := readCertAt(root, rootRel(hostPath(e.Plan.Options.KubernetesDir, "pki", "ca.crt")))
		if err != nil {
			return err
		}
		read := func(p string) ([]byte, error) { return pkicheck.ReadFile(e.Root, p) }
		if err := kubeletConfFits(raw, read, ca, e.Node.Name, time.Now()); err != nil {
			return fmt.Errorf("%s: %w", root.at(rel), err)
		}
		return nil
	})
}

// eachKubeconfig calls fn with each of kubeadm's kubeconfigs the restored
// tree holds, read below root without following a symlink.
func (e *Env) eachKubeconfig(root *beneath, fn func(conf, rel string, raw []byte) error) error {
	for _, conf := range kubeconfigNames {
		rel := rootRel(hostPath(e.Plan.Options.KubernetesDir, conf))
		raw, _, err := root.readFile(rel)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(conf, rel, raw); err != nil {
			return err
		}
	}
	return nil
}

// configureAPIServerManifest points the staged kube-apiserver manifest at
// the node's address: every API server of a restored cluster advertises
// itself, so the kubernetes Service has each as an endpoint.
func (e *Env) configureAPIServerManifest() error {
	pod, err := e.stagedPod(apiServerManifest)
	if noPod(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if addr, _ := pod.Flag("advertise-address"); addr == e.Node.IP {
		return nil
	}
	return e.editStagedManifest(apiServerManifest, func(pod *staticpod.Pod) error {
		pod.SetAPIServerNode(e.Node.IP)
		return nil
	})
}

const apiServerManifest = "kube-apiserver.yaml"

func (e *Env) checkAPIServerManifest() error {
	pod, err := e.stagedPod(apiServerManifest)
	if noPod(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if addr, _ := pod.Flag("advertise-address"); addr != e.Node.IP {
		return fmt.Errorf("the restored %s advertises %s, not %s", apiServerManifest, addr, e.Node.IP)
	}
	return nil
}
