package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/snapshot"
)

// backup backs up every cluster to every target, as `kdr backup` does,
// and records the outcome per cluster and target.
func (a *Agent) backup(ctx context.Context, cfg *config.Config) error {
	env, err := action.Load(ctx, cfg, a.o.ConfigPath, "", a.log)
	if err != nil {
		a.failAll(cfg, reasonConfig)
		return err
	}
	results, err := env.Backup(ctx, cfg.Clusters, action.BackupOptions{Root: a.o.Root, Node: a.o.Node})
	if err != nil {
		a.failAll(cfg, reasonConfig)
		return err
	}
	var errs []error
	for _, r := range results {
		if err := a.recordBackup(r); err != nil {
			errs = append(errs, fmt.Errorf("backup of %s: %w", r.Cluster, err))
		}
	}
	a.refresh(ctx, cfg)
	return errors.Join(errs...)
}

// recordBackup exports what one cluster's backup did.
func (a *Agent) recordBackup(r action.ClusterBackup) error {
	res := r.Result
	if res == nil {
		a.m.failures.WithLabelValues(r.Cluster, "", reason(r.Err)).Inc()
		return r.Err
	}
	if !res.Manifest.Completed.IsZero() {
		a.m.duration.WithLabelValues(r.Cluster).Observe(res.Manifest.Completed.Sub(res.Manifest.Created).Seconds())
	}
	for name, terr := range res.Failed {
		if errors.Is(terr, context.Canceled) {
			// Cut short by a shutdown or a lost lease: says nothing of the target.
			a.m.failures.WithLabelValues(r.Cluster, name, reasonCanceled).Inc()
			continue
		}
		a.m.failures.WithLabelValues(r.Cluster, name, reasonTarget).Inc()
		a.health.backupFailed(name, terr)
	}
	if len(res.Complete) == 0 {
		return r.Err
	}
	m := res.Manifest
	var stored int64
	for _, obj := range m.Objects {
		stored += obj.Size
	}
	for _, name := range res.Complete {
		a.m.written.WithLabelValues(r.Cluster, name).Add(float64(stored))
		a.health.backupStored(name)
	}
	for _, name := range r.RunbookFailed {
		a.m.failures.WithLabelValues(r.Cluster, name, reasonRunbook).Inc()
	}
	for _, name := range r.KitFailed {
		a.m.failures.WithLabelValues(r.Cluster, name, reasonKit).Inc()
	}
	a.recordManifest(m)
	a.newSet(r.Cluster)
	return r.Err
}

// prune applies the retention policy to every cluster on every target.
func (a *Agent) prune(ctx context.Context, cfg *config.Config) error {
	env, err := action.Load(ctx, cfg, a.o.ConfigPath, "", a.log)
	if err != nil {
		return err
	}
	prunes, err := env.Prune(ctx, cfg.Clusters, false)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range prunes {
		if p.Err != nil {
			errs = append(errs, p.Err)
			continue
		}
		rep := p.Report
		a.m.pruned.WithLabelValues(p.Cluster, p.Target).Add(float64(len(rep.Removed) + len(rep.IncompleteRemoved)))
		errs = append(errs, rep.Errors...)
		if len(rep.Removed)+len(rep.IncompleteRemoved) > 0 {
			a.log.Info("pruned", "cluster", p.Cluster, "target", p.Target, "removed", rep.Removed, "incomplete", rep.IncompleteRemoved)
		}
		for _, f := range rep.Foreign {
			a.log.Warn("foreign set on target: not counted, not removed", "cluster", p.Cluster, "target", p.Target, "backup", f.ID, "reason", f.Reason)
		}
	}
	a.refresh(ctx, cfg)
	return errors.Join(errs...)
}

// pack packs the closed segments of every cluster's captured log on
// every target.
func (a *Agent) pack(ctx context.Context, cfg *config.Config) error {
	env, err := action.Load(ctx, cfg, a.o.ConfigPath, "", a.log)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range env.Pack(ctx, cfg.Clusters, time.Now()) {
		err := p.Failed()
		packed := 0
		if rep := p.Report; rep != nil {
			packed = rep.Segments()
			if len(rep.Packs) > 0 || rep.Removed > 0 {
				a.log.Info("packed the captured log", "cluster", p.Cluster, "target", p.Target, "packs", len(rep.Packs),
					"segments", packed, "removed", rep.Removed, "locked", rep.Locked)
			}
		}
		a.m.packRun(p.Cluster, p.Target, packed, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("pack %s on %s: %w", p.Cluster, p.Target, err))
		}
	}
	return errors.Join(errs...)
}

// drill restores the newest backup of every cluster into a sandbox and
// stores the report beside the backups.
func (a *Agent) drill(ctx context.Context, cfg *config.Config) error {
	if cfg.Drill.IdentityFile == "" {
		for _, c := range cfg.Clusters {
			a.m.drillFailures.WithLabelValues(c.Name).Inc()
		}
		return errors.New("scheduled drill not run: drill.identityFile is not set (the agent holds only public keys)")
	}
	ids, err := crypto.LoadIdentities(cfg.Drill.IdentityFile, nil)
	if err != nil {
		return err
	}
	env, err := action.Load(ctx, cfg, a.o.ConfigPath, "", a.log)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cfg.Clusters {
		rep, err := env.Drill(ctx, action.DrillOptions{
			Ref: action.Ref{Cluster: c.Name, Target: cfg.Drill.Target, Backup: catalog.LatestRef}, Identities: ids,
		})
		if err != nil || rep.Result == drill.Fail {
			a.m.drillFailures.WithLabelValues(c.Name).Inc()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("drill of %s: %w", c.Name, err))
			continue
		}
		if rep.Result == drill.Fail {
			errs = append(errs, fmt.Errorf("drill of %s failed: %s", c.Name, strings.Join(rep.Failures(), "; ")))
			continue
		}
		a.recordDrill(c.Name, drill.Summary{Finished: rep.Finished, RTOSeconds: rep.RTOSeconds, RPOSeconds: rep.RPOSeconds})
	}
	return errors.Join(errs...)
}

// recordDrill exports a successful drill.
func (a *Agent) recordDrill(cluster string, s drill.Summary) {
	a.m.drillLast.WithLabelValues(cluster).Set(float64(s.Finished.Unix()))
	a.m.drillRTO.WithLabelValues(cluster).Set(s.RTOSeconds)
	a.m.drillRPO.WithLabelValues(cluster).Set(s.RPOSeconds)
}

// failAll counts a failure that struck before any cluster was reached.
func (a *Agent) failAll(cfg *config.Config, why string) {
	for _, c := range cfg.Clusters {
		a.m.failures.WithLabelValues(c.Name, "", why).Inc()
	}
}

// reason names why a backup reached no target, for the failures metric.
func reason(err error) string {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return reasonCanceled
	case errors.Is(err, snapshot.ErrSource), errors.Is(err, snapshot.ErrNoMember):
		return reasonEtcd
	case errors.Is(err, snapshot.ErrRequiredMissing), errors.Is(err, snapshot.ErrSymlinkedDir):
		return reasonState
	}
	return reasonOther
}

// recordManifest exports what the newest backup says of the cluster.
func (a *Agent) recordManifest(m *manifest.Manifest) {
	if !a.health.sawManifest(m.Cluster, m.ID) {
		return
	}
	a.m.dbSize.WithLabelValues(m.Cluster).Set(float64(m.Etcd.DBSize))
	a.m.revision.WithLabelValues(m.Cluster).Set(float64(m.Etcd.Revision))
	a.m.certExpiry.DeletePartialMatch(map[string]string{"cluster": m.Cluster})
	for _, c := range m.State.Certificates {
		a.m.certExpiry.WithLabelValues(m.Cluster, c.Path).Set(float64(c.NotAfter.Unix()))
	}
}
