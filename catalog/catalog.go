package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// MaxClockSkew is how far in the future a manifest's creation time may
// lie before it is refused: a set dated ahead of every clock would stay
// "latest" and keep retention and alerts on its word.
const MaxClockSkew = 5 * time.Minute

// LoadManifest reads a set's manifest and returns it with the sha256 of
// its bytes, the value the next manifest's chain link holds, only when a
// trusted key signed exactly those bytes (or the operator accepted them by
// hash), before anything is parsed; and only when the manifest describes
// the set it is stored as, and was not created in the future.
//
// A manifest the operator accepted by hash without a trusted signature
// (Trust.Accept) is not taken here: only LoadNamed takes it, so it is
// never "latest", never counted by prune and never seen by the agent.
func LoadManifest(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster, id string) (*manifest.Manifest, string, error) {
	return loadManifest(ctx, t, trust, cluster, id, false)
}

// LoadNamed is LoadManifest for a set the operator named by its exact
// ID, which may also be one accepted by the hash of its manifest.
func LoadNamed(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster, id string) (*manifest.Manifest, string, error) {
	return loadManifest(ctx, t, trust, cluster, id, true)
}

func loadManifest(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster, id string, named bool) (*manifest.Manifest, string, error) {
	key := manifest.Key(cluster, id, manifest.ManifestObject)
	raw, err := manifest.ReadBounded(ctx, t, key, maxManifestRead)
	if err != nil {
		return nil, "", err
	}
	accepted := named && trust.Accepted(cluster, id, raw)
	if !accepted {
		if _, err := manifest.VerifyStored(ctx, t, key, raw, manifest.NamespaceManifest, trust); err != nil {
			return nil, "", err
		}
	}
	m, err := parseManifest(raw, cluster, id, time.Now())
	if err == nil && !accepted && m.FormatVersion < manifest.FormatVersion {
		err = fmt.Errorf("%w: format %d", manifest.ErrInvalid, m.FormatVersion)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s on target %s: %w", key, t.Name(), err)
	}
	return m, manifest.Sum(raw), nil
}

// parseManifest parses a manifest and checks that it describes the set it
// was found in: a manifest copied from another set is not that set's, and
// its ID is its creation time.
func parseManifest(raw []byte, cluster, id string, now time.Time) (*manifest.Manifest, error) {
	m, err := manifest.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	idTime, _ := manifest.IDTime(m.ID)
	switch {
	case m.Cluster != cluster || m.ID != id:
		return nil, fmt.Errorf("%w: it describes %s/%s", manifest.ErrInvalid, m.Cluster, m.ID)
	case !m.Created.Truncate(time.Millisecond).Equal(idTime):
		return nil, fmt.Errorf("%w: created %s is not the time of its ID", manifest.ErrInvalid, m.Created.Format(time.RFC3339Nano))
	case m.Created.After(now.Add(MaxClockSkew)):
		return nil, fmt.Errorf("%w: created %s, in the future", manifest.ErrInvalid, m.Created.Format(time.RFC3339))
	}
	return m, nil
}

// Latest returns the newest trusted set's manifest and its sha256, or an
// error wrapping ErrNoBackup. "Newest" is the highest ID, everywhere: an
// ID is its creation time, which LoadManifest holds the manifest to. Sets
// whose manifest is not ours (unsigned, untrusted, invalid) are passed
// over; a manifest that cannot be read is an error, so a passing network
// fault never silently makes an older set the latest.
func Latest(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string) (*manifest.Manifest, string, error) {
	ids, _, err := completeIDs(ctx, t, cluster)
	if err != nil {
		return nil, "", err
	}
	return newestTrusted(ctx, t, trust, cluster, ids, func(string) bool { return true })
}

// newestTrusted loads the manifest of the newest of ids (oldest first)
// that take accepts and whose manifest is trusted.
func newestTrusted(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, ids []string, take func(id string) bool) (*manifest.Manifest, string, error) {
	var foreign []error
	for i := len(ids) - 1; i >= 0; i-- {
		if !take(ids[i]) {
			continue
		}
		m, sum, err := LoadManifest(ctx, t, trust, cluster, ids[i])
		if IsForeign(err) {
			foreign = append(foreign, err)
			continue
		}
		return m, sum, err
	}
	err := fmt.Errorf("%w of cluster %s on target %s", ErrNoBackup, cluster, t.Name())
	if len(foreign) > 0 {
		err = fmt.Errorf("%w (%d sets passed over; the newest: %w)", err, len(foreign), foreign[0])
	}
	return nil, "", err
}

// IsForeign reports whether err says an object is not one of ours (no
// signature, a signature no trusted key made, or content that does not
// parse or does not belong where it is stored), as opposed to a failure to
// read it. Readers pass foreign objects over and report them.
func IsForeign(err error) bool {
	return errors.Is(err, manifest.ErrUnsigned) || errors.Is(err, manifest.ErrUntrusted) ||
		errors.Is(err, manifest.ErrInvalid) || errors.Is(err, manifest.ErrNewerFormat)
}
