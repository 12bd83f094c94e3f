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

// Backup is one complete backup set as seen across targets: the same
// cluster and ID on several targets is one backup.
type Backup struct {
	ID      string    `json:"id"`
	Cluster string    `json:"cluster"`
	Created time.Time `json:"created"`
	// Revision and DBSize are the manifest's etcd revision and database size.
	Revision int64 `json:"revision"`
	DBSize   int64 `json:"dbSize"`
	// Size is the bytes the set occupies on the first target listed in
	// Targets (compressed and encrypted, manifest included).
	Size int64 `json:"size"`
	// Targets name the targets holding the set's manifest, in the order the
	// targets were given. Presence is not proof: Verify checks the objects.
	Targets []string `json:"targets"`
	// Manifest is read from the first target in Targets whose copy a
	// trusted key signed. It is nil when none is; Created then comes from
	// the ID.
	Manifest *manifest.Manifest `json:"-"`
	// Untrusted says why no copy of the manifest is trusted (unsigned,
	// signed by an unknown key, invalid): the set is not ours, and no
	// reader restores, counts or prunes it. Empty for a trusted set.
	Untrusted string `json:"untrusted,omitempty"`
}

// Trusted returns the backups whose manifest a trusted key signed, in the
// order given.
func Trusted(backups []Backup) []Backup {
	var out []Backup
	for _, b := range backups {
		if b.Untrusted == "" && b.Manifest != nil {
			out = append(out, b)
		}
	}
	return out
}

// List returns the sets with a manifest of a cluster (of every cluster
// when cluster is empty) across targets, newest (highest ID) first, the
// untrusted among them marked: Trusted keeps the others. A target that
// cannot be listed, or whose manifest cannot be read, has its error in the
// returned map under its name; the other targets are still listed. A set
// no copy of which is trusted is marked, not an error of its targets; a
// copy that is not trusted of a set trusted elsewhere is. The
// error is for failures of the whole call: invalid arguments or a
// cancelled context.
func List(ctx context.Context, targets []storage.Target, trust *manifest.Trust, cluster string) ([]Backup, map[string]error, error) {
	if cluster != "" && !manifest.ValidCluster(cluster) {
		return nil, nil, fmt.Errorf("list: cluster name %q is not valid", cluster)
	}
	seen := map[string]bool{}
	for _, t := range targets {
		if seen[t.Name()] {
			return nil, nil, fmt.Errorf("list: two targets are named %s", t.Name())
		}
		seen[t.Name()] = true
	}

	type entry struct {
		b       *Backup
		holders []storage.Target
	}
	byKey := map[string]*entry{}
	var order []string
	targetErrs := map[string]error{}
	fail := func(t storage.Target, err error) {
		targetErrs[t.Name()] = errors.Join(targetErrs[t.Name()], err)
	}
	for _, t := range targets {
		sets, err := Sets(ctx, t, cluster)
		if cerr := ctx.Err(); cerr != nil {
			return nil, nil, fmt.Errorf("list: %w", cerr)
		}
		if err != nil {
			fail(t, err)
			continue
		}
		for _, s := range sets {
			if !s.Complete {
				continue
			}
			k := s.Cluster + "/" + s.ID
			e := byKey[k]
			if e == nil {
				e = &entry{b: &Backup{ID: s.ID, Cluster: s.Cluster, Size: s.Size}}
				byKey[k] = e
				order = append(order, k)
			}
			e.b.Targets = append(e.b.Targets, t.Name())
			e.holders = append(e.holders, t)
		}
	}

	backups := make([]Backup, 0, len(order))
	for _, k := range order {
		e := byKey[k]
		type foreignCopy struct {
			t   storage.Target
			err error
		}
		var foreign []foreignCopy
		for _, t := range e.holders {
			m, _, err := LoadManifest(ctx, t, trust, e.b.Cluster, e.b.ID)
			if cerr := ctx.Err(); cerr != nil {
				return nil, nil, fmt.Errorf("list: %w", cerr)
			}
			if IsForeign(err) {
				foreign = append(foreign, foreignCopy{t, err})
				continue
			}
			if err != nil {
				fail(t, err)
				continue
			}
			e.b.Manifest = m
			e.b.Created = m.Created
			e.b.Revision = m.Etcd.Revision
			e.b.DBSize = m.Etcd.DBSize
			break
		}
		switch {
		case e.b.Manifest != nil:
			// One of our sets whose copy on another target is not ours
			// any more (replaced or damaged): that target has a problem.
			for _, f := range foreign {
				fail(f.t, f.err)
			}
		default:
			// No copy is ours: a set someone else put there, marked and
			// passed over. It is no failure to list the target, or
			// anyone who can write to it could make every list fail.
			e.b.Created, _ = manifest.IDTime(e.b.ID)
			reasons := make([]string, len(foreign))
			for i, f := range foreign {
				reasons[i] = f.err.Error()
			}
			e.b.Untrusted = strings.Join(reasons, "; ")
		}
		backups = append(backups, *e.b)
	}
	sort.SliceStable(backups, func(i, j int) bool {
		a, b := backups[i], backups[j]
		if a.ID != b.ID {
			return a.ID > b.ID
		}
		return a.Cluster < b.Cluster
	})
	return backups, targetErrs, nil
}
