package restore

import (
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kdr-io/kdr/catalog"
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
	// above MinRevision.
	Revision int64 `json:"revision"`
	// ToRevision, when not 0, is the revision the restore brings etcd to:
	// the set, then its captured log replayed up to ToRevision (Replay).
	// 0 restores the set as it is.
	ToRevision int64 `json:"toRevision,omitempty"`
	// Replay is what the replay step fetches and applies; nil when
	// ToRevision is 0.
	Replay *Replay `json:"replay,omitempty"`
	// LogEnd is the newest revision the set's captured log held when the
	// plan was made (0: the log was not read). The lost cluster handed out
	// at least that many revisions, so the restored etcd starts above it
	// (Bump).
	LogEnd         int64   `json:"logEnd,omitempty"`
	Options        Options `json:"options"`
	Source         Source  `json:"source"`
	InitialCluster string  `json:"initialCluster"`
	Steps          []Step  `json:"steps"`
	// Manifest is the backup's manifest; its inventory feeds the runbook.
	Manifest *manifest.Manifest `json:"-"`
}

// Replay is the part of a set's captured log a plan replays: its
// segments from the set's revision + 1 through the one holding the plan's
// ToRevision, each read from a head a trusted key signed when the plan
// was made.
type Replay struct {
	Segments []Segment `json:"segments"`
	// Proof is the newest HashKV recorded at a segment end at or before
	// ToRevision, which the replayed keyspace must hash to; nil when the
	// log recorded none (the replay is then checked revision by revision
	// only).
	Proof *manifest.LogHash `json:"proof,omitempty"`
}

// Segment is one segment of a replay: its head's key, the sha256 of the
// head's bytes as they were trusted, and what the head says.
type Segment struct {
	Key    string                `json:"key"`
	SHA256 string                `json:"sha256"`
	Head   *manifest.SegmentHead `json:"head"`
}

// catalog is the segment as catalog reads it.
func (s Segment) catalog() catalog.Segment {
	return catalog.Segment{Key: s.Key, Head: s.Head, Sum: s.SHA256}
}

// BuildPlan makes the plan for restoring the set m describes.
func BuildPlan(m *manifest.Manifest, src Source, o Options) (*Plan, error) {
	return buildPlan(m, src, o, 0, nil, 0)
}

// BuildPlanAt makes the plan for restoring etcd to revision rev of the
// captured log c: c's full set, then c's segments through the one that
// holds rev (none when rev is the set's own revision). The error wraps
// catalog.ErrGap when c does not reach rev.
func BuildPlanAt(c *catalog.Chain, rev int64, src Source, o Options) (*Plan, error) {
	m := c.Base
	if rev < m.Etcd.Revision {
		return nil, fmt.Errorf("revision %d is before backup %s (revision %d), which holds only later ones", rev, m.ID, m.Etcd.Revision)
	}
	var segs []catalog.Segment
	if rev > m.Etcd.Revision {
		var err error
		if segs, err = c.Covering(rev); err != nil {
			return nil, err
		}
	}
	r := &Replay{Proof: c.Proof(rev)}
	for _, s := range segs {
		r.Segments = append(r.Segments, Segment{Key: s.Key, SHA256: s.Sum, Head: s.Head})
	}
	return buildPlan(m, src, o, rev, r, c.End())
}

// buildPlan makes a plan that restores m, replayed to rev when r is set.
func buildPlan(m *manifest.Manifest, src Source, o Options, rev int64, r *Replay, logEnd int64) (*Plan, error) {
	o, err := o.withDefaults(m)
	if err != nil {
		return nil, err
	}
	p := &Plan{
		Cluster: m.Cluster, BackupID: m.ID, Created: m.Created, Revision: m.Etcd.Revision,
		ToRevision: rev, Replay: r, LogEnd: logEnd,
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

// SetOnly is the plan that restores p's set as it is, as break glass
// does without kdr: everything after the set's revision is lost. Its bump
// still clears the captured log's end.
func (p *Plan) SetOnly() (*Plan, error) {
	if p.ToRevision == 0 {
		return p, nil
	}
	if p.Manifest == nil {
		return nil, errors.New("the plan carries no manifest to plan the set alone from")
	}
	return buildPlan(p.Manifest, p.Source, p.Options, 0, nil, p.LogEnd)
}

// RestoredRevision is the newest revision of the database restore-etcd
// takes, before the bump: ToRevision, or the set's.
func (p *Plan) RestoredRevision() int64 {
	if p.ToRevision > 0 {
		return p.ToRevision
	}
	return p.Revision
}

// Bump is what the restore adds to the restored database's newest
// revision: Options.RevisionBump past the newest revision the lost
// cluster is known to have handed out. For a replay that is the captured
// log's end, not the revision restored: watch caches must never see a
// revision they saw before.
func (p *Plan) Bump() uint64 {
	b := p.Options.RevisionBump
	if ahead := p.LogEnd - p.RestoredRevision(); ahead > 0 {
		b += uint64(ahead)
	}
	return b
}

// MinRevision is the lowest revision the restored etcd may report.
func (p *Plan) MinRevision() int64 { return p.RestoredRevision() + int64(p.Bump()) }

// RestoredDB is the host path of the staged database restore-etcd makes
// the member's: the decrypted snapshot, or the replay's result.
func (p *Plan) RestoredDB() string { return path.Join(p.Staging(), p.restoredDBName()) }

func (p *Plan) restoredDBName() string {
	if p.ToRevision > 0 {
		return replayedName(p.ToRevision)
	}
	return snapshotFile
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
	// RestoredDB is the staged database restore-etcd takes.
	RestoredDB string
	// SetRevision is the set's revision. ToRevision is the revision a
	// replay restores (0: none), ReplayFrom the first revision it applies,
	// Segments how many segments hold them, ProofRevision the revision of
	// the HashKV that proves it (0: none recorded), SegmentBodies the
	// staged bodies relative to Staging, and ApplyReplay the kdr command
	// that fetches, decrypts and replays on this node.
	SetRevision, ToRevision, ReplayFrom, ProofRevision int64
	Segments                                           int
	SegmentBodies, ApplyReplay                         string
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
		Topology: o.Topology, Bump: p.Bump(), Node: n,
		DataDir: o.EtcdDataDir, KubeDir: o.KubernetesDir, Staging: p.Staging(),
		Identity: o.IdentityFile, Config: o.ConfigFile, Aside: p.AsideSuffix(),
		Fetch: fetchCommand(p), Endpoints: strings.Join(eps, ","),
		SetKey:       manifest.SetPrefix(p.Cluster, p.BackupID),
		MinRevision:  p.MinRevision(),
		RestoredDB:   p.RestoredDB(),
		SetRevision:  p.Revision,
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
	if r := p.Replay; p.ToRevision > 0 && r != nil {
		d.ToRevision, d.ReplayFrom, d.Segments = p.ToRevision, p.Revision+1, len(r.Segments)
		if r.Proof != nil {
			d.ProofRevision = r.Proof.Revision
		}
		bodies := make([]string, len(r.Segments))
		for i, s := range r.Segments {
			bodies[i] = path.Join("log", s.Head.Body.Name)
		}
		d.SegmentBodies = strings.Join(bodies, " ")
		d.ApplyReplay = applyCommand(p, n, StepReplay)
	}
	if cp := p.Manifest.State.ControlPlane; cp != nil {
		d.CapturedDataDir = cp.EtcdDataDir
	}
	return d
}

// applyCommand is `kdr restore apply` on node n up to step until, with
// the flags that make this plan again: those whose values are not what
// the plan's defaults would be.
func applyCommand(p *Plan, n Node, until string) string {
	o := p.Options
	args := []string{"kdr", "--config", o.ConfigFile, "restore", "apply", "--cluster", p.Cluster}
	if o.Target != "" {
		args = append(args, "--target", o.Target)
	}
	if p.ToRevision > 0 {
		args = append(args, "--revision", strconv.FormatInt(p.ToRevision, 10))
	} else {
		args = append(args, "--backup", p.BackupID)
	}
	if o.Topology != TopologyKubeadm {
		args = append(args, "--topology", o.Topology)
	}
	def, err := (Options{Topology: o.Topology}).withDefaults(p.Manifest)
	if err != nil || !slices.Equal(def.Nodes, o.Nodes) {
		for _, m := range o.Nodes {
			args = append(args, "--node-ip", m.Name+"="+m.IP+","+m.PeerURL+","+m.ClientURL)
		}
	}
	for _, f := range []struct{ flag, v, def string }{
		{"--data-dir", o.EtcdDataDir, def.EtcdDataDir},
		{"--kubernetes-dir", o.KubernetesDir, def.KubernetesDir},
		{"--staging-dir", o.StagingDir, def.StagingDir},
	} {
		if f.v != f.def {
			args = append(args, f.flag, f.v)
		}
	}
	args = append(args, "--node", n.Name, "--identity", o.IdentityFile, "--until", until)
	return strings.Join(args, " ")
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
