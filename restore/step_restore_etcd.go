package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// StepRestoreEtcd names the step that restores this node's etcd member from the snapshot.
const StepRestoreEtcd = "restore-etcd"

var stepRestoreEtcd = stepDef{
	id:    StepRestoreEtcd,
	title: "Restore this node's etcd member from the snapshot",
	why: "Every member is restored from the same snapshot with the same new cluster token, so they form a new " +
		"cluster with the old data. The revision jumps by {{.Bump}} and is marked compacted, so Kubernetes " +
		"watches never see a revision twice.",
	where: EveryNode,
	commands: []string{
		"etcdutl snapshot restore {{.Staging}}/snapshot.db --data-dir {{.DataDir}} --name {{.Node.Name}} " +
			"--initial-cluster {{.InitialCluster}} --initial-cluster-token {{.Token}} " +
			"--initial-advertise-peer-urls {{.Node.PeerURL}} --bump-revision {{.Bump}} --mark-compacted",
	},
	expect:      "{{.DataDir}}/member/snap/db exists.",
	destructive: true,
	action:      restoreEtcd,
	check:       checkEtcdRestored,
}

// restoreEtcd builds the member's data dir in a scratch directory from
// the decrypted snapshot, which it takes rather than copies, and renames
// it into place: the data dir is never half written. Killed halfway, the
// next run finishes the scratch it finds.
func restoreEtcd(ctx context.Context, e *Env) error {
	p, n := e.Plan, e.Node
	dir := e.path(p.Options.EtcdDataDir)
	marker := restoredMarker(p)
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		// This restore put the member in place before an interruption:
		// only the manifest may be left to do.
		return configureEtcdManifest(e)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s holds data this restore did not make (something started etcd after move-aside): stop it, move the directory away, and run again", p.Options.EtcdDataDir)
	}
	scratch := dir + ".kdr-restoring"
	snapshot := filepath.Join(e.staging(), snapshotFile)
	switch _, err := os.Stat(snapshot); {
	case err == nil:
		if err := os.RemoveAll(scratch); err != nil {
			return err
		}
		if err := takeSnapshot(ctx, snapshot, scratch); err != nil {
			return fmt.Errorf("put the snapshot in place: %w", err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	default:
		if _, err := os.Stat(dbPath(scratch)); err != nil {
			return fmt.Errorf("the decrypted snapshot is gone and no interrupted restore holds it: run again with --from-step decrypt")
		}
	}
	err := writeMemberData(ctx, memberData{
		DataDir:        scratch,
		Name:           n.Name,
		InitialCluster: p.InitialCluster,
		Token:          p.Options.Token,
		RevisionBump:   p.Options.RevisionBump,
		MinRevision:    p.Revision,
	})
	if err != nil {
		return fmt.Errorf("etcd snapshot restore: %w", err)
	}
	if err := os.Chmod(scratch, 0o700); err != nil {
		return err
	}
	// The marker goes in with the data, in one rename: it tells a resumed
	// restore that the member in place is its own.
	if err := writeFileAtomic(filepath.Join(scratch, marker), []byte(p.BackupID+"\n"), 0o600); err != nil {
		return err
	}
	// The manifest first: once the data dir has its name the step counts
	// as done, and etcd must then start as this node.
	if err := configureEtcdManifest(e); err != nil {
		return err
	}
	if err := os.Rename(scratch, dir); err != nil {
		return fmt.Errorf("put the restored data dir in place: %w", err)
	}
	return nil
}

func checkEtcdRestored(_ context.Context, e *Env) error {
	dir := e.path(e.Plan.Options.EtcdDataDir)
	for _, p := range []string{filepath.Join(dir, "member", "snap", "db"), filepath.Join(dir, restoredMarker(e.Plan))} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return checkEtcdManifest(e)
}

// restoredMarker names the file a restored data dir carries, so a resumed
// restore can tell its own member from one etcd made by itself.
func restoredMarker(p *Plan) string { return ".kdr-restored-" + p.BackupID }

// etcdFlag matches one "- --flag=value" line of a static pod manifest.
var etcdFlag = regexp.MustCompile(`(?m)^(\s*- --)([a-z-]+)=(.*)$`)

// configureEtcdManifest points the restored etcd static pod manifest at
// this node: its name and URLs, which differ when the backup came from
// another node or the node has a new address. The staged manifest came
// from a backup: it is read without following a symlink and must be a
// regular file, and is replaced the same way.
func configureEtcdManifest(e *Env) error {
	if e.Plan.Options.Topology != TopologyKubeadm {
		return nil
	}
	staged, rel, err := e.stagedManifest("etcd.yaml")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer staged.Close()
	raw, _, err := staged.readFile(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restored etcd manifest: %w", err)
	}
	n := e.Node
	local := strings.Replace(n.ClientURL, hostOf(n.ClientURL), "127.0.0.1", 1)
	set := map[string]string{
		"name":                        n.Name,
		"initial-advertise-peer-urls": n.PeerURL,
		"listen-peer-urls":            n.PeerURL,
		"advertise-client-urls":       n.ClientURL,
		"listen-client-urls":          local + "," + n.ClientURL,
		"initial-cluster":             e.Plan.InitialCluster,
		"initial-cluster-token":       e.Plan.Options.Token,
		"data-dir":                    e.Plan.Options.EtcdDataDir,
	}
	out := etcdFlag.ReplaceAllStringFunc(string(raw), func(line string) string {
		m := etcdFlag.FindStringSubmatch(line)
		if v, ok := set[m[2]]; ok {
			return m[1] + m[2] + "=" + v
		}
		return line
	})
	return staged.writeFile(rel, []byte(out), 0o600, 0)
}

// checkEtcdManifest proves the staged etcd manifest names this node.
func checkEtcdManifest(e *Env) error {
	if e.Plan.Options.Topology != TopologyKubeadm {
		return nil
	}
	staged, rel, err := e.stagedManifest("etcd.yaml")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer staged.Close()
	raw, _, err := staged.readFile(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restored etcd manifest: %w", err)
	}
	for _, m := range etcdFlag.FindAllStringSubmatch(string(raw), -1) {
		if m[2] == "name" && m[3] != e.Node.Name {
			return fmt.Errorf("the restored etcd manifest names %s, not %s", m[3], e.Node.Name)
		}
		if m[2] == "initial-advertise-peer-urls" && m[3] != e.Node.PeerURL {
			return fmt.Errorf("the restored etcd manifest advertises %s, not %s", m[3], e.Node.PeerURL)
		}
	}
	return nil
}

func hostOf(rawURL string) string {
	s := strings.TrimPrefix(strings.TrimPrefix(rawURL, "https://"), "http://")
	if i := strings.LastIndex(s, ":"); i >= 0 {
		return s[:i]
	}
	return s
}
