package action

import (
	"context"
	"errors"
	"slices"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/kit"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// maxRunbookRead bounds what is read of a stored Markdown runbook.
const maxRunbookRead = 16 << 20

// refreshKits refreshes the offline recovery kit on every local target
// that took a set in this run: an S3 bucket is reached over the network
// that an outage may have taken, a local disk is what is left. A kit that
// cannot be written costs no backup: it is logged and marked on each
// cluster's result, for the agent's metrics.
func (e *Env) refreshKits(ctx context.Context, signer *manifest.Signer, out []ClusterBackup) {
	for _, t := range e.Targets {
		local, ok := t.(*storage.Local)
		if !ok {
			continue
		}
		var took []int
		for i, cb := range out {
			if cb.Result != nil && slices.Contains(cb.Result.Complete, t.Name()) {
				took = append(took, i)
			}
		}
		if len(took) == 0 {
			continue
		}
		if err := e.refreshKit(ctx, signer, local); err != nil {
			e.Log.Warn("recovery kit not refreshed: the backup is whole, but the disk alone may not restore it", "target", t.Name(), "err", err)
			for _, i := range took {
				out[i].KitFailed = append(out[i].KitFailed, t.Name())
			}
		}
	}
}

// refreshKit writes the kit of one local target: the runbook of each
// cluster's newest trusted set as the backup stored it (read back,
// verified, not rendered again) and a config that restores from the disk.
func (e *Env) refreshKit(ctx context.Context, signer *manifest.Signer, t *storage.Local) error {
	rs, err := fromconfig.Recipients(e.Config)
	if err != nil {
		return err
	}
	recipients := make([]string, len(rs))
	for i, r := range rs {
		recipients[i] = r.Text
	}
	keys, err := fromconfig.TrustedKeyLines(e.Config)
	if err != nil {
		return err
	}
	rc, err := kit.RestoreConfig(e.Config, t.Name(), recipients, keys)
	if err != nil {
		return err
	}
	var runbooks []kit.Runbook
	for _, c := range e.Config.Clusters {
		m, _, err := catalog.Latest(ctx, t, e.Trust, c.Name)
		if errors.Is(err, catalog.ErrNoBackup) {
			continue
		}
		if err != nil {
			return err
		}
		md, err := manifest.ReadSigned(ctx, t, manifest.Key(c.Name, m.ID, RunbookMarkdown), maxRunbookRead, manifest.NamespaceRunbook, e.Trust)
		if errors.Is(err, storage.ErrNotExist) {
			continue // no plan, so no runbook (ErrNoPlan); the README says which are there
		}
		if err != nil {
			return err
		}
		runbooks = append(runbooks, kit.Runbook{Cluster: c.Name, Backup: m.ID, Markdown: md})
	}
	_, err = kit.Refresh(ctx, t, kit.Options{Runbooks: runbooks, Config: rc, Trust: e.Trust, Signer: signer, Log: e.Log})
	return err
}
