package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// KubeadmSharedPKI are the files every control-plane node of a kubeadm
// cluster shares, relative to /etc/kubernetes/pki: what `kubeadm init
// --upload-certs` uploads and kubeadm's "manual certificate distribution"
// copies to a joining control-plane node. Everything else a node has
// (its serving and client certificates, kubeconfigs, manifests) it makes
// itself from these.
var KubeadmSharedPKI = []string{
	"ca.crt", "ca.key",
	"sa.key", "sa.pub",
	"front-proxy-ca.crt", "front-proxy-ca.key",
	"etcd/ca.crt", "etcd/ca.key",
}

// Ports kubeadm gives a stacked control-plane node; a StartHostKubelet
// pod listens on them as written.
const (
	kubeadmEtcdClientPort  = 2379
	kubeadmEtcdPeerPort    = 2380
	kubeadmEtcdMetricsPort = 2381
	kubeadmAPIServerPort   = 6443
)

const (
	// haReadyLimit bounds the wait for a node's etcd or kube-apiserver to
	// answer; three API servers starting on a busy 2-core machine take
	// their time.
	haReadyLimit = 3 * time.Minute
	// haPoll is how often readiness is asked.
	haPoll = 500 * time.Millisecond
)

// KubeHA is a kubeadm control plane of several nodes with stacked etcd,
// each node a Host of one Network with its own filesystem root, its
// static pods run by a StartHostKubelet kubelet at the node's real address.
type KubeHA struct {
	Network *Network
	// Endpoint is the cluster's controlPlaneEndpoint as a URL,
	// https://<VIP>:6443: an address of the network that no host has and
	// nothing listens on, as an operator's load balancer would be. Only
	// admin.conf and kubelet.conf name it; everything the tests use talks
	// to a node's own address.
	Endpoint string
	// Nodes are the control-plane nodes, the first one the one kubeadm
	// init ran on.
	Nodes []*KubeNode
}

// KubeNode is one node of a KubeHA.
type KubeNode struct {
	Name string
	Host *Host
	// Root is the node's filesystem root.
	Root string
	// Kubelet runs the node's static pods; nil once stopped by Replace or
	// before StartKubelet on a replacement.
	Kubelet *Kubelet

	dir string // kubectl's cache
}

// KubeHAOptions shape one node of a KubeHA as kubeadm makes it.
type KubeHAOptions struct {
	NodeName         string
	AdvertiseAddress string
	// ControlPlaneEndpoint is kubeadm's controlPlaneEndpoint, host:port.
	ControlPlaneEndpoint string
	// JoinEtcd, when set, makes the node's etcd join a running cluster as
	// `kubeadm join --control-plane` would: the name=peerURL list of the
	// members it joins, itself last, as --initial-cluster, and
	// --initial-cluster-state=existing.
	JoinEtcd []string
}

// VIP returns the address .octet of the network's /24. Hosts are given
// addresses from .11 up, so .1 to .10 are never a host's: an address that
// is on the network and that nothing answers, as a load balancer's VIP
// that is down.
func (n *Network) VIP(t testing.TB, octet int) string {
	t.Helper()
	if octet < 1 || octet >= firstHostOctet {
		t.Fatalf("VIP .%d: want .1 to .%d, which no host is given", octet, firstHostOctet-1)
	}
	return fmt.Sprintf("%s%d", n.prefix, octet)
}

// StartKubeadmHA makes a control plane of one node per name on a new
// Network, the way kubeadm's stacked-etcd HA guide does: kubeadm init's
// phases on the first node, the shared CA, service-account and etcd CA
// keys copied to the others (KubeadmSharedPKI), kubeadm's phases on each
// of them with its own name and address, and each etcd member added to
// the cluster before it starts. It returns once every node's etcd and
// kube-apiserver answer. Everything stops and goes away when the test
// ends.
func StartKubeadmHA(t testing.TB, names ...string) *KubeHA {
	t.Helper()
	if len(names) == 0 {
		t.Fatal("StartKubeadmHA: no node names")
	}
	net := NewNetwork(t)
	vip := net.VIP(t, 10)
	c := &KubeHA{Network: net, Endpoint: "https://" + hostPort(vip, kubeadmAPIServerPort)}
	var members []string
	for i, name := range names {
		n := c.addNode(t, name)
		member := name + "=" + n.PeerURL()
		members = append(members, member)
		o := KubeHAOptions{NodeName: name, AdvertiseAddress: n.Host.IP, ControlPlaneEndpoint: hostPort(vip, kubeadmAPIServerPort)}
		if i > 0 {
			CopyKubeadmSharedPKI(t, c.Nodes[0].Root, n.Root)
			o.JoinEtcd = slices.Clone(members)
			// What `kubeadm join phase control-plane-join etcd` does
			// first: the member is added, then its etcd starts.
			c.Nodes[0].addMember(t, name, n.PeerURL())
		}
		KubeadmControlPlaneNode(t, n.Root, o)
		n.StartKubelet(t)
		n.WaitEtcd(t)
	}
	for _, n := range c.Nodes {
		n.WaitAPIServer(t)
	}
	// As StartKubeadmHost does, and kubeadm init: admin.conf's group is
	// bound to cluster-admin, with super-admin.conf, which only the first
	// node has.
	first := c.Nodes[0]
	first.Kubectl(t, "--kubeconfig", first.Path(KubernetesDir+"/super-admin.conf"),
		"create", "clusterrolebinding", "kubeadm:cluster-admins",
		"--clusterrole=cluster-admin", "--group=kubeadm:cluster-admins")
	return c
}

func (c *KubeHA) addNode(t testing.TB, name string) *KubeNode {
	t.Helper()
	n := &KubeNode{Name: name, Host: c.Network.AddHost(t, name), dir: t.TempDir()}
	n.Root = filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(n.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	c.Nodes = append(c.Nodes, n)
	return n
}

// Node returns the node called name, or fails the test.
func (c *KubeHA) Node(t testing.TB, name string) *KubeNode {
	t.Helper()
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no node %s in the cluster", name)
	return nil
}

// Replace stands for a node lost for good and a blank machine put in its
// place: the old node's kubelet stops, its host is removed (its root stays
// on disk, for a test to compare with), and a new host of the same name
// comes up with a new address and an empty root. No kubelet runs on it
// until StartKubelet.
func (c *KubeHA) Replace(t testing.TB, name string) *KubeNode {
	t.Helper()
	old := c.Node(t, name)
	old.StopKubelet()
	old.Host.Remove(t)
	n := &KubeNode{Name: name, Host: c.Network.AddHost(t, name), dir: t.TempDir()}
	n.Root = filepath.Join(t.TempDir(), name+"-new")
	if err := os.MkdirAll(n.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	c.Nodes[slices.Index(c.Nodes, old)] = n
	return n
}

// addMember adds an etcd member through this node's, retrying for as long
// as etcd refuses with "unhealthy cluster": it adds a voting member only
// once every started member has been connected for a few seconds, and
// kubeadm's join retries the same way.
func (n *KubeNode) addMember(t testing.TB, name, peerURL string) {
	t.Helper()
	n.wait(t, "etcd", func() error {
		_, err := n.TryEtcdctl("member", "add", name, "--peer-urls="+peerURL)
		if err != nil && !strings.Contains(err.Error(), "unhealthy cluster") {
			t.Fatal(err)
		}
		return err
	})
}

// Stop stops every node's kubelet and its pods, as when every
// control-plane machine goes down.
func (c *KubeHA) Stop() {
	for _, n := range c.Nodes {
		n.StopKubelet()
	}
}

// Path returns where an absolute host path is under the node's root.
func (n *KubeNode) Path(p string) string { return hostPath(n.Root, p) }

// PeerURL and ClientURL are the node's etcd URLs as kubeadm writes them.
func (n *KubeNode) PeerURL() string {
	return "https://" + hostPort(n.Host.IP, kubeadmEtcdPeerPort)
}

// ClientURL is the node's etcd client URL as kubeadm writes it.
func (n *KubeNode) ClientURL() string {
	return "https://" + hostPort(n.Host.IP, kubeadmEtcdClientPort)
}

// APIServerURL is the node's own API server, at its address.
func (n *KubeNode) APIServerURL() string {
	return "https://" + hostPort(n.Host.IP, kubeadmAPIServerPort)
}

// StartKubelet starts a kubelet on the node, which runs whatever static
// pods its manifests directory holds, inside the node's namespace.
func (n *KubeNode) StartKubelet(t testing.TB) *Kubelet {
	t.Helper()
	n.StopKubelet()
	n.Kubelet = StartHostKubelet(t, n.Root, n.Host)
	return n.Kubelet
}

// StopKubelet stops the node's kubelet and every pod it runs.
func (n *KubeNode) StopKubelet() {
	if n.Kubelet != nil {
		n.Kubelet.Stop()
		n.Kubelet = nil
	}
}

// Etcdctl runs etcdctl inside the node's namespace against the node's own
// member, with the apiserver-etcd-client credentials under its root, and
// returns its standard output. A later --endpoints in args wins. A
// failure fails the test.
func (n *KubeNode) Etcdctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.etcdctl("", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// EtcdctlInput is Etcdctl with input on its standard input (etcdctl txn).
func (n *KubeNode) EtcdctlInput(t testing.TB, input string, args ...string) string {
	t.Helper()
	out, err := n.etcdctl(input, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryEtcdctl is Etcdctl returning the failure rather than failing the
// test, for polls.
func (n *KubeNode) TryEtcdctl(args ...string) (string, error) {
	return n.etcdctl("", args...)
}

func (n *KubeNode) etcdctl(input string, args ...string) (string, error) {
	bin, ok := lookBinary("etcdctl")
	if !ok {
		return "", fmt.Errorf("etcdctl not found: run `make tools`")
	}
	pki := n.Path(KubePKIDir)
	full := append([]string{
		"--endpoints=" + n.ClientURL(),
		"--cacert=" + filepath.Join(pki, "etcd/ca.crt"),
		"--cert=" + filepath.Join(pki, "apiserver-etcd-client.crt"),
		"--key=" + filepath.Join(pki, "apiserver-etcd-client.key"),
		"--dial-timeout=5s", "--command-timeout=15s",
	}, args...)
	return n.run(input, bin, full...)
}

// Kubectl runs kubectl inside the node's namespace with the node's
// admin.conf, at the node's own API server (admin.conf names the
// controlPlaneEndpoint, where nothing listens), and returns its standard
// output. A --kubeconfig in args overrides admin.conf. A failure fails the
// test.
func (n *KubeNode) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (n *KubeNode) kubectl(args ...string) (string, error) {
	bin, ok := lookBinary("kubectl")
	if !ok {
		return "", fmt.Errorf("kubectl not found: run `make tools`")
	}
	full := append([]string{
		"--kubeconfig", n.Path(KubernetesDir + "/admin.conf"),
		"--server", n.APIServerURL(),
		"--cache-dir", filepath.Join(n.dir, "kubectl-cache"),
		"--request-timeout=15s",
	}, args...)
	return n.run("", bin, full...)
}

func (n *KubeNode) run(input, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubeCommandLimit)
	defer cancel()
	cmd := n.Host.Command(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if input != "" {
		cmd.Stdin = strings.NewReader(input)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %s %s: %v\n%s", n.Name, filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// WaitEtcd waits until the node's etcd member answers a health check
// (which needs the cluster's quorum), or fails the test with its log.
func (n *KubeNode) WaitEtcd(t testing.TB) {
	t.Helper()
	n.wait(t, "etcd", func() error {
		_, err := n.TryEtcdctl("endpoint", "health")
		return err
	})
}

// WaitAPIServer waits until the node's kube-apiserver answers /readyz, or
// fails the test with its log.
func (n *KubeNode) WaitAPIServer(t testing.TB) {
	t.Helper()
	n.wait(t, "kube-apiserver", func() error {
		_, err := n.kubectl("get", "--raw", "/readyz")
		return err
	})
}

func (n *KubeNode) wait(t testing.TB, pod string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(haReadyLimit)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log := ""
			if n.Kubelet != nil {
				log = n.Kubelet.Logs(pod)
				if len(log) > 4000 {
					log = log[len(log)-4000:]
				}
			}
			t.Fatalf("%s: %s not ready after %s: %v\n%s log (tail):\n%s", n.Name, pod, haReadyLimit, err, pod, log)
		}
		time.Sleep(haPoll)
	}
}

// CopyKubeadmSharedPKI copies KubeadmSharedPKI from one node's root to
// another's, with their modes, as an operator does before `kubeadm join
// --control-plane` without --certificate-key.
func CopyKubeadmSharedPKI(t testing.TB, fromRoot, toRoot string) {
	t.Helper()
	for _, f := range KubeadmSharedPKI {
		src := hostPath(fromRoot, KubePKIDir+"/"+f)
		dst := hostPath(toRoot, KubePKIDir+"/"+f)
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("shared PKI: %v", err)
		}
		fi, err := os.Stat(src)
		if err != nil {
			t.Fatalf("shared PKI: %v", err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatalf("shared PKI: %v", err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatalf("shared PKI: %v", err)
		}
	}
}

// KubeadmControlPlaneNode runs, under root, the kubeadm phases that make
// one control-plane node of a stacked-etcd cluster without a kubelet:
// certificates (from the CAs under root when there are some, as on a
// joining node), kubeconfigs, control-plane and etcd manifests, all with
// the node's own name and address.
//
// A joining node (JoinEtcd set) gets them from `kubeadm init phase` with
// its own InitConfiguration rather than from `kubeadm join phase
// control-plane-prepare`: the join phases fetch the cluster's
// configuration from a running API server first (discovery), and their
// certs, kubeconfig and control-plane steps then do what the init phases
// do with the same configuration. The differences from a real join: no
// super-admin.conf (join makes none), and kubelet.conf embeds a client
// certificate, where a join has the kubelet bootstrap one. The etcd
// manifest is init's with --initial-cluster and
// --initial-cluster-state=existing set as `kubeadm join phase
// control-plane-join etcd` writes them, since that phase needs the live
// cluster.
func KubeadmControlPlaneNode(t testing.TB, root string, o KubeHAOptions) {
	t.Helper()
	root, err := filepath.Abs(root)
	if err != nil {
		t.Fatalf("kubeadm root: %v", err)
	}
	kubeadm := Binary(t, "kubeadm")
	version, err := kubeadmVersion(kubeadm)
	if err != nil {
		t.Fatal(err)
	}
	cfg := hostPath(root, kubeadmConfigPath)
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, haKubeadmConfig(o, version), 0o600); err != nil {
		t.Fatal(err)
	}
	phases := [][]string{{"certs", "all"}, {"kubeconfig", "all"}, {"control-plane", "all"}, {"etcd", "local"}}
	if len(o.JoinEtcd) > 0 {
		phases = [][]string{
			{"certs", "all"},
			{"kubeconfig", "admin"}, {"kubeconfig", "kubelet"},
			{"kubeconfig", "controller-manager"}, {"kubeconfig", "scheduler"},
			{"control-plane", "all"}, {"etcd", "local"},
		}
	}
	for _, phase := range phases {
		args := append([]string{"init", "phase"}, phase...)
		args = append(args, "--config", kubeadmConfigPath, "--rootfs", root)
		if out, err := runKubeadm(kubeadm, args); err != nil {
			t.Fatalf("%s: kubeadm %s: %v\n%s", o.NodeName, strings.Join(args, " "), err, out)
		}
	}
	if len(o.JoinEtcd) > 0 {
		manifest := hostPath(root, KubeManifestsDir+"/etcd.yaml")
		b, err := os.ReadFile(manifest)
		if err != nil {
			t.Fatal(err)
		}
		b, err = joinEtcdManifest(b, o.JoinEtcd)
		if err != nil {
			t.Fatalf("%s: %v", o.NodeName, err)
		}
		if err := os.WriteFile(manifest, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// initialClusterLine is the --initial-cluster line of kubeadm's etcd
// manifest, with its indentation.
var initialClusterLine = regexp.MustCompile(`(?m)^(\s*- )--initial-cluster=.*$`)

// joinEtcdManifest sets --initial-cluster to members and adds
// --initial-cluster-state=existing after it, as kubeadm's join writes
// them.
func joinEtcdManifest(b []byte, members []string) ([]byte, error) {
	m := initialClusterLine.FindSubmatch(b)
	if m == nil {
		return nil, fmt.Errorf("kubeadm's etcd manifest has no --initial-cluster line:\n%s", b)
	}
	indent := string(m[1])
	repl := indent + "--initial-cluster=" + strings.Join(members, ",") + "\n" + indent + "--initial-cluster-state=existing"
	return initialClusterLine.ReplaceAllLiteral(b, []byte(repl)), nil
}

// haKubeadmConfig is one node's kubeadm configuration. Certificate SANs
// are kubeadm's defaults (node name, address, localhost, the endpoint):
// the tests look for exactly what a real cluster's certificates carry.
func haKubeadmConfig(o KubeHAOptions, version string) []byte {
	return fmt.Appendf(nil, `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: %s
  bindPort: %d
nodeRegistration:
  name: %s
  # Set so that kubeadm does not probe for a container runtime.
  criSocket: unix:///var/run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %s
controlPlaneEndpoint: %q
certificatesDir: %s
etcd:
  local:
    dataDir: %s
`, o.AdvertiseAddress, kubeadmAPIServerPort, o.NodeName, version, o.ControlPlaneEndpoint, KubePKIDir, KubeEtcdDataDir)
}

// hostPodCommand returns the command line of the first container of a
// static pod manifest with only its host paths mapped under root, as
// StaticPodCommand maps them; addresses and ports stay as written.
func hostPodCommand(root, manifest string) ([]string, error) {
	argv, mounts, err := readStaticPod(manifest)
	if err != nil {
		return nil, err
	}
	r := podRewriter{root: root, mounts: mounts}
	out := []string{argv[0]}
	for _, a := range argv[1:] {
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
			a = k + "=" + r.path(v)
		}
		out = append(out, a)
	}
	return out, nil
}

// hostPort joins an address and a port, bracketing IPv6.
func hostPort(ip string, port int) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}
