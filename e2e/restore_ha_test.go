package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kdr-io/kdr/internal/testenv"
)

const (
	// haApplyTimeout bounds each node's `kdr restore apply`: it waits for
	// the other nodes' members to come up and for its API server, which
	// three at once on a 2-core machine make slow.
	haApplyTimeout = 8 * time.Minute
	// haApplyWait is apply's own --wait for etcd and the API server.
	haApplyWait = "5m"
	// haApplyStagger is the gap between starting one node's apply and
	// the next: operators on three machines do not start at once.
	haApplyStagger = 3 * time.Second
	// haRawKeys is how many keys the test writes into etcd directly.
	haRawKeys = 60
)

// haNodeCerts are the files of a kubeadm PKI that name their node.
var haNodeCerts = []string{"apiserver.crt", "apiserver.key", "etcd/server.crt", "etcd/server.key", "etcd/peer.crt", "etcd/peer.key"}

// haNodes are the control-plane nodes, first member first.
var haNodes = []string{"cp1", "cp2", "cp3"}

// haOriginal is what kubeadm made on a node before the loss, read for
// comparison after the restore.
type haOriginal struct {
	ip   string
	root string
	// kubeletConf is kubelet.conf as kubeadm wrote it.
	kubeletConf []byte
	// certs are the node's own serving certificates and keys, by path
	// under the PKI directory.
	certs map[string][]byte
	// servers maps each kubeconfig kubeadm wrote on the node to the API
	// server URLs it names.
	servers map[string][]string
}

// TestRestoreKubeadmHAReplacedNode is the restore of a three-node kubeadm
// control plane with stacked etcd after the loss of quorum: cp1 and cp2
// lost their etcd data, cp3 is gone for good and replaced by a blank
// machine with a new address. Each node runs its own `kdr restore apply`
// inside its own network namespace, a few seconds after the previous
// one, with a kubelet that runs whatever static pods the restore puts in
// place at the addresses they name. The cluster must come back with
// quorum and every key, and every node's manifests, kubeconfigs and
// certificates must name that node; cp2, which survived, keeps its own
// kubelet.conf.
func TestRestoreKubeadmHAReplacedNode(t *testing.T) {
	start := time.Now()
	c := testenv.StartKubeadmHA(t, haNodes...)
	t.Logf("three-node control plane up in %s", time.Since(start).Round(time.Second))
	cp1 := c.Node(t, "cp1")

	// Objects through the API and keys straight into etcd.
	configmaps := map[string]string{}
	for _, ns := range []string{"shop", "billing"} {
		cp1.Kubectl(t, "create", "namespace", ns)
		for i := range 3 {
			name, v := fmt.Sprintf("cm-%d", i), fmt.Sprintf("%s-%d", ns, i)
			cp1.Kubectl(t, "-n", ns, "create", "configmap", name, "--from-literal=v="+v)
			configmaps[ns+"/"+name] = v
		}
	}
	rawKeys := map[string]string{}
	var txn strings.Builder
	txn.WriteString("\n") // no compares
	for i := range haRawKeys {
		k, v := fmt.Sprintf("%skey-%03d", rawPrefix, i), fmt.Sprintf("value-%d", i)
		rawKeys[k] = v
		fmt.Fprintf(&txn, "put %s %s\n", k, v)
	}
	txn.WriteString("\n\n") // no failure ops
	if out := c.Node(t, "cp2").EtcdctlInput(t, txn.String(), "txn"); !strings.HasPrefix(out, "SUCCESS") {
		t.Fatalf("etcdctl txn of %d puts: %s", haRawKeys, out)
	}

	// What kubeadm made on each node, before anything is lost.
	orig := map[string]haOriginal{}
	for _, n := range c.Nodes {
		o := haOriginal{ip: n.Host.IP, root: n.Root, servers: map[string][]string{},
			kubeletConf: testenv.ReadFile(t, n.Path(testenv.KubernetesDir+"/kubelet.conf")), certs: map[string][]byte{}}
		for _, f := range haNodeCerts {
			o.certs[f] = testenv.ReadFile(t, n.Path(testenv.KubePKIDir+"/"+f))
		}
		for _, conf := range kubeconfigNames(t, n.Root) {
			o.servers[conf] = kubeconfigServers(t, n.Path(testenv.KubernetesDir+"/"+conf))
		}
		orig[n.Name] = o
		t.Logf("kubeadm on %s (%s): kubeconfig servers %v", n.Name, n.Host.IP, o.servers)
	}
	origCA := testenv.ReadFile(t, cp1.Path(testenv.KubePKIDir+"/ca.crt"))
	origEtcdCA := testenv.ReadFile(t, cp1.Path(testenv.KubePKIDir+"/etcd/ca.crt"))

	// The backup, taken on cp1 as its agent would.
	w := &world{dir: t.TempDir()}
	w.usb = filepath.Join(w.dir, "usb")
	testenv.Mkdir(t, w.usb, 0o755)
	w.identity, w.recipient = w.generateKey(t, "operator.key")
	w.signingKey, w.signingPub = generateSigningKey(t, w.dir)
	cfg := writeHAConfig(t, w, c)
	r := kdrOn(t, cp1.Host, kdrTimeout, "--config", cfg, "backup", "--root", cp1.Root, "--node", "cp1")
	wantExit(t, r, 0)
	id := backupID(t, r)
	m := parseManifest(t, testenv.ReadFile(t, w.usbPath(id, "manifest.json")))
	t.Logf("backup %s at revision %d", id, m.Etcd.Revision)

	// The loss: every machine down; cp1 and cp2 lose their etcd data,
	// cp2's /etc/kubernetes survives as it was; cp3 is replaced by a
	// blank machine with a new address.
	c.Stop()
	for _, name := range []string{"cp1", "cp2"} {
		if err := os.RemoveAll(c.Node(t, name).Path(testenv.KubeEtcdDataDir)); err != nil {
			t.Fatal(err)
		}
	}
	cp3 := c.Replace(t, "cp3")
	if cp3.Host.IP == orig["cp3"].ip {
		t.Fatalf("the replacement cp3 has the lost one's address %s", cp3.Host.IP)
	}
	t.Logf("cp3 replaced: %s -> %s", orig["cp3"].ip, cp3.Host.IP)

	// The plan names the new address; each node then runs its own apply.
	var nodeIPs []string
	for _, n := range c.Nodes {
		nodeIPs = append(nodeIPs, "--node-ip", n.Name+"="+n.Host.IP)
	}
	r = runKdr(t, nil, append([]string{"--config", cfg, "restore", "plan", "-o", "json"}, nodeIPs...)...)
	wantExit(t, r, 0)
	var plan planDoc
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
		t.Fatalf("restore plan -o json: %v\n%s", err, r)
	}
	var wantNodes []planNode
	for _, n := range c.Nodes {
		wantNodes = append(wantNodes, planNode{Name: n.Name, IP: n.Host.IP, PeerURL: n.PeerURL(), ClientURL: n.ClientURL()})
	}
	if !slices.Equal(plan.Options.Nodes, wantNodes) {
		t.Fatalf("the plan's nodes are %+v, want %+v", plan.Options.Nodes, wantNodes)
	}
	applyStart := time.Now()
	results := applyOnEveryNode(t, c, cfg, w.identity, nodeIPs)
	t.Logf("the three applies took %s", time.Since(applyStart).Round(time.Second))
	failed := false
	for _, n := range c.Nodes {
		res := results[n.Name]
		if res.err != nil || res.r.code != 0 {
			failed = true
			t.Errorf("restore apply on %s failed: %v\n%s\njournal:\n%s", n.Name, res.err, res.r,
				journalOf(n.Path(filepath.Join("/var/lib/kdr/restore", cluster, id)), n.Name))
		} else {
			t.Logf("restore apply on %s:\n%s", n.Name, res.r.stdout)
		}
	}
	if failed {
		// The files are still worth checking: they say what the restore
		// left on each node.
		t.Log("some applies failed; checking the files each left behind")
	}

	// Every node's files name that node.
	var planIPs []string
	for _, n := range c.Nodes {
		planIPs = append(planIPs, n.Host.IP)
	}
	others := func(self string) []string {
		var out []string
		for _, ip := range append(slices.Clone(planIPs), orig["cp3"].ip) {
			if ip != self {
				out = append(out, ip)
			}
		}
		return out
	}
	for _, n := range c.Nodes {
		f := nodeFiles{t: t, node: n, others: others(n.Host.IP), endpoint: c.Endpoint}
		f.checkEtcdManifest(plan)
		f.checkAPIServerManifest()
		f.checkCA("ca.crt", origCA)
		f.checkCA("etcd/ca.crt", origEtcdCA)
		f.checkServingCerts()
		f.checkKubeletConf()
		f.checkKubeconfigServers(expectedServers(orig[n.Name], n.Host.IP))
	}
	cp2 := c.Node(t, "cp2")
	if got := testenv.ReadFile(t, cp2.Path(testenv.KubernetesDir+"/kubelet.conf")); !bytes.Equal(got, orig["cp2"].kubeletConf) {
		t.Errorf("cp2 %s/kubelet.conf: the surviving node's own kubelet.conf was replaced (%d bytes, was %d): a node that kept a valid one must keep it",
			testenv.KubernetesDir, len(got), len(orig["cp2"].kubeletConf))
	}
	// Its serving certificates and keys too: they name it and chain to
	// the restored CAs, so nothing is issued anew.
	for _, f := range haNodeCerts {
		if got := testenv.ReadFile(t, cp2.Path(testenv.KubePKIDir+"/"+f)); !bytes.Equal(got, orig["cp2"].certs[f]) {
			t.Errorf("cp2 %s/%s: the surviving node's own file was replaced", testenv.KubePKIDir, f)
		}
	}

	// Quorum, members and data.
	checkHAEtcd(t, c, plan, rawKeys, m.Etcd.Revision)

	// The objects through the new machine's own API server.
	if failed {
		t.FailNow()
	}
	for _, n := range c.Nodes {
		n.WaitAPIServer(t)
	}
	for key, want := range configmaps {
		ns, name, _ := strings.Cut(key, "/")
		if got := cp3.Kubectl(t, "-n", ns, "get", "configmap", name, "-o", "jsonpath={.data.v}"); got != want {
			t.Errorf("configmap %s through cp3's API server: v = %q, want %q", key, got, want)
		}
	}
	t.Logf("whole test: %s", time.Since(start).Round(time.Second))
}

// writeHAConfig writes the kdr config of the cluster: its three members'
// endpoints, cp1's etcd client credentials, and an inventory of the three
// hosts as they are before the loss.
func writeHAConfig(t *testing.T, w *world, c *testenv.KubeHA) string {
	t.Helper()
	pki := c.Node(t, "cp1").Path(testenv.KubePKIDir)
	var eps []string
	var hosts strings.Builder
	for _, n := range c.Nodes {
		eps = append(eps, n.ClientURL())
		fmt.Fprintf(&hosts, "        - {name: %s, ip: %s, roles: [control-plane, etcd]}\n", n.Name, n.Host.IP)
	}
	spec := configSpec{
		endpoints:  eps,
		ca:         filepath.Join(pki, "etcd/ca.crt"),
		cert:       filepath.Join(pki, "apiserver-etcd-client.crt"),
		key:        filepath.Join(pki, "apiserver-etcd-client.key"),
		recipients: []string{w.recipient}, signingKey: w.signingKey, trustedKeys: []string{w.signingPub},
		usb: w.usb, incompleteGrace: "24h",
	}
	old := "      apiEndpoint: https://10.0.0.10:6443\n      hosts:\n        - {name: cp1, ip: 10.0.0.11, roles: [control-plane, etcd]}\n"
	rendered := spec.render()
	if !strings.Contains(rendered, old) {
		t.Fatalf("the rendered config's inventory is not the one this test replaces:\n%s", rendered)
	}
	rendered = strings.Replace(rendered, old, "      apiEndpoint: "+c.Endpoint+"\n      hosts:\n"+hosts.String(), 1)
	path := filepath.Join(w.dir, "kdr.yaml")
	testenv.WriteFile(t, path, []byte(rendered), 0o600)
	return path
}

// kdrOn runs kdr inside host's network namespace, bounded by limit; a run
// that cannot start or hangs fails the test.
func kdrOn(t *testing.T, host *testenv.Host, limit time.Duration, args ...string) result {
	t.Helper()
	r, err := execKdrOn(t.Context(), host, limit, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// execKdrOn is execKdr inside host's network namespace. It does not touch
// a testing.T, so it may run on a goroutine of its own.
func execKdrOn(ctx context.Context, host *testenv.Host, limit time.Duration, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := host.Command(ctx, kdrBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		return r, fmt.Errorf("kdr on %s was still running after %s and was killed: %w\n%s", host.Name, limit, ctx.Err(), r)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		return r, fmt.Errorf("run kdr on %s: %w", host.Name, err)
	}
	return r, nil
}

type applyResult struct {
	r   result
	err error
}

// applyOnEveryNode starts a kubelet and then `kdr restore apply` on each
// node, haApplyStagger apart, and waits for every apply to end.
func applyOnEveryNode(t *testing.T, c *testenv.KubeHA, cfg, identity string, nodeIPs []string) map[string]applyResult {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	results := map[string]applyResult{}
	for i, n := range c.Nodes {
		if i > 0 {
			time.Sleep(haApplyStagger)
		}
		// A machine that boots runs its kubelet: on cp1 and cp2 it
		// starts the pods of the manifests that survived, until the
		// restore moves them aside.
		n.StartKubelet(t)
		args := append([]string{"--config", cfg, "restore", "apply", "--node", n.Name, "--root", n.Root,
			"--identity", identity, "--wait", haApplyWait}, nodeIPs...)
		wg.Go(func() {
			r, err := execKdrOn(t.Context(), n.Host, haApplyTimeout, args...)
			mu.Lock()
			results[n.Name] = applyResult{r, err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return results
}

// journalOf is a node's restore journal, for failure messages.
func journalOf(staging, node string) string {
	b, err := os.ReadFile(filepath.Join(staging, "journal-"+node+".json"))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// kubeconfigNames lists the *.conf files of a root's /etc/kubernetes.
func kubeconfigNames(t *testing.T, root string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(root, "etc/kubernetes/*.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if len(matches) == 0 {
		t.Fatalf("no kubeconfigs under %s/etc/kubernetes", root)
	}
	var names []string
	for _, m := range matches {
		names = append(names, filepath.Base(m))
	}
	return names
}

// kubeconfigServers lists the server URLs of a kubeconfig's clusters.
func kubeconfigServers(t *testing.T, path string) []string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", path, err)
	}
	var out []string
	for _, cl := range cfg.Clusters {
		out = append(out, cl.Server)
	}
	slices.Sort(out)
	return out
}

// expectedServers is what kubeadm would have written on the node at its
// present address: its own files, with the address they were made for
// replaced by the node's (for the replacement cp3, the lost one's).
func expectedServers(o haOriginal, ip string) map[string][]string {
	want := map[string][]string{}
	for conf, servers := range o.servers {
		for _, s := range servers {
			want[conf] = append(want[conf], strings.ReplaceAll(s, "//"+o.ip+":", "//"+ip+":"))
		}
	}
	return want
}

// nodeFiles checks the files a restore left on one node, each problem
// reported with the node and the file.
type nodeFiles struct {
	t    *testing.T
	node *testenv.KubeNode
	// others are the addresses of every other node, present and lost: none
	// may appear where the node's own belongs.
	others   []string
	endpoint string
}

func (f nodeFiles) errorf(file, format string, args ...any) {
	f.t.Helper()
	f.t.Errorf("%s (%s) %s: %s", f.node.Name, f.node.Host.IP, file, fmt.Sprintf(format, args...))
}

// podDoc is the part of a static pod manifest these checks read.
type podDoc struct {
	Metadata struct {
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		Containers []struct {
			Command      []string `yaml:"command"`
			VolumeMounts []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
			} `yaml:"volumeMounts"`
			LivenessProbe  *probeDoc `yaml:"livenessProbe"`
			ReadinessProbe *probeDoc `yaml:"readinessProbe"`
			StartupProbe   *probeDoc `yaml:"startupProbe"`
		} `yaml:"containers"`
		Volumes []struct {
			Name     string `yaml:"name"`
			HostPath *struct {
				Path string `yaml:"path"`
			} `yaml:"hostPath"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

type probeDoc struct {
	HTTPGet *struct {
		Host string `yaml:"host"`
		Port any    `yaml:"port"`
		Path string `yaml:"path"`
	} `yaml:"httpGet"`
}

// pod reads a manifest of the node; ok is false (and the problem
// reported) when it is missing or unreadable.
func (f nodeFiles) pod(name string) (file string, p podDoc, flags map[string]string, ok bool) {
	f.t.Helper()
	file = testenv.KubeManifestsDir + "/" + name
	b, err := os.ReadFile(f.node.Path(file))
	if err != nil {
		f.errorf(file, "%v", err)
		return file, p, nil, false
	}
	if err := yaml.Unmarshal(b, &p); err != nil || len(p.Spec.Containers) == 0 {
		f.errorf(file, "not a static pod with a container: %v", err)
		return file, p, nil, false
	}
	flags = map[string]string{}
	for _, a := range p.Spec.Containers[0].Command {
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
			flags[k] = v
		}
	}
	return file, p, flags, true
}

// checkEtcdManifest: the member's name, URLs and cluster are the plan's
// for this node, kubeadm's client-URL annotation agrees, and the data dir
// flag, its volume and the data on disk agree.
func (f nodeFiles) checkEtcdManifest(plan planDoc) {
	f.t.Helper()
	file, p, flags, ok := f.pod("etcd.yaml")
	if !ok {
		return
	}
	n := f.node
	var initial []string
	for _, pn := range plan.Options.Nodes {
		initial = append(initial, pn.Name+"="+pn.PeerURL)
	}
	want := map[string]string{
		"--name":                        n.Name,
		"--initial-advertise-peer-urls": n.PeerURL(),
		"--listen-peer-urls":            n.PeerURL(),
		"--advertise-client-urls":       n.ClientURL(),
		"--initial-cluster":             strings.Join(initial, ","),
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if flags[k] != want[k] {
			f.errorf(file, "%s=%s, want %s", k, flags[k], want[k])
		}
	}
	if l := strings.Split(flags["--listen-client-urls"], ","); !slices.Contains(l, n.ClientURL()) || !slices.Contains(l, "https://127.0.0.1:2379") {
		f.errorf(file, "--listen-client-urls=%s, want https://127.0.0.1:2379 and %s", flags["--listen-client-urls"], n.ClientURL())
	}
	for _, ip := range f.others {
		for k, v := range flags {
			if strings.Contains(v, "//"+ip+":") && k != "--initial-cluster" {
				f.errorf(file, "%s=%s names another node's address %s", k, v, ip)
			}
		}
	}
	const ann = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
	if got := p.Metadata.Annotations[ann]; got != n.ClientURL() {
		f.errorf(file, "annotation %s: %q, want %q", ann, got, n.ClientURL())
	}
	dataDir := flags["--data-dir"]
	if dataDir != testenv.KubeEtcdDataDir {
		f.errorf(file, "--data-dir=%s, want the plan's %s", dataDir, testenv.KubeEtcdDataDir)
	}
	var volume string
	for _, vm := range p.Spec.Containers[0].VolumeMounts {
		if filepath.Clean(vm.MountPath) == filepath.Clean(dataDir) {
			volume = vm.Name
		}
	}
	host := ""
	for _, v := range p.Spec.Volumes {
		if v.Name == volume && v.HostPath != nil {
			host = v.HostPath.Path
		}
	}
	switch {
	case volume == "":
		f.errorf(file, "no volume is mounted at --data-dir %s", dataDir)
	case host == "":
		f.errorf(file, "volume %s at --data-dir %s is not a hostPath", volume, dataDir)
	case filepath.Clean(host) != filepath.Clean(dataDir):
		f.errorf(file, "--data-dir %s is on host path %s, want %s as kubeadm mounts it", dataDir, host, dataDir)
	default:
		if _, err := os.Stat(n.Path(host + "/member/snap/db")); err != nil {
			f.errorf(file, "its data dir's host path %s holds no member: %v", host, err)
		}
	}
}

// checkAPIServerManifest: kube-apiserver advertises the node's address,
// its probes ask that address, and kubeadm's endpoint annotation says so.
func (f nodeFiles) checkAPIServerManifest() {
	f.t.Helper()
	file, p, flags, ok := f.pod("kube-apiserver.yaml")
	if !ok {
		return
	}
	ip := f.node.Host.IP
	if got := flags["--advertise-address"]; got != ip {
		f.errorf(file, "--advertise-address=%s, want %s", got, ip)
	}
	c := p.Spec.Containers[0]
	probes := 0
	for name, pr := range map[string]*probeDoc{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
		if pr == nil || pr.HTTPGet == nil {
			continue
		}
		probes++
		if pr.HTTPGet.Host != ip {
			f.errorf(file, "%s asks host %s, want %s", name, pr.HTTPGet.Host, ip)
		}
	}
	if probes == 0 {
		f.errorf(file, "no httpGet probe: kubeadm writes three")
	}
	const ann = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"
	if got, want := p.Metadata.Annotations[ann], ip+":6443"; got != want {
		f.errorf(file, "annotation %s: %q, want %q", ann, got, want)
	}
}

// checkCA: the restored CA is the cluster's, not one made anew.
func (f nodeFiles) checkCA(name string, want []byte) {
	f.t.Helper()
	file := testenv.KubePKIDir + "/" + name
	got, err := os.ReadFile(f.node.Path(file))
	if err != nil {
		f.errorf(file, "%v", err)
		return
	}
	if !bytes.Equal(got, want) {
		f.errorf(file, "differs from the cluster's CA")
	}
}

// checkServingCerts: the API server's and etcd's serving and peer
// certificates name the node and its address, no other node's, and chain
// to the restored CAs.
func (f nodeFiles) checkServingCerts() {
	f.t.Helper()
	for _, c := range []struct{ cert, ca string }{
		{"apiserver.crt", "ca.crt"},
		{"etcd/server.crt", "etcd/ca.crt"},
		{"etcd/peer.crt", "etcd/ca.crt"},
	} {
		file := testenv.KubePKIDir + "/" + c.cert
		cert, err := loadCert(f.node.Path(file))
		if err != nil {
			f.errorf(file, "%v", err)
			continue
		}
		ca, err := loadCert(f.node.Path(testenv.KubePKIDir + "/" + c.ca))
		if err != nil {
			f.errorf(testenv.KubePKIDir+"/"+c.ca, "%v", err)
			continue
		}
		if err := cert.CheckSignatureFrom(ca); err != nil {
			f.errorf(file, "not signed by the restored %s: %v", c.ca, err)
		}
		var ips []string
		for _, ip := range cert.IPAddresses {
			ips = append(ips, ip.String())
		}
		if !slices.Contains(ips, f.node.Host.IP) {
			f.errorf(file, "IP SANs %v lack the node's address %s", ips, f.node.Host.IP)
		}
		for _, o := range f.others {
			if slices.Contains(ips, o) {
				f.errorf(file, "IP SANs %v carry another node's address %s", ips, o)
			}
		}
		if !slices.Contains(cert.DNSNames, f.node.Name) {
			f.errorf(file, "DNS SANs %v lack the node's name %s", cert.DNSNames, f.node.Name)
		}
		for _, o := range haNodes {
			if o != f.node.Name && slices.Contains(cert.DNSNames, o) {
				f.errorf(file, "DNS SANs %v carry another node's name %s", cert.DNSNames, o)
			}
		}
	}
}

// checkKubeletConf: kubelet.conf authenticates as this node, with a
// client certificate from the restored CA.
func (f nodeFiles) checkKubeletConf() {
	f.t.Helper()
	file := testenv.KubernetesDir + "/kubelet.conf"
	cfg, err := clientcmd.LoadFromFile(f.node.Path(file))
	if err != nil {
		f.errorf(file, "%v", err)
		return
	}
	ctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		f.errorf(file, "no current context %q", cfg.CurrentContext)
		return
	}
	u, ok := cfg.AuthInfos[ctx.AuthInfo]
	if !ok {
		f.errorf(file, "no user %q", ctx.AuthInfo)
		return
	}
	certPEM := u.ClientCertificateData
	if len(certPEM) == 0 && u.ClientCertificate != "" {
		// A kubelet that rotated its certificate names its file, a host
		// path.
		if certPEM, err = os.ReadFile(f.node.Path(u.ClientCertificate)); err != nil {
			f.errorf(file, "its client certificate: %v", err)
			return
		}
	}
	keyPEM := u.ClientKeyData
	if len(keyPEM) == 0 && u.ClientKey != "" {
		if keyPEM, err = os.ReadFile(f.node.Path(u.ClientKey)); err != nil {
			f.errorf(file, "its client key: %v", err)
			return
		}
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		f.errorf(file, "its client certificate and key are no pair: %v", err)
	}
	cert, err := parsePEMCert(certPEM)
	if err != nil {
		f.errorf(file, "its client certificate: %v", err)
		return
	}
	user := "system:node:" + f.node.Name
	if cert.Subject.CommonName != user || !slices.Equal(cert.Subject.Organization, []string{"system:nodes"}) {
		f.errorf(file, "client certificate is CN=%s O=%v, want CN=%s O=[system:nodes]", cert.Subject.CommonName, cert.Subject.Organization, user)
	}
	ca, err := loadCert(f.node.Path(testenv.KubePKIDir + "/ca.crt"))
	if err != nil {
		f.errorf(testenv.KubePKIDir+"/ca.crt", "%v", err)
		return
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		f.errorf(file, "client certificate does not chain to the restored ca.crt: %v", err)
	}
}

// checkKubeconfigServers: every kubeconfig kubeadm made on the node
// points where kubeadm pointed it (the node's own API server, or the
// control-plane endpoint), and no kubeconfig names another node.
func (f nodeFiles) checkKubeconfigServers(want map[string][]string) {
	f.t.Helper()
	for _, conf := range kubeconfigNames(f.t, f.node.Root) {
		file := testenv.KubernetesDir + "/" + conf
		got := kubeconfigServers(f.t, f.node.Path(file))
		if w, ok := want[conf]; ok && !slices.Equal(got, w) {
			f.errorf(file, "servers %v, want %v as kubeadm writes it on this node", got, w)
		}
		for _, s := range got {
			u, err := url.Parse(s)
			if err != nil {
				f.errorf(file, "server %q: %v", s, err)
				continue
			}
			if slices.Contains(f.others, u.Hostname()) {
				f.errorf(file, "server %s is another node's API server", s)
			}
		}
	}
	for conf := range want {
		if _, err := os.Stat(f.node.Path(testenv.KubernetesDir + "/" + conf)); err != nil {
			f.errorf(testenv.KubernetesDir+"/"+conf, "kubeadm made it on this node, the restore left none: %v", err)
		}
	}
}

func loadCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parsePEMCert(b)
}

func parsePEMCert(b []byte) (*x509.Certificate, error) {
	certs, err := parsePEMCerts(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// etcdStatus is one element of `etcdctl endpoint status -w json`.
type etcdStatus struct {
	Endpoint string `json:"Endpoint"`
	Status   struct {
		Header struct {
			MemberID uint64 `json:"member_id"`
			Revision int64  `json:"revision"`
		} `json:"header"`
		Leader uint64 `json:"leader"`
	} `json:"Status"`
}

// checkHAEtcd: the restored members are the plan's, one of them leads,
// every key is back, and all members hold the same data at one revision.
func checkHAEtcd(t *testing.T, c *testenv.KubeHA, plan planDoc, rawKeys map[string]string, backupRev int64) {
	t.Helper()
	cp3 := c.Node(t, "cp3")
	out, err := cp3.TryEtcdctl("member", "list", "-w", "json")
	if err != nil {
		t.Errorf("etcd member list through the new cp3: %v", err)
		return
	}
	var list struct {
		Members []struct {
			ID         uint64   `json:"ID"`
			Name       string   `json:"name"`
			PeerURLs   []string `json:"peerURLs"`
			ClientURLs []string `json:"clientURLs"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	var got, want []string
	for _, m := range list.Members {
		got = append(got, fmt.Sprintf("%s peer=%s client=%s", m.Name, strings.Join(m.PeerURLs, ","), strings.Join(m.ClientURLs, ",")))
	}
	for _, n := range plan.Options.Nodes {
		want = append(want, fmt.Sprintf("%s peer=%s client=%s", n.Name, n.PeerURL, n.ClientURL))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("etcd members:\n  %s\nwant the plan's:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}

	var statuses []etcdStatus
	if out, err = cp3.TryEtcdctl("endpoint", "status", "--cluster", "-w", "json"); err != nil {
		t.Errorf("etcd endpoint status --cluster: %v", err)
		return
	}
	if err := json.Unmarshal([]byte(out), &statuses); err != nil {
		t.Fatalf("endpoint status: %v\n%s", err, out)
	}
	leaders := map[uint64]bool{}
	leading := 0
	minRev := int64(0)
	for _, s := range statuses {
		leaders[s.Status.Leader] = true
		if s.Status.Leader == s.Status.Header.MemberID {
			leading++
		}
		if minRev == 0 || s.Status.Header.Revision < minRev {
			minRev = s.Status.Header.Revision
		}
	}
	if len(statuses) != len(plan.Options.Nodes) || len(leaders) != 1 || leading != 1 || leaders[0] {
		t.Errorf("etcd endpoint status: %d members answered, leaders %v, %d lead itself; want %d members agreeing on one leader\n%s",
			len(statuses), slices.Collect(maps.Keys(leaders)), leading, len(plan.Options.Nodes), out)
	}
	if minRev <= backupRev {
		t.Errorf("restored etcd is at revision %d, not above the backup's %d", minRev, backupRev)
	}

	// Every key, read linearizably through the new member.
	out, err = cp3.TryEtcdctl("get", rawPrefix, "--prefix", "-w", "json")
	if err != nil {
		t.Errorf("etcd get %s: %v", rawPrefix, err)
	} else {
		var resp struct {
			Kvs []struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			} `json:"kvs"`
		}
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("get: %v\n%s", err, out)
		}
		back := map[string]string{}
		for _, kv := range resp.Kvs {
			k, _ := base64.StdEncoding.DecodeString(kv.Key)
			v, _ := base64.StdEncoding.DecodeString(kv.Value)
			back[string(k)] = string(v)
		}
		for k, v := range rawKeys {
			if back[k] != v {
				t.Errorf("restored etcd: %s = %q, want %q", k, back[k], v)
			}
		}
		if len(back) != len(rawKeys) {
			t.Errorf("restored etcd has %d keys under %s, want %d", len(back), rawPrefix, len(rawKeys))
		}
	}

	// The same data on every member, at a revision all have applied.
	var hashes []string
	seen := map[uint32]bool{}
	for _, n := range c.Nodes {
		out, err := n.TryEtcdctl("endpoint", "hashkv", "--rev", strconv.FormatInt(minRev, 10), "-w", "json")
		if err != nil {
			t.Errorf("etcd hashkv on %s at revision %d: %v", n.Name, minRev, err)
			continue
		}
		var hk []struct {
			HashKV struct {
				Hash uint32 `json:"hash"`
			} `json:"HashKV"`
		}
		if err := json.Unmarshal([]byte(out), &hk); err != nil || len(hk) != 1 {
			t.Errorf("hashkv on %s: %v\n%s", n.Name, err, out)
			continue
		}
		seen[hk[0].HashKV.Hash] = true
		hashes = append(hashes, fmt.Sprintf("%s=%d", n.Name, hk[0].HashKV.Hash))
	}
	if len(seen) != 1 {
		t.Errorf("etcd members hold different data at revision %d: hashkv %v", minRev, hashes)
	}
}
