package action

import (
	"context"
	"errors"
	"fmt"

	"github.com/kdr-io/kdr/catalog"
)

// TargetWindow is the window of one cluster on one target, or why it
// could not be read.
type TargetWindow struct {
	Cluster string
	Target  string
	Window  *catalog.Window
	Err     error
}

// Windows reads the restorable window (catalog.ReadWindow) of each
// cluster on each of the env's targets, clusters first, targets in the
// config's order. A target that holds no trusted set of a cluster has no
// window and is left out; one that cannot be read is listed with its
// error. The error is for a cancelled context.
func (e *Env) Windows(ctx context.Context, clusters []string) ([]TargetWindow, error) {
	var out []TargetWindow
	for _, c := range clusters {
		for _, t := range e.Targets {
			w, err := catalog.ReadWindow(ctx, t, e.Trust, c, catalog.WindowOptions{})
			if cerr := ctx.Err(); cerr != nil {
				return nil, fmt.Errorf("window: %w", cerr)
			}
			if errors.Is(err, catalog.ErrNoBackup) {
				continue
			}
			out = append(out, TargetWindow{Cluster: c, Target: t.Name(), Window: w, Err: err})
		}
	}
	return out, nil
}
