package action

import (
	"context"
	"errors"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
)

// TargetPack is one cluster's pack run on one target.
type TargetPack struct {
	Cluster, Target string
	Report          *catalog.PackReport
	// Err stopped this run; the others went on.
	Err error
}

// Pack packs the closed segments of each cluster's captured log on every
// target, one pack per chain and interval of agent.capture.packEvery
// (catalog.Pack). Packing needs no key: the heads inside a pack keep
// their writers' signatures. A target that fails does not stop the
// others.
func (e *Env) Pack(ctx context.Context, clusters []config.Cluster, now time.Time) []TargetPack {
	every := e.Config.Agent.Capture.PackEvery
	var out []TargetPack
	for _, c := range clusters {
		for _, t := range e.Targets {
			rep, err := catalog.Pack(ctx, t, e.Trust, c.Name, catalog.PackOptions{Every: every, Now: now})
			out = append(out, TargetPack{Cluster: c.Name, Target: t.Name(), Report: rep, Err: err})
		}
	}
	return out
}

// Failed joins what failed in the run: the error that stopped it and
// those it went on after; nil when all went well.
func (p TargetPack) Failed() error {
	errs := []error{p.Err}
	if p.Report != nil {
		errs = append(errs, p.Report.Errors...)
	}
	return errors.Join(errs...)
}
