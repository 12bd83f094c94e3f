package pkicheck

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
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
	// A kubeconfig from a backup is data anyone who can write to the
	// target may have crafted, while whoever reads it treats it as code:
	// kubectl in the runbook and the kubelet run its exec plugin or auth
	// provider as root, send its token file to its server, and read any
	// file it names. kubeadm writes none of that, so it fails here,
	// whether or not a client certificate sits beside it.
	if field := pluginField(user); field != "" {
		fail("user %q sets %s, which kubeadm never writes: whoever uses this kubeconfig would %s", kctx.AuthInfo, field, pluginHarm[field])
		return
	}
	for _, ref := range []struct{ field, file string }{
		{"certificate-authority", cluster.CertificateAuthority},
		{"client-certificate", user.ClientCertificate},
		{"client-key", user.ClientKey},
	} {
		if why := c.outsideTree(p, ref.field, ref.file); why != "" {
			fail("%s %s: every reader of this kubeconfig would read it from the host", ref.field, why)
			return
		}
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
		// An inline token or password cannot be proven offline, and is
		// not what kubeadm writes, but it makes its reader run or read
		// nothing: say so rather than pass or fail it.
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
	if !SamePublicKey(key.Public(), cert.PublicKey) {
		fail("client key%s does not match client certificate %s", from(keyFile), cert.Subject)
		return
	}
	c.add(p, IDKubeconfig, Pass, fmt.Sprintf("context %q trusts %s; client %s%s is signed by it and matches its key", name, caPath, cert.Subject, from(certFile)))
	c.expiry(p, cert)
}

// pluginField names, as a kubeconfig spells it, the first field of u that
// makes its reader run a command or read a file to authenticate; "" when
// none.
func pluginField(u *clientcmdapi.AuthInfo) string {
	switch {
	case u.Exec != nil:
		return "exec"
	case u.AuthProvider != nil:
		return "auth-provider"
	case u.TokenFile != "":
		return "tokenFile"
	}
	return ""
}

// pluginHarm says what each of pluginField's fields would make a reader do.
var pluginHarm = map[string]string{
	"exec":          "run its command",
	"auth-provider": "run its provider, which may run a command",
	"tokenFile":     "read that file of the host and send it to the kubeconfig's server",
}

// kubeletClientCert is where kubeadm's kubelet.conf points the kubelet's
// client certificate and key: a link to the certificate the kubelet
// rotates in its own directory, which no state set holds. It is the one
// file outside the Kubernetes directory a kubeadm kubeconfig names.
const (
	kubeletClientCert = "/var/lib/kubelet/pki/kubelet-client-current.pem"
	kubeletPKI        = "/var/lib/kubelet/pki/"
)

// outsideTree says why file, named by field of the kubeconfig at host path
// kc, lies outside the restored tree (the Kubernetes directory), or links
// out of it; "" when it is inside, or when it is kubelet.conf's rotated
// client certificate, or when file is empty. The tree is the sandbox's
// here, but kubectl and the kubelet on the restored host read it as the
// host's, where a link leads to any file.
func (c *checker) outsideTree(kc, field, file string) string {
	if file == "" {
		return ""
	}
	p := file
	if !path.IsAbs(p) {
		p = path.Join(path.Dir(kc), p)
	}
	p = path.Clean(p)
	kubelet := path.Base(kc) == "kubelet.conf" && field != "certificate-authority"
	if !strings.HasPrefix(p, c.dir+"/") && (!kubelet || p != kubeletClientCert) {
		return fmt.Sprintf("%s is outside %s, the restored tree", p, c.dir)
	}
	// A missing file is left to the credential's own finding.
	real, err := c.box.resolveHost(p)
	if err == nil && !strings.HasPrefix(real, c.dir+"/") && (!kubelet || !strings.HasPrefix(real, kubeletPKI)) {
		return fmt.Sprintf("%s links out of %s, the restored tree, to %s", p, c.dir, real)
	}
	return ""
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
