package action

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"filippo.io/age"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// RandomRef picks any trusted set: a drill of old ones too proves that
// retention keeps restorable sets, not only the newest. Only drills take it.
const RandomRef = "random"

// RandomRevision, as Ref.Revision, picks a revision at random inside the
// newest captured log: a drill of it proves the log restorable, not only
// the full sets. Only drills take it.
const RandomRevision int64 = -1

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
	// Revision, when not 0, is the etcd revision to restore to: the
	// backup is the newest trusted set at or before it whose captured log
	// reaches it (catalog.ChainAt), so Backup and Before stay empty.
	Revision int64
}

// Resolved is a backup found on a configured target.
type Resolved struct {
	TargetConfig config.Target
	Target       storage.Target
	Manifest     *manifest.Manifest
	// Revision is the revision to restore to and Chain the captured log
	// that reaches it, from Manifest's set; both unset for a set restored
	// as it is.
	Revision int64
	Chain    *catalog.Chain
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
	case r.Revision != 0:
		if r.Backup != "" || !r.Before.IsZero() {
			return nil, errors.New("--revision picks its backup (the newest set at or before it whose captured log reaches it): drop --backup and --before")
		}
		if r.Revision == RandomRevision {
			return nil, errors.New("--revision random: only a drill picks a random revision")
		}
		if r.Revision < 0 {
			return nil, fmt.Errorf("--revision %d: want a positive etcd revision", r.Revision)
		}
		return e.resolveRevision(ctx, cluster, res, r.Revision)
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

// RevisionAt resolves a point in time to the revision a restore to it
// brings etcd to: the last revision the captured log on r's target saw
// at or before at, with the seen times that bound the moment. It returns
// r with that Revision, for Resolve or Drill. The seen times are inside
// the log's bodies, so ids must decrypt them.
func (e *Env) RevisionAt(ctx context.Context, r Ref, at time.Time, ids []age.Identity) (Ref, *catalog.PointInTime, error) {
	if r.Revision != 0 || r.Backup != "" || !r.Before.IsZero() {
		return r, nil, errors.New("--at picks its revision (the last the captured log saw at or before it) and its backup: drop --revision, --backup and --before")
	}
	if len(ids) == 0 {
		return r, nil, errors.New("--at needs --identity: the times revisions were seen are inside the encrypted log")
	}
	cluster, res, err := e.where(r)
	if err != nil {
		return r, nil, err
	}
	p, err := catalog.RevisionAt(ctx, res.Target, e.Trust, cluster, at, ids)
	if err != nil {
		return r, nil, fmt.Errorf("--at: %w", err)
	}
	r.Revision = p.Revision
	return r, p, nil
}

// resolveRevision finds the captured log that reaches rev. When none
// does, the error says in one line where the log of the newest set at or
// before rev stops and why: the last revision it can restore.
func (e *Env) resolveRevision(ctx context.Context, cluster string, res *Resolved, rev int64) (*Resolved, error) {
	t := res.Target
	c, err := catalog.ChainAt(ctx, t, e.Trust, cluster, rev)
	switch {
	case errors.Is(err, catalog.ErrGap):
		return nil, e.gapError(ctx, cluster, t, rev, err)
	case errors.Is(err, catalog.ErrNoBackup):
		return nil, e.beforeOldestError(ctx, cluster, t, rev, err)
	case err != nil:
		return nil, err
	}
	res.Manifest, res.Chain, res.Revision = c.Base, c, rev
	return res, nil
}

// gapError replaces ChainAt's account of every set it tried by the one of
// the newest set at or before rev: the revision its log reaches and why
// it stops there. It keeps ChainAt's error when that set cannot be read.
func (e *Env) gapError(ctx context.Context, cluster string, t storage.Target, rev int64, chainErr error) error {
	kept := fmt.Errorf("revision %d: %w", rev, chainErr)
	trusted, err := e.trustedOn(ctx, cluster, t)
	if err != nil {
		return kept
	}
	i := slices.IndexFunc(trusted, func(b catalog.Backup) bool { return b.Manifest.Etcd.Revision <= rev }) // newest first
	if i < 0 {
		return kept
	}
	m, sum, err := catalog.LoadManifest(ctx, t, e.Trust, cluster, trusted[i].ID)
	if err != nil {
		return kept
	}
	c, err := catalog.ReadChain(ctx, t, e.Trust, m, sum)
	if err != nil {
		return kept
	}
	if _, err := c.Covering(rev); err != nil {
		return fmt.Errorf("revision %d cannot be restored: %w; the last revision restorable before it is %d", rev, err, c.End())
	}
	return kept
}

// beforeOldestError says which revision the oldest trusted set holds
// when rev is older than every set.
func (e *Env) beforeOldestError(ctx context.Context, cluster string, t storage.Target, rev int64, chainErr error) error {
	trusted, err := e.trustedOn(ctx, cluster, t)
	if err != nil || len(trusted) == 0 {
		return chainErr
	}
	oldest := trusted[len(trusted)-1]
	return fmt.Errorf("%w: the oldest, %s, is at revision %d", chainErr, oldest.ID, oldest.Manifest.Etcd.Revision)
}

// trustedOn lists the cluster's trusted sets on t, newest first.
func (e *Env) trustedOn(ctx context.Context, cluster string, t storage.Target) ([]catalog.Backup, error) {
	all, failed, err := catalog.List(ctx, []storage.Target{t}, e.Trust, cluster)
	if err != nil {
		return nil, err
	}
	if err := failed[t.Name()]; err != nil && len(all) == 0 {
		return nil, err
	}
	return catalog.Trusted(all), nil
}

// resolveRandomRevision picks a revision at random in the newest captured
// log that holds any: from its set's revision + 1 to its end.
func (e *Env) resolveRandomRevision(ctx context.Context, r Ref) (*Resolved, error) {
	cluster, res, err := e.where(r)
	if err != nil {
		return nil, err
	}
	t := res.Target
	trusted, err := e.trustedOn(ctx, cluster, t)
	if err != nil {
		return nil, err
	}
	if len(trusted) == 0 {
		return nil, fmt.Errorf("%w of cluster %s on target %s", catalog.ErrNoBackup, cluster, t.Name())
	}
	for _, b := range trusted {
		m, sum, err := catalog.LoadManifest(ctx, t, e.Trust, cluster, b.ID)
		if catalog.IsForeign(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		c, err := catalog.ReadChain(ctx, t, e.Trust, m, sum)
		if err != nil {
			return nil, err
		}
		if len(c.Segments) == 0 {
			continue
		}
		from := m.Etcd.Revision + 1
		res.Manifest, res.Chain, res.Revision = m, c, from+rand.Int64N(c.End()-from+1)
		return res, nil
	}
	return nil, fmt.Errorf("--revision %s: no trusted set of cluster %s on target %s has a captured log", "random", cluster, t.Name())
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
