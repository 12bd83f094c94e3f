package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kdr-io/kdr/etcdenv"
	"github.com/kdr-io/kdr/staticpod"
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
		// The member is built inside the data dir and moved up into it,
		// so it lands on the data dir's own disk when that is a mount.
		"mkdir -p {{.DataDir}} && chmod 700 {{.DataDir}}",
		// A replayed database carries no trailing sha256 any more.
		"etcdutl snapshot restore {{.RestoredDB}}{{if .ToRevision}} --skip-hash-check{{end}} --data-dir {{.DataDir}}/" + scratchName + " --name {{.Node.Name}} " +
			"--initial-cluster {{.InitialCluster}} --initial-cluster-token {{.Token}} " +
			"--initial-advertise-peer-urls {{.Node.PeerURL}} --bump-revision {{.Bump}} --mark-compacted",
		"mv {{.DataDir}}/" + scratchName + "/member {{.DataDir}}/member && rmdir {{.DataDir}}/" + scratchName,
		// The restored manifest still names the backup's member: it is
		// pointed at this node flag by flag, as kdr does
		// (staticpod.SetEtcdNode): its name and URLs, then the new
		// cluster (the token added after --initial-cluster) and the data
		// dir with its volume: the volume mount at it, which kubeadm
		// writes as a list item ("- mountPath: ..."), and the hostPath
		// behind that ("path: ...").
		"{{if eq .Topology \"kubeadm\"}}sed -i -e 's#^\\( *- --name=\\).*#\\1{{.Node.Name}}#' " +
			"-e 's#^\\( *- --initial-advertise-peer-urls=\\).*#\\1{{.Node.PeerURL}}#' -e 's#^\\( *- --listen-peer-urls=\\).*#\\1{{.Node.PeerURL}}#' " +
			"-e 's#^\\( *- --advertise-client-urls=\\).*#\\1{{.Node.ClientURL}}#' " +
			"-e 's#^\\( *- --listen-client-urls=\\).*#\\1{{.ListenClientURLs}}#' " +
			"-e 's#^\\( *kubeadm.kubernetes.io/etcd.advertise-client-urls: \\).*#\\1{{.Node.ClientURL}}#' {{.StagedManifests}}/etcd.yaml{{end}}",
		"{{if eq .Topology \"kubeadm\"}}sed -i -e '/^ *- --initial-cluster-token=/d' " +
			"-e 's#^\\( *\\)- --initial-cluster=.*#\\1- --initial-cluster={{.InitialCluster}}\\n\\1- --initial-cluster-token={{.Token}}#' " +
			"-e 's#^\\( *- --data-dir=\\).*#\\1{{.DataDir}}#'" +
			"{{if and .CapturedDataDir (ne .CapturedDataDir .DataDir)}} -e 's#^\\( *\\(- \\)\\?\\(mountPath\\|path\\): \\){{.CapturedDataDir}}$#\\1{{.DataDir}}#'{{end}} " +
			"{{.StagedManifests}}/etcd.yaml{{end}}",
		"{{if eq .Topology \"kubeadm\"}}grep -e --name= -e -urls= -e --initial-cluster -e --data-dir= -e path: {{.StagedManifests}}/etcd.yaml{{end}}",
		// An external etcd's environment file names the member it was
		// taken on, as kdr rewrites it (configureEtcdEnv); kdr also
		// points member certificates named after that member at this
		// node's, which this sed leaves to the operator.
		"{{if eq .Topology \"systemd\"}}for f in " + etcdEnvFiles + "; do if grep -qs '^ETCD_NAME=' \"$f\"; then sed -i " +
			"-e 's#^ETCD_NAME=.*#ETCD_NAME={{.Node.Name}}#' -e 's#^ETCD_DATA_DIR=.*#ETCD_DATA_DIR={{.DataDir}}#' " +
			"-e 's#^ETCD_INITIAL_ADVERTISE_PEER_URLS=.*#ETCD_INITIAL_ADVERTISE_PEER_URLS={{.Node.PeerURL}}#' " +
			"-e 's#^ETCD_LISTEN_PEER_URLS=.*#ETCD_LISTEN_PEER_URLS={{.Node.PeerURL}}#' " +
			"-e 's#^ETCD_ADVERTISE_CLIENT_URLS=.*#ETCD_ADVERTISE_CLIENT_URLS={{.Node.ClientURL}}#' " +
			"-e 's#^ETCD_LISTEN_CLIENT_URLS=.*#ETCD_LISTEN_CLIENT_URLS={{.ListenClientURLs}}#' " +
			"-e 's#^ETCD_INITIAL_CLUSTER=.*#ETCD_INITIAL_CLUSTER={{.InitialCluster}}#' " +
			"-e 's#^ETCD_INITIAL_CLUSTER_TOKEN=.*#ETCD_INITIAL_CLUSTER_TOKEN={{.Token}}#' \"$f\" && grep '^ETCD_' \"$f\"; fi; done{{end}}",
	},
	expect: "{{.DataDir}}/member/snap/db exists{{if eq .Topology \"kubeadm\"}}; the restored etcd manifest names {{.Node.Name}}, " +
		"its URLs, the new cluster and {{.DataDir}}{{end}}.",
	destructive: true,
	action:      restoreEtcd,
	check:       checkEtcdRestored,
}

// etcdEnvFiles are etcdenv.Paths as the shell lists them.
var etcdEnvFiles = strings.Join(etcdenv.Paths, " ")

// scratchName is the directory inside the data dir where a member is
// built before it takes its place: on the same filesystem as the data
// dir, also when that is a mount point of its own.
const scratchName = ".kdr-restoring"

// restoreEtcd builds the member in a scratch directory inside the data
// dir from the decrypted snapshot, which it takes rather than copies, and
// moves it up into place: the member is never half written. Killed
// halfway, the next run finishes the scratch it finds.
func restoreEtcd(ctx context.Context, e *Env) error {
	p, n := e.Plan, e.Node
	dir := e.path(p.Options.EtcdDataDir)
	marker := restoredMarker(p)
	scratch := filepath.Join(dir, scratchName)
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		// This restore put the member in place before an interruption:
		// only the manifest may be left to do.
		return configureEtcdManifest(e)
	}
	if _, err := os.Stat(filepath.Join(scratch, marker)); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "member")); err == nil {
			return finishMember(e, dir)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	names, err := dataDirEntries(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if name != scratchName {
			return fmt.Errorf("%s holds %s, which this restore did not make (something started etcd after move-aside): stop it, move it away, and run again", p.Options.EtcdDataDir, name)
		}
	}
	snapshot := filepath.Join(e.staging(), p.restoredDBName())
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
			from := StepDecrypt
			if p.ToRevision > 0 {
				from = StepReplay
			}
			return fmt.Errorf("%s is gone and no interrupted restore holds it: run again with --from-step %s", p.restoredDBName(), from)
		}
	}
	err = writeMemberData(ctx, memberData{
		DataDir:        scratch,
		Name:           n.Name,
		InitialCluster: p.InitialCluster,
		Token:          p.Options.Token,
		RevisionBump:   p.Bump(),
		MinRevision:    p.RestoredRevision(),
	})
	if err != nil {
		return fmt.Errorf("etcd snapshot restore: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	// The marker is made with the member: it tells a resumed restore that
	// the member in place is its own.
	if err := writeFileAtomic(filepath.Join(scratch, marker), []byte(p.BackupID+"\n"), 0o600); err != nil {
		return err
	}
	// The manifest first: once the member has its place the step counts
	// as done, and etcd must then start as this node.
	if err := configureEtcdManifest(e); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(scratch, "member"), filepath.Join(dir, "member")); err != nil {
		return fmt.Errorf("put the restored member in place: %w", err)
	}
	return finishMember(e, dir)
}

// finishMember moves the marker up beside the member in place and removes
// the empty scratch directory.
func finishMember(e *Env, dir string) error {
	marker := restoredMarker(e.Plan)
	scratch := filepath.Join(dir, scratchName)
	if err := os.Rename(filepath.Join(scratch, marker), filepath.Join(dir, marker)); err != nil {
		return fmt.Errorf("mark the restored member: %w", err)
	}
	if err := os.Remove(scratch); err != nil {
		return fmt.Errorf("remove the scratch directory: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return configureEtcdManifest(e)
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

// configureEtcdManifest points the restored etcd static pod manifest at
// this node: its name, URLs, cluster and data dir, with the data dir's
// volume and kubeadm's annotation to match; for an etcd under systemd,
// its environment file.
func configureEtcdManifest(e *Env) error {
	if e.Plan.Options.Topology != TopologyKubeadm {
		return configureEtcdEnv(e)
	}
	n := e.Node
	return e.editStagedManifest("etcd.yaml", func(pod *staticpod.Pod) error {
		return pod.SetEtcdNode(staticpod.EtcdNode{
			Name: n.Name, PeerURL: n.PeerURL, ClientURL: n.ClientURL,
			InitialCluster: e.Plan.InitialCluster, Token: e.Plan.Options.Token,
			DataDir: e.Plan.Options.EtcdDataDir,
		})
	})
}

// checkEtcdManifest proves the staged etcd manifest (or an external
// etcd's environment file) names this node and the data dir the member
// was restored into.
func checkEtcdManifest(e *Env) error {
	if e.Plan.Options.Topology != TopologyKubeadm {
		return checkEtcdEnv(e)
	}
	pod, err := e.stagedPod("etcd.yaml")
	if noPod(err) {
		return nil
	}
	if err != nil {
		return err
	}
	m, err := pod.EtcdMember()
	if err != nil {
		return fmt.Errorf("the restored etcd manifest: %w", err)
	}
	peer, _ := pod.Flag("initial-advertise-peer-urls")
	switch {
	case m.Name != e.Node.Name:
		return fmt.Errorf("the restored etcd manifest names %s, not %s", m.Name, e.Node.Name)
	case peer != e.Node.PeerURL:
		return fmt.Errorf("the restored etcd manifest advertises %s, not %s", peer, e.Node.PeerURL)
	case m.HostDataDir != e.Plan.Options.EtcdDataDir || m.DataDir != e.Plan.Options.EtcdDataDir:
		return fmt.Errorf("the restored etcd manifest runs with --data-dir=%s mounted from %s, not %s", m.DataDir, m.HostDataDir, e.Plan.Options.EtcdDataDir)
	}
	return nil
}
