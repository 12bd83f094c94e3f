package main

import (
	"errors"
	"os"

	"github.com/kdr-io/kdr/config"
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
