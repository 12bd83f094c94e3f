package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/restore"
	"github.com/kdr-io/kdr/runbooks"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
)

// Runbook objects stored beside each set, unencrypted: they hold the
// plan, the inventory and certificate dates, never a key.
const (
	RunbookMarkdown = "runbook.md"
	RunbookPDF      = "runbook.pdf"
)

// backup backs up every cluster to every target, as `kdr backup` does,
// and records the outcome per cluster and target.
func (a *Agent) backup(ctx context.Context, cfg *config.Config) error {
	rs, err := fromconfig.Recipients(cfg)
	if err != nil {
		a.failAll(cfg, reasonConfig)
		return err
	}
	targets, err := fromconfig.Targets(ctx, cfg, "")
	if err != nil {
		a.failAll(cfg, reasonConfig)
		return err
	}
	var errs []error
	for _, c := range cfg.Clusters {
		if err := a.backupCluster(ctx, cfg, c, rs, targets); err != nil {
			errs = append(errs, fmt.Errorf("backup of %s: %w", c.Name, err))
		}
	}
	a.refresh(ctx, cfg)
	return errors.Join(errs...)
}

func (a *Agent) backupCluster(ctx context.Context, cfg *config.Config, c config.Cluster, rs []crypto.Recipient, targets []storage.Target) error {
	o, err := fromconfig.Backup(c, rs, targets)
	if err != nil {
		a.m.failures.WithLabelValues(c.Name, "", reasonConfig).Inc()
		return err
	}
	o.Root, o.Node, o.Logger = a.o.Root, a.o.Node, a.log
	start := time.Now()
	res, err := snapshot.Backup(ctx, o)
	a.m.duration.WithLabelValues(c.Name).Observe(time.Since(start).Seconds())
	if res == nil {
		a.m.failures.WithLabelValues(c.Name, "", reason(err)).Inc()
		return err
	}
	for name, terr := range res.Failed {
		if errors.Is(terr, context.Canceled) {
			// Cut short by a shutdown or a lost lease: says nothing of the target.
			a.m.failures.WithLabelValues(c.Name, name, reasonCanceled).Inc()
			continue
		}
		a.m.failures.WithLabelValues(c.Name, name, reasonTarget).Inc()
		a.health.backupFailed(name, terr)
	}
	if len(res.Complete) == 0 {
		return err
	}
	m := res.Manifest
	var stored int64
	for _, obj := range m.Objects {
		stored += obj.Size
	}
	for _, name := range res.Complete {
		a.m.written.WithLabelValues(c.Name, name).Add(float64(stored))
		a.health.backupStored(name)
	}
	a.recordManifest(m)
	for _, t := range targets {
		if !slices.Contains(res.Complete, t.Name()) {
			continue
		}
		if perr := a.publishRunbook(ctx, cfg, t, m); perr != nil {
			a.m.failures.WithLabelValues(c.Name, t.Name(), reasonRunbook).Inc()
			a.log.Error("runbook not stored beside the backup", "cluster", c.Name, "backup", m.ID, "target", t.Name(), "err", perr)
			err = errors.Join(err, perr)
		}
	}
	return err
}

// publishRunbook renders the backup's runbook, as it would be printed for
// a restore from this very target, and stores it beside the set.
func (a *Agent) publishRunbook(ctx context.Context, cfg *config.Config, t storage.Target, m *manifest.Manifest) error {
	tcfg, err := fromconfig.PickTarget(cfg, t.Name())
	if err != nil {
		return err
	}
	plan, err := restore.BuildPlan(m, fromconfig.Source(tcfg), restore.Options{Target: t.Name(), ConfigFile: a.o.ConfigPath})
	if err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	o := runbooks.Options{Now: time.Now()}
	for _, r := range []struct {
		name, contentType string
		render            func(io.Writer, *restore.Plan, runbooks.Options) error
	}{
		{RunbookMarkdown, "text/markdown; charset=utf-8", runbooks.Markdown},
		{RunbookPDF, "application/pdf", runbooks.PDF},
	} {
		var buf bytes.Buffer
		if err := r.render(&buf, plan, o); err != nil {
			return fmt.Errorf("render %s: %w", r.name, err)
		}
		key := manifest.Key(m.Cluster, m.ID, r.name)
		if err := t.Put(ctx, key, &buf, storage.PutOptions{ContentType: r.contentType}); err != nil {
			return fmt.Errorf("store %s: %w", key, err)
		}
	}
	return nil
}

// prune applies the retention policy to every cluster on every target.
func (a *Agent) prune(ctx context.Context, cfg *config.Config) error {
	targets, err := fromconfig.Targets(ctx, cfg, "")
	if err != nil {
		return err
	}
	policy := fromconfig.Policy(cfg.Retention)
	var errs []error
	for _, c := range cfg.Clusters {
		for _, t := range targets {
			rep, err := catalog.Prune(ctx, t, c.Name, policy, catalog.PruneOptions{IncompleteGrace: cfg.Retention.IncompleteGrace})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			a.m.pruned.WithLabelValues(c.Name, t.Name()).Add(float64(len(rep.Removed) + len(rep.IncompleteRemoved)))
			errs = append(errs, rep.Errors...)
			if len(rep.Removed)+len(rep.IncompleteRemoved) > 0 {
				a.log.Info("pruned", "cluster", c.Name, "target", t.Name(), "removed", rep.Removed, "incomplete", rep.IncompleteRemoved)
			}
		}
	}
	a.refresh(ctx, cfg)
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
	tcfg, err := fromconfig.PickTarget(cfg, cfg.Drill.Target)
	if err != nil {
		return err
	}
	t, err := fromconfig.Target(ctx, tcfg)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cfg.Clusters {
		rep, err := a.drillCluster(ctx, cfg, c.Name, t, tcfg, ids)
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

func (a *Agent) drillCluster(ctx context.Context, cfg *config.Config, cluster string, t storage.Target, tcfg config.Target, ids []age.Identity) (*drill.Report, error) {
	id, err := catalog.Resolve(ctx, t, cluster, "latest")
	if err != nil {
		return nil, err
	}
	m, _, err := catalog.LoadManifest(ctx, t, cluster, id)
	if err != nil {
		return nil, err
	}
	rep, err := drill.Run(ctx, drill.Options{
		Manifest: m, Source: fromconfig.Source(tcfg), Target: t, Identities: ids, Sandbox: cfg.Drill.Sandbox,
		KubeAPIServer: cfg.Drill.KubeAPIServer, Log: a.log,
	})
	if err != nil {
		return nil, err
	}
	if rep.History, err = drill.History(ctx, t, cluster); err != nil {
		a.log.Warn("earlier drills unreadable", "cluster", cluster, "target", t.Name(), "err", err)
	}
	a.log.Info("drill", "cluster", cluster, "backup", id, "result", rep.Result, "rto", rep.RTOSeconds, "rpo", rep.RPOSeconds)
	return rep, drill.Store(ctx, t, rep)
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
	case errors.Is(err, snapshot.ErrRequiredMissing):
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
