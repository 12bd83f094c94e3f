package restore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/kdr-io/kdr/etcdenv"
	"github.com/kdr-io/kdr/staticpod"
)

// configureEtcdEnv points a restored external etcd's environment file
// (the one of etcdenv.Paths that names a member) at this node, as
// configureEtcdManifest does a static pod: the backup's file names the
// member it was taken on, and every node restores it. Files named after
// that member (kubespray's member-node1.pem) become this node's when the
// restored tree holds them. The restored original is kept aside.
func configureEtcdEnv(e *Env) error {
	return e.withEtcdEnv(func(root *beneath, rel string, raw []byte, mode fs.FileMode) error {
		out := etcdenv.Set(raw, e.etcdEnvVars(root, etcdenv.Parse(raw)))
		if bytes.Equal(out, raw) {
			return nil
		}
		if err := e.keepAside(rel, raw); err != nil {
			return err
		}
		return root.writeFile(rel, out, mode, 0)
	})
}

// withEtcdEnv calls fn with the restored environment file of an etcd
// under systemd, read below the restore root; not for kubeadm, nor when
// the host has none.
func (e *Env) withEtcdEnv(fn func(root *beneath, rel string, raw []byte, mode fs.FileMode) error) error {
	if e.Plan.Options.Topology != TopologySystemd {
		return nil
	}
	root, err := openBeneath(e.Root)
	if err != nil {
		return fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	rel, raw, mode, err := restoredEtcdEnv(root)
	if err != nil || raw == nil {
		return err
	}
	return fn(root, rel, raw, mode)
}

// restoredEtcdEnv finds the environment file that names an etcd member;
// raw is nil when the host has none.
func restoredEtcdEnv(root *beneath) (rel string, raw []byte, mode fs.FileMode, err error) {
	for _, p := range etcdenv.Paths {
		rel := rootRel(p)
		raw, info, err := root.readFile(rel)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", nil, 0, err
		}
		if _, ok := etcdenv.Parse(raw).Get(etcdenv.NameVar); ok {
			return rel, raw, info.Mode().Perm(), nil
		}
	}
	return "", nil, 0, nil
}

// etcdEnvVars are the assignments that make a member this node's.
func (e *Env) etcdEnvVars(root *beneath, env etcdenv.Env) []etcdenv.Var {
	p, n := e.Plan, e.Node
	vars := []etcdenv.Var{
		{Name: etcdenv.NameVar, Value: n.Name},
		{Name: etcdenv.DataDirVar, Value: p.Options.EtcdDataDir},
		{Name: "ETCD_INITIAL_ADVERTISE_PEER_URLS", Value: n.PeerURL},
		{Name: "ETCD_LISTEN_PEER_URLS", Value: n.PeerURL},
		{Name: "ETCD_ADVERTISE_CLIENT_URLS", Value: n.ClientURL},
		{Name: "ETCD_LISTEN_CLIENT_URLS", Value: staticpod.ListenClientURLs(n.ClientURL)},
		{Name: "ETCD_INITIAL_CLUSTER", Value: p.InitialCluster},
		{Name: "ETCD_INITIAL_CLUSTER_TOKEN", Value: p.Options.Token},
	}
	src, _ := env.Get(etcdenv.NameVar)
	if src == "" || src == n.Name {
		return vars
	}
	for _, v := range env.Files() {
		base := path.Base(v.Value)
		if !strings.Contains(base, "-"+src+".") && !strings.Contains(base, "-"+src+"-") {
			continue
		}
		own := path.Join(path.Dir(v.Value), strings.Replace(base, "-"+src, "-"+n.Name, 1))
		if _, ok, err := root.lstat(rootRel(own)); err == nil && ok {
			vars = append(vars, etcdenv.Var{Name: v.Name, Value: own})
		}
	}
	return vars
}

// checkEtcdEnv proves the restored environment file names this node and
// the data dir the member was restored into.
func checkEtcdEnv(e *Env) error {
	return e.withEtcdEnv(func(root *beneath, rel string, raw []byte, _ fs.FileMode) error {
		env := etcdenv.Parse(raw)
		name, _ := env.Get(etcdenv.NameVar)
		dir, _ := env.Get(etcdenv.DataDirVar)
		switch {
		case name != e.Node.Name:
			return fmt.Errorf("the restored %s names member %s, not %s", root.at(rel), name, e.Node.Name)
		case dir != e.Plan.Options.EtcdDataDir:
			return fmt.Errorf("the restored %s keeps its data in %s, not %s", root.at(rel), dir, e.Plan.Options.EtcdDataDir)
		}
		return nil
	})
}
