package pkicheck

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ErrRefused marks a kubeconfig that ClientConfig will not use because it
// asks for more than its embedded certificates and key.
var ErrRefused = errors.New("refused: only embedded certificates and keys are used")

// ClientConfig is a client of the API server at host (such as
// https://127.0.0.1:6443) that trusts the current context's
// certificate-authority-data and authenticates with its user's
// client-certificate-data and client-key-data, and with nothing else.
//
// A kubeconfig from a backup is data that anyone who can write to the
// target may have crafted, while clientcmd's client machinery treats a
// kubeconfig as code: it runs exec and auth-provider plugins and reads any
// file of the host it names, as whoever runs the drill (root, holding the
// key to every backup). So the kubeconfig is parsed and never handed to
// that machinery: the rest.Config is built here from the embedded bytes,
// and a current context whose cluster or user asks for anything more is
// refused with ErrRefused, naming the field. Its server is not used
// either: host says where the API server is, so a kubeconfig cannot send
// the client elsewhere. Errors are one line without the kubeconfig's name,
// which the caller adds.
func ClientConfig(data []byte, host string) (*rest.Config, error) {
	if host == "" {
		return nil, errors.New("no API server address to point the kubeconfig at")
	}
	// clientcmd.Load only decodes: it resolves no path and runs nothing.
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("does not parse: %s", oneLine(err))
	}
	name := cfg.CurrentContext
	kctx := cfg.Contexts[name]
	switch {
	case name == "":
		return nil, errors.New("has no current-context")
	case kctx == nil:
		return nil, fmt.Errorf("current-context %q is not among its contexts", name)
	}
	cluster, user := cfg.Clusters[kctx.Cluster], cfg.AuthInfos[kctx.AuthInfo]
	switch {
	case cluster == nil:
		return nil, fmt.Errorf("context %q names cluster %q, which it lacks", name, kctx.Cluster)
	case user == nil:
		return nil, fmt.Errorf("context %q names user %q, which it lacks", name, kctx.AuthInfo)
	}
	if field := refusedUserField(user); field != "" {
		return nil, fmt.Errorf("user %q sets %s: %w", kctx.AuthInfo, field, ErrRefused)
	}
	if field := refusedClusterField(cluster); field != "" {
		return nil, fmt.Errorf("cluster %q sets %s: %w", kctx.Cluster, field, ErrRefused)
	}

	ca, cert, key := cluster.CertificateAuthorityData, user.ClientCertificateData, user.ClientKeyData
	switch {
	case len(ca) == 0:
		return nil, fmt.Errorf("cluster %q has no certificate-authority-data", kctx.Cluster)
	case len(cert) == 0:
		return nil, fmt.Errorf("user %q has no client-certificate-data", kctx.AuthInfo)
	case len(key) == 0:
		return nil, fmt.Errorf("user %q has no client-key-data", kctx.AuthInfo)
	}
	// client-go would find these faults only at the first request, with a
	// message that names neither the kubeconfig nor the field.
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("cluster %q: certificate-authority-data holds no PEM certificate", kctx.Cluster)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, fmt.Errorf("user %q: client-certificate-data and client-key-data: %s", kctx.AuthInfo, oneLine(err))
	}
	return &rest.Config{
		Host:            host,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca, CertData: cert, KeyData: key},
	}, nil
}

// refusedUserField names, as a kubeconfig spells it, the first field of u
// that asks for more than its embedded client certificate and key: a
// command, a file, or a credential the restored PKI does not prove (kubeadm
// writes none of them into an administrator's kubeconfig). "" when none.
func refusedUserField(u *clientcmdapi.AuthInfo) string {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"exec", u.Exec != nil},
		{"auth-provider", u.AuthProvider != nil},
		{"token", u.Token != ""},
		{"tokenFile", u.TokenFile != ""},
		{"username", u.Username != ""},
		{"password", u.Password != ""},
		{"as", u.Impersonate != ""},
		{"as-uid", u.ImpersonateUID != ""},
		{"as-groups", len(u.ImpersonateGroups) > 0},
		{"as-user-extra", len(u.ImpersonateUserExtra) > 0},
		{"client-certificate", u.ClientCertificate != ""},
		{"client-key", u.ClientKey != ""},
	} {
		if f.set {
			return f.name
		}
	}
	return ""
}

// refusedClusterField names the first field of c that reads a file, sends
// the client through another host, or turns verification off. "" when none.
func refusedClusterField(c *clientcmdapi.Cluster) string {
	switch {
	case c.CertificateAuthority != "":
		return "certificate-authority"
	case c.InsecureSkipTLSVerify:
		return "insecure-skip-tls-verify"
	case c.ProxyURL != "":
		return "proxy-url"
	}
	return ""
}
