package testenv

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestKubeadmHost runs a kubeadm host, writes objects through the API, and
// reads them back after etcd and kube-apiserver were stopped and started
// again from the same manifests.
func TestKubeadmHost(t *testing.T) {
	h := StartKubeadmHost(t, KubeOptions{NodeName: "cp1"})

	// The layout is the one a real kubeadm host has, under Root.
	for _, p := range []string{
		KubeManifestsDir + "/etcd.yaml",
		KubeManifestsDir + "/kube-apiserver.yaml",
		KubePKIDir + "/ca.key",
		KubePKIDir + "/etcd/ca.crt",
		KubernetesDir + "/admin.conf",
		KubeEtcdDataDir + "/member",
	} {
		if _, err := os.Stat(h.Path(p)); err != nil {
			t.Errorf("host file: %v", err)
		}
	}
	if got, want := h.EtcdTLS.Cert, h.Path(KubePKIDir+"/apiserver-etcd-client.crt"); got != want {
		t.Errorf("EtcdTLS.Cert = %s, want %s", got, want)
	}
	if got, want := flagValue(h.Etcd.Args, "--data-dir"), h.Path(KubeEtcdDataDir); got != want {
		t.Errorf("etcd --data-dir = %s, want %s", got, want)
	}

	h.Kubectl(t, "create", "namespace", "shop")
	h.Kubectl(t, "-n", "shop", "create", "configmap", "prices", "--from-literal=apple=3")
	check := func(kubeconfig string) {
		t.Helper()
		if got := h.Kubectl(t, "--kubeconfig", kubeconfig, "get", "namespace", "shop", "-o", "jsonpath={.metadata.name}"); got != "shop" {
			t.Errorf("namespace = %q, want shop", got)
		}
		if got := h.Kubectl(t, "--kubeconfig", kubeconfig, "-n", "shop", "get", "configmap", "prices", "-o", "jsonpath={.data.apple}"); got != "3" {
			t.Errorf("configmap prices apple = %q, want 3", got)
		}
	}
	check(h.KubeconfigPath)
	// admin.conf works through the kubeadm:cluster-admins binding, as on a
	// host made by kubeadm init.
	check(h.Kubeconfig(t, "admin.conf"))

	h.Stop()
	if h.Etcd.Running() || h.APIServer.Running() {
		t.Fatal("processes still running after Stop")
	}
	h.StartEtcd()
	h.StartAPIServer()
	check(h.KubeconfigPath)
}

func TestKubeStaticPodCommand(t *testing.T) {
	root := t.TempDir()
	manifest := filepath.Join(root, "etcd.yaml")
	pod := `apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://192.0.2.10:2379
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --data-dir=/var/lib/etcd
    - --initial-cluster=a=https://192.0.2.10:2380,b=https://192.0.2.11:2380
    - --listen-client-urls=https://127.0.0.1:2379,https://192.0.2.10:2379
    - --listen-metrics-urls=http://127.0.0.1:2381
    - --listen-peer-urls=https://192.0.2.10:2380
    - --name=a
    - --snapshot-count=10000
    volumeMounts:
    - {mountPath: /var/lib/etcd, name: etcd-data}
    - {mountPath: /etc/kubernetes/pki/etcd, name: etcd-certs}
  volumes:
  - {hostPath: {path: /etc/kubernetes/pki/etcd}, name: etcd-certs}
  - {hostPath: {path: /var/lib/etcd-restored}, name: etcd-data}
`
	if err := os.WriteFile(manifest, []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := StaticPodCommand("/r", manifest, KubePorts{EtcdClient: 1, EtcdPeer: 2, EtcdMetrics: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"etcd",
		"--advertise-client-urls=https://127.0.0.1:1",
		"--cert-file=/r/etc/kubernetes/pki/etcd/server.crt",
		// The data volume's host path wins, as the kubelet would mount it.
		"--data-dir=/r/var/lib/etcd-restored",
		"--initial-cluster=a=https://127.0.0.1:2,b=https://192.0.2.11:2380",
		"--listen-client-urls=https://127.0.0.1:1",
		"--listen-metrics-urls=http://127.0.0.1:3",
		"--listen-peer-urls=https://127.0.0.1:2",
		"--name=a",
		"--snapshot-count=10000",
	}
	if !slices.Equal(got, want) {
		t.Errorf("StaticPodCommand:\n got %s\nwant %s", strings.Join(got, " "), strings.Join(want, " "))
	}
}

// TestKubeStaticPodCommandMountedElsewhere maps kube-apiserver's flags
// through hostPath volumes mounted at another path than their host path
// (an audit policy kept in /srv/audit), at the same path, and nested
// under another mount, as kubeadm's extraVolumes make them.
func TestKubeStaticPodCommandMountedElsewhere(t *testing.T) {
	root := t.TempDir()
	manifest := filepath.Join(root, "kube-apiserver.yaml")
	pod := `apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=192.0.2.10
    - --audit-log-path=/var/log/kubernetes/audit.log
    - --audit-policy-file=/etc/kubernetes/audit/policy.yaml
    - --client-ca-file=/etc/kubernetes/pki/ca.crt
    - --encryption-provider-config=/etc/kubernetes/enc/encryption.yaml
    - --etcd-prefix=/registry
    - --etcd-servers=https://127.0.0.1:2379
    - --secure-port=6443
    volumeMounts:
    - {mountPath: /etc/kubernetes/audit, name: audit, readOnly: true}
    - {mountPath: /etc/kubernetes/enc, name: enc, readOnly: true}
    - {mountPath: /etc/kubernetes/pki, name: k8s-certs, readOnly: true}
    - {mountPath: /var/log/kubernetes, name: audit-log}
    - {mountPath: /etc/kubernetes, name: not-a-host-path}
  volumes:
  - {hostPath: {path: /srv/audit, type: DirectoryOrCreate}, name: audit}
  - {hostPath: {path: /etc/kubernetes/enc, type: DirectoryOrCreate}, name: enc}
  - {hostPath: {path: /etc/kubernetes/pki, type: DirectoryOrCreate}, name: k8s-certs}
  - {hostPath: {path: /var/log/kubernetes, type: DirectoryOrCreate}, name: audit-log}
  - {emptyDir: {}, name: not-a-host-path}
`
	if err := os.WriteFile(manifest, []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := StaticPodCommand("/r", manifest, KubePorts{EtcdClient: 1, APIServer: 4})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kube-apiserver",
		"--advertise-address=192.0.2.10",
		"--audit-log-path=/r/var/log/kubernetes/audit.log",
		// The host path, not the mount path, is what the process reads.
		"--audit-policy-file=/r/srv/audit/policy.yaml",
		"--client-ca-file=/r/etc/kubernetes/pki/ca.crt",
		"--encryption-provider-config=/r/etc/kubernetes/enc/encryption.yaml",
		"--etcd-prefix=/registry",
		"--etcd-servers=https://127.0.0.1:1",
		"--secure-port=4",
		"--bind-address=127.0.0.1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("StaticPodCommand:\n got %s\nwant %s", strings.Join(got, " "), strings.Join(want, " "))
	}
}

// TestKubeadmInitExtraArgs has kubeadm itself write kube-apiserver's
// extra flags and volumes into its manifest, and the files they name
// under the root before it runs.
func TestKubeadmInitExtraArgs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	KubeadmInit(t, root, KubeOptions{
		APIServerArgs: []KubeArg{
			{Name: "audit-policy-file", Value: "/etc/kubernetes/audit/policy.yaml"},
			{Name: "audit-log-path", Value: "/var/log/kubernetes/audit.log"},
		},
		APIServerVolumes: []KubeVolume{
			{Name: "audit", HostPath: "/srv/audit", MountPath: "/etc/kubernetes/audit", ReadOnly: true, PathType: "DirectoryOrCreate"},
			{Name: "audit-log", HostPath: "/var/log/kubernetes", MountPath: "/var/log/kubernetes", PathType: "DirectoryOrCreate"},
		},
		Files: map[string][]byte{"/srv/audit/policy.yaml": []byte("kind: Policy\n")},
	})
	fi, err := os.Stat(hostPath(root, "/srv/audit/policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("policy.yaml has mode %v, want 0600", fi.Mode())
	}
	args, err := StaticPodCommand(root, hostPath(root, KubeManifestsDir+"/kube-apiserver.yaml"), KubePorts{EtcdClient: 1, APIServer: 2})
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"--audit-policy-file": hostPath(root, "/srv/audit/policy.yaml"),
		"--audit-log-path":    hostPath(root, "/var/log/kubernetes/audit.log"),
	} {
		if got := flagValue(args, flag); got != want {
			t.Errorf("kube-apiserver %s=%q, want %q", flag, got, want)
		}
	}
}
