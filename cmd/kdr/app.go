package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
)

// defaultConfigPaths are tried in order when --config is not given.
var defaultConfigPaths = []string{"kdr.yaml", "/etc/kdr/kdr.yaml"}

func loadConfig(path string) (*config.Config, error) {
	path, err := findConfig(path)
	if err != nil {
		return nil, err
	}
	return config.Load(path)
}

// findConfig returns path, or the first default config file that exists.
func findConfig(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	for _, p := range defaultConfigPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no config: pass --config FILE, or create ./kdr.yaml (kdr init writes an example)")
}

// writeJSON prints v as indented JSON, the -o json of every command.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clustersEnv loads the config, the clusters a command works on (one
// when named) and the use cases' environment on the targets (one when
// named).
func (g *globals) clustersEnv(ctx context.Context, cluster, target string, log *slog.Logger) ([]config.Cluster, *action.Env, error) {
	cfg, err := loadConfig(g.configPath)
	if err != nil {
		return nil, nil, err
	}
	clusters, err := fromconfig.Clusters(cfg, cluster)
	if err != nil {
		return nil, nil, err
	}
	env, err := action.Load(ctx, cfg, g.configPath, target, log)
	if err != nil {
		return nil, nil, err
	}
	return clusters, env, nil
}

// env loads the config and what every use case needs from it: the
// trusted keys (with the sets the operator accepted by hash) and the
// targets (only the one named, when target is not empty).
func (g *globals) env(ctx context.Context, target string, log *slog.Logger) (*action.Env, error) {
	cfg, err := loadConfig(g.configPath)
	if err != nil {
		return nil, err
	}
	env, err := action.Load(ctx, cfg, g.configPath, target, log)
	if err != nil {
		return nil, err
	}
	for _, a := range g.accept {
		id, sum, ok := strings.Cut(a, "@sha256:")
		if !ok || !manifest.ValidID(id) || len(sum) != 64 {
			return nil, fmt.Errorf("--accept-unauthenticated %q: want ID@sha256:<64 hex digits of sha256 of the manifest.json>", a)
		}
		for _, c := range cfg.Clusters {
			env.Trust.Accept(c.Name, id, strings.ToLower(sum))
		}
	}
	return env, nil
}
