package restore

import (
	"bytes"
	"context"
	"fmt"
	"io"

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
	},
	expect: "The sha256 of each object equals its \"sha256\" in {{.Staging}}/manifest.json.",
	action: fetch,
	check:  checkFetched,
}

// fetch copies the small objects of the set (the state and the manifest)
// to the staging directory, checking each object's size and sha256 as it
// arrives. The etcd snapshot is streamed by decrypt straight from the
// target into place, so its ciphertext never touches the disk.
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
		err := e.record(func(j *Journal) {
			if j.Fetched == nil {
				j.Fetched = map[string]string{}
			}
			j.Fetched[o.Name] = o.SHA256
		})
		if err != nil {
			return err
		}
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
