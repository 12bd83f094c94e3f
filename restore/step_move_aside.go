package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// StepMoveAside names the step that moves the old etcd data aside.
const StepMoveAside = "move-aside"

var stepMoveAside = stepDef{
	id:    StepMoveAside,
	title: "Move the old etcd data aside",
	why: "A restore never merges into or deletes existing data: the old data dir is kept beside the new one " +
		"until the restored cluster is proven, so there is always a way back.",
	where: EveryNode,
	commands: []string{
		"[ ! -e {{.DataDir}} ] || mv {{.DataDir}} {{.DataDir}}{{.Aside}}",
	},
	expect:      "{{.DataDir}} does not exist; the old data, if any, is in {{.DataDir}}{{.Aside}}.",
	destructive: true,
	action:      moveAside,
	check:       checkMovedAside,
}

// moveAside renames the old etcd data dir out of the way; it is never
// deleted or merged.
func moveAside(_ context.Context, e *Env) error {
	dir := e.path(e.Plan.Options.EtcdDataDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		if err == nil {
			return os.Remove(dir)
		}
		return nil
	}
	if err != nil {
		return err
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
	entries, err := os.ReadDir(e.path(e.Plan.Options.EtcdDataDir))
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%s still holds data", e.Plan.Options.EtcdDataDir)
}
