package restore

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kdr-io/kdr/pkicheck"
)

// StepConfigureNode names the step that issues this node's certificates and points kubeconfigs at the API endpoint.
const StepConfigureNode = "configure-node"

var stepConfigureNode = stepDef{
	id:    StepConfigureNode,
	title: "Make this node's certificates, kubeconfigs and API server manifest its own",
	why: "The backup's node files name the host they came from. A node with another name or address gets its " +
		"API server and etcd certificates issued again from the restored CAs (same keys, new names); its " +
		"kubelet.conf stays the host's own when that survived and still fits the restored cluster (it chains " +
		"to the restored CA, names system:node:{{.Node.Name}} and has more than 30 days left), else is issued " +
		"again; kubeconfigs that asked the backup's host ask this node's API server (or the new endpoint); " +
		"kube-apiserver advertises this node's address. The restored originals are kept in {{.Staging}}/aside.",
	where:   EveryNode,
	applies: isKubeadm,
	commands: []string{
		// kubeadm takes the node's name only from a configuration file
		// (the certs phases have no --node-name and would take the
		// hostname), and the backup's other names only from it for etcd.
		"printf '%s\\n' {{.KubeadmConfigLines}} > {{.KubeadmConfig}}",
		// kubeadm keeps a certificate it finds, and refuses one that lacks
		// the node's names: the backup's are moved aside first. It makes
		// new keys for them (kdr keeps the old ones).
		"{{if .Moved}}mkdir -p {{.Staging}}/aside{{.KubeDir}}/pki/etcd && " +
			"mv --backup=numbered -t {{.Staging}}/aside{{.KubeDir}}/pki {{.KubeDir}}/pki/apiserver.crt {{.KubeDir}}/pki/apiserver.key && " +
			"mv --backup=numbered -t {{.Staging}}/aside{{.KubeDir}}/pki/etcd {{.KubeDir}}/pki/etcd/server.crt {{.KubeDir}}/pki/etcd/server.key " +
			"{{.KubeDir}}/pki/etcd/peer.crt {{.KubeDir}}/pki/etcd/peer.key{{end}}",
		"kubeadm init phase certs apiserver --config {{.KubeadmConfig}}",
		"kubeadm init phase certs etcd-server --config {{.KubeadmConfig}} && kubeadm init phase certs etcd-peer --config {{.KubeadmConfig}}",
		// Run again, kubeadm proves each certificate: signed by its
		// restored CA and carrying the node's names ("Using existing").
		"kubeadm init phase certs apiserver --config {{.KubeadmConfig}} && kubeadm certs check-expiration --config {{.KubeadmConfig}}",
		"grep -q 'system:node:{{.Node.Name}}$' {{.KubeDir}}/kubelet.conf || { mkdir -p {{.Staging}}/aside{{.KubeDir}} && " +
			"mv --backup=numbered {{.KubeDir}}/kubelet.conf {{.Staging}}/aside{{.KubeDir}}/ && kubeadm init phase kubeconfig kubelet " +
			"--config {{.KubeadmConfig}} --kubeconfig-dir {{.KubeDir}}; }",
		"{{if and .SourceIP (ne .SourceIP .Node.IP)}}sed -i 's#https://{{.SourceIPPattern}}:#https://{{.Node.IP}}:#' {{.KubeDir}}/*.conf && " +
			"sed -i 's/{{.SourceIPPattern}}/{{.Node.IP}}/g' {{.StagedManifests}}/kube-apiserver.yaml" +
			"{{else}}grep -e --advertise-address {{.StagedManifests}}/kube-apiserver.yaml{{end}}",
	},
	expect: "The certificates list {{.Node.Name}} and {{.Node.IP}} among their names and verify against the restored CAs; " +
		"kubelet.conf is system:node:{{.Node.Name}}; kube-apiserver advertises {{.Node.IP}}.",
	destructive: true,
	action:      configureNode,
	check:       checkConfigured,
}

// nodeCert is a node-specific certificate of a kubeadm PKI and the CA
// that signs it: these carry the node's name and address, so a node with
// a new name or address needs them issued again from the restored CAs.
type nodeCert struct {
	cert, key, ca, caKey string
}

var nodeCerts = []nodeCert{
	{"apiserver.crt", "apiserver.key", "ca.crt", "ca.key"},
	{"etcd/server.crt", "etcd/server.key", "etcd/ca.crt", "etcd/ca.key"},
	{"etcd/peer.crt", "etcd/peer.key", "etcd/ca.crt", "etcd/ca.key"},
}

// sourceHost is the inventory host the backup's files came from. A backup
// that recorded a name the inventory lacks (a hostname, a pod name) came
// from the only host when there is just one.
func (p *Plan) sourceHost() (name, ip string) {
	hosts := p.Manifest.Inventory.Hosts
	for _, h := range hosts {
		if h.Name == p.Manifest.Node {
			return h.Name, h.IP
		}
	}
	if len(hosts) == 1 {
		return hosts[0].Name, hosts[0].IP
	}
	return p.Manifest.Node, ""
}

// isKubeadm: every kubeadm node has files that must name it, whether or
// not it is the host the backup came from (a surviving host keeps its own
// kubelet.conf).
func isKubeadm(p *Plan, _ Node) bool { return p.Options.Topology == TopologyKubeadm }

// configureNode issues this node's certificates again from the restored
// CAs when its name or address differ from the source host's, and points
// the kubeconfigs at the new API endpoint. The old files are kept aside.
//
// Every file is read and written below the restore root without following
// a symlink (see beneath): the PKI came from a backup, and a link in it
// must not make this step read or replace a file elsewhere on the host.
func configureNode(_ context.Context, e *Env) error {
	root, err := openBeneath(e.Root)
	if err != nil {
		return fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	pki := hostPath(e.Plan.Options.KubernetesDir, "pki")
	oldName, oldIP := e.Plan.sourceHost()
	for _, c := range nodeCerts {
		rel := rootRel(hostPath(pki, c.cert))
		if _, ok, err := root.lstat(rel); err != nil {
			return fmt.Errorf("issue %s again: %w", c.cert, err)
		} else if !ok {
			continue // not part of this PKI (external etcd)
		}
		cert, _, err := readCertAt(root, rel)
		if err != nil {
			return fmt.Errorf("issue %s again: %w", c.cert, err)
		}
		why := e.certFits(cert, root.at(rel), oldName, oldIP)
		if why == nil {
			// The backup's own, or made or kept before an interruption.
			if err := e.noteNodeFileOnce(rel, NodeFileRestored, ""); err != nil {
				return err
			}
			continue
		}
		if kept, err := e.keepHostCert(root, pki, c, oldName, oldIP); err != nil || kept {
			if err != nil {
				return fmt.Errorf("keep the host's own %s: %w", c.cert, err)
			}
			if err := e.noteNodeFile(rel, NodeFileKept, "the restored one: "+why.Error()); err != nil {
				return err
			}
			continue
		}
		if err := e.noteNodeFile(rel, NodeFileReissued, "the restored one: "+why.Error()); err != nil {
			return err
		}
		if err := e.reissue(root, pki, c, oldName, oldIP); err != nil {
			return fmt.Errorf("issue %s again: %w", c.cert, err)
		}
	}
	if err := e.configureKubeconfigs(root); err != nil {
		return err
	}
	return e.configureAPIServerManifest()
}

// certFits says why a node certificate (shown is its path, for messages)
// is not yet this node's: it lacks the node's name or address, or still
// carries the source host's.
func (e *Env) certFits(cert *x509.Certificate, shown, oldName, oldIP string) error {
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	switch {
	case !slices.Contains(ips, e.Node.IP):
		return fmt.Errorf("%s does not carry the node's address %s", shown, e.Node.IP)
	case oldIP != "" && oldIP != e.Node.IP && slices.Contains(ips, oldIP):
		return fmt.Errorf("%s still carries the source host's address %s", shown, oldIP)
	case !slices.Contains(cert.DNSNames, e.Node.Name) && slices.Contains(cert.DNSNames, oldName):
		return fmt.Errorf("%s names %s, not %s", shown, oldName, e.Node.Name)
	}
	return nil
}

func checkConfigured(_ context.Context, e *Env) error {
	root, err := openBeneath(e.Root)
	if err != nil {
		return fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	pki := hostPath(e.Plan.Options.KubernetesDir, "pki")
	oldName, oldIP := e.Plan.sourceHost()
	for _, c := range nodeCerts {
		rel := rootRel(hostPath(pki, c.cert))
		if _, ok, err := root.lstat(rel); err != nil {
			return err
		} else if !ok {
			continue
		}
		cert, _, err := readCertAt(root, rel)
		if err != nil {
			return err
		}
		ca, _, err := readCertAt(root, rootRel(hostPath(pki, c.ca)))
		if err != nil {
			return err
		}
		if err := cert.CheckSignatureFrom(ca); err != nil {
			return fmt.Errorf("%s is not signed by the restored %s: %w", c.cert, c.ca, err)
		}
		if err := e.certFits(cert, root.at(rel), oldName, oldIP); err != nil {
			return err
		}
	}
	if err := e.checkKubeconfigs(root); err != nil {
		return err
	}
	return e.checkAPIServerManifest()
}

// reissue signs the node certificate again with the restored CA, keeping
// its key, subject and usages, with the source host's name and address
// replaced by this node's.
func (e *Env) reissue(root *beneath, pki string, c nodeCert, oldName, oldIP string) error {
	certRel := rootRel(hostPath(pki, c.cert))
	oldRaw, oldInfo, err := root.readFile(certRel)
	if err != nil {
		return err
	}
	old, err := pkicheck.ParseCert(oldRaw)
	if err != nil {
		return fmt.Errorf("%s: %w", root.at(certRel), err)
	}
	ca, _, err := readCertAt(root, rootRel(hostPath(pki, c.ca)))
	if err != nil {
		return err
	}
	caKey, err := readKeyAt(root, rootRel(hostPath(pki, c.caKey)))
	if err != nil {
		return err
	}
	key, err := readKeyAt(root, rootRel(hostPath(pki, c.key)))
	if err != nil {
		return err
	}
	tmpl := *old
	tmpl.DNSNames = nil
	for _, d := range old.DNSNames {
		if d == oldName {
			d = e.Node.Name
		}
		if !slices.Contains(tmpl.DNSNames, d) {
			tmpl.DNSNames = append(tmpl.DNSNames, d)
		}
	}
	if !slices.Contains(tmpl.DNSNames, e.Node.Name) {
		tmpl.DNSNames = append(tmpl.DNSNames, e.Node.Name)
	}
	tmpl.IPAddresses = nil
	for _, ip := range old.IPAddresses {
		if ip.String() != oldIP && ip.String() != e.Node.IP {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	}
	tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(e.Node.IP))
	if old.Subject.CommonName == oldName {
		tmpl.Subject.CommonName = e.Node.Name
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-5 * time.Minute)
	tmpl.NotAfter = minTime(time.Now().AddDate(1, 0, 0), ca.NotAfter)
	tmpl.Raw, tmpl.RawTBSCertificate, tmpl.RawSubject, tmpl.RawIssuer, tmpl.RawSubjectPublicKeyInfo = nil, nil, nil, nil, nil
	tmpl.SubjectKeyId, tmpl.AuthorityKeyId = nil, nil
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("sign with the restored %s: %w", c.ca, err)
	}
	if err := e.keepAside(certRel, oldRaw); err != nil {
		return err
	}
	// The new certificate keeps the restored file's mode.
	return root.writeFile(certRel, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), oldInfo.Mode().Perm(), 0)
}

// keepAside saves the restored file rel (its content read as raw) into
// the staging aside tree before it is replaced, once: the first copy is
// the restored original. The aside tree is kdr's own directory, written
// below without following a symlink all the same.
func (e *Env) keepAside(rel string, raw []byte) error {
	dir := filepath.Join(e.staging(), "aside")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keep the restored %s aside: %w", rel, err)
	}
	aside, err := openBeneath(dir)
	if err != nil {
		return fmt.Errorf("keep the restored %s aside: %w", rel, err)
	}
	defer aside.Close()
	if _, ok, err := aside.lstat(rel); err != nil || ok {
		return err
	}
	return aside.writeFile(rel, raw, 0o600, 0o700)
}

// readCertAt reads and parses the certificate rel below root, without
// following a symlink.
func readCertAt(root *beneath, rel string) (*x509.Certificate, os.FileInfo, error) {
	raw, fi, err := root.readFile(rel)
	if err != nil {
		return nil, nil, err
	}
	cert, err := pkicheck.ParseCert(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", root.at(rel), err)
	}
	return cert, fi, nil
}

// readKeyAt reads and parses the private key rel below root, without
// following a symlink.
func readKeyAt(root *beneath, rel string) (crypto.Signer, error) {
	raw, _, err := root.readFile(rel)
	if err != nil {
		return nil, err
	}
	key, err := pkicheck.ParseKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", root.at(rel), err)
	}
	return key, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
