package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/staticpod"
)

// kubeletManifests is where kubeadm's kubelet runs static pods from.
const kubeletManifests = "/etc/kubernetes/manifests"

// staticPodFacts is what this host's static pod manifests reference.
type staticPodFacts struct {
	// dirs are the directories read, as host paths.
	dirs []string
	// manifests are the static pods found, as host paths.
	manifests []string
	refs      []staticpod.Input
	// unreadable are references this host lacks or cannot read: the next
	// backup fails on them (snapshot.ErrReferenceMissing).
	unreadable []string
	// err says why the manifests could not be read at all.
	err error
}

// readStaticPods reads the static pod manifests of the host below root:
// kubeadm's directory and every directory the newest backup took one
// from, so a manifest added since is seen.
func readStaticPods(root string, cp *manifest.ControlPlane) staticPodFacts {
	var f staticPodFacts
	dirs := []string{kubeletManifests}
	if cp != nil {
		for _, m := range cp.Manifests {
			dirs = append(dirs, path.Dir(m))
		}
	}
	slices.Sort(dirs)
	f.dirs = slices.Compact(dirs)
	read := staticpod.HostReader(root)
	var pods []*staticpod.Pod
	for _, dir := range f.dirs {
		entries, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(dir)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			f.err = err
			return f
		}
		for _, e := range entries {
			if ext := path.Ext(e.Name()); e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
				continue
			}
			p := path.Join(dir, e.Name())
			raw, err := read(p)
			if err != nil {
				continue // not a regular file: not a manifest the kubelet runs
			}
			pod, err := staticpod.Parse(raw)
			if err != nil {
				continue // a YAML file that is not a static pod, as a backup skips it
			}
			pods = append(pods, pod)
			f.manifests = append(f.manifests, p)
		}
	}
	refs, err := staticpod.References(pods, read)
	f.refs = refs
	if err != nil {
		f.unreadable = append(f.unreadable, err.Error())
	}
	for _, r := range refs {
		if _, err := os.Lstat(filepath.Join(root, filepath.FromSlash(r.Path))); err != nil {
			f.unreadable = append(f.unreadable, fmt.Sprintf("%s: %v", r, errors.Unwrap(err)))
		}
	}
	return f
}

// gradeStaticPods compares what this host's static pods read with what
// the newest backup recorded of them: a file referenced since (an
// encryption config, an audit policy) is not in that backup, and a
// restore from it brings back a control plane that cannot start or
// cannot decrypt its Secrets.
func gradeStaticPods(f *facts) Result {
	sp := f.staticPods
	ev := map[string]any{"manifests": sp.manifests, "references": len(sp.refs), "backup": f.certs.backup}
	dirs := strings.Join(sp.dirs, ", ")
	switch {
	case sp.err != nil:
		return verdict(Warn, ev, "the static pod manifests cannot be read: %v", sp.err)
	case len(sp.manifests) == 0:
		return verdict(Pass, ev, "no static pods on this host (%s): external etcd, or not a control-plane node", dirs)
	case len(sp.unreadable) > 0:
		ev["unreadable"] = sp.unreadable
		return verdict(Fail, ev, "the static pods reference files this host cannot give, and the next backup fails on them: %s", strings.Join(sp.unreadable, "; "))
	case f.certs.backup == "":
		return verdict(Warn, ev, "%s reference %s; no backup holds them yet", plural(len(sp.manifests), "static pod"), plural(len(sp.refs), "file"))
	case f.certs.err != nil:
		return verdict(Warn, ev, "the newest backup %s cannot be read to compare: %v", f.certs.backup, f.certs.err)
	}
	held := map[string]bool{}
	if cp := f.certs.controlPlane; cp != nil {
		for _, r := range cp.References {
			held[r.Path] = true
		}
	}
	var missing []string
	for _, r := range sp.refs {
		if !held[r.Path] {
			missing = append(missing, r.String())
		}
	}
	ev["missing"] = missing
	if len(missing) > 0 {
		return verdict(Warn, ev, "the newest backup %s lacks %d of the %s the static pods here reference: %s; the next backup captures them",
			f.certs.backup, len(missing), plural(len(sp.refs), "file"), strings.Join(missing, "; "))
	}
	return verdict(Pass, ev, "the newest backup %s holds all %s the %s here reference",
		f.certs.backup, plural(len(sp.refs), "file"), plural(len(sp.manifests), "static pod"))
}
