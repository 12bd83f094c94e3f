package action

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/snapshot"
)

// BackupOptions are what a front end sets on a backup beyond the config.
type BackupOptions struct {
	// Root resolves state file paths ("/" unless testing).
	Root string
	// Node is the host whose files are captured.
	Node string
	// Progress, if set, makes a progress reporter per cluster.
	Progress func(cluster string) func(read int64)
}

// ClusterBackup is what one cluster's backup did.
type ClusterBackup struct {
	Cluster string
	// Result is nil when the backup failed before writing anything.
	Result *snapshot.Result
	// Err is the backup's error (wrapping snapshot.ErrPartial when some
	// targets hold the set), joined with runbook publishing failures.
	Err error
	// RunbookFailed names the targets whose runbook could not be stored.
	RunbookFailed []string
	// KitFailed names the local targets that took this set but whose
	// offline recovery kit could not be refreshed. The backup is whole
	// (Err does not say it); only that disk alone no longer restores.
	KitFailed []string
}

// Backup backs up each cluster to every target of the Env, then stores
// the signed runbook beside each complete set, then refreshes the
// offline recovery kit on every local target that took a set. Clusters
// are backed up on their own: one bad TLS path does not cost the others
// their backup. The error is for what stops every cluster (no key to
// encrypt or sign with).
func (e *Env) Backup(ctx context.Context, clusters []config.Cluster, o BackupOptions) ([]ClusterBackup, error) {
	rs, err := fromconfig.Recipients(e.Config)
	if err != nil {
		return nil, err
	}
	signer, err := e.Signer()
	if err != nil {
		return nil, err
	}
	var out []ClusterBackup
	for _, c := range clusters {
		cb := ClusterBackup{Cluster: c.Name}
		so, err := fromconfig.Backup(c, rs, signer, e.Trust, e.Targets)
		if err != nil {
			cb.Err = err
			out = append(out, cb)
			continue
		}
		so.Root, so.Node, so.Logger = o.Root, o.Node, e.Log
		if o.Progress != nil {
			so.Progress = o.Progress(c.Name)
		}
		cb.Result, cb.Err = snapshot.Backup(ctx, so)
		if cb.Result != nil {
			for _, t := range e.Targets {
				if !slices.Contains(cb.Result.Complete, t.Name()) {
					continue
				}
				perr := e.PublishRunbook(ctx, signer, t.Name(), cb.Result.Manifest)
				if errors.Is(perr, ErrNoPlan) {
					e.Log.Warn("no runbook stored beside the backup", "cluster", c.Name, "backup", cb.Result.Manifest.ID, "err", perr)
					break
				}
				if perr != nil {
					e.Log.Error("runbook not stored beside the backup", "cluster", c.Name, "backup", cb.Result.Manifest.ID, "target", t.Name(), "err", perr)
					cb.RunbookFailed = append(cb.RunbookFailed, t.Name())
					cb.Err = errors.Join(cb.Err, fmt.Errorf("runbook on target %s: %w", t.Name(), perr))
				}
			}
		}
		out = append(out, cb)
	}
	e.refreshKits(ctx, signer, out)
	return out, nil
}

// signerOrNil is for use cases that write only sometimes (a dry run
// writes nothing and needs no key).
func (e *Env) signerOrNil(need bool) (*manifest.Signer, error) {
	if !need {
		return nil, nil
	}
	return e.Signer()
}
