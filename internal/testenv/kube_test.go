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
