package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// ErrNoBackup means a target holds no complete backup of the cluster.
var ErrNoBackup = errors.New("no complete backup")

// maxManifestRead bounds what is read of a manifest.json: manifest.Parse
// refuses anything over 16 MiB, so reading one byte more is enough to know.
const maxManifestRead = 16<<20 + 1

// Set is one backup set as found on a target: complete when its manifest
// is there.
type Set struct {
	Cluster  string
	ID       string
	Complete bool
	// Objects are the keys found under the set's prefix.
	Objects []storage.ObjectInfo
	// Size is the sum of the objects' sizes.
	Size int64
	// Newest is the modification time of the newest object.
	Newest time.Time
}

// Sets lists the sets of one cluster on a target (all clusters when
// cluster is empty), oldest first. Keys outside the set layout are ignored.
func Sets(ctx context.Context, t storage.Target, cluster string) ([]Set, error) {
	prefix := ""
	if cluster != "" {
		prefix = cluster + "/"
	}
	byKey := map[string]*Set{}
	var order []string
	err := t.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		c, id, object, ok := manifest.SplitKey(oi.Key)
		if !ok {
			return nil
		}
		k := c + "/" + id
		s := byKey[k]
		if s == nil {
			s = &Set{Cluster: c, ID: id}
			byKey[k] = s
			order = append(order, k)
		}
		s.Objects = append(s.Objects, oi)
		s.Size += oi.Size
		if oi.Modified.After(s.Newest) {
			s.Newest = oi.Modified
		}
		if object == manifest.ManifestObject {
			s.Complete = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s on target %s: %w", prefix, t.Name(), err)
	}
	sets := make([]Set, 0, len(order))
	for _, k := range order {
		sets = append(sets, *byKey[k])
	}
	sort.Slice(sets, func(i, j int) bool {
		if sets[i].ID != sets[j].ID {
			return sets[i].ID < sets[j].ID
		}
		return sets[i].Cluster < sets[j].Cluster
	})
	return sets, nil
}

// LoadManifest reads and parses a set's manifest. It also returns the
// manifest's sha256, the value the next manifest's chain link holds.
func LoadManifest(ctx context.Context, t storage.Target, cluster, id string) (*manifest.Manifest, string, error) {
	raw, err := readManifest(ctx, t, cluster, id)
	if err != nil {
		return nil, "", err
	}
	m, err := parseManifest(raw, cluster, id)
	if err != nil {
		return nil, "", fmt.Errorf("%s on target %s: %w", manifest.Key(cluster, id, manifest.ManifestObject), t.Name(), err)
	}
	return m, manifest.Sum(raw), nil
}

// readManifest returns a set's manifest.json as stored. The chain links
// hash these bytes, so they are hashed before any parsing. A missing
// manifest gives an error wrapping storage.ErrNotExist.
func readManifest(ctx context.Context, t storage.Target, cluster, id string) ([]byte, error) {
	key := manifest.Key(cluster, id, manifest.ManifestObject)
	rc, err := t.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %s on target %s: %w", key, t.Name(), err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, maxManifestRead))
	if err != nil {
		return nil, fmt.Errorf("read %s on target %s: %w", key, t.Name(), err)
	}
	return raw, nil
}

// parseManifest parses a manifest and checks that it describes the set it
// was found in: a manifest copied from another set is not that set's.
func parseManifest(raw []byte, cluster, id string) (*manifest.Manifest, error) {
	m, err := manifest.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	if m.Cluster != cluster || m.ID != id {
		return nil, fmt.Errorf("%w: it describes %s/%s", manifest.ErrInvalid, m.Cluster, m.ID)
	}
	return m, nil
}

// Latest returns the newest complete set's manifest and its sha256, or an
// error wrapping ErrNoBackup.
func Latest(ctx context.Context, t storage.Target, cluster string) (*manifest.Manifest, string, error) {
	sets, err := Sets(ctx, t, cluster)
	if err != nil {
		return nil, "", err
	}
	for i := len(sets) - 1; i >= 0; i-- {
		if sets[i].Complete {
			return LoadManifest(ctx, t, cluster, sets[i].ID)
		}
	}
	return nil, "", fmt.Errorf("%w of cluster %s on target %s", ErrNoBackup, cluster, t.Name())
}
