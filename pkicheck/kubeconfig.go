package pkicheck

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
)

// kubeconfig checks the current context of the kubeconfig at host path p:
// its cluster's CA is the restored cluster CA (or signed by it), and its
// user's client certificate was signed by that CA, matches the client key
// and is in date. The first problem found is the finding.
func (c *checker) kubeconfig(p string, data []byte) {
	fail := func(format string, a ...any) { c.add(p, IDKubeconfig, Fail, fmt.Sprintf(format, a...)) }
	// clientcmd.Load is the parser kubectl and the components use, so a
	// kubeconfig it takes is one they take.
	cfg, err := clientcmd.Load(data)
	if err != nil {
		fail("does not parse: %s", oneLine(err))
		return
	}
	name := cfg.CurrentContext
	kctx := cfg.Contexts[name]
	switch {
	case name == "":
		fail("has no current-context")
		return
	case kctx == nil:
		fail("current-context %q is not among its contexts", name)
		return
	}
	cluster, user := cfg.Clusters[kctx.Cluster], cfg.AuthInfos[kctx.AuthInfo]
	switch {
	case cluster == nil:
		fail("context %q names cluster %q, which it lacks", name, kctx.Cluster)
		return
	case user == nil:
		fail("context %q names user %q, which it lacks", name, kctx.AuthInfo)
		return
	}
	caPath := path.Join(c.pki, "ca.crt")
	ca := c.certs[caPath]
	if ca == nil || ca.cert == nil {
		fail("cannot be checked: the cluster CA %s is missing or does not parse", caPath)
		return
	}

	caData, caFile, err := c.credential(p, cluster.CertificateAuthorityData, cluster.CertificateAuthority)
	if err != nil {
		c.credentialFinding(p, "certificate-authority", caFile, err)
		return
	}
	if caData == nil {
		fail("cluster %q names no certificate authority", kctx.Cluster)
		return
	}
	kcCA, err := ParseCert(caData)
	if err != nil {
		fail("certificate authority%s does not parse: %s", from(caFile), oneLine(err))
		return
	}
	if !bytes.Equal(kcCA.Raw, ca.cert.Raw) && kcCA.CheckSignatureFrom(ca.cert) != nil {
		fail("trusts %s%s, neither the cluster CA %s (%s) nor signed by it", kcCA.Subject, from(caFile), caPath, ca.cert.Subject)
		return
	}

	certData, certFile, err := c.credential(p, user.ClientCertificateData, user.ClientCertificate)
	if err != nil {
		c.credentialFinding(p, "client-certificate", certFile, err)
		return
	}
	if certData == nil {
		// A token or an exec plugin cannot be proven offline, and is not
		// what kubeadm writes; say so rather than pass or fail it.
		c.add(p, IDKubeconfig, Warn, fmt.Sprintf("user %q has no client certificate; other credentials are not checked", kctx.AuthInfo))
		return
	}
	cert, err := ParseCert(certData)
	if err != nil {
		fail("client certificate%s does not parse: %s", from(certFile), oneLine(err))
		return
	}
	keyData, keyFile, err := c.credential(p, user.ClientKeyData, user.ClientKey)
	if err != nil {
		c.credentialFinding(p, "client-key", keyFile, err)
		return
	}
	if keyData == nil {
		fail("user %q has a client certificate but no client key", kctx.AuthInfo)
		return
	}
	key, err := ParseKey(keyData)
	if err != nil {
		fail("client key%s does not parse: %s", from(keyFile), oneLine(err))
		return
	}
	if err := cert.CheckSignatureFrom(ca.cert); err != nil {
		fail("client certificate %s%s is not signed by the cluster CA %s; it names issuer %s", cert.Subject, from(certFile), caPath, cert.Issuer)
		return
	}
	if !samePublicKey(key.Public(), cert.PublicKey) {
		fail("client key%s does not match client certificate %s", from(keyFile), cert.Subject)
		return
	}
	c.add(p, IDKubeconfig, Pass, fmt.Sprintf("context %q trusts %s; client %s%s is signed by it and matches its key", name, caPath, cert.Subject, from(certFile)))
	c.expiry(p, cert)
}

// credential returns a kubeconfig's embedded data, or else the file it
// names (read in the sandbox; a relative name is relative to the
// kubeconfig, as clientcmd resolves it), with that file's host path. Both
// empty: the kubeconfig has none.
func (c *checker) credential(kubeconfig string, data []byte, file string) ([]byte, string, error) {
	if len(data) > 0 {
		return data, "", nil
	}
	if file == "" {
		return nil, "", nil
	}
	if !path.IsAbs(file) {
		file = path.Join(path.Dir(kubeconfig), file)
	}
	file = path.Clean(file)
	data, err := c.box.readFile(file)
	if err != nil {
		return nil, file, err
	}
	return data, file, nil
}

// credentialFinding reports a credential file that could not be read. A
// missing one outside the Kubernetes directory is a warning: the backup
// does not hold it (the kubelet's rotated client certificate lives in
// /var/lib/kubelet/pki), and the node keeps its own.
func (c *checker) credentialFinding(p, field, file string, err error) {
	if errors.Is(err, fs.ErrNotExist) && !strings.HasPrefix(file, c.dir+"/") {
		c.add(p, IDKubeconfig, Warn, fmt.Sprintf("%s %s is outside %s and not in the restored tree; not checked", field, file, c.dir))
		return
	}
	c.add(p, IDKubeconfig, Fail, fmt.Sprintf("%s %s: %s", field, file, oneLine(err)))
}

// from names the file a credential came from, nothing when embedded.
func from(file string) string {
	if file == "" {
		return ""
	}
	return " (" + file + ")"
}
