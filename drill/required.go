package drill

import (
	"cmp"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/kdr-io/kdr/etcdenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/pkicheck"
	"github.com/kdr-io/kdr/restore"
)

// sourceTopology is how the backed-up cluster ran etcd, as its signed
// manifest records it: stacked etcd (kubeadm) when a captured static pod
// runs etcd, external etcd (systemd, as kubespray installs it) when none
// does. A backup taken before kdr read static pods records none; it is
// kubeadm's when its sets capture the Kubernetes directory, as every drill
// then assumed.
func sourceTopology(m *manifest.Manifest, kubeDir string) string {
	if cp := m.State.ControlPlane; cp != nil {
		if cp.EtcdManifest != "" {
			return restore.TopologyKubeadm
		}
		return restore.TopologySystemd
	}
	for _, s := range m.State.Sets {
		for _, p := range s.Paths {
			if p == kubeDir || strings.HasPrefix(p, kubeDir+"/") {
				return restore.TopologyKubeadm
			}
		}
	}
	return restore.TopologySystemd
}

// layout is what the PKI check of a restored tree looks for.
type layout struct {
	topology string
	// required are the files that must be there; dirs the directories
	// walked for certificates and keys (nil: kubeadm's).
	required []pkicheck.Required
	dirs     []string
	// unmatched are required patterns that match no restored file.
	unmatched []Check
	// sources say where the required files came from, for the report.
	sources []string
}

// requiredLayout names the files a restored tree of this backup cannot do
// without, from the source's topology and the backup's required sets:
//
//   - kubeadm: kubeadm's PKI (pkicheck's list) below kubeDir;
//   - external etcd: the files its environment file names (the member's
//     certificates and the CA it trusts), and those of the config's etcd
//     client TLS files that a state set of the backup covers (the others
//     are the credentials of the host kdr runs on, which a restore does
//     not bring back);
//   - both: every path of a required state set, the referenced set (what
//     the captured static pods read) included. A glob must match a file.
//
// A file named twice is required once, with the first reason.
func requiredLayout(m *manifest.Manifest, root, kubeDir string, etcdTLS []string) layout {
	// Never nil: pkicheck reads nil as kubeadm's list.
	l := layout{topology: sourceTopology(m, kubeDir), required: []pkicheck.Required{}}
	seen := map[string]bool{}
	add := func(p, why string) {
		p = path.Clean(p)
		if !path.IsAbs(p) || seen[p] {
			return
		}
		seen[p] = true
		l.required = append(l.required, pkicheck.Required{Path: p, Why: why})
	}
	var etcdDirs []string
	if l.topology == restore.TopologyKubeadm {
		for _, r := range pkicheck.KubeadmRequired(kubeDir) {
			add(r.Path, r.Why)
		}
		l.sources = append(l.sources, "kubeadm's PKI")
	} else {
		for _, env := range etcdenv.Paths {
			data, err := pkicheck.ReadFile(root, env)
			if err != nil {
				continue // not restored: this layout does not use it
			}
			n := 0
			for _, v := range etcdenv.Parse(data).Files() {
				add(v.Value, fmt.Sprintf("etcd reads it (%s in %s)", v.Name, env))
				etcdDirs = append(etcdDirs, path.Dir(path.Clean(v.Value)))
				n++
			}
			l.sources = append(l.sources, fmt.Sprintf("the %d files %s names", n, env))
		}
		n := 0
		for _, f := range etcdTLS {
			if set, ok := coveringSet(m, f); ok {
				add(f, fmt.Sprintf("the cluster's config names it for etcd's client TLS, and state set %s captures it", set))
				etcdDirs = append(etcdDirs, path.Dir(path.Clean(f)))
				n++
			}
		}
		if n > 0 {
			l.sources = append(l.sources, "the config's etcd client TLS files")
		}
	}
	refs := map[string]string{}
	if cp := m.State.ControlPlane; cp != nil {
		for _, r := range cp.References {
			if _, ok := refs[r.Path]; !ok {
				refs[r.Path] = referenceWhy(r)
			}
		}
	}
	for _, s := range m.State.Sets {
		if !s.Required {
			continue
		}
		l.sources = append(l.sources, "state set "+s.Name)
		for _, p := range s.Paths {
			if !hasMeta(p) {
				add(p, cmp.Or(refs[p], "state set "+s.Name+" requires it"))
				continue
			}
			if !globMatches(root, p) {
				l.unmatched = append(l.unmatched, Check{ID: pkicheck.IDFile, Subject: p, Grade: Fail,
					Reason: "matches no restored file: state set " + s.Name + " requires it"})
			}
		}
	}
	if l.topology != restore.TopologyKubeadm {
		// kubespray keeps the control plane's PKI where kubeadm does; an
		// etcd under systemd alone has none, and a missing directory is
		// no finding.
		l.dirs = append(slices.Compact(slices.Sorted(slices.Values(etcdDirs))), path.Join(kubeDir, "pki"))
	}
	return l
}

// referenceWhy says which component reads a referenced file.
func referenceWhy(r manifest.Reference) string {
	if r.Via != "" {
		return fmt.Sprintf("%s reads it (named in %s, from --%s)", r.Component, r.Via, r.Flag)
	}
	return fmt.Sprintf("%s reads it (--%s)", r.Component, r.Flag)
}

// coveringSet names the first state set of the backup whose patterns
// match host path p.
func coveringSet(m *manifest.Manifest, p string) (string, bool) {
	for _, s := range m.State.Sets {
		for _, pat := range s.Paths {
			if ok, _ := doublestar.Match(pat, path.Clean(p)); ok {
				return s.Name, true
			}
		}
	}
	return "", false
}

func hasMeta(p string) bool { return strings.ContainsAny(p, `*?[{\`) }

// globMatches reports whether pattern (a host path glob) matches a file of
// the restored tree, without following links out of it.
func globMatches(root, pattern string) bool {
	rel := strings.TrimPrefix(path.Clean(pattern), "/")
	matches, err := doublestar.Glob(os.DirFS(root), rel, doublestar.WithNoFollow(), doublestar.WithFilesOnly())
	return err == nil && len(matches) > 0
}
