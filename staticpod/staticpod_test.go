package staticpod

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The fixtures are what kubeadm's init phases wrote for a node cp1 at
// 198.18.0.11 whose API server encrypts Secrets (the config under
// /etc/kubernetes/enc), reads an audit policy mounted from /srv/audit, and
// whose etcd keeps its data on its own disk at /srv/etcd-disk/data.
func load(t *testing.T, name string) *Pod {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "kubeadm", name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFixturesAreThere(t *testing.T) {
	m, err := filepath.Glob(filepath.Join("testdata", "kubeadm", "*.yaml"))
	if err != nil || len(m) != 4 {
		t.Fatalf("want kubeadm's four manifests in testdata/kubeadm, found %v (%v)", m, err)
	}
}

func TestInputs(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string // host paths, a subset in order
		not  []string
	}{
		{"kube-apiserver.yaml",
			[]string{"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/sa.pub", "/etc/kubernetes/enc/encryption.yaml", "/srv/audit/policy.yaml"},
			[]string{"/var/log/kubernetes/audit.log", "/etc/kubernetes/audit/policy.yaml"}},
		{"etcd.yaml",
			[]string{"/etc/kubernetes/pki/etcd/server.crt", "/etc/kubernetes/pki/etcd/ca.crt"},
			[]string{"/srv/etcd-disk/data"}},
		{"kube-scheduler.yaml", []string{"/etc/kubernetes/scheduler.conf"}, nil},
		{"kube-controller-manager.yaml", []string{"/etc/kubernetes/controller-manager.conf", "/etc/kubernetes/pki/ca.key", "/etc/kubernetes/pki/sa.key"}, nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var got []string
			for _, in := range load(t, tc.file).Inputs() {
				got = append(got, in.Path)
			}
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("inputs %v lack %s", got, w)
				}
			}
			for _, n := range tc.not {
				if slices.Contains(got, n) {
					t.Errorf("inputs %v hold %s, which is not an input of the host", got, n)
				}
			}
		})
	}
}

func TestHostPath(t *testing.T) {
	p := load(t, "kube-apiserver.yaml")
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/etc/kubernetes/audit/policy.yaml", "/srv/audit/policy.yaml", true},
		{"/etc/kubernetes/pki/etcd/ca.crt", "/etc/kubernetes/pki/etcd/ca.crt", true},
		{"/etc/kubernetes/pki", "/etc/kubernetes/pki", true},
		{"/etc/kubernetes/pkix/a", "", false},
		{"/usr/local/bin/kube-apiserver", "", false},
	} {
		got, ok := p.HostPath(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("HostPath(%s) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestEtcdMember(t *testing.T) {
	e, err := load(t, "etcd.yaml").EtcdMember()
	if err != nil {
		t.Fatal(err)
	}
	if e.Name != "cp1" || e.DataDir != "/srv/etcd-disk/data" || e.HostDataDir != "/srv/etcd-disk/data" {
		t.Fatalf("member %+v", e)
	}
	if e.Certificates["peer-cert-file"] != "/etc/kubernetes/pki/etcd/peer.crt" {
		t.Fatalf("certificates %v", e.Certificates)
	}
	if _, err := load(t, "kube-apiserver.yaml").EtcdMember(); err == nil {
		t.Fatal("an API server pod read as an etcd member")
	}
	noMount := strings.Replace(readFixture(t, "etcd.yaml"), "    - mountPath: /srv/etcd-disk/data\n      name: etcd-data\n", "", 1)
	p, err := Parse([]byte(noMount))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.EtcdMember(); !errors.Is(err, ErrNoDataDir) {
		t.Fatalf("an etcd without its data dir mounted: %v, want ErrNoDataDir", err)
	}
}

func readFixture(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "kubeadm", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// A node's etcd manifest names the node everywhere kubeadm does, and its
// data dir's flag, volume and mount agree.
func TestSetEtcdNode(t *testing.T) {
	p := load(t, "etcd.yaml")
	err := p.SetEtcdNode(EtcdNode{
		Name: "cp3", PeerURL: "https://198.18.0.23:2380", ClientURL: "https://198.18.0.23:2379",
		InitialCluster: "cp1=https://198.18.0.11:2380,cp3=https://198.18.0.23:2380", Token: "kdr-x",
		DataDir: "/data/etcd",
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"name": "cp3", "advertise-client-urls": "https://198.18.0.23:2379",
		"listen-client-urls": "https://127.0.0.1:2379,https://198.18.0.23:2379",
		"listen-peer-urls":   "https://198.18.0.23:2380", "initial-cluster-token": "kdr-x",
		"data-dir": "/data/etcd",
	} {
		if got, _ := q.Flag(flag); got != want {
			t.Errorf("--%s=%s, want %s", flag, got, want)
		}
	}
	if got := q.Annotation(EtcdClientURLsAnnotation); got != "https://198.18.0.23:2379" {
		t.Errorf("annotation %s", got)
	}
	e, err := q.EtcdMember()
	if err != nil || e.HostDataDir != "/data/etcd" {
		t.Fatalf("data dir mounted from %q (%v), want /data/etcd", e.HostDataDir, err)
	}
	if strings.Contains(string(raw), "/srv/etcd-disk") || strings.Contains(string(raw), "198.18.0.11:2379") {
		t.Fatalf("the old node is still named:\n%s", raw)
	}
}

func TestSetAPIServerNode(t *testing.T) {
	p := load(t, "kube-apiserver.yaml")
	p.SetAPIServerNode("198.18.0.23")
	raw, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "198.18.0.11") {
		t.Fatalf("the old address is still there:\n%s", raw)
	}
	if got, _ := p.Flag("advertise-address"); got != "198.18.0.23" {
		t.Fatalf("advertise-address %s", got)
	}
	if hosts := p.ProbeHosts(); len(hosts) != 3 || slices.ContainsFunc(hosts, func(h string) bool { return h != "198.18.0.23" }) {
		t.Fatalf("probes ask %v", hosts)
	}
	if got := p.Annotation(APIServerEndpointAnnotation); got != "198.18.0.23:6443" {
		t.Fatalf("annotation %s", got)
	}
}

func TestFlags(t *testing.T) {
	p, err := Parse([]byte(`apiVersion: v1
kind: Pod
metadata: {name: etcd}
spec:
  containers:
  - name: etcd
    command: [/usr/local/bin/etcd, --name, cp1, --data-dir=/a]
    args: [--data-dir=/b]
`))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := p.Flag("name"); v != "cp1" {
		t.Fatalf("--name %q", v)
	}
	if v, _ := p.Flag("data-dir"); v != "/b" {
		t.Fatalf("the last --data-dir wins: %q", v)
	}
	if p.Component() != "etcd" {
		t.Fatalf("component %q", p.Component())
	}
	p.SetFlag("data-dir", "/c")
	p.SetFlag("name", "cp2")
	p.SetFlag("new-flag", "x")
	for flag, want := range map[string]string{"data-dir": "/c", "name": "cp2", "new-flag": "x"} {
		if v, _ := p.Flag(flag); v != want {
			t.Errorf("--%s=%q, want %q", flag, v, want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for name, raw := range map[string]string{
		"not yaml":     "{",
		"a deployment": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
		"no command":   "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: x\n",
		"too large":    "apiVersion: v1\nkind: Pod\n#" + strings.Repeat("x", MaxManifestSize),
	} {
		if _, err := Parse([]byte(raw)); !errors.Is(err, ErrNotPod) {
			t.Errorf("%s: %v, want ErrNotPod", name, err)
		}
	}
}

// The files a config names in turn are found, relative names resolved
// against its directory, inline data and URLs left alone.
func TestReferences(t *testing.T) {
	apiserver := `apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, labels: {component: kube-apiserver}}
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --admission-control-config-file=/etc/kubernetes/adm/admission.yaml
    - --authorization-config=/etc/kubernetes/adm/authz.yaml
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --client-ca-file=/etc/ssl/certs/ca-certificates.crt
    volumeMounts:
    - {name: adm, mountPath: /etc/kubernetes/adm}
    - {name: pki, mountPath: /etc/kubernetes/pki}
    - {name: ca, mountPath: /etc/ssl/certs}
  volumes:
  - {name: adm, hostPath: {path: /etc/kubernetes/adm}}
  - {name: pki, hostPath: {path: /etc/kubernetes/pki}}
  - {name: ca, hostPath: {path: /etc/ssl/certs}}
`
	files := map[string]string{
		"/etc/kubernetes/adm/admission.yaml": `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ImagePolicyWebhook
  path: imagepolicy.yaml
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: /etc/kubernetes/adm/webhooks.kubeconfig
`,
		"/etc/kubernetes/adm/imagepolicy.yaml": "imagePolicy:\n  kubeConfigFile: /etc/kubernetes/adm/imagepolicy.kubeconfig\n",
		"/etc/kubernetes/adm/imagepolicy.kubeconfig": `apiVersion: v1
kind: Config
clusters:
- name: x
  cluster: {server: "https://policy.example:443", certificate-authority: policy-ca.crt}
users:
- name: x
  user: {client-certificate-data: AAAA, client-key: /etc/kubernetes/adm/client.key}
`,
		"/etc/kubernetes/adm/webhooks.kubeconfig": "apiVersion: v1\nkind: Config\n",
		"/etc/kubernetes/adm/authz.yaml": `apiVersion: apiserver.config.k8s.io/v1
kind: AuthorizationConfiguration
authorizers:
- type: Webhook
  name: w
  webhook:
    connectionInfo: {type: KubeConfigFile, kubeConfigFile: /etc/kubernetes/adm/authz.kubeconfig}
    matchConditions:
    - expression: "request.path != '/healthz'"
- {type: Node, name: node}
`,
		"/etc/kubernetes/adm/authz.kubeconfig": "apiVersion: v1\nkind: Config\n",
	}
	p, err := Parse([]byte(apiserver))
	if err != nil {
		t.Fatal(err)
	}
	read := func(path string) ([]byte, error) {
		if s, ok := files[path]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	}
	refs, err := References([]*Pod{p}, read)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range refs {
		got = append(got, r.Path)
	}
	want := []string{
		"/etc/kubernetes/adm/admission.yaml",
		"/etc/kubernetes/adm/imagepolicy.yaml",
		"/etc/kubernetes/adm/imagepolicy.kubeconfig",
		"/etc/kubernetes/adm/policy-ca.crt",
		"/etc/kubernetes/adm/client.key",
		"/etc/kubernetes/adm/webhooks.kubeconfig",
		"/etc/kubernetes/adm/authz.yaml",
		"/etc/kubernetes/adm/authz.kubeconfig",
		"/etc/kubernetes/pki/apiserver.crt",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("references\n got %v\nwant %v", got, want)
	}
	if refs[3].Via != "/etc/kubernetes/adm/imagepolicy.kubeconfig" || refs[3].Flag != "admission-control-config-file" {
		t.Fatalf("the CA is named by %+v", refs[3])
	}

	// A config that cannot be read fails, naming the flag.
	delete(files, "/etc/kubernetes/adm/authz.yaml")
	if _, err := References([]*Pod{p}, read); err == nil || !strings.Contains(err.Error(), "--authorization-config") {
		t.Fatalf("a missing config: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	m, _ := filepath.Glob(filepath.Join("testdata", "kubeadm", "*.yaml"))
	for _, name := range m {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := Parse(raw)
		if err != nil {
			return
		}
		for _, in := range p.Inputs() {
			Nested(in, raw)
		}
		_, _ = p.EtcdMember()
		p.SetAPIServerNode("198.18.0.1")
		if _, err := p.Marshal(); err != nil {
			t.Fatal(err)
		}
	})
}
