package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Runner stops and starts etcd and the control plane on a node. The engine
// uses HostRunner; drills and tests wrap it to start processes themselves
// where no kubelet or systemd runs.
type Runner interface {
	StopControlPlane(ctx context.Context, e *Env) error
	StartEtcd(ctx context.Context, e *Env) error
	StartControlPlane(ctx context.Context, e *Env) error
}

// HostRunner does what a person would on a real host: for kubeadm it moves
// static pod manifests (the kubelet does the rest); for systemd it runs
// systemctl, and only when the root is the real one.
type HostRunner struct{}

// StopControlPlane moves the static pod manifests aside, or stops etcd's unit.
func (HostRunner) StopControlPlane(ctx context.Context, e *Env) error {
	if e.Plan.Options.Topology == TopologySystemd {
		if e.Root != "/" {
			// Nothing of this host runs from a sandbox root; the step's
			// check still proves etcd's ports free.
			return nil
		}
		return systemctl(ctx, e, "stop", "etcd")
	}
	dir := e.path(hostPath(e.Plan.Options.KubernetesDir, "manifests"))
	aside := dir + e.Plan.AsideSuffix()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(aside, 0o700); err != nil {
		return err
	}
	for _, de := range entries {
		if de.IsDir() || !strings.HasSuffix(de.Name(), ".yaml") {
			continue
		}
		if err := os.Rename(filepath.Join(dir, de.Name()), filepath.Join(aside, de.Name())); err != nil {
			return fmt.Errorf("move %s aside: %w", de.Name(), err)
		}
	}
	return e.note("manifestsAside", aside)
}

// StartEtcd puts the restored etcd manifest in place, or starts etcd's unit.
func (HostRunner) StartEtcd(ctx context.Context, e *Env) error {
	if e.Plan.Options.Topology == TopologySystemd {
		return systemctl(ctx, e, "start", "etcd")
	}
	return installManifests(e, func(name string) bool { return name == "etcd.yaml" })
}

// StartControlPlane puts every other restored static pod manifest in place.
func (HostRunner) StartControlPlane(_ context.Context, e *Env) error {
	return installManifests(e, func(name string) bool { return name != "etcd.yaml" })
}

// installManifests copies staged manifests into the kubelet's directory.
func installManifests(e *Env, want func(string) bool) error {
	staged := filepath.Dir(e.stagedManifest("etcd.yaml"))
	dir := e.path(hostPath(e.Plan.Options.KubernetesDir, "manifests"))
	entries, err := os.ReadDir(staged)
	if err != nil {
		return fmt.Errorf("restored manifests: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, de := range entries {
		if de.IsDir() || strings.HasPrefix(de.Name(), ".") || !want(de.Name()) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(staged, de.Name()))
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, de.Name()), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func systemctl(ctx context.Context, e *Env, verb, unit string) error {
	if e.Root != "/" {
		return fmt.Errorf("systemctl %s %s: the restore root is %s, not this host's: %s it yourself, then run kdr restore apply again (the step's check sees it done)", verb, unit, e.Root, verb)
	}
	out, err := exec.CommandContext(ctx, "systemctl", verb, unit).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s %s: %w: %s", verb, unit, err, strings.TrimSpace(string(out)))
	}
	return nil
}
