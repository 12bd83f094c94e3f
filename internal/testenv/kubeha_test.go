package testenv

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestKubeadmHA checks the harness itself: three kubeadm nodes whose etcd
// members found one another at their own addresses, and whose API servers
// each serve from the one cluster.
func TestKubeadmHA(t *testing.T) {
	c := StartKubeadmHA(t, "cp1", "cp2", "cp3")
	var list struct {
		Members []struct {
			Name     string   `json:"name"`
			PeerURLs []string `json:"peerURLs"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(c.Nodes[2].Etcdctl(t, "member", "list", "-w", "json")), &list); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list.Members {
		got = append(got, m.Name+"="+strings.Join(m.PeerURLs, ","))
	}
	slices.Sort(got)
	var want []string
	for _, n := range c.Nodes {
		want = append(want, n.Name+"="+n.PeerURL())
	}
	if !slices.Equal(got, want) {
		t.Errorf("etcd members %v, want %v", got, want)
	}
	c.Nodes[0].Kubectl(t, "create", "namespace", "ha")
	for _, n := range c.Nodes {
		if out := n.Kubectl(t, "get", "namespace", "ha", "-o", "jsonpath={.metadata.name}"); out != "ha" {
			t.Errorf("%s's API server reads namespace ha as %q", n.Name, out)
		}
	}
}

// TestHostPodCommand: a pod run in a host's namespace keeps its addresses
// and ports as written; only host paths move under the root.
func TestHostPodCommand(t *testing.T) {
	manifest := filepath.Join(t.TempDir(), "etcd.yaml")
	pod := `apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://198.18.0.11:2379
    - --listen-client-urls=https://127.0.0.1:2379,https://198.18.0.11:2379
    - --data-dir=/var/lib/etcd
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --name=cp1
    volumeMounts:
    - {name: etcd-data, mountPath: /var/lib/etcd}
    - {name: etcd-certs, mountPath: /etc/kubernetes/pki/etcd}
  volumes:
  - {name: etcd-data, hostPath: {path: /data/etcd}}
  - {name: etcd-certs, hostPath: {path: /etc/kubernetes/pki/etcd}}
`
	if err := os.WriteFile(manifest, []byte(pod), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := hostPodCommand("/r", manifest)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"etcd",
		"--advertise-client-urls=https://198.18.0.11:2379",
		"--listen-client-urls=https://127.0.0.1:2379,https://198.18.0.11:2379",
		"--data-dir=/r/data/etcd",
		"--cert-file=/r/etc/kubernetes/pki/etcd/server.crt",
		"--name=cp1"}
	if !slices.Equal(got, want) {
		t.Errorf("hostPodCommand:\n got %q\nwant %q", got, want)
	}
}

// TestJoinEtcdManifest: the joining member's manifest lists the members
// it joins and says the cluster exists, in kubeadm's layout.
func TestJoinEtcdManifest(t *testing.T) {
	in := "    - --initial-advertise-peer-urls=https://198.18.0.12:2380\n" +
		"    - --initial-cluster=cp2=https://198.18.0.12:2380\n" +
		"    - --key-file=/etc/kubernetes/pki/etcd/server.key\n"
	out, err := joinEtcdManifest([]byte(in), []string{"cp1=https://198.18.0.11:2380", "cp2=https://198.18.0.12:2380"})
	if err != nil {
		t.Fatal(err)
	}
	want := "    - --initial-advertise-peer-urls=https://198.18.0.12:2380\n" +
		"    - --initial-cluster=cp1=https://198.18.0.11:2380,cp2=https://198.18.0.12:2380\n" +
		"    - --initial-cluster-state=existing\n" +
		"    - --key-file=/etc/kubernetes/pki/etcd/server.key\n"
	if string(out) != want {
		t.Errorf("joinEtcdManifest:\n%s\nwant:\n%s", out, want)
	}
	if _, err := joinEtcdManifest([]byte("    - --name=cp2\n"), []string{"cp2=x"}); err == nil {
		t.Error("a manifest without --initial-cluster was accepted")
	}
}
