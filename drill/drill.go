package drill

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/pkicheck"
	"github.com/kdr-io/kdr/restore"
	"github.com/kdr-io/kdr/storage"
)

// Options say which backup to drill and where.
type Options struct {
	Manifest *manifest.Manifest
	// Revision, when not 0, is the revision the drill restores to by
	// replaying Chain, the captured log of Manifest's set that reaches it.
	Revision   int64
	Chain      *catalog.Chain
	Source     restore.Source
	Target     storage.Target
	Identities []age.Identity
	// Sandbox is the directory the drill's temporary root is made in
	// (default the system's temp directory). Nothing is left in it.
	Sandbox string
	// Live, when set, is the cluster the backup came from: a sample of
	// keys is compared with the restored ones (drift is reported, not
	// failed).
	Live *clientv3.Client
	// KubeAPIServer, when set, is a kube-apiserver binary started on the
	// restored etcd and PKI to list the namespaces, in a network namespace
	// of its own (see startAPIServer).
	KubeAPIServer string
	// EtcdTLS are the etcd client TLS files (CA, certificate, key) the
	// cluster's config names, as host paths. For an external etcd, those a
	// state set of the backup captures are required in the restored tree.
	EtcdTLS []string
	// CertWarnWithin makes a certificate expiring sooner a warning
	// (default 30 days).
	CertWarnWithin time.Duration
	Log            *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// checkTimeout bounds each group of checks against running members.
const checkTimeout = 2 * time.Minute

// untilHealthy names the node's last restore step before the control
// plane, which a sandbox does not start: check-etcd on the first node,
// start-etcd on the others.
func untilHealthy(plan *restore.Plan, node string) (string, error) {
	steps, err := plan.NodeSteps(node)
	if err != nil {
		return "", err
	}
	last := ""
	for _, s := range steps {
		if s.ID != restore.StepStartControlPlane {
			last = s.ID
		}
	}
	return last, nil
}

// Run restores the backup into a sandbox exactly as `kdr restore apply`
// would on every node (the same plan and steps), with the etcd members
// started in this process on loopback ports, proves the result whole and
// measures RTO and RPO. It removes the sandbox and stops every member
// before it returns, also when it fails or ctx is cancelled. A drill that
// finds damage returns a report with a failing result and no error; the
// error is for a drill that could not be carried out.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CertWarnWithin == 0 {
		o.CertWarnWithin = 30 * 24 * time.Hour
	}
	m := o.Manifest
	var random [3]byte
	rand.Read(random[:])
	start := o.Now()
	rep := &Report{
		ID: manifest.NewID(start.UTC(), random), Cluster: m.Cluster, Backup: m.ID, BackupTaken: m.Created,
		Target: o.Target.Name(), Started: start.UTC(), Members: max(len(m.Etcd.Members), 1),
	}
	sandbox, err := os.MkdirTemp(o.Sandbox, "kdr-drill-")
	if err != nil {
		return nil, fmt.Errorf("drill sandbox: %w", err)
	}
	defer os.RemoveAll(sandbox)
	members := &members{}
	defer members.stop()

	nodes, err := loopbackNodes(rep.Members)
	if err != nil {
		return nil, err
	}
	po := restore.Options{Target: o.Target.Name(), Topology: restore.TopologySystemd, Nodes: nodes}
	var plan *restore.Plan
	switch {
	case o.Revision == 0:
		plan, err = restore.BuildPlan(m, o.Source, po)
	case o.Chain == nil || o.Chain.Base == nil || o.Chain.Base.ID != m.ID:
		err = fmt.Errorf("revision %d: no captured log of %s given", o.Revision, m.ID)
	default:
		plan, err = restore.BuildPlanAt(o.Chain, o.Revision, o.Source, po)
		rep.Revision = o.Revision
	}
	if err != nil {
		return nil, fmt.Errorf("drill plan: %w", err)
	}
	envs := make([]*restore.Env, len(nodes))
	for i, n := range nodes {
		envs[i] = &restore.Env{
			Plan: plan, Root: filepath.Join(sandbox, n.Name), Target: o.Target, Identities: o.Identities,
			Runner: members, Log: o.Log, WaitTimeout: 2 * time.Minute,
		}
	}
	var mu sync.Mutex
	// applyAll runs every node at once, as every host would, until the
	// given step ("": until healthy); the first failure stops the others.
	applyAll := func(until string) error {
		actx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			until := until
			if until == "" {
				if until, errs[i] = untilHealthy(plan, n.Name); errs[i] != nil {
					continue
				}
			}
			wg.Go(func() {
				errs[i] = restore.Apply(actx, envs[i], n.Name, restore.ApplyOptions{Until: until, Progress: func(s restore.Step, state string, err error) {
					mu.Lock()
					defer mu.Unlock()
					rep.step(n.Name, s.ID, state, err, o.Now())
				}})
				if errs[i] != nil {
					cancel()
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
		}
		return errors.Join(errs...)
	}

	// Every node up to its decrypted (or replayed) database; then a copy
	// of one to check offline (HashKV at the backup's revision, which the
	// restored members have compacted), kept out of the RTO; then the rest
	// of the restore.
	staged := restore.StepDecrypt
	if plan.ToRevision > 0 {
		staged = restore.StepReplay
	}
	err = applyAll(staged)
	var verifyDB string
	var paused time.Duration
	if err == nil {
		t := o.Now()
		verifyDB = filepath.Join(sandbox, "verify.db")
		err = restore.CopyFile(ctx, filepath.Join(envs[0].Root, filepath.FromSlash(plan.RestoredDB())), verifyDB)
		paused = o.Now().Sub(t)
	}
	if err == nil {
		err = applyAll("")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rep.add(Check{ID: "restore", Subject: m.ID, Grade: Fail, Reason: oneLine(err)})
		rep.finish(o.Now())
		return rep, nil
	}
	healthy := o.Now()
	rep.RTOSeconds = healthy.Sub(start).Seconds() - paused.Seconds()
	rep.RPOSeconds = healthy.Sub(dataTime(plan)).Seconds()
	rep.add(Check{ID: "restore", Subject: m.ID, Grade: Pass,
		Reason: fmt.Sprintf("%d member(s) restored with the plan's %d steps per node", len(nodes), len(plan.Steps)/len(nodes))})

	endpoints := make([]string, len(nodes))
	for i, n := range nodes {
		endpoints[i] = n.ClientURL
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("drill client: %w", err)
	}
	defer cli.Close()
	// The checks talk to members that may lose quorum, and to a live
	// cluster that may stop answering: each is bounded.
	if plan.ToRevision > 0 {
		checkReplay(rep, envs[0], plan, nodes[0].Name)
	}
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	checkEtcd(cctx, rep, cli, plan, verifyDB)
	cancel()
	if o.Live != nil {
		dctx, cancel := context.WithTimeout(ctx, checkTimeout)
		checkDrift(dctx, rep, cli, o.Live)
		cancel()
	}
	if o.KubeAPIServer != "" {
		checkAPIServer(ctx, rep, o.KubeAPIServer, envs[0].Root, plan.Options.KubernetesDir, m.Inventory.Subnets["services"], endpoints, sandbox)
	}
	l := requiredLayout(m, envs[0].Root, plan.Options.KubernetesDir, o.EtcdTLS)
	rep.add(Check{ID: "topology", Subject: l.topology, Grade: Pass,
		Reason: fmt.Sprintf("%s: %d files required, from %s", topologyText(l.topology), len(l.required), strings.Join(l.sources, ", "))})
	for _, c := range l.unmatched {
		rep.add(c)
	}
	pki, err := pkicheck.Run(ctx, pkicheck.Options{Root: envs[0].Root, KubernetesDir: plan.Options.KubernetesDir,
		Required: l.required, PKIDirs: l.dirs, WarnWithin: o.CertWarnWithin, Now: o.Now()})
	if err != nil {
		rep.add(Check{ID: "pki", Subject: plan.Options.KubernetesDir, Grade: Fail, Reason: oneLine(err)})
	}
	for _, c := range pki {
		rep.add(Check{ID: c.ID, Subject: c.Subject, Grade: Grade(c.Grade), Reason: c.Reason})
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.finish(o.Now())
	rep.VerifySeconds = rep.Finished.Sub(healthy).Seconds()
	return rep, nil
}

// dataTime is when the restored data was current, at the latest: the
// set's creation, or for a replay when the writer received the target
// revision's segment start (the revision itself came at or after it, so
// the RPO is an upper bound), or its end when the target ends it.
func dataTime(plan *restore.Plan) time.Time {
	if plan.ToRevision == 0 || plan.Replay == nil || len(plan.Replay.Segments) == 0 {
		return plan.Created
	}
	h := plan.Replay.Segments[len(plan.Replay.Segments)-1].Head
	if h.Last == plan.ToRevision {
		return h.SeenLast
	}
	return h.SeenFirst
}

// loopbackNodes names n sandbox members on free loopback ports. Every
// port's listener stays open until all are picked, so no two are the same
// (two members on one peer URL would even share a member ID).
func loopbackNodes(n int) ([]restore.Node, error) {
	var ports []int
	for range 2 * n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("drill: no free loopback port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	var nodes []restore.Node
	for i := range n {
		nodes = append(nodes, restore.Node{
			Name: fmt.Sprintf("drill-%d", i+1), IP: "127.0.0.1",
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		})
	}
	return nodes, nil
}

// members runs the sandbox's etcd members in this process, where the
// restore steps would start a service: nothing outlives the drill.
type members struct {
	mu  sync.Mutex
	all []*embed.Etcd
}

func (*members) StopControlPlane(context.Context, *restore.Env) error  { return nil }
func (*members) StartControlPlane(context.Context, *restore.Env) error { return nil }

func (ms *members) StartEtcd(_ context.Context, e *restore.Env) error {
	n := e.Node
	cfg := embed.NewConfig()
	cfg.Name = n.Name
	cfg.Dir = filepath.Join(e.Root, filepath.FromSlash(e.Plan.Options.EtcdDataDir))
	var err error
	if cfg.ListenPeerUrls, err = urls(n.PeerURL); err != nil {
		return err
	}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	if cfg.ListenClientUrls, err = urls(n.ClientURL); err != nil {
		return err
	}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.InitialCluster = e.Plan.InitialCluster
	cfg.InitialClusterToken = e.Plan.Options.Token
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	// Starting waits for the other members; the step's check is what
	// waits for health, so the start runs on in the background.
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd member %s: %w", n.Name, err)
	}
	ms.mu.Lock()
	ms.all = append(ms.all, etcd)
	ms.mu.Unlock()
	return nil
}

func (ms *members) stop() {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, e := range ms.all {
		// Close waits for the client listeners, which open only once the
		// member has joined a quorum: a drill stopped before that must
		// stop the server first, or Close never returns.
		e.Server.HardStop()
		e.Close()
	}
	ms.all = nil
}

func topologyText(t string) string {
	if t == restore.TopologyKubeadm {
		return "stacked etcd (kubeadm static pods)"
	}
	return "external etcd (systemd)"
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

func urls(s string) ([]url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	return []url.URL{*u}, nil
}
