package action

import (
	"context"
	"log/slog"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// Env is what the use cases share: the config, the keys it trusts and
// the targets it names.
type Env struct {
	Config *config.Config
	// ConfigPath is the config's file, named in the runbooks' commands.
	ConfigPath string
	Trust      *manifest.Trust
	Targets    []storage.Target
	Log        *slog.Logger
}

// Load opens the config's targets (only the one named, when target is
// not empty) and loads its trusted keys. Readers need nothing more.
func Load(ctx context.Context, cfg *config.Config, configPath, target string, log *slog.Logger) (*Env, error) {
	trust, err := fromconfig.Trust(cfg)
	if err != nil {
		return nil, err
	}
	targets, err := fromconfig.Targets(ctx, cfg, target)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Env{Config: cfg, ConfigPath: configPath, Trust: trust, Targets: targets, Log: log}, nil
}

// Signer loads the signing key the writing use cases need; readers never
// ask for it, so an operator's laptop that only restores holds none.
func (e *Env) Signer() (*manifest.Signer, error) { return fromconfig.Signer(e.Config, e.Trust) }
