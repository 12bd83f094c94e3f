package action

import (
	"context"
	"errors"
	"fmt"

	"filippo.io/age"

	"github.com/kdr-io/kdr/catalog"
)

// HistoryOptions say whose history `kdr history` reads, and where.
type HistoryOptions struct {
	// Cluster is the cluster's name; empty when the config has one.
	Cluster string
	// Target is the target's name; empty for the first.
	Target string
	Query  catalog.HistoryQuery
	// Identities decrypt the captured log.
	Identities []age.Identity
}

// History lists every change of a key, or of the keys under a prefix,
// that the captured log on the target holds, oldest first: what was
// changed when, so that an operator finds the mistake and the revision
// to restore to just before it. fn gets each change as it is read.
func (e *Env) History(ctx context.Context, o HistoryOptions, fn func(catalog.Change) error) (*catalog.HistoryScan, error) {
	q := o.Query
	switch {
	case q.Key == "":
		return nil, errors.New("no key: name a key, or a prefix ending in /")
	case len(o.Identities) == 0:
		return nil, errors.New("--identity is required: the age identity file that decrypts the captured log")
	case q.From.Revision < 0 || q.To.Revision < 0:
		return nil, errors.New("--from and --to take a positive etcd revision or a time")
	case q.From.Revision > 0 && q.To.Revision > 0 && q.From.Revision > q.To.Revision,
		!q.From.Time.IsZero() && !q.To.Time.IsZero() && q.From.Time.After(q.To.Time):
		return nil, errors.New("--from is after --to")
	}
	cluster, res, err := e.where(Ref{Cluster: o.Cluster, Target: o.Target})
	if err != nil {
		return nil, err
	}
	scan, err := catalog.History(ctx, res.Target, e.Trust, cluster, o.Identities, q, fn)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", q.Key, err)
	}
	return scan, nil
}
