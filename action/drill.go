package action

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/internal/fromconfig"
)

// DrillOptions are what a front end sets on a drill beyond the config.
type DrillOptions struct {
	// Ref names the backup; Ref.Backup may also be RandomRef, and
	// Ref.Revision RandomRevision.
	Ref        Ref
	Identities []age.Identity
	// Sandbox overrides drill.sandbox.
	Sandbox string
	// NoStore keeps the report off the target.
	NoStore bool
}

// Drill restores a backup into a sandbox and proves it whole, as `kdr
// drill` and the agent's scheduled drill both do: the same backup gives
// the same checks, a sample of keys compared with the live cluster when it
// answers, and the report, signed, stored beside the backups with the
// history of earlier drills.
func (e *Env) Drill(ctx context.Context, o DrillOptions) (*drill.Report, error) {
	// Before any work: a drill that cannot store its report should say so
	// at once, not after restoring a whole database.
	signer, err := e.signerOrNil(!o.NoStore)
	if err != nil {
		return nil, fmt.Errorf("the drill's report is stored signed (or run it with --no-store): %w", err)
	}
	var r *Resolved
	switch {
	case o.Ref.Revision == RandomRevision && o.Ref.Backup == "" && o.Ref.Before.IsZero():
		if r, err = e.resolveRandomRevision(ctx, o.Ref); err == nil {
			e.Log.Info("drill of a random revision", "revision", r.Revision, "backup", r.Manifest.ID, "logEnd", r.Chain.End())
		}
	case o.Ref.Backup == RandomRef && o.Ref.Revision == 0:
		r, err = e.resolveRandom(ctx, o.Ref)
	default:
		r, err = e.Resolve(ctx, o.Ref)
	}
	if err != nil {
		return nil, err
	}
	do := drill.Options{
		Manifest: r.Manifest, Revision: r.Revision, Chain: r.Chain,
		Source: fromconfig.Source(r.TargetConfig), Target: r.Target, Identities: o.Identities,
		Sandbox: cmp.Or(o.Sandbox, e.Config.Drill.Sandbox), KubeAPIServer: e.Config.Drill.KubeAPIServer, Log: e.Log,
	}
	for _, c := range e.Config.Clusters {
		if tls := c.Etcd.TLS; c.Name == r.Manifest.Cluster && tls != nil {
			do.EtcdTLS = []string{tls.CA, tls.Cert, tls.Key}
		}
	}
	if live := e.liveClient(ctx, r.Manifest.Cluster); live != nil {
		defer live.Close()
		do.Live = live
	}
	rep, err := drill.Run(ctx, do)
	if err != nil {
		if r.Revision > 0 {
			return nil, fmt.Errorf("drill of %s to revision %d: %w", r.Manifest.ID, r.Revision, err)
		}
		return nil, fmt.Errorf("drill of %s: %w", r.Manifest.ID, err)
	}
	if rep.History, err = drill.History(ctx, r.Target, e.Trust, rep.Cluster); err != nil {
		e.Log.Warn("earlier drills unreadable", "target", r.Target.Name(), "err", err)
	}
	args := []any{"cluster", rep.Cluster, "backup", rep.Backup, "result", rep.Result, "rto", rep.RTOSeconds, "rpo", rep.RPOSeconds}
	if rp := rep.Replay; rp != nil {
		args = append(args, "revision", rp.Revision, "replayed", rp.Applied, "replaySeconds", rp.Seconds)
	}
	e.Log.Info("drill", args...)
	if !o.NoStore {
		if err := drill.Store(ctx, r.Target, signer, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// liveClient dials the cluster the backup came from, for the drift
// sample, or returns nil when it does not answer quickly: a drill runs
// when the cluster is healthy or gone, and neither must stop it.
func (e *Env) liveClient(ctx context.Context, name string) *clientv3.Client {
	for _, c := range e.Config.Clusters {
		if c.Name != name {
			continue
		}
		eo, err := fromconfig.Etcd(c)
		if err != nil {
			return nil
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: eo.Endpoints, TLS: eo.TLS, Username: eo.Username, Password: eo.Password,
			DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := cli.Status(sctx, eo.Endpoints[0]); err != nil {
			cli.Close()
			return nil
		}
		return cli
	}
	return nil
}
