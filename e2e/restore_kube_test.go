package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/internal/testenv"
)

// kubeNode is the kubeadm node's name on the source host and in every
// restore plan: the restore rebuilds the same node on another machine.
const kubeNode = "cp1"

// kubeAdvertise is the source host's node address, testenv's default: it
// is in the certificates and kubeconfigs kubeadm made, and nothing listens
// on it.
const kubeAdvertise = "192.0.2.10"

// kubeSource is a kubeadm control-plane host with namespaces and
// configmaps created through its API and keys put straight into its etcd
// (outside /registry, where kube-apiserver never writes), backed up once
// by kdr.
type kubeSource struct {
	w    *world
	host *testenv.KubeHost
	cfg  string
	id   string
	m    manifestDoc
	// node is the host the backup's manifest says its files came from.
	node string
	// configmaps maps namespace/name to the value of its "v" key.
	configmaps map[string]string
	// rawKeys are the keys written to etcd directly, with their values.
	rawKeys map[string]string
}

// rawPrefix holds the keys a test writes into etcd itself.
const rawPrefix = "/kdr-e2e/"

// newKubeSource makes the host, writes the objects and backs it up with
// `kdr backup --root`, to MinIO and a local directory when s3 is set, else
// to the local directory alone.
func newKubeSource(t *testing.T, s3 bool) *kubeSource {
	t.Helper()
	return newKubeSourceWith(t, kubeSourceOptions{s3: s3})
}

// kubeSourceOptions shape the host newKubeSourceWith backs up.
type kubeSourceOptions struct {
	s3 bool
	// kube shapes the kubeadm host; its NodeName is always kubeNode.
	kube testenv.KubeOptions
	// populate, when set, writes more through the running host after the
	// common objects and before the backup.
	populate func(t *testing.T, h *testenv.KubeHost)
}

// newKubeSourceWith is newKubeSource for a host shaped by o.
func newKubeSourceWith(t *testing.T, o kubeSourceOptions) *kubeSource {
	t.Helper()
	w := &world{dir: t.TempDir()}
	w.usb = filepath.Join(w.dir, "usb")
	testenv.Mkdir(t, w.usb, 0o755)
	if o.s3 {
		w.minio = testenv.StartMinIO(t, testenv.MinIOOptions{})
		w.minio.CreateBucket(t, bucket, false)
	}
	w.identity, w.recipient = w.generateKey(t, "operator.key")
	w.signingKey, w.signingPub = generateSigningKey(t, w.dir)

	o.kube.NodeName = kubeNode
	h := testenv.StartKubeadmHost(t, o.kube)
	s := &kubeSource{w: w, host: h, configmaps: map[string]string{}, rawKeys: map[string]string{}}
	for _, ns := range []string{"shop", "billing"} {
		h.Kubectl(t, "create", "namespace", ns)
		for i := range 3 {
			name := fmt.Sprintf("cm-%d", i)
			v := fmt.Sprintf("%s-%d", ns, i)
			h.Kubectl(t, "-n", ns, "create", "configmap", name, "--from-literal=v="+v)
			s.configmaps[ns+"/"+name] = v
		}
	}
	cli := etcdClient(t, h.EtcdEndpoint, h.EtcdTLS.CA, h.EtcdTLS.Cert, h.EtcdTLS.Key)
	for i := range 50 {
		k, v := fmt.Sprintf("%skey-%03d", rawPrefix, i), fmt.Sprintf("value-%d", i)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := cli.Put(ctx, k, v)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		s.rawKeys[k] = v
	}
	if o.populate != nil {
		o.populate(t, h)
	}

	spec := configSpec{
		endpoints: []string{h.EtcdEndpoint},
		ca:        h.EtcdTLS.CA, cert: h.EtcdTLS.Cert, key: h.EtcdTLS.Key,
		recipients:      []string{w.recipient},
		signingKey:      w.signingKey,
		trustedKeys:     []string{w.signingPub},
		usb:             w.usb,
		incompleteGrace: "24h",
	}
	if o.s3 {
		spec.s3Endpoint = w.minio.Endpoint()
	}
	// The inventory says what the lost host really was, as an operator's
	// would: kubeadm's default node address and the API endpoint in its
	// kubeconfigs.
	yaml := strings.NewReplacer(
		"{name: cp1, ip: 10.0.0.11,", "{name: "+kubeNode+", ip: "+kubeAdvertise+",",
		"apiEndpoint: https://10.0.0.10:6443", "apiEndpoint: https://"+kubeAdvertise+":6443",
	).Replace(spec.render())
	if !strings.Contains(yaml, "ip: "+kubeAdvertise) || !strings.Contains(yaml, "apiEndpoint: https://"+kubeAdvertise) {
		t.Fatalf("the config's inventory was not set to the kubeadm host:\n%s", yaml)
	}
	s.cfg = filepath.Join(w.dir, "kdr.yaml")
	testenv.WriteFile(t, s.cfg, []byte(yaml), 0o600)
	r := runKdr(t, w.env(), "--config", s.cfg, "backup", "--root", h.Root, "--node", "cp1")
	wantExit(t, r, 0)
	s.id = backupID(t, r)
	raw := testenv.ReadFile(t, w.usbPath(s.id, "manifest.json"))
	s.m = parseManifest(t, raw)
	var node struct {
		Node string `json:"node"`
	}
	if err := json.Unmarshal(raw, &node); err != nil {
		t.Fatal(err)
	}
	s.node = node.Node
	return s
}

// nodeIP is the --node-ip value for the source's node on the given ports,
// in the documented form NAME=IP,PEER_URL,CLIENT_URL.
func nodeIP(ports testenv.KubePorts) string {
	return fmt.Sprintf("%s=127.0.0.1,https://127.0.0.1:%d,https://127.0.0.1:%d", kubeNode, ports.EtcdPeer, ports.EtcdClient)
}

// planNode is one node of `kdr restore plan -o json`.
type planNode struct {
	Name      string `json:"name"`
	IP        string `json:"ip"`
	PeerURL   string `json:"peerURL"`
	ClientURL string `json:"clientURL"`
}

// planDoc is the part of `kdr restore plan -o json` these tests read.
type planDoc struct {
	BackupID string `json:"backupID"`
	Revision int64  `json:"revision"`
	Options  struct {
		Nodes       []planNode `json:"nodes"`
		EtcdDataDir string     `json:"etcdDataDir"`
	} `json:"options"`
	Steps []struct {
		ID          string `json:"id"`
		Node        string `json:"node"`
		Destructive bool   `json:"destructive"`
	} `json:"steps"`
}

// plan runs `kdr restore plan -o json` with one --node-ip value as given.
func (s *kubeSource) plan(t *testing.T, nodeIPValue string) (planDoc, result) {
	t.Helper()
	r := runKdr(t, s.w.env(), "--config", s.cfg, "restore", "plan", "-o", "json", "--node-ip", nodeIPValue)
	var p planDoc
	if r.code == 0 {
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			t.Fatalf("restore plan -o json: %v\n%s", err, r)
		}
	}
	return p, r
}

// plannedNodeIP returns the --node-ip value for the source's node on the
// given ports, in the documented form NAME=IP,PEER_URL,CLIENT_URL, once
// `kdr restore plan` has shown that it plans exactly that node.
func (s *kubeSource) plannedNodeIP(t *testing.T, ports testenv.KubePorts) (string, planDoc) {
	t.Helper()
	want := planNode{Name: kubeNode, IP: "127.0.0.1",
		PeerURL:   fmt.Sprintf("https://127.0.0.1:%d", ports.EtcdPeer),
		ClientURL: fmt.Sprintf("https://127.0.0.1:%d", ports.EtcdClient)}
	v := nodeIP(ports)
	p, r := s.plan(t, v)
	if r.code != 0 || len(p.Options.Nodes) != 1 || p.Options.Nodes[0] != want {
		t.Fatalf("--node-ip %s does not plan node %+v alone: %+v\n%s", v, want, p.Options.Nodes, r)
	}
	return v, p
}

// applyArgs are `kdr restore apply` for the source's node rebuilt under
// root, on the ports of the kubelet that runs it there: the plan's URLs
// and the kubelet's rewrite of the manifests agree.
func (s *kubeSource) applyArgs(nodeIPValue, root string, ports testenv.KubePorts) []string {
	return []string{"--config", s.cfg, "restore", "apply", "--node-ip", nodeIPValue,
		"--node", kubeNode, "--root", root, "--identity", s.w.identity,
		"--api-server", fmt.Sprintf("https://127.0.0.1:%d", ports.APIServer), "--wait", "2m"}
}

// stagingDir is where the restore under root keeps this backup's objects
// and journals.
func (s *kubeSource) stagingDir(root string) string {
	return filepath.Join(root, "var/lib/kdr/restore", cluster, s.id)
}

// restoreOnNewMachine is the loss of the source's node and the restore an
// operator then does: the node's processes stop, etcd's data,
// /etc/kubernetes and the lost paths besides go, and `kdr restore apply`
// with the extra flags brings the node back on an empty machine where a
// kubelet runs whatever static pods appear. A failed apply fails the
// test with the restore's journal, the one account of how far it got.
// It returns the machine's root and its kubelet.
func (s *kubeSource) restoreOnNewMachine(t *testing.T, lost []string, extra ...string) (string, *testenv.Kubelet) {
	t.Helper()
	s.host.Stop()
	for _, p := range append([]string{testenv.KubeEtcdDataDir, testenv.KubernetesDir}, lost...) {
		if err := os.RemoveAll(s.host.Path(p)); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(t.TempDir(), "new-machine")
	testenv.Mkdir(t, root, 0o755)
	k := testenv.StartKubelet(t, root, testenv.KubePorts{})
	flag, _ := s.plannedNodeIP(t, k.Ports)
	start := time.Now()
	r := runKdr(t, s.w.env(), append(s.applyArgs(flag, root, k.Ports), extra...)...)
	if r.code != 0 {
		t.Fatalf("restore apply failed\n%s\njournal:\n%s", r, journalText(t, s.stagingDir(root)))
	}
	t.Logf("restore apply took %s:\n%s", time.Since(start).Round(time.Second), r.stdout)
	return root, k
}

// TestRestoreKubeadmOntoNewMachine is the restore an operator does when a
// kubeadm control-plane node is gone: etcd's data and all of
// /etc/kubernetes are lost, and `kdr restore apply` on an empty machine,
// where a kubelet runs whatever static pods appear, must bring back an API
// server that serves the objects of the backup, with the original PKI.
func TestRestoreKubeadmOntoNewMachine(t *testing.T) {
	src := newKubeSource(t, true)
	h := src.host
	pkiFiles := []string{"ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key", "front-proxy-ca.crt", "sa.key", "sa.pub"}
	orig := map[string][]byte{}
	for _, f := range append(slices.Clone(pkiFiles), "apiserver.crt", "etcd/server.crt", "etcd/peer.crt") {
		orig[f] = testenv.ReadFile(t, h.Path(testenv.KubePKIDir+"/"+f))
	}

	// The node is gone: its processes, its etcd data and /etc/kubernetes.
	root, k := src.restoreOnNewMachine(t, nil)
	for _, pod := range []string{"etcd", "kube-apiserver"} {
		if !k.Running(pod) {
			t.Errorf("the kubelet does not run %s after the restore:\n%s", pod, k.Logs(pod))
		}
	}

	// The objects, through the API, with the restored admin kubeconfig.
	admin := k.Kubeconfig(t, "admin.conf")
	for _, ns := range []string{"shop", "billing"} {
		if got := k.Kubectl(t, admin, "get", "namespace", ns, "-o", "jsonpath={.metadata.name}"); got != ns {
			t.Errorf("namespace %s reads back as %q", ns, got)
		}
	}
	for key, want := range src.configmaps {
		ns, name, _ := strings.Cut(key, "/")
		if got := k.Kubectl(t, admin, "-n", ns, "get", "configmap", name, "-o", "jsonpath={.data.v}"); got != want {
			t.Errorf("configmap %s: v = %q, want %q", key, got, want)
		}
	}

	// The PKI is the original one, not one made anew; keys are 0600.
	pki := filepath.Join(root, "etc/kubernetes/pki")
	for _, f := range pkiFiles {
		if got := testenv.ReadFile(t, filepath.Join(pki, f)); !bytes.Equal(got, orig[f]) {
			t.Errorf("restored %s differs from the original", f)
		}
	}
	keys := 0
	err := filepath.WalkDir(pki, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(p, ".key") {
			return err
		}
		keys++
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode() != 0o600 {
			t.Errorf("restored key %s has mode %v, want a regular file of mode 0600", p, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys < 5 {
		t.Errorf("the restored PKI has %d key files; kubeadm makes at least 5", keys)
	}

	// The node certificates name the machine the node now is, with the keys
	// they had: the lost host's address is gone from them. kubeadm's
	// certificates here also carry 127.0.0.1, the new machine's address,
	// which is why only the old address is looked for.
	for _, f := range []string{"apiserver", "etcd/server", "etcd/peer"} {
		cert := parseCert(t, testenv.ReadFile(t, filepath.Join(pki, f+".crt")))
		was := parseCert(t, orig[f+".crt"])
		if !bytes.Equal(cert.RawSubjectPublicKeyInfo, was.RawSubjectPublicKeyInfo) {
			t.Errorf("restored %s.crt has another key than the original", f)
		}
		for _, ip := range cert.IPAddresses {
			if ip.String() == kubeAdvertise {
				t.Errorf("restored %s.crt still carries the lost host's address %s (addresses %v; the backup says its files came from node %q)",
					f, kubeAdvertise, cert.IPAddresses, src.node)
			}
		}
	}

	// etcd is past every revision the lost cluster handed out, and the old
	// ones are compacted away.
	cli := restoredEtcd(t, root, k.Ports)
	floor := src.m.Etcd.Revision + bump
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, fmt.Sprintf("https://127.0.0.1:%d", k.Ports.EtcdClient))
	if err != nil {
		t.Fatal(err)
	}
	// Above, not at: kube-apiserver has written since it started.
	if st.Header.Revision <= floor {
		t.Errorf("restored etcd is at revision %d, want above the backup's %d + %d", st.Header.Revision, src.m.Etcd.Revision, bump)
	}
	if c := compactRevision(t, cli); c < floor {
		t.Errorf("restored etcd is compacted at revision %d, want at least %d (--mark-compacted)", c, floor)
	}
	for k, want := range src.rawKeys {
		got, err := cli.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != want {
			t.Errorf("restored etcd: %s = %v, want %q", k, got.Kvs, want)
		}
	}
}

// etcdClient connects to a TLS etcd with the given files; closed when the
// test ends.
func etcdClient(t *testing.T, endpoint, ca, cert, key string) *clientv3.Client {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(testenv.ReadFile(t, ca)) {
		t.Fatalf("no certificate in %s", ca)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// restoredEtcd connects to the etcd restored under root with the restored
// PKI's apiserver-etcd-client certificate, as kube-apiserver does.
func restoredEtcd(t *testing.T, root string, ports testenv.KubePorts) *clientv3.Client {
	t.Helper()
	pki := filepath.Join(root, "etc/kubernetes/pki")
	return etcdClient(t, fmt.Sprintf("https://127.0.0.1:%d", ports.EtcdClient),
		filepath.Join(pki, "etcd/ca.crt"), filepath.Join(pki, "apiserver-etcd-client.crt"), filepath.Join(pki, "apiserver-etcd-client.key"))
}

// compactRevision is the revision etcd is compacted at: a watch from
// revision 1 is refused with it.
func compactRevision(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, ok := <-cli.Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(1))
	if !ok {
		t.Fatalf("watch from revision 1 ended without an answer: %v", ctx.Err())
	}
	if resp.CompactRevision == 0 {
		t.Fatalf("a watch from revision 1 was not refused (err %v, %d events): etcd is not compacted", resp.Err(), len(resp.Events))
	}
	return resp.CompactRevision
}

// journalText is the node's journal under a staging dir, for failure
// messages.
func journalText(t *testing.T, staging string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(staging, "journal-"+kubeNode+".json"))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("no PEM certificate in %q", b)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
