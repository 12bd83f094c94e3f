package action

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/restore"
	"github.com/kdr-io/kdr/runbooks"
	"github.com/kdr-io/kdr/storage"
)

// Runbook objects stored beside each set, unencrypted and signed: they
// hold the plan, the inventory and certificate dates, never a key.
const (
	RunbookMarkdown = "runbook.md"
	RunbookPDF      = "runbook.pdf"
)

// ErrNoPlan means no restore plan, and so no runbook, can be made from
// the set: its inventory names no host to restore onto. The backup is
// whole without it.
var ErrNoPlan = errors.New("no restore plan")

// PublishRunbook renders the backup's runbook, as it would be printed for
// a restore from this very target, and stores it signed beside the set,
// so a printed copy can be checked with ssh-keygen alone.
func (e *Env) PublishRunbook(ctx context.Context, signer *manifest.Signer, target string, m *manifest.Manifest) error {
	tcfg, err := fromconfig.PickTarget(e.Config, target)
	if err != nil {
		return err
	}
	t, err := e.target(target)
	if err != nil {
		return err
	}
	plan, err := restore.BuildPlan(m, fromconfig.Source(tcfg), restore.Options{Target: target, ConfigFile: e.ConfigPath, AllowedSigners: e.Trust.AllowedSigners()})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoPlan, err)
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
		if err := manifest.PutSigned(ctx, t, key, buf.Bytes(), manifest.NamespaceRunbook, signer, storage.PutOptions{ContentType: r.contentType}); err != nil {
			return err
		}
	}
	return nil
}

// target finds an opened target by name.
func (e *Env) target(name string) (storage.Target, error) {
	for _, t := range e.Targets {
		if t.Name() == name {
			return t, nil
		}
	}
	return nil, fmt.Errorf("no target %q is open", name)
}
