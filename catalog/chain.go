package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// prunedDir holds a cluster's tombstones: "<cluster>/pruned/<id>.json".
// "pruned" is not a backup ID, so Sets never mistakes it for a set.
const prunedDir = "pruned"

// maxTombstoneRead bounds what is read of a tombstone, a few dozen bytes.
const maxTombstoneRead = 64 << 10

// Tombstone records that prune removed a complete set on purpose, and the
// sha256 of its manifest, so the next set's chain link still checks out
// and the gap is not taken for a deleted backup.
type Tombstone struct {
	ID     string    `json:"id"`
	SHA256 string    `json:"sha256"`
	Pruned time.Time `json:"pruned"`
}

// TombstoneKey is the key of a set's tombstone.
func TombstoneKey(cluster, id string) string {
	return cluster + "/" + prunedDir + "/" + id + ".json"
}

func parseTombstone(raw []byte, id string) (*Tombstone, error) {
	var ts Tombstone
	if err := decodeStrict(raw, &ts); err != nil {
		return nil, fmt.Errorf("invalid tombstone: %w", err)
	}
	if ts.ID != id {
		return nil, fmt.Errorf("invalid tombstone: it names %q", ts.ID)
	}
	if !isSHA256(ts.SHA256) {
		return nil, errors.New("invalid tombstone: sha256 is not 64 lowercase hex digits")
	}
	return &ts, nil
}

// decodeStrict decodes one JSON value and refuses unknown fields: a set's
// tombstone is never read as a log's, nor the other way.
func decodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// readTombstone returns the tombstone of a set, or an error wrapping
// storage.ErrNotExist when the set was not pruned.
func readTombstone(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster, id string) (*Tombstone, error) {
	key := TombstoneKey(cluster, id)
	raw, err := manifest.ReadSigned(ctx, t, key, maxTombstoneRead, manifest.NamespaceTombstone, trust)
	if err != nil {
		return nil, err
	}
	ts, err := parseTombstone(raw, id)
	if err != nil {
		return nil, fmt.Errorf("%s on target %s: %w", key, t.Name(), err)
	}
	return ts, nil
}

func writeTombstone(ctx context.Context, t storage.Target, signer *manifest.Signer, cluster string, ts Tombstone) error {
	return putTombstone(ctx, t, signer, TombstoneKey(cluster, ts.ID), ts)
}

// putTombstone signs and stores a tombstone, of a set or of a log.
func putTombstone(ctx context.Context, t storage.Target, signer *manifest.Signer, key string, ts any) error {
	data, err := json.Marshal(ts)
	if err != nil {
		return fmt.Errorf("encode tombstone %s: %w", key, err)
	}
	return manifest.PutSigned(ctx, t, key, append(data, '\n'), manifest.NamespaceTombstone, signer,
		storage.PutOptions{ContentType: "application/json"})
}

// checkLink checks a manifest's link to its predecessor on t. lookup
// returns the sha256 of the predecessor's manifest on t, with exists
// false when it is not there. It returns what was checked, or the problem.
func checkLink(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster, id string, prev *manifest.Link, lookup func(id string) (sum string, exists bool, err error)) (string, *Problem) {
	problem := func(err error, format string, args ...any) *Problem {
		return &Problem{Target: t.Name(), Cluster: cluster, ID: id, Object: manifest.ManifestObject,
			Reason: oneLine("hash chain: " + fmt.Sprintf(format, args...)), Err: err}
	}
	if prev == nil {
		return "hash chain: no previous backup linked (first on this target)", nil
	}
	if prev.ID >= id {
		return "", problem(ErrChain, "previous link names %s, which is not older than this backup", prev.ID)
	}
	sum, exists, err := lookup(prev.ID)
	if err != nil {
		return "", problem(err, "cannot read the manifest of previous backup %s: %v", prev.ID, err)
	}
	if exists {
		if sum != prev.SHA256 {
			return "", problem(ErrChain, "manifest of previous backup %s has sha256 %.12s…, this manifest links %.12s… (that manifest was replaced or swapped)",
				prev.ID, sum, prev.SHA256)
		}
		return fmt.Sprintf("hash chain: previous backup %s matches", prev.ID), nil
	}
	ts, err := readTombstone(ctx, t, trust, cluster, prev.ID)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return "", problem(errors.Join(ErrChain, ErrMissing), "predecessor %s missing, and no prune tombstone explains it (deleted outside kdr?)", prev.ID)
	case err != nil:
		return "", problem(err, "predecessor %s missing, and its tombstone cannot be read: %v", prev.ID, err)
	case ts.SHA256 != prev.SHA256:
		return "", problem(ErrChain, "predecessor %s was pruned, but its tombstone records sha256 %.12s…, this manifest links %.12s…",
			prev.ID, ts.SHA256, prev.SHA256)
	}
	return fmt.Sprintf("hash chain: previous backup %s was pruned %s", prev.ID, ts.Pruned.UTC().Format(time.RFC3339)), nil
}

// VerifyChain checks the hash chain of every complete set of a cluster on
// a target: each manifest's link must name a predecessor whose manifest
// has the linked sha256, or one that prune removed and recorded. It reads
// only manifests and tombstones, not the objects. A cancelled context ends
// the check with a problem saying so.
//
// A set whose manifest no trusted key signed is not part of the chain: it
// is reported as a foreign object, since someone who is not a trusted
// writer put it there.
func VerifyChain(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string) []Problem {
	var problems []Problem
	add := func(id, object string, err error, format string, args ...any) {
		problems = append(problems, Problem{Target: t.Name(), Cluster: cluster, ID: id, Object: object,
			Reason: oneLine(fmt.Sprintf(format, args...)), Err: err})
	}
	if !manifest.ValidCluster(cluster) {
		add("", "", nil, "cluster name %q is not valid", cluster)
		return problems
	}
	sets, err := Sets(ctx, t, cluster)
	if err != nil {
		add("", "", err, "cannot list: %v", err)
		return problems
	}
	sums := map[string]string{}
	unreadable := map[string]bool{}
	manifests := map[string]*manifest.Manifest{}
	var ids []string
	for _, s := range sets {
		if !s.Complete {
			continue
		}
		if err := ctx.Err(); err != nil {
			add("", "", err, "chain check stopped before the end: %v", err)
			return problems
		}
		m, sum, err := LoadManifest(ctx, t, trust, cluster, s.ID)
		switch {
		case errors.Is(err, storage.ErrNotExist):
			continue // removed since the listing: not a set any more
		case IsForeign(err):
			add(s.ID, manifest.ManifestObject, errors.Join(ErrForeign, err), "not a trusted set: %v", err)
			// Its successor's link is still checked against these bytes,
			// so a swapped manifest is also named as a broken chain.
			if raw, err := manifest.ReadBounded(ctx, t, manifest.Key(cluster, s.ID, manifest.ManifestObject), maxManifestRead); err == nil {
				sums[s.ID] = manifest.Sum(raw)
			}
			continue
		case err != nil:
			add(s.ID, manifest.ManifestObject, err, "cannot read: %v", err)
			unreadable[s.ID] = true
			continue
		}
		sums[s.ID] = sum
		manifests[s.ID] = m
		ids = append(ids, s.ID)
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			add("", "", err, "chain check stopped before the end: %v", err)
			return problems
		}
		prev := manifests[id].Previous
		if prev != nil && unreadable[prev.ID] {
			continue // already reported; its hash is unknown
		}
		_, p := checkLink(ctx, t, trust, cluster, id, prev, func(prev string) (string, bool, error) {
			sum, ok := sums[prev]
			return sum, ok, nil
		})
		if p != nil {
			problems = append(problems, *p)
		}
	}
	return problems
}
