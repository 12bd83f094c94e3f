package main

import (
	"errors"
	"os"

	"encoding/json"
	"github.com/kdr-io/kdr/config"
	"io"
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
