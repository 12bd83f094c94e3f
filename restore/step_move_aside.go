package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// StepMoveAside names the step that moves the old etcd data aside.
const StepMoveAside = "move-aside"

var stepMoveAside = stepDef{
	id:    StepMoveAside,
	title: "Move the old etcd data aside",
	why: "A restore never merges into or deletes existing data: the old data is kept until the restored " +
		"cluster is proven, so there is always a way back. A data dir that is a mount point (etcd on a disk " +
		"of its own) cannot be renamed: its contents are moved into a directory inside it, on the same disk.",
	where: EveryNode,
	commands: []string{
		// The old data keeps kdr's mode 700 on its way aside.
		"if mountpoint -q {{.DataDir}}; then mkdir -p -m 700 {{.DataDir}}/{{.Aside}} && " +
			"find {{.DataDir}} -mindepth 1 -maxdepth 1 ! -name '.kdr-aside-*' -exec mv -t {{.DataDir}}/{{.Aside}} {} +; " +
			"elif [ -e {{.DataDir}} ]; then mv {{.DataDir}} {{.DataDir}}{{.Aside}}; fi",
	},
	expect: "{{.DataDir}} does not exist, or is a mount point holding only {{.Aside}}; the old data, if any, " +
		"is in {{.DataDir}}{{.Aside}} or {{.DataDir}}/{{.Aside}}.",
	destructive: true,
	action:      moveAside,
	check:       checkMovedAside,
}

// asidePrefix starts the name of whatever a restore moved out of its way.
const asidePrefix = ".kdr-aside-"

// moveAside moves the old etcd data out of the way; it is never deleted
// or merged. A data dir that is a mount point keeps its place and its
// contents move into a directory inside it.
func moveAside(_ context.Context, e *Env) error {
	dir := e.path(e.Plan.Options.EtcdDataDir)
	names, err := dataDirEntries(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	mount, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if mount {
		return moveInside(e, dir, names)
	}
	if len(names) == 0 {
		// Nothing to keep; an empty directory left would be taken for a
		// member etcd made by itself.
		return os.Remove(dir)
	}
	aside, err := freeName(dir + e.Plan.AsideSuffix())
	if err != nil {
		return err
	}
	if err := e.record(func(j *Journal) { j.DataDirAside = aside }); err != nil {
		return err
	}
	return os.Rename(dir, aside)
}

// moveInside moves every entry of a mount point into its aside directory
// inside it. Killed halfway, the next run moves what is left.
func moveInside(e *Env, dir string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	aside := filepath.Join(dir, e.Plan.AsideSuffix())
	if err := os.Mkdir(aside, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := e.record(func(j *Journal) { j.DataDirAside = aside }); err != nil {
		return err
	}
	for _, name := range names {
		to, err := freeName(filepath.Join(aside, name))
		if err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(dir, name), to); err != nil {
			return fmt.Errorf("move the old etcd data aside: %w", err)
		}
	}
	return syncDir(dir)
}

// dataDirEntries lists a data dir's entries, less what a restore moved
// aside inside it.
func dataDirEntries(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, ent := range entries {
		if !strings.HasPrefix(ent.Name(), asidePrefix) {
			names = append(names, ent.Name())
		}
	}
	return names, nil
}

// freeName returns p, or p-2, p-3... when p is taken.
func freeName(p string) (string, error) {
	for i := 1; i < 1000; i++ {
		name := p
		if i > 1 {
			name = fmt.Sprintf("%s-%d", p, i)
		}
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			return name, nil
		}
	}
	return "", fmt.Errorf("no free name beside %s", p)
}

func checkMovedAside(_ context.Context, e *Env) error {
	names, err := dataDirEntries(e.path(e.Plan.Options.EtcdDataDir))
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(names) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%s still holds data (%s)", e.Plan.Options.EtcdDataDir, strings.Join(names, ", "))
}
