package restore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// StepFetch names the step that fetches the backup set.
const StepFetch = "fetch"

var stepFetch = stepDef{
	id:    StepFetch,
	title: "Fetch the backup set",
	why: "The set is copied to local disk and every object's size and sha256 checked against the manifest " +
		"before it is used, so a damaged copy is found before anything is replaced.",
	where: EveryNode,
	commands: []string{
		"mkdir -p {{.Staging}}",
		"{{.Fetch}}",
		"cd {{.Staging}} && sha256sum etcd.db.zst.age state.tar.zst.age",
		"{{if .ToRevision}}cd {{.Staging}} && sha256sum {{.SegmentBodies}}{{end}}",
	},
	expect: "The sha256 of each object equals its \"sha256\" in {{.Staging}}/manifest.json" +
		"{{if .ToRevision}}, and of each segment body the \"sha256\" of \"body\" in its head beside it " +
		"(log/<first revision>.json){{end}}.",
	action: fetch,
	check:  checkFetched,
}

// fetch copies the small objects of the set (the state and the manifest)
// and the segments a replay needs to the staging directory, checking each
// object's size and sha256 as it arrives. The etcd snapshot is streamed by
// decrypt straight from the target into place, so its ciphertext never
// touches the disk.
func fetch(ctx context.Context, e *Env) error {
	local, err := e.stagingTarget()
	if err != nil {
		return err
	}
	m := e.Plan.Manifest
	for _, o := range fetchedObjects(m) {
		key := manifest.Key(m.Cluster, m.ID, o.Name)
		if _, err := local.Stat(ctx, key); err == nil && e.journal.Fetched[o.Name] == o.SHA256 {
			continue // fetched and checked before an interruption
		}
		if err := copyChecked(ctx, e.Target, local, key, o); err != nil {
			return err
		}
		err := e.record(func(j *Journal) { j.fetched(o.Name, o.SHA256) })
		if err != nil {
			return err
		}
	}
	if err := fetchSegments(ctx, e, local); err != nil {
		return err
	}
	raw, err := m.Marshal()
	if err != nil {
		return err
	}
	key := manifest.Key(m.Cluster, m.ID, manifest.ManifestObject)
	if err := local.Delete(ctx, key); err != nil {
		return err
	}
	return local.Put(ctx, key, bytes.NewReader(raw), storage.PutOptions{})
}

// fetchSegments copies the replay's segments, loose or packed, into the
// staging directory as loose objects: each head held to the sha256 of
// the head a trusted key signed when the plan was made, with its
// signature beside it for whoever checks it by hand, and each body to the
// size and sha256 its head records. A segment packed since the plan was
// made is read from its pack. A segment gone, changed or damaged since is
// refused, named.
func fetchSegments(ctx context.Context, e *Env, local storage.Target) error {
	p := e.Plan
	if p.ToRevision == 0 || p.Replay == nil {
		return nil
	}
	store := catalog.NewSegmentStore(e.Target)
	for _, s := range p.Replay.Segments {
		h := s.Head
		name := segmentName(p, s.Key)
		if _, err := local.Stat(ctx, s.Key); err != nil || e.journal.Fetched[name] != s.SHA256 {
			head, sig, err := store.Head(ctx, s.catalog())
			if err != nil {
				return fmt.Errorf("fetch from %s: %w", e.Target.Name(), err)
			}
			if err := replaceAll(ctx, local, map[string][]byte{manifest.SignatureKey(s.Key): sig, s.Key: head}); err != nil {
				return err
			}
			if err := e.record(func(j *Journal) { j.fetched(name, s.SHA256) }); err != nil {
				return err
			}
		}
		key := manifest.SegmentBodyKey(p.Cluster, p.BackupID, h.First, h.Last)
		name = segmentName(p, key)
		if _, err := local.Stat(ctx, key); err == nil && e.journal.Fetched[name] == h.Body.SHA256 {
			continue
		}
		body, err := store.Body(ctx, s.catalog())
		if err != nil {
			return fmt.Errorf("fetch from %s: %w", e.Target.Name(), err)
		}
		if err := replaceAll(ctx, local, map[string][]byte{key: body}); err != nil {
			return err
		}
		if err := e.record(func(j *Journal) { j.fetched(name, h.Body.SHA256) }); err != nil {
			return err
		}
	}
	return nil
}

// replaceAll stores each object in place of what the key held.
func replaceAll(ctx context.Context, t storage.Target, objects map[string][]byte) error {
	for key, data := range objects {
		if err := t.Delete(ctx, key); err != nil {
			return err
		}
		if err := t.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// segmentName is how the journal names a segment's object: its key
// within the set, log/<name>.
func segmentName(p *Plan, key string) string {
	return strings.TrimPrefix(key, manifest.SetPrefix(p.Cluster, p.BackupID))
}

// checkSegmentsFetched proves every segment's head and body staged as
// fetch checked them.
func checkSegmentsFetched(ctx context.Context, e *Env, local storage.Target) error {
	p := e.Plan
	if p.ToRevision == 0 || p.Replay == nil {
		return nil
	}
	for _, s := range p.Replay.Segments {
		h := s.Head
		body := manifest.SegmentBodyKey(p.Cluster, p.BackupID, h.First, h.Last)
		for _, o := range []struct {
			key, sum string
			size     int64
		}{{s.Key, s.SHA256, -1}, {body, h.Body.SHA256, h.Body.Size}} {
			info, err := local.Stat(ctx, o.key)
			if err != nil {
				return err
			}
			if (o.size >= 0 && info.Size != o.size) || e.journal.Fetched[segmentName(p, o.key)] != o.sum {
				return fmt.Errorf("%s: not fetched whole", segmentName(p, o.key))
			}
		}
	}
	return nil
}

// fetchedObjects are the objects fetch copies: all but the etcd snapshot,
// which decrypt streams from the target.
func fetchedObjects(m *manifest.Manifest) []manifest.Object {
	var out []manifest.Object
	for _, o := range m.Objects {
		if o.Name != manifest.EtcdObject {
			out = append(out, o)
		}
	}
	return out
}

// copyChecked copies one object, and removes the copy again when its size
// or hash is not the recorded one. The copy stops one byte past the
// recorded size, so a swapped object cannot fill the staging disk.
func copyChecked(ctx context.Context, from, to storage.Target, key string, o manifest.Object) error {
	rc, err := from.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", key, err)
	}
	defer rc.Close()
	if err := to.Delete(ctx, key); err != nil {
		return err
	}
	stored := manifest.NewStoredReader(rc, o)
	if err := to.Put(ctx, key, stored, storage.PutOptions{}); err != nil {
		// Wraps the reader's error when it was the cause.
		return fmt.Errorf("fetch %s from %s: %w", key, from.Name(), err)
	}
	if err := stored.Check(); err != nil {
		to.Delete(ctx, key)
		return fmt.Errorf("fetch %s from %s: %w", key, from.Name(), err)
	}
	return nil
}

func checkFetched(ctx context.Context, e *Env) error {
	local, err := e.stagingTarget()
	if err != nil {
		return err
	}
	m := e.Plan.Manifest
	for _, o := range fetchedObjects(m) {
		info, err := local.Stat(ctx, manifest.Key(m.Cluster, m.ID, o.Name))
		if err != nil {
			return err
		}
		if info.Size != o.Size || e.journal.Fetched[o.Name] != o.SHA256 {
			return fmt.Errorf("%s: not fetched whole", o.Name)
		}
	}
	if err := checkSegmentsFetched(ctx, e, local); err != nil {
		return err
	}
	// The manifest is written last: a fetch killed before it is not done.
	want, err := m.Marshal()
	if err != nil {
		return err
	}
	rc, err := local.Get(ctx, manifest.Key(m.Cluster, m.ID, manifest.ManifestObject))
	if err != nil {
		return err
	}
	defer rc.Close()
	got, err := io.ReadAll(io.LimitReader(rc, int64(len(want))+1))
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: not fetched whole", manifest.ManifestObject)
	}
	return nil
}
