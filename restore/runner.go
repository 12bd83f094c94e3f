package restore

import (
	"context"
	"fmt"
	"os/exec"
	pathpkg "path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
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
// systemctl, and only when the root is the real one. Each method sits in
// the file of the step that calls it.
type HostRunner struct{}

// installManifests copies staged manifests into the kubelet's directory.
// The staged manifests came from a backup: each is opened without
// following a symlink and must be a regular file, so a manifest linked to
// a file of the host (/etc/shadow) is refused rather than copied into the
// kubelet's directory. The copy is written below the restore root without
// following a symlink either.
func installManifests(e *Env, want func(string) bool) error {
	staged, err := openBeneath(e.stagedDir())
	if err != nil {
		return fmt.Errorf("restored manifests: %w", err)
	}
	defer staged.Close()
	rel := rootRel(hostPath(e.Plan.Options.KubernetesDir, "manifests"))
	src, err := staged.openDir(rel, 0)
	if err != nil {
		return fmt.Errorf("restored manifests: %w", err)
	}
	defer src.Close()
	names, err := src.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("restored manifests: read %s: %w", staged.at(rel), err)
	}
	slices.Sort(names)
	root, err := openBeneath(e.Root)
	if err != nil {
		return fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	for _, name := range names {
		if strings.HasPrefix(name, ".") || !want(name) {
			continue
		}
		st, ok, err := lstatAt(src, name)
		if err != nil {
			return fmt.Errorf("restored manifest %s: %w", staged.at(pathpkg.Join(rel, name)), err)
		}
		if !ok || isType(st, unix.S_IFDIR) {
			continue
		}
		data, _, err := readFileIn(src, name, staged.at(pathpkg.Join(rel, name)))
		if err != nil {
			return fmt.Errorf("restored manifest: %w", err)
		}
		if err := root.writeFile(pathpkg.Join(rel, name), data, 0o600, 0o700); err != nil {
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
