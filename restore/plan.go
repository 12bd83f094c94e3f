package restore

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/kdr-io/kdr/manifest"
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
	// SourceIP is the address of the host the backup came from ("" when
	// the inventory does not say), and SourceIPPattern the same as a sed
	// pattern.
	SourceIP, SourceIPPattern string
}

func newCmdData(p *Plan, n Node) cmdData {
	o := p.Options
	eps := make([]string, len(o.Nodes))
	for i, m := range o.Nodes {
		eps[i] = m.ClientURL
	}
	_, srcIP := p.sourceHost()
	return cmdData{
		Cluster: p.Cluster, BackupID: p.BackupID, Token: o.Token, InitialCluster: p.InitialCluster,
		Topology: o.Topology, Bump: o.RevisionBump, Node: n,
		DataDir: o.EtcdDataDir, KubeDir: o.KubernetesDir, Staging: p.Staging(),
		Identity: o.IdentityFile, Config: o.ConfigFile, Aside: p.AsideSuffix(),
		Fetch: fetchCommand(p), Endpoints: strings.Join(eps, ","),
		SetKey:       manifest.SetPrefix(p.Cluster, p.BackupID),
		MinRevision:  p.Revision + int64(o.RevisionBump),
		EtcdctlTLS:   etcdctlTLS(o),
		StateMembers: stateMembers(p.Manifest),
		SourceIP:     srcIP, SourceIPPattern: strings.ReplaceAll(srcIP, ".", `\.`),
	}
}

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
// restored kubeadm PKI's client certificate.
func etcdctlTLS(o Options) string {
	for _, n := range o.Nodes {
		if strings.HasPrefix(n.ClientURL, "https://") {
			pki := path.Join(o.KubernetesDir, "pki")
			return fmt.Sprintf(" --cacert %s/etcd/ca.crt --cert %s/apiserver-etcd-client.crt --key %s/apiserver-etcd-client.key", pki, pki, pki)
		}
	}
	return ""
}
