package restore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/rest"

	"github.com/kdr-io/kdr/pkicheck"
)

// waitFor polls f until it succeeds, the timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still failing after %s: %w", timeout, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// etcdTLS is the client TLS for the restored etcd: kubeadm's
// apiserver-etcd-client certificate and etcd CA, from the restored PKI,
// read without following a symlink (they came from a backup).
func (e *Env) etcdTLS() (*tls.Config, error) {
	if !strings.HasPrefix(e.Node.ClientURL, "https://") {
		return nil, nil
	}
	root, err := openBeneath(e.Root)
	if err != nil {
		return nil, fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	pki := hostPath(e.Plan.Options.KubernetesDir, "pki")
	var files [3][]byte
	for i, name := range []string{"apiserver-etcd-client.crt", "apiserver-etcd-client.key", "etcd/ca.crt"} {
		if files[i], _, err = root.readFile(rootRel(hostPath(pki, name))); err != nil {
			return nil, fmt.Errorf("etcd client TLS from the restored PKI: %w", err)
		}
	}
	cert, err := tls.X509KeyPair(files[0], files[1])
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate from the restored PKI: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(files[2]) {
		return nil, fmt.Errorf("etcd CA from the restored PKI: %s holds no PEM certificate", root.at(rootRel(hostPath(pki, "etcd/ca.crt"))))
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func (e *Env) etcdClient() (*clientv3.Client, error) {
	tc, err := e.etcdTLS()
	if err != nil {
		return nil, err
	}
	eps := make([]string, len(e.Plan.Options.Nodes))
	for i, n := range e.Plan.Options.Nodes {
		eps[i] = n.ClientURL
	}
	return clientv3.New(clientv3.Config{Endpoints: eps, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// checkEtcdHealthy waits until this node's member answers with a leader:
// the cluster has quorum.
func checkEtcdHealthy(ctx context.Context, e *Env) error {
	cli, err := e.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	return waitFor(ctx, e.WaitTimeout, func() error {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		st, err := cli.Status(sctx, e.Node.ClientURL)
		if err != nil {
			return fmt.Errorf("etcd at %s: %w", e.Node.ClientURL, err)
		}
		if st.Leader == 0 {
			return fmt.Errorf("etcd at %s has no leader yet: start etcd on the other nodes", e.Node.ClientURL)
		}
		return nil
	})
}

// checkEtcd proves the restored cluster: the planned members and no
// others, and a revision above everything the old cluster handed out.
func checkEtcd(ctx context.Context, e *Env) error {
	cli, err := e.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	return waitFor(ctx, e.WaitTimeout, func() error {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ml, err := cli.MemberList(sctx)
		if err != nil {
			return fmt.Errorf("member list: %w", err)
		}
		var got []string
		for _, m := range ml.Members {
			got = append(got, m.Name)
		}
		want := e.Plan.NodeNames()
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("members %v, the plan has %v", got, want)
		}
		floor := e.Plan.Revision + int64(e.Plan.Options.RevisionBump)
		for _, n := range e.Plan.Options.Nodes {
			st, err := cli.Status(sctx, n.ClientURL)
			if err != nil {
				return fmt.Errorf("status of %s: %w", n.Name, err)
			}
			if st.Header.Revision < floor {
				return fmt.Errorf("%s is at revision %d, below the backup's %d plus the bump", n.Name, st.Header.Revision, e.Plan.Revision)
			}
		}
		return nil
	})
}

// checkAPIServer waits for /readyz of this node's API server, trusting
// the restored CA and authenticating with the restored admin kubeconfig.
// admin.conf came from a backup: it is read without following a symlink,
// and only its embedded CA, client certificate and key are used
// (pkicheck.ClientConfig refuses an exec plugin, an auth provider, a token
// or a file it names), and not its server: the plan says where the API
// server is.
func checkAPIServer(ctx context.Context, e *Env) error {
	root, err := openBeneath(e.Root)
	if err != nil {
		return fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	rel := rootRel(hostPath(e.Plan.Options.KubernetesDir, "admin.conf"))
	raw, _, err := root.readFile(rel)
	if err != nil {
		return fmt.Errorf("restored admin kubeconfig: %w", err)
	}
	url := e.APIServer
	if url == "" {
		url = "https://" + hostPort(e.Node.IP, "6443")
	}
	cfg, err := pkicheck.ClientConfig(raw, url)
	if err != nil {
		return fmt.Errorf("restored admin kubeconfig %s: %w", root.at(rel), err)
	}
	tc, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return fmt.Errorf("restored admin kubeconfig %s: %w", root.at(rel), err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	return waitFor(ctx, e.WaitTimeout, func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("API server %s: %w", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("API server %s/readyz: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	})
}

// etcdFlag matches one "- --flag=value" line of a static pod manifest.
var etcdFlag = regexp.MustCompile(`(?m)^(\s*- --)([a-z-]+)=(.*)$`)

// configureEtcdManifest points the restored etcd static pod manifest at
// this node: its name and URLs, which differ when the backup came from
// another node or the node has a new address. The staged manifest came
// from a backup: it is read without following a symlink and must be a
// regular file, and is replaced the same way.
func configureEtcdManifest(e *Env) error {
	if e.Plan.Options.Topology != TopologyKubeadm {
		return nil
	}
	staged, rel, err := e.stagedManifest("etcd.yaml")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer staged.Close()
	raw, _, err := staged.readFile(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restored etcd manifest: %w", err)
	}
	n := e.Node
	local := strings.Replace(n.ClientURL, hostOf(n.ClientURL), "127.0.0.1", 1)
	set := map[string]string{
		"name":                        n.Name,
		"initial-advertise-peer-urls": n.PeerURL,
		"listen-peer-urls":            n.PeerURL,
		"advertise-client-urls":       n.ClientURL,
		"listen-client-urls":          local + "," + n.ClientURL,
		"initial-cluster":             e.Plan.InitialCluster,
		"initial-cluster-token":       e.Plan.Options.Token,
		"data-dir":                    e.Plan.Options.EtcdDataDir,
	}
	out := etcdFlag.ReplaceAllStringFunc(string(raw), func(line string) string {
		m := etcdFlag.FindStringSubmatch(line)
		if v, ok := set[m[2]]; ok {
			return m[1] + m[2] + "=" + v
		}
		return line
	})
	return staged.writeFile(rel, []byte(out), 0o600, 0)
}

// checkEtcdManifest proves the staged etcd manifest names this node.
func checkEtcdManifest(e *Env) error {
	if e.Plan.Options.Topology != TopologyKubeadm {
		return nil
	}
	staged, rel, err := e.stagedManifest("etcd.yaml")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer staged.Close()
	raw, _, err := staged.readFile(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restored etcd manifest: %w", err)
	}
	for _, m := range etcdFlag.FindAllStringSubmatch(string(raw), -1) {
		if m[2] == "name" && m[3] != e.Node.Name {
			return fmt.Errorf("the restored etcd manifest names %s, not %s", m[3], e.Node.Name)
		}
		if m[2] == "initial-advertise-peer-urls" && m[3] != e.Node.PeerURL {
			return fmt.Errorf("the restored etcd manifest advertises %s, not %s", m[3], e.Node.PeerURL)
		}
	}
	return nil
}

// stagedDir is where restore-files keeps static pod manifests until
// their start step, laid out as under the root.
func (e *Env) stagedDir() string { return filepath.Join(e.staging(), "manifests") }

// stagedManifest opens the staging tree of static pod manifests and says
// where the named one lies in it. The caller closes it; an error that
// errors.Is fs.ErrNotExist means there is no staging tree.
func (e *Env) stagedManifest(name string) (*beneath, string, error) {
	staged, err := openBeneath(e.stagedDir())
	if err != nil {
		return nil, "", fmt.Errorf("restored manifests: %w", err)
	}
	return staged, rootRel(hostPath(e.Plan.Options.KubernetesDir, "manifests", name)), nil
}

func hostOf(rawURL string) string {
	s := strings.TrimPrefix(strings.TrimPrefix(rawURL, "https://"), "http://")
	if i := strings.LastIndex(s, ":"); i >= 0 {
		return s[:i]
	}
	return s
}
