package restore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdTLS is the client TLS for the restored etcd: the plan's client
// credentials (kubeadm's apiserver-etcd-client certificate and etcd CA by
// default), from the restored files, read without following a symlink
// (they came from a backup).
func (e *Env) etcdTLS() (*tls.Config, error) {
	c := e.Plan.Options.EtcdClientTLS
	if !strings.HasPrefix(e.Node.ClientURL, "https://") {
		return nil, nil
	}
	if c == nil {
		return nil, errors.New("the restored etcd serves https and its client certificate is not known: set the cluster's etcd.tls (ca, cert, key) in the config to the restored files")
	}
	root, err := openBeneath(e.Root)
	if err != nil {
		return nil, fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	var files [3][]byte
	for i, name := range []string{c.Cert, c.Key, c.CA} {
		if files[i], _, err = root.readFile(rootRel(name)); err != nil {
			return nil, fmt.Errorf("etcd client TLS from the restored files: %w", err)
		}
	}
	cert, err := tls.X509KeyPair(files[0], files[1])
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate %s from the restored files: %w", c.Cert, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(files[2]) {
		return nil, fmt.Errorf("etcd CA from the restored files: %s holds no PEM certificate", root.at(rootRel(c.CA)))
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// etcdClient is a client of the restored cluster, with the TLS it dials
// with, to explain a call that fails.
type etcdClient struct {
	*clientv3.Client
	tls *tls.Config
}

func (e *Env) etcdClient() (*etcdClient, error) {
	tc, err := e.etcdTLS()
	if err != nil {
		return nil, err
	}
	eps := make([]string, len(e.Plan.Options.Nodes))
	for i, n := range e.Plan.Options.Nodes {
		eps[i] = n.ClientURL
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	return &etcdClient{Client: cli, tls: tc}, nil
}

// explain says why a call to the member at rawURL failed with err. gRPC
// retries a connection it cannot make until the call's deadline, and then
// says only "context deadline exceeded"; a connection and TLS handshake
// made here give the reason: nothing listens, or the member's certificate
// does not verify against the restored CA (an x509 error, wrapped). When
// both succeed, err was about something else and is returned as it is.
func (c *etcdClient) explain(ctx context.Context, rawURL string, err error) error {
	u, perr := url.Parse(rawURL)
	if perr != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	conn, derr := d.DialContext(ctx, "tcp", u.Host)
	if derr != nil {
		return derr
	}
	defer conn.Close()
	if c.tls == nil || u.Scheme != "https" {
		return err
	}
	tc := c.tls.Clone()
	if tc.ServerName == "" {
		// As gRPC does: the name to verify is the endpoint's host.
		tc.ServerName = u.Hostname()
	}
	if herr := tls.Client(conn, tc).HandshakeContext(ctx); herr != nil {
		return herr
	}
	return err
}
