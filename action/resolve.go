package action

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// RandomRef picks any trusted set: a drill of old ones too proves that
// retention keeps restorable sets, not only the newest. Only drills take it.
const RandomRef = "random"

// Ref says which backup a restore, runbook or drill works on.
type Ref struct {
	// Cluster is the cluster's name; empty when the config has one.
	Cluster string
	// Target is the target's name; empty for the first.
	Target string
	// Backup is an ID, a prefix of one, or catalog.LatestRef.
	Backup string
	// Before, when not zero, picks the newest set created before it.
	Before time.Time
}

// Resolved is a backup found on a configured target.
type Resolved struct {
	TargetConfig config.Target
	Target       storage.Target
	Manifest     *manifest.Manifest
}

// Resolve finds the backup a reference names among the trusted sets of
// the target. A set the operator accepted by the hash of its manifest
// is found only by its full ID.
func (e *Env) Resolve(ctx context.Context, r Ref) (*Resolved, error) {
	cluster, res, err := e.where(r)
	if err != nil {
		return nil, err
	}
	t := res.Target
	var id string
	switch {
	case !r.Before.IsZero():
		id, err = catalog.Before(ctx, t, e.Trust, cluster, r.Before)
	case r.Backup == RandomRef:
		return nil, fmt.Errorf("--backup %s: only a drill picks a random backup", RandomRef)
	default:
		id, err = catalog.Resolve(ctx, t, e.Trust, cluster, r.Backup)
	}
	if err != nil {
		return nil, err
	}
	if res.Manifest, _, err = catalog.LoadNamed(ctx, t, e.Trust, cluster, id); err != nil {
		return nil, err
	}
	return res, nil
}

// where names the cluster and opens the target a reference is about.
func (e *Env) where(r Ref) (string, *Resolved, error) {
	cluster, err := OnlyCluster(e.Config, r.Cluster)
	if err != nil {
		return "", nil, err
	}
	tcfg, err := fromconfig.PickTarget(e.Config, r.Target)
	if err != nil {
		return "", nil, err
	}
	t, err := e.target(tcfg.Name)
	if err != nil {
		return "", nil, err
	}
	return cluster, &Resolved{TargetConfig: tcfg, Target: t}, nil
}

// resolveRandom picks a trusted set of the cluster at random.
func (e *Env) resolveRandom(ctx context.Context, r Ref) (*Resolved, error) {
	cluster, res, err := e.where(r)
	if err != nil {
		return nil, err
	}
	t := res.Target
	all, failed, err := catalog.List(ctx, []storage.Target{t}, e.Trust, cluster)
	if err != nil {
		return nil, err
	}
	if err := failed[t.Name()]; err != nil && len(all) == 0 {
		return nil, err
	}
	trusted := catalog.Trusted(all)
	if len(trusted) == 0 {
		return nil, fmt.Errorf("%w of cluster %s on target %s", catalog.ErrNoBackup, cluster, t.Name())
	}
	res.Manifest = trusted[rand.IntN(len(trusted))].Manifest
	return res, nil
}

// OnlyCluster names the cluster a command works on: the one given, or
// the config's only one.
func OnlyCluster(cfg *config.Config, name string) (string, error) {
	if name != "" {
		_, err := fromconfig.Clusters(cfg, name)
		return name, err
	}
	if len(cfg.Clusters) != 1 {
		return "", fmt.Errorf("the config has %d clusters: name one with --cluster", len(cfg.Clusters))
	}
	return cfg.Clusters[0].Name, nil
}
