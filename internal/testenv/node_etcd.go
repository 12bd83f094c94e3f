package testenv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// EtcdPeer is an etcd member of a Node's cluster on a host of its own, as
// the stacked member of a second or third control-plane node: kubeadm's
// certificates from the node's etcd CA, kubeadm's etcd manifest joining
// the cluster, run from that manifest by a StartHostKubelet on the host.
type EtcdPeer struct {
	Name    string
	Host    *Host
	Root    string
	Kubelet *Kubelet
}

// ClientURL is the member's client URL.
func (p *EtcdPeer) ClientURL() string {
	return "https://" + hostPort(p.Host.IP, kubeadmEtcdClientPort)
}

// ClientURL is the node's etcd client URL.
func (n *Node) ClientURL() string {
	return "https://" + hostPort(n.IP, kubeadmEtcdClientPort)
}

// AddEtcdMember grows the node's etcd by one member on a new host called
// name of network net, and returns once the member is healthy. etcd adds
// a voting member only once every started one has been connected for a
// few seconds, so the add is retried while it refuses with "unhealthy
// cluster", as kubeadm's join does.
func (n *Node) AddEtcdMember(t testing.TB, net *Network, name string) *EtcdPeer {
	t.Helper()
	h := net.AddHost(t, name)
	p := &EtcdPeer{Name: name, Host: h, Root: filepath.Join(t.TempDir(), name)}
	if err := os.MkdirAll(p.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	peerURL := "https://" + hostPort(h.IP, kubeadmEtcdPeerPort)
	n.mu.Lock()
	if len(n.members) == 0 {
		n.members = []string{n.Name + "=https://" + hostPort(n.IP, kubeadmEtcdPeerPort)}
	}
	n.members = append(n.members, name+"="+peerURL)
	members := append([]string(nil), n.members...)
	n.mu.Unlock()

	CopyKubeadmSharedPKI(t, n.Path("/"), p.Root)
	KubeadmControlPlaneNode(t, p.Root, KubeHAOptions{
		NodeName: name, AdvertiseAddress: h.IP,
		ControlPlaneEndpoint: hostPort(n.IP, kubeadmAPIServerPort), JoinEtcd: members,
	})
	// Only etcd runs there: the node's API server is the cluster's.
	for _, m := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if err := os.Remove(hostPath(p.Root, KubeManifestsDir+"/"+m+".yaml")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(haReadyLimit)
	for {
		_, err := n.Etcdctl(context.Background(), "member", "add", name, "--peer-urls="+peerURL)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "unhealthy cluster") || time.Now().After(deadline) {
			t.Fatalf("etcd member add %s: %v", name, err)
		}
		time.Sleep(haPoll)
	}
	p.Kubelet = StartHostKubelet(t, p.Root, h)
	for {
		_, err := n.EtcdctlAt(context.Background(), p.ClientURL(), "endpoint", "health")
		if err == nil {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd member %s not healthy after %s: %v\n%s", name, haReadyLimit, err, p.Kubelet.Logs("etcd"))
		}
		time.Sleep(haPoll)
	}
}

// Etcdctl runs etcdctl on the node against its own member, with the API
// server's etcd client certificate.
func (n *Node) Etcdctl(ctx context.Context, args ...string) (string, error) {
	return n.EtcdctlAt(ctx, n.ClientURL(), args...)
}

// EtcdctlAt is Etcdctl against the member at endpoint.
func (n *Node) EtcdctlAt(ctx context.Context, endpoint string, args ...string) (string, error) {
	etcdctl, ok := lookBinary("etcdctl")
	if !ok {
		return "", errors.New("etcdctl not found: run `make tools`")
	}
	ctx, cancel := context.WithTimeout(ctx, kubeCommandLimit)
	defer cancel()
	base := []string{"--endpoints", endpoint,
		"--cacert", KubePKIDir + "/etcd/ca.crt",
		"--cert", KubePKIDir + "/apiserver-etcd-client.crt",
		"--key", KubePKIDir + "/apiserver-etcd-client.key",
		"--command-timeout", "20s"}
	return n.run(ctx, nil, etcdctl, append(base, args...)...)
}
