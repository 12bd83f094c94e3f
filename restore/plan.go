package restore

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/staticpod"
)

// Source says where the set is fetched from, for the commands a person
// types; the engine reads it through a storage.Target.
type Source struct {
	// Kind is "local" or "s3".
	Kind string `json:"kind"`
	// Path is a local target's directory.
	Path string `json:"path,omitempty"`
	// Endpoint, Bucket and Prefix locate an S3 target.
	Endpoint string `json:"endpoint,omitempty"`
	Bucket   string `json:"bucket,omitempty"`
	Prefix   string `json:"prefix,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
}

// Plan is a whole restore: which backup, onto which nodes, and every step
// in the order they run.
type Plan struct {
	Cluster  string    `json:"cluster"`
	BackupID string    `json:"backupID"`
	Created  time.Time `json:"backupCreated"`
	// Revision is the backup's etcd revision; the restored cluster starts
	// above Revision+RevisionBump.
	Revision       int64   `json:"revision"`
	Options        Options `json:"options"`
	Source         Source  `json:"source"`
	InitialCluster string  `json:"initialCluster"`
	Steps          []Step  `json:"steps"`
	// Manifest is the backup's manifest; its inventory feeds the runbook.
	Manifest *manifest.Manifest `json:"-"`
}

// BuildPlan makes the plan for restoring the set m describes.
func BuildPlan(m *manifest.Manifest, src Source, o Options) (*Plan, error) {
	o, err := o.withDefaults(m)
	if err != nil {
		return nil, err
	}
	p := &Plan{
		Cluster: m.Cluster, BackupID: m.ID, Created: m.Created, Revision: m.Etcd.Revision,
		Options: o, Source: src, Manifest: m,
	}
	members := make([]string, len(o.Nodes))
	for i, n := range o.Nodes {
		members[i] = n.Name + "=" + n.PeerURL
	}
	p.InitialCluster = strings.Join(members, ",")
	// Every node prepares (nothing starts until its data is in place), then
	// etcd starts everywhere, then the control plane that caches etcd.
	for i, phase := range phases {
		for _, n := range o.Nodes {
			for _, d := range phase {
				if d.where == FirstNode && n.Name != o.Nodes[0].Name {
					continue
				}
				if d.applies != nil && !d.applies(p, n) {
					continue
				}
				s, err := d.instantiate(p, n)
				if err != nil {
					return nil, err
				}
				s.Phase = i + 1
				p.Steps = append(p.Steps, s)
			}
		}
	}
	return p, nil
}

// NodeSteps returns one node's steps in the order they run.
func (p *Plan) NodeSteps(node string) ([]Step, error) {
	var out []Step
	for _, s := range p.Steps {
		if s.Node == node {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q (the plan has %s)", ErrNoNode, node, strings.Join(p.NodeNames(), ", "))
	}
	return out, nil
}

// NodeNames lists the plan's nodes, first member first.
func (p *Plan) NodeNames() []string {
	names := make([]string, len(p.Options.Nodes))
	for i, n := range p.Options.Nodes {
		names[i] = n.Name
	}
	return names
}

// node returns the named node.
func (p *Plan) node(name string) (Node, error) {
	for _, n := range p.Options.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return Node{}, fmt.Errorf("%w: %q (the plan has %s)", ErrNoNode, name, strings.Join(p.NodeNames(), ", "))
}

// Staging is the host directory of this backup's fetched objects and
// journals.
func (p *Plan) Staging() string {
	return path.Join(p.Options.StagingDir, p.Cluster, p.BackupID)
}

// AsideSuffix names what a restore moves out of its way; the backup ID
// ties it to the restore that moved it.
func (p *Plan) AsideSuffix() string { return asidePrefix + p.BackupID }

// cmdData is what step command templates see.
type cmdData struct {
	Cluster, BackupID, Token, InitialCluster, Topology string
	Bump                                               uint64
	Node                                               Node
	DataDir, KubeDir, Staging, Identity, Config        string
	Aside, Fetch, Endpoints, SetKey                    string
	// MinRevision is the lowest revision the restored etcd may report.
	MinRevision int64
	// EtcdctlTLS are etcdctl's certificate flags for https endpoints.
	EtcdctlTLS string
	// StateMembers are the state tar's members restore-files extracts by
	// hand; see stateMembers.
	StateMembers string
	// SetDirs are the directories the sets name, which restore-files
	// extracts alone first; see setDirs.
	SetDirs string
	// SourceIP is the address of the host the backup came from ("" when
	// the inventory does not say), and SourceIPPattern the same as a sed
	// pattern.
	SourceIP, SourceIPPattern string
	// PeerPort and ClientPort are the node's etcd ports, which preflight
	// and stop-control-plane look for.
	PeerPort, ClientPort string
	// ListenClientURLs are where the member listens for clients: its
	// client URL and loopback, as kubeadm sets it up
	// (staticpod.ListenClientURLs).
	ListenClientURLs string
	// Tools are the commands beyond a minimal Debian host's that the
	// steps use, and ToolsHint where to get them.
	Tools, ToolsHint string
	// Moved is set when the node is not the host the backup came from (by
	// name or address, or the address is unknown): its node certificates
	// are issued again.
	Moved bool
	// KubeadmConfig is the kubeadm configuration configure-node writes
	// (a file in staging), and KubeadmConfigLines its lines, each quoted
	// for printf.
	KubeadmConfig, KubeadmConfigLines string
	// StagedManifests is where restore-files keeps the static pod
	// manifests until their start step.
	StagedManifests string
	// CapturedDataDir is the data dir the backup's etcd manifest mounts
	// ("" when it does not say).
	CapturedDataDir string
}

func newCmdData(p *Plan, n Node) cmdData {
	o := p.Options
	eps := make([]string, len(o.Nodes))
	for i, m := range o.Nodes {
		eps[i] = m.ClientURL
	}
	srcName, srcIP := p.sourceHost()
	d := cmdData{
		Cluster: p.Cluster, BackupID: p.BackupID, Token: o.Token, InitialCluster: p.InitialCluster,
		Topology: o.Topology, Bump: o.RevisionBump, Node: n,
		DataDir: o.EtcdDataDir, KubeDir: o.KubernetesDir, Staging: p.Staging(),
		Identity: o.IdentityFile, Config: o.ConfigFile, Aside: p.AsideSuffix(),
		Fetch: fetchCommand(p), Endpoints: strings.Join(eps, ","),
		SetKey:       manifest.SetPrefix(p.Cluster, p.BackupID),
		MinRevision:  p.Revision + int64(o.RevisionBump),
		EtcdctlTLS:   etcdctlTLS(o),
		StateMembers: stateMembers(p.Manifest),
		SetDirs:      setDirs(p.Manifest),
		SourceIP:     srcIP, SourceIPPattern: strings.ReplaceAll(srcIP, ".", `\.`),
		PeerPort: urlPort(n.PeerURL), ClientPort: urlPort(n.ClientURL),
		ListenClientURLs: staticpod.ListenClientURLs(n.ClientURL),
		Tools:            tools(o),
		ToolsHint:        toolsHint(o),
		Moved:            srcIP == "" || srcIP != n.IP || srcName != n.Name,
		KubeadmConfig:    path.Join(p.Staging(), "kubeadm-"+n.Name+".yaml"),
		StagedManifests:  path.Join(p.Staging(), "manifests", o.KubernetesDir, "manifests"),
	}
	d.KubeadmConfigLines = kubeadmConfigLines(p, n, srcName, srcIP)
	if cp := p.Manifest.State.ControlPlane; cp != nil {
		d.CapturedDataDir = cp.EtcdDataDir
	}
	return d
}

// urlPort is the port of an etcd URL ("" when it has none).
func urlPort(u string) string {
	_, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://"))
	if err != nil {
		return ""
	}
	return port
}

// tools are what the steps run beyond what a minimal Debian host has
// (coreutils, util-linux, findutils, grep, sed, tar, iproute2, procps):
// preflight checks for them before anything changes.
func tools(o Options) string {
	t := "age zstd etcdutl etcdctl"
	if o.Topology == TopologyKubeadm {
		t += " kubeadm"
	}
	return t
}

func toolsHint(o Options) string {
	h := "apt-get install age zstd etcd-client (etcdutl, etcdctl; or from the etcd release)"
	if o.Topology == TopologyKubeadm {
		h += "; kubeadm from pkgs.k8s.io"
	}
	return h
}

// kubeadmConfigLines is the kubeadm configuration that issues this node's
// certificates as the engine does (restore/step_configure_node.go): the
// node's name and address, and every other name the backup's certificates
// carried, as extra SANs. Each line is one printf argument. kubeadm's own
// version is the cluster's version, so that it never looks one up online;
// the certificates do not depend on it.
func kubeadmConfigLines(p *Plan, n Node, srcName, srcIP string) string {
	o := p.Options
	sans := func(cert string) string {
		var out []string
		for _, c := range p.Manifest.State.Certificates {
			if c.Path != path.Join(o.KubernetesDir, "pki", cert) {
				continue
			}
			for _, s := range append(slices.Clone(c.DNSNames), c.IPs...) {
				if s == srcName || s == srcIP || !sanPattern.MatchString(s) || slices.Contains(out, `"`+s+`"`) {
					continue
				}
				out = append(out, `"`+s+`"`)
			}
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	lines := []string{
		"apiVersion: kubeadm.k8s.io/v1beta4",
		"kind: InitConfiguration",
		"nodeRegistration: {name: " + n.Name + "}",
		"localAPIEndpoint: {advertiseAddress: " + n.IP + "}",
		"---",
		"apiVersion: kubeadm.k8s.io/v1beta4",
		"kind: ClusterConfiguration",
		"certificatesDir: " + path.Join(o.KubernetesDir, "pki"),
		"apiServer: {certSANs: " + sans("apiserver.crt") + "}",
		"etcd: {local: {serverCertSANs: " + sans("etcd/server.crt") + ", peerCertSANs: " + sans("etcd/peer.crt") + "}}",
	}
	quoted := make([]string, len(lines))
	for i, l := range lines {
		quoted[i] = shellQuote(l)
	}
	return strings.Join(quoted, " ") + ` "kubernetesVersion: $(kubeadm version -o short)"`
}

// sanPattern is what a SAN may hold to be written into the kubeadm
// configuration unquoted by the shell and quoted by YAML alone.
var sanPattern = regexp.MustCompile(`^[A-Za-z0-9.:*_-]+$`)

// fetchCommand is how a person copies the set without kdr.
func fetchCommand(p *Plan) string {
	set := manifest.SetPrefix(p.Cluster, p.BackupID)
	switch p.Source.Kind {
	case "s3":
		scheme := "https"
		if p.Source.Insecure {
			scheme = "http"
		}
		key := strings.Trim(path.Join(p.Source.Prefix, set), "/") + "/"
		return fmt.Sprintf("aws s3 cp --recursive --endpoint-url %s://%s s3://%s/%s %s/", scheme, p.Source.Endpoint, p.Source.Bucket, key, p.Staging())
	default:
		return fmt.Sprintf("cp -a %s/. %s/", path.Join(p.Source.Path, set), p.Staging())
	}
}

// etcdctlTLS are the flags etcdctl needs for a TLS cluster, with the
// restored client credentials.
func etcdctlTLS(o Options) string {
	for _, n := range o.Nodes {
		if strings.HasPrefix(n.ClientURL, "https://") && o.EtcdClientTLS != nil {
			c := o.EtcdClientTLS
			return fmt.Sprintf(" --cacert %s --cert %s --key %s", c.CA, c.Cert, c.Key)
		}
	}
	return ""
}
