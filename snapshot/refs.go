package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/kdr-io/kdr/etcdenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/staticpod"
)

// ErrReferenceMissing means a file a captured static pod manifest
// references cannot be read: the control plane restored from this backup
// would not start (an encryption config missing means Secrets nobody can
// decrypt), so the backup fails, naming the flag.
var ErrReferenceMissing = errors.New("a file the control plane references cannot be captured")

// addReferences reads the static pod manifests among the planned entries
// and adds every host file they reference, and the files those name in
// turn, as the required set manifest.ReferencedSet: whatever the
// configured sets say, what the control plane reads is captured. It also
// records the node's topology for the restore: etcd's member from its
// static pod or, when none runs it, from the environment file of an etcd
// under systemd (a ControlPlane without an etcdManifest).
func (p *statePlan) addReferences() error {
	cp := &manifest.ControlPlane{}
	var pods []*staticpod.Pod
	for _, e := range p.entries {
		if ext := path.Ext(e.rel); ext != ".yaml" && ext != ".yml" && ext != ".json" {
			continue
		}
		raw, err := staticpod.HostReader(p.root)("/" + e.rel)
		if err != nil {
			continue // not a file; writing the entry reports a real error
		}
		pod, err := staticpod.Parse(raw)
		if err != nil {
			continue // a YAML file that is not a static pod
		}
		pods = append(pods, pod)
		cp.Manifests = append(cp.Manifests, "/"+e.rel)
		switch pod.Component() {
		case "etcd":
			m, err := pod.EtcdMember()
			if err != nil {
				return fmt.Errorf("etcd manifest /%s: %w", e.rel, err)
			}
			cp.EtcdManifest, cp.EtcdName, cp.EtcdDataDir = "/"+e.rel, m.Name, m.HostDataDir
		case "kube-apiserver":
			cp.APIServerAddress, _ = pod.Flag("advertise-address")
		}
	}
	fromEnv := cp.EtcdManifest == "" && p.addEtcdEnv(cp)
	if len(pods) == 0 {
		if fromEnv {
			// An etcd under systemd alone: no static pod to read
			// references from, but a member to restore.
			cp.Manifests = []string{}
			p.controlPlane = cp
		}
		return nil
	}
	refs, err := staticpod.References(pods, staticpod.HostReader(p.root))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrReferenceMissing, err)
	}
	taken := make(map[string]bool, len(p.entries))
	for _, e := range p.entries {
		taken[e.rel] = true
	}
	set := manifest.FileSet{Name: manifest.ReferencedSet, Required: true}
	for _, r := range refs {
		rel := strings.TrimPrefix(path.Clean(r.Path), "/")
		fi, err := os.Lstat(filepath.Join(p.root, filepath.FromSlash(rel)))
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrReferenceMissing, r, errors.Unwrap(err))
		}
		if fi.IsDir() {
			continue // a directory is not a file a flag reads
		}
		for _, dir := range manifest.NamedDirs(r.Path) {
			if fi, err := os.Lstat(filepath.Join(p.root, dir)); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("%w: %s: /%s is a symlink: point the flag at the directory it points to", ErrSymlinkedDir, r, dir)
			}
		}
		cp.References = append(cp.References, manifest.Reference{Component: r.Component, Flag: r.Flag, Via: r.Via, Path: r.Path})
		if taken[rel] {
			continue
		}
		taken[rel] = true
		p.entries = append(p.entries, plannedEntry{rel: rel, set: set.Name})
		set.Paths = append(set.Paths, r.Path)
		set.Files++
	}
	if set.Files > 0 {
		p.sets = append(p.sets, set)
	}
	p.controlPlane = cp
	return nil
}

// addEtcdEnv records the member's name and data dir from the first
// captured environment file (etcdenv.Paths) that sets ETCD_DATA_DIR: to
// an etcd under systemd what its static pod manifest is to kubeadm's, and
// what a restore of it takes the data dir from. It reports whether it
// found one.
func (p *statePlan) addEtcdEnv(cp *manifest.ControlPlane) bool {
	captured := make(map[string]bool, len(p.entries))
	for _, e := range p.entries {
		captured["/"+e.rel] = true
	}
	for _, file := range etcdenv.Paths {
		if !captured[file] {
			continue // a restore would not bring it back
		}
		raw, err := staticpod.HostReader(p.root)(file)
		if err != nil {
			continue // not a file; writing the entry reports a real error
		}
		env := etcdenv.Parse(raw)
		dir, _ := env.Get(etcdenv.DataDirVar)
		if !path.IsAbs(dir) {
			// Unset, or relative to the unit's working directory, which
			// the file does not say: the restore's default stands.
			continue
		}
		cp.EtcdDataDir = path.Clean(dir)
		cp.EtcdName, _ = env.Get(etcdenv.NameVar)
		return true
	}
	return false
}
