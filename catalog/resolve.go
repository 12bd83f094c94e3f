package catalog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// LatestRef is the reference Resolve reads as "the newest complete set".
const LatestRef = "latest"

var (
	// ErrUnknownBackup means no complete set matches a reference. A set
	// that exists without its manifest (interrupted, running, or half
	// pruned) is not a backup and gives this error too.
	ErrUnknownBackup = errors.New("no such backup")
	// ErrAmbiguous means an ID prefix matches more than one complete set.
	ErrAmbiguous = errors.New("backup reference is ambiguous")
)

// Resolve turns a reference into the ID of a complete set of the cluster
// on t: "latest", a full backup ID, or a prefix of exactly one ID.
// Errors wrap ErrNoBackup when the target holds no complete set at all,
// ErrUnknownBackup when nothing matches, and ErrAmbiguous when a prefix
// matches several sets (the message names a few of them).
func Resolve(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster, ref string) (string, error) {
	if ref == "" {
		return "", errors.New("empty backup reference: give an ID, an ID prefix or " + LatestRef)
	}
	complete, incomplete, err := completeIDs(ctx, t, cluster)
	if err != nil {
		return "", err
	}
	if len(complete) == 0 {
		return "", fmt.Errorf("%w of cluster %s on target %s", ErrNoBackup, cluster, t.Name())
	}
	if ref == LatestRef {
		m, _, err := newestTrusted(ctx, t, trust, cluster, complete, func(string) bool { return true })
		if err != nil {
			return "", err
		}
		return m.ID, nil
	}
	id, err := pick(complete, ref, fmt.Sprintf("cluster %s on target %s", cluster, t.Name()))
	if errors.Is(err, ErrUnknownBackup) && incomplete[ref] {
		return "", fmt.Errorf("%w: %s of cluster %s on target %s is incomplete (no %s): an interrupted or running backup",
			ErrUnknownBackup, ref, cluster, t.Name(), manifest.ManifestObject)
	}
	return id, err
}

// ResolveIn is Resolve over several targets: "latest" is the newest
// complete set on any of them. A full ID is returned as it is, so that a
// damaged set can still be named and checked. Targets that cannot be
// listed are passed over while the others resolve the reference; when
// none does, their errors are returned.
func ResolveIn(ctx context.Context, targets []storage.Target, trust *manifest.Trust, cluster, ref string) (string, error) {
	if ref == "" {
		return "", errors.New("empty backup reference: give an ID, an ID prefix or " + LatestRef)
	}
	if manifest.ValidID(ref) {
		return ref, nil
	}
	all, failed, err := List(ctx, targets, trust, cluster)
	if err != nil {
		return "", err
	}
	backups := Trusted(all)
	if len(backups) == 0 {
		err := fmt.Errorf("%w of cluster %s on any target", ErrNoBackup, cluster)
		passed := 0
		for _, b := range all { // newest first
			if b.Untrusted == "" {
				continue
			}
			if passed == 0 {
				err = fmt.Errorf("%w (the newest set passed over: %s", err, b.Untrusted)
			}
			passed++
		}
		if passed > 0 {
			err = fmt.Errorf("%w; %d sets passed over)", err, passed)
		}
		names := make([]string, 0, len(failed))
		for name := range failed {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			err = fmt.Errorf("%w; target %s: %w", err, name, failed[name])
		}
		return "", err
	}
	complete := make([]string, len(backups))
	for i, b := range backups {
		complete[len(backups)-1-i] = b.ID // List is newest first
	}
	return pick(complete, ref, "cluster "+cluster)
}

// pick finds ref among complete IDs sorted oldest first; where names them
// in errors.
func pick(complete []string, ref, where string) (string, error) {
	if ref == LatestRef {
		return complete[len(complete)-1], nil
	}
	var found []string
	for _, id := range complete {
		if id == ref {
			return id, nil
		}
		if strings.HasPrefix(id, ref) {
			found = append(found, id)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("%w: no complete backup of %s matches %q", ErrUnknownBackup, where, ref)
	}
	const shown = 3
	names := found
	more := ""
	if len(names) > shown {
		names = names[len(names)-shown:]
		more = fmt.Sprintf(" and %d more", len(found)-shown)
	}
	return "", fmt.Errorf("%w: %q matches %d backups of %s (%s%s): give more of the ID",
		ErrAmbiguous, ref, len(found), where, strings.Join(names, ", "), more)
}

// Before returns the ID of the newest trusted set of the cluster on t
// whose manifest was created strictly before the given time, or an error
// wrapping ErrNoBackup when there is none. A backup ID is its creation
// time truncated to the millisecond, which LoadManifest holds it to.
func Before(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, before time.Time) (string, error) {
	complete, _, err := completeIDs(ctx, t, cluster)
	if err != nil {
		return "", err
	}
	m, _, err := newestTrusted(ctx, t, trust, cluster, complete, func(id string) bool {
		idTime, err := manifest.IDTime(id)
		return err == nil && idTime.Before(before)
	})
	// The boundary millisecond: a set started in it may still be later.
	for err == nil && !m.Created.Before(before) {
		limit := m.ID
		m, _, err = newestTrusted(ctx, t, trust, cluster, complete, func(id string) bool { return id < limit })
	}
	if err != nil {
		return "", fmt.Errorf("backup before %s: %w", before.UTC().Format(time.RFC3339Nano), err)
	}
	return m.ID, nil
}

// completeIDs lists the cluster's complete set IDs oldest first, and the
// IDs of incomplete sets.
func completeIDs(ctx context.Context, t storage.Target, cluster string) ([]string, map[string]bool, error) {
	if !manifest.ValidCluster(cluster) {
		return nil, nil, fmt.Errorf("cluster name %q is not valid", cluster)
	}
	sets, err := Sets(ctx, t, cluster)
	if err != nil {
		return nil, nil, err
	}
	var complete []string
	incomplete := map[string]bool{}
	for _, s := range sets {
		if s.Complete {
			complete = append(complete, s.ID)
		} else {
			incomplete[s.ID] = true
		}
	}
	return complete, incomplete, nil
}
