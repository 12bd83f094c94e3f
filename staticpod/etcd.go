package staticpod

import (
	"errors"
	"fmt"
	"strings"
)

// Annotations kubeadm writes into the manifests and reads back on join
// and upgrade.
const (
	EtcdClientURLsAnnotation    = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
	APIServerEndpointAnnotation = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"
)

// ErrNoDataDir means etcd's data dir is not on a hostPath volume: the
// member would keep its data inside its container.
var ErrNoDataDir = errors.New("etcd's data dir is not on a host path")

// Etcd is what a restore needs to know of an etcd member's static pod.
type Etcd struct {
	Name string
	// DataDir is the data dir as etcd sees it (--data-dir).
	DataDir string
	// HostDataDir is the host directory mounted there.
	HostDataDir string
	// Certificates are the host paths of its TLS files by flag.
	Certificates map[string]string
}

// EtcdMember reads the member's settings from an etcd pod.
func (p *Pod) EtcdMember() (Etcd, error) {
	if c := p.Component(); c != "etcd" {
		return Etcd{}, fmt.Errorf("pod %s runs %s, not etcd", p.pod.Name, c)
	}
	e := Etcd{Certificates: map[string]string{}}
	e.Name, _ = p.Flag("name")
	e.DataDir, _ = p.Flag("data-dir")
	if e.DataDir == "" {
		// etcd's own default is "<name>.etcd" in its working directory,
		// which no static pod relies on.
		return Etcd{}, fmt.Errorf("%w: the etcd manifest sets no --data-dir", ErrNoDataDir)
	}
	host, ok := p.HostPath(e.DataDir)
	if !ok {
		return Etcd{}, fmt.Errorf("%w: no hostPath volume is mounted at %s", ErrNoDataDir, e.DataDir)
	}
	e.HostDataDir = host
	for _, in := range p.Inputs() {
		e.Certificates[in.Flag] = in.Path
	}
	return e, nil
}

// EtcdNode is what makes an etcd member a given node's.
type EtcdNode struct {
	Name, PeerURL, ClientURL, InitialCluster, Token string
	// DataDir is the host directory the member keeps its data in; the
	// container sees it at the same path.
	DataDir string
}

// SetEtcdNode points an etcd pod at a node: its name, URLs, cluster and
// data dir, keeping the flags, the data dir's volume and kubeadm's
// annotation consistent. The member listens on loopback too, as kubeadm
// sets it up, for the API server on the same host.
func (p *Pod) SetEtcdNode(n EtcdNode) error {
	old, err := p.EtcdMember()
	if err != nil && !errors.Is(err, ErrNoDataDir) {
		return err
	}
	for _, f := range []Flag{
		{"name", n.Name},
		{"initial-advertise-peer-urls", n.PeerURL},
		{"listen-peer-urls", n.PeerURL},
		{"advertise-client-urls", n.ClientURL},
		{"listen-client-urls", ListenClientURLs(n.ClientURL)},
		{"initial-cluster", n.InitialCluster},
		{"initial-cluster-token", n.Token},
		{"data-dir", n.DataDir},
	} {
		p.SetFlag(f.Name, f.Value)
	}
	p.SetMount(n.DataDir, old.HostDataDir, n.DataDir)
	p.SetAnnotation(EtcdClientURLsAnnotation, n.ClientURL)
	return nil
}

// ListenClientURLs are where a member with the client URL clientURL
// listens: there and on loopback, as kubeadm sets it up for the API
// server on the same host; once when the client URL is loopback already.
func ListenClientURLs(clientURL string) string {
	scheme := "https://"
	if strings.HasPrefix(clientURL, "http://") {
		scheme = "http://"
	}
	local := scheme + "127.0.0.1:" + port(clientURL)
	if local == clientURL {
		return clientURL
	}
	return local + "," + clientURL
}

// port is a URL's port.
func port(u string) string {
	if i := strings.LastIndex(u, ":"); i >= 0 {
		return strings.TrimRight(u[i+1:], "/")
	}
	return ""
}

// SetAPIServerNode points a kube-apiserver pod at a node's address: its
// --advertise-address, the probes that asked the old address, and
// kubeadm's endpoint annotation.
func (p *Pod) SetAPIServerNode(ip string) {
	old, _ := p.Flag("advertise-address")
	p.SetFlag("advertise-address", ip)
	if old != "" {
		p.ReplaceProbeHost(old, ip)
	}
	securePort, ok := p.Flag("secure-port")
	if !ok {
		securePort = "6443"
	}
	p.SetAnnotation(APIServerEndpointAnnotation, hostPort(ip, securePort))
}

func hostPort(ip, port string) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + port
	}
	return ip + ":" + port
}
