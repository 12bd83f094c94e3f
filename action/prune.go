package action

import (
	"context"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
)

// TargetPrune is one cluster's prune on one target.
type TargetPrune struct {
	Cluster, Target string
	Report          *catalog.PruneReport
	// Err stopped this prune; the others went on.
	Err error
}

// Prune applies the config's retention policy to each cluster on every
// target, counting and removing only sets a trusted key signed: the keep
// rules decide the sets, each set's captured log goes with it, and
// retention.keepLog removes the older logs of the kept sets
// (catalog.Policy). A target that fails (an unplugged USB disk) does not
// stop the others. The error is for what stops all of them: no signing
// key for a prune that deletes.
func (e *Env) Prune(ctx context.Context, clusters []config.Cluster, dryRun bool) ([]TargetPrune, error) {
	signer, err := e.signerOrNil(!dryRun)
	if err != nil {
		return nil, err
	}
	r := e.Config.Retention
	policy := fromconfig.Policy(r)
	var out []TargetPrune
	for _, c := range clusters {
		for _, t := range e.Targets {
			rep, err := catalog.Prune(ctx, t, c.Name, policy, catalog.PruneOptions{
				DryRun: dryRun, IncompleteGrace: r.IncompleteGrace, Trust: e.Trust, Signer: signer,
			})
			out = append(out, TargetPrune{Cluster: c.Name, Target: t.Name(), Report: rep, Err: err})
		}
	}
	return out, nil
}
