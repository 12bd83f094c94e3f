package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	pathpkg "path"
	"path/filepath"

	"github.com/kdr-io/kdr/staticpod"
	"github.com/kdr-io/kdr/storage"
)

// hostPath joins slash-separated host paths.
func hostPath(elem ...string) string { return pathpkg.Join(elem...) }

// path maps a host path into Root.
func (e *Env) path(p string) string { return filepath.Join(e.Root, filepath.FromSlash(p)) }

// staging is this restore's work directory on the host.
func (e *Env) staging() string { return e.path(e.Plan.Staging()) }

// Files the restore writes into its staging directory.
const (
	snapshotFile = "snapshot.db"
	stateFile    = "state.tar"
)

// stagingTarget is the staging directory as a local target, so fetched
// sets are checked with the same code as any other target.
func (e *Env) stagingTarget() (storage.Target, error) {
	root := e.path(e.Plan.Options.StagingDir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	return storage.NewLocal("staging", root)
}

// stagedDir is where restore-files keeps static pod manifests until
// their start step, laid out as under the root.
func (e *Env) stagedDir() string { return filepath.Join(e.staging(), "manifests") }

// stagedManifest opens the staging tree of static pod manifests and says
// where the named one lies in it. The caller closes it; an error that
// errors.Is fs.ErrNotExist means there is no staging tree.
func (e *Env) stagedManifest(name string) (*beneath, string, error) {
	staged, err := openBeneath(e.stagedDir())
	if err != nil {
		return nil, "", fmt.Errorf("restored manifests: %w", err)
	}
	return staged, rootRel(hostPath(e.Plan.Options.KubernetesDir, "manifests", name)), nil
}

// stagedPod reads a staged static pod manifest. The staged manifest came
// from a backup: it is read without following a symlink and must be a
// regular file. An error that errors.Is fs.ErrNotExist means there is
// none.
func (e *Env) stagedPod(name string) (*staticpod.Pod, error) {
	staged, rel, err := e.stagedManifest(name)
	if err != nil {
		return nil, err
	}
	defer staged.Close()
	raw, _, err := staged.readFile(rel)
	if err != nil {
		return nil, fmt.Errorf("restored manifest %s: %w", name, err)
	}
	pod, err := staticpod.Parse(raw)
	if err != nil {
		e.Log.Warn("a restored manifest is not a static pod; it is left as the backup has it", "manifest", name, "error", err)
		return nil, fmt.Errorf("restored manifest %s: %w", name, err)
	}
	return pod, nil
}

// noPod: there is no staged manifest, or one that is not a static pod (a
// placeholder) and no kubelet would run; either way none to make the
// node's.
func noPod(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, staticpod.ErrNotPod)
}

// editStagedManifest changes a staged static pod manifest with edit and
// writes it back the same way it was read; a manifest the backup does not
// hold is left alone.
func (e *Env) editStagedManifest(name string, edit func(*staticpod.Pod) error) error {
	pod, err := e.stagedPod(name)
	if noPod(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := edit(pod); err != nil {
		return fmt.Errorf("restored manifest %s: %w", name, err)
	}
	out, err := pod.Marshal()
	if err != nil {
		return err
	}
	staged, rel, err := e.stagedManifest(name)
	if err != nil {
		return err
	}
	defer staged.Close()
	return staged.writeFile(rel, out, 0o600, 0)
}
