package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	pathpkg "path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// StepStopControlPlane names the step that stops etcd and the control plane.
const StepStopControlPlane = "stop-control-plane"

var stepStopControlPlane = stepDef{
	id:    StepStopControlPlane,
	title: "Stop etcd and the control plane",
	why: "etcd must not run while its data is replaced, and an API server must not serve from a half-restored " +
		"etcd. The static pod manifests are moved aside, which makes the kubelet stop the pods; nothing is deleted.",
	where: EveryNode,
	commands: []string{
		// A new machine has no manifests directory, and a glob that
		// matches nothing would make mv fail.
		"{{if eq .Topology \"systemd\"}}systemctl stop etcd{{else}}if [ -d {{.KubeDir}}/manifests ]; then " +
			"mkdir -p -m 700 {{.KubeDir}}/manifests{{.Aside}} && find {{.KubeDir}}/manifests -maxdepth 1 -name '*.yaml' ! -type d " +
			"-exec mv -t {{.KubeDir}}/manifests{{.Aside}} {} +; fi{{end}}",
		"ss -ltn | grep -E ':({{.ClientPort}}|{{.PeerPort}})\\b' || echo 'etcd stopped'",
	},
	expect:      "No process listens on etcd's ports (the kubelet needs up to 20 seconds to stop static pods).",
	destructive: true,
	action:      stopControlPlane,
	check:       checkPortsFree,
}

func stopControlPlane(ctx context.Context, e *Env) error { return e.Runner.StopControlPlane(ctx, e) }

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
	// Both directories are opened without following a symlink, so a
	// resumed restore moves the manifests of this host, not of wherever
	// a link put in their place points.
	root, err := openBeneath(e.Root)
	if err != nil {
		return fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	rel := rootRel(hostPath(e.Plan.Options.KubernetesDir, "manifests"))
	dir, err := root.openDir(rel, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read %s: %w", root.at(rel), err)
	}
	slices.Sort(names)
	asideRel := rel + e.Plan.AsideSuffix()
	aside, err := root.openDir(asideRel, 0o700)
	if err != nil {
		return err
	}
	defer aside.Close()
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		st, ok, err := lstatAt(dir, name)
		if err != nil {
			return fmt.Errorf("move %s aside: %w", root.at(pathpkg.Join(rel, name)), err)
		}
		if !ok || isType(st, unix.S_IFDIR) {
			continue
		}
		// A symlink is moved itself: rename never follows its last component.
		if err := renameAt(dir, name, aside, name); err != nil {
			return fmt.Errorf("move %s aside: %w", root.at(pathpkg.Join(rel, name)), err)
		}
	}
	return e.record(func(j *Journal) { j.ManifestsAside = root.at(asideRel) })
}

func checkPortsFree(ctx context.Context, e *Env) error {
	return waitFor(ctx, "etcd's ports not free", e.WaitTimeout, func() error {
		for _, u := range []string{e.Node.PeerURL, e.Node.ClientURL} {
			if err := portFree(u); err != nil {
				return err
			}
		}
		return nil
	})
}
