package restore

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/kdr-io/kdr/manifest"
)

// Topologies.
const (
	// TopologyKubeadm is stacked etcd run as static pods by the kubelet,
	// as kubeadm sets it up.
	TopologyKubeadm = "kubeadm"
	// TopologySystemd is external etcd run as a systemd service.
	TopologySystemd = "systemd"
)

// DefaultRevisionBump is how far a restored etcd's revision jumps past the
// snapshot's, so that no revision the lost cluster handed out is ever
// handed out again (watch caches would miss updates).
const DefaultRevisionBump = 1_000_000_000

// Options is everything a plan is built from, one flat struct; each
// field's default is in its comment.
type Options struct {
	// Target names the storage target the set is fetched from.
	Target string `json:"target"`
	// Topology is TopologyKubeadm (default) or TopologySystemd.
	Topology string `json:"topology"`
	// Nodes are the control-plane nodes to restore onto, first member
	// first. Default: the backup inventory's hosts with the etcd role (or
	// all hosts when none has it).
	Nodes []Node `json:"nodes"`
	// APIEndpoint is the restored cluster's API URL, when it differs from
	// the backup's inventory (a new VIP): kubeconfigs are pointed at it.
	// Default: unchanged.
	APIEndpoint string `json:"apiEndpoint"`
	// Token is the new etcd cluster token. Default "kdr-" + the backup ID.
	Token string `json:"token"`
	// RevisionBump is added to the restored revision. Default
	// DefaultRevisionBump; never zero.
	RevisionBump uint64 `json:"revisionBump"`
	// EtcdDataDir is where each node's etcd keeps its data. Default: the
	// one the backup recorded (the host directory its etcd manifest
	// mounts at --data-dir, or ETCD_DATA_DIR of an etcd under systemd),
	// else /var/lib/etcd.
	EtcdDataDir string `json:"etcdDataDir"`
	// KubernetesDir holds PKI, kubeconfigs and manifests. Default /etc/kubernetes.
	KubernetesDir string `json:"kubernetesDir"`
	// StagingDir holds fetched and decrypted objects and the journal.
	// Default /var/lib/kdr/restore.
	StagingDir string `json:"stagingDir"`
	// IdentityFile is the age identity's path as the operator types it in
	// commands. Default operator.key (as kdr keys generate --out names it).
	IdentityFile string `json:"identityFile"`
	// EtcdClientTLS are the host paths of the client certificate, key
	// and CA that reach the restored etcd over https, as restored. Default
	// for kubeadm: its apiserver-etcd-client certificate and etcd CA; an
	// external etcd has no default (its cluster's etcd.tls in the config).
	EtcdClientTLS *ClientTLS `json:"etcdClientTLS,omitempty"`
	// ConfigFile is the kdr config's path in commands. Default /etc/kdr/kdr.yaml.
	ConfigFile string `json:"configFile"`
	// AllowedSigners is the trusted signing keys as an OpenSSH
	// allowed_signers file, printed in the runbook so that the set's
	// signature can be checked with ssh-keygen alone. Default none.
	AllowedSigners string `json:"allowedSigners,omitempty"`
}

// ClientTLS are the host paths of an etcd client's credentials.
type ClientTLS struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// Node is one control-plane node of the restored cluster.
type Node struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
	// PeerURL and ClientURL default to https://IP:2380 and https://IP:2379.
	PeerURL   string `json:"peerURL"`
	ClientURL string `json:"clientURL"`
}

// ErrNoNode means the node asked for is not in the plan.
var ErrNoNode = errors.New("node is not in the plan")

var nodeName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// withDefaults fills the defaults from the manifest and validates.
func (o Options) withDefaults(m *manifest.Manifest) (Options, error) {
	if o.Topology == "" {
		o.Topology = TopologyKubeadm
	}
	if o.Topology != TopologyKubeadm && o.Topology != TopologySystemd {
		return o, fmt.Errorf("topology %q: want %s or %s", o.Topology, TopologyKubeadm, TopologySystemd)
	}
	if o.Token == "" {
		o.Token = "kdr-" + strings.ToLower(strings.ReplaceAll(m.ID, ".", ""))
	}
	if o.RevisionBump == 0 {
		o.RevisionBump = DefaultRevisionBump
	}
	if cp := m.State.ControlPlane; o.EtcdDataDir == "" && cp != nil && cp.EtcdDataDir != "" {
		o.EtcdDataDir = cp.EtcdDataDir
	}
	defaults := []struct {
		v   *string
		def string
	}{
		{&o.EtcdDataDir, "/var/lib/etcd"},
		{&o.KubernetesDir, "/etc/kubernetes"},
		{&o.StagingDir, "/var/lib/kdr/restore"},
		{&o.IdentityFile, "operator.key"},
		{&o.ConfigFile, "/etc/kdr/kdr.yaml"},
	}
	for _, d := range defaults {
		if *d.v == "" {
			*d.v = d.def
		}
	}
	// These are joined to the restore root: a relative path or one with
	// ".." would put the restore somewhere else.
	for _, d := range []struct{ name, v string }{
		{"etcd data dir", o.EtcdDataDir}, {"Kubernetes dir", o.KubernetesDir}, {"staging dir", o.StagingDir},
	} {
		if !path.IsAbs(d.v) || path.Clean(d.v) != d.v || d.v == "/" {
			return o, fmt.Errorf("%s %q: want an absolute, clean path below /", d.name, d.v)
		}
	}
	if len(o.Nodes) == 0 {
		o.Nodes = inventoryNodes(m)
	}
	if len(o.Nodes) == 0 {
		return o, errors.New("no control-plane nodes: the backup's inventory lists no hosts; name them with --node-ip NAME=IP")
	}
	seen := map[string]bool{}
	nodes := make([]Node, len(o.Nodes))
	for i, n := range o.Nodes {
		if !nodeName.MatchString(n.Name) {
			return o, fmt.Errorf("node name %q: want lowercase letters, digits, '-' and '.'", n.Name)
		}
		if seen[n.Name] {
			return o, fmt.Errorf("node %s listed twice", n.Name)
		}
		seen[n.Name] = true
		if _, err := netip.ParseAddr(n.IP); err != nil {
			return o, fmt.Errorf("node %s: IP %q is not an address", n.Name, n.IP)
		}
		if n.PeerURL == "" {
			n.PeerURL = "https://" + hostPort(n.IP, "2380")
		}
		if n.ClientURL == "" {
			n.ClientURL = "https://" + hostPort(n.IP, "2379")
		}
		for _, u := range []string{n.PeerURL, n.ClientURL} {
			if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Port() == "" {
				return o, fmt.Errorf("node %s: %q is not a URL like https://10.0.0.11:2380", n.Name, u)
			}
		}
		nodes[i] = n
	}
	o.Nodes = nodes
	if o.EtcdClientTLS == nil && o.Topology == TopologyKubeadm {
		pki := path.Join(o.KubernetesDir, "pki")
		o.EtcdClientTLS = &ClientTLS{CA: path.Join(pki, "etcd/ca.crt"),
			Cert: path.Join(pki, "apiserver-etcd-client.crt"), Key: path.Join(pki, "apiserver-etcd-client.key")}
	}
	return o, nil
}

func hostPort(ip, port string) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + port
	}
	return ip + ":" + port
}

// inventoryNodes are the hosts of the backup's inventory with the etcd
// role, or every host when no host has a role.
func inventoryNodes(m *manifest.Manifest) []Node {
	var etcd, all []Node
	for _, h := range m.Inventory.Hosts {
		n := Node{Name: h.Name, IP: h.IP}
		all = append(all, n)
		for _, r := range h.Roles {
			if r == "etcd" {
				etcd = append(etcd, n)
			}
		}
	}
	if len(etcd) > 0 {
		return etcd
	}
	return all
}
