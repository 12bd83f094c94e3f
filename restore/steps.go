package restore

import (
	"path"
	"slices"
	"strings"

	"github.com/kdr-io/kdr/manifest"
)

// The restore's steps, in the order they run. Every node prepares before
// etcd starts anywhere; etcd starts everywhere before the control plane
// that caches it.
var phases = [][]stepDef{
	{stepPreflight, stepFetch, stepDecrypt, stepStopControlPlane, stepMoveAside, stepRestoreFiles, stepConfigureNode, stepRestoreEtcd},
	{stepStartEtcd},
	{stepCheckEtcd},
	{stepStartControlPlane},
}

var stepPreflight = stepDef{
	id:    "preflight",
	title: "Check the host before touching anything",
	why: "A restore that fails halfway for want of disk space, or runs on the wrong machine, leaves a " +
		"control plane in a worse state than it found it. Nothing is changed by this step.",
	where: EveryNode,
	commands: []string{
		"hostname; ip -brief address | grep -F ' {{.Node.IP}}/'",
		"df -h {{.Staging}} {{.DataDir}}",
		"ss -ltn | grep -E ':(2379|2380)\\b' || echo 'etcd ports free'",
	},
	expect: "The host has the address {{.Node.IP}}; free space of at least twice the backup's database; " +
		"nothing listening on etcd's ports.",
	action: preflight,
	check:  preflight,
}

var stepFetch = stepDef{
	id:    "fetch",
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

var stepDecrypt = stepDef{
	id:    "decrypt",
	title: "Verify, decrypt and decompress",
	why: "Decryption with the operators' offline key proves the backup is ours and whole: age authenticates " +
		"every chunk, and the plaintext hashes, etcd's own trailing hash and the state index are checked.",
	where: EveryNode,
	commands: []string{
		"cd {{.Staging}}",
		"age -d -i {{.Identity}} etcd.db.zst.age | zstd -d -o snapshot.db",
		"age -d -i {{.Identity}} state.tar.zst.age | zstd -d -o state.tar",
		"sha256sum snapshot.db state.tar",
	},
	expect: "Both sha256 sums equal the \"plainSHA256\" of their objects in manifest.json.",
	action: decrypt,
	check:  checkDecrypted,
}

var stepStopControlPlane = stepDef{
	id:    "stop-control-plane",
	title: "Stop etcd and the control plane",
	why: "etcd must not run while its data is replaced, and an API server must not serve from a half-restored " +
		"etcd. The static pod manifests are moved aside, which makes the kubelet stop the pods; nothing is deleted.",
	where: EveryNode,
	commands: []string{
		"{{if eq .Topology \"systemd\"}}systemctl stop etcd{{else}}mkdir -p {{.KubeDir}}/manifests{{.Aside}} && " +
			"mv {{.KubeDir}}/manifests/*.yaml {{.KubeDir}}/manifests{{.Aside}}/{{end}}",
		"ss -ltn | grep -E ':(2379|2380)\\b' || echo 'etcd stopped'",
	},
	expect:      "No process listens on etcd's ports (the kubelet needs up to 20 seconds to stop static pods).",
	destructive: true,
	action:      stopControlPlane,
	check:       checkPortsFree,
}

var stepMoveAside = stepDef{
	id:    "move-aside",
	title: "Move the old etcd data aside",
	why: "A restore never merges into or deletes existing data: the old data dir is kept beside the new one " +
		"until the restored cluster is proven, so there is always a way back.",
	where: EveryNode,
	commands: []string{
		"[ ! -e {{.DataDir}} ] || mv {{.DataDir}} {{.DataDir}}{{.Aside}}",
	},
	expect:      "{{.DataDir}} does not exist; the old data, if any, is in {{.DataDir}}{{.Aside}}.",
	destructive: true,
	action:      moveAside,
	check:       checkMovedAside,
}

var stepRestoreFiles = stepDef{
	id:    "restore-files",
	title: "Put back the PKI, kubeconfigs, LB and DNS files",
	why: "The CAs and the service-account keys cannot be made again: without them no node, client or token " +
		"trusts the restored cluster. Files already on the host are moved aside, never overwritten; keys keep " +
		"mode 0600 and their owners.",
	where: EveryNode,
	commands: []string{
		// Only the sets' patterns are extracted (see stateMembers); GNU
		// tar refuses names with "..", and writes nothing through a link
		// it extracted.
		"mkdir -p {{.Staging}}/files {{.Staging}}/manifests/etc/kubernetes && tar -x -p -f {{.Staging}}/state.tar -C {{.Staging}}/files " +
			"{{if .StateMembers}}--wildcards --no-wildcards-match-slash -- {{.StateMembers}}{{else}}--exclude .kdr{{end}}",
		"mv {{.Staging}}/files/etc/kubernetes/manifests {{.Staging}}/manifests/etc/kubernetes/",
		// The tar came from the backup target: rsync copies files,
		// directories and links that stay among them, and nothing else
		// (-a less -D: no device or fifo; --safe-links: no link to an
		// absolute path or out of the tree), and drops setuid, setgid and
		// sticky bits, as kdr does.
		"rsync -rlptgo --safe-links --chmod=ug-s,a-t --backup --backup-dir={{.Staging}}/aside {{.Staging}}/files/ /",
	},
	expect: "Every file of the backup's state is in place with the mode and owner it had, less setuid, setgid and " +
		"sticky bits; rsync skipped any device, fifo or symlink leading out of the restored files.",
	destructive: true,
	action:      restoreFiles,
	check:       checkFilesRestored,
}

// stateMembers is what restore-files extracts from the state tar by hand:
// the patterns of the manifest's sets as GNU tar --wildcards members,
// quoted for the shell. A member matches a pattern's whole name or a
// directory it names (so pki/** takes everything below pki), never the
// directory a pattern sits in: a symlink at etc/kubernetes/pki or
// etc/kubernetes/manifests, which the entry policy refuses, is left in
// the tar, as is anything outside the sets. A pattern that matched nothing
// at backup time is left out: tar fails on a member it does not find. ""
// when a set records no patterns (a backup made before sets did): the
// runbook then extracts all but the index, as it did.
func stateMembers(m *manifest.Manifest) string {
	if m == nil {
		return ""
	}
	var out []string
	for _, s := range m.State.Sets {
		if len(s.Paths) == 0 {
			return ""
		}
		for _, pat := range s.Paths {
			if slices.Contains(s.Missing, pat) {
				continue
			}
			out = append(out, shellQuote(strings.TrimPrefix(path.Clean(pat), "/")))
		}
	}
	return strings.Join(out, " ")
}

// shellQuote quotes s as one word for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

var stepConfigureNode = stepDef{
	id:    "configure-node",
	title: "Issue this node's certificates and point kubeconfigs at the API endpoint",
	why: "The backup's node certificates name the host they came from. A node with another name or address " +
		"gets its API server and etcd certificates issued again from the restored CAs (same keys, new names); " +
		"kubeconfigs follow a new API endpoint. The restored originals are kept in {{.Staging}}/aside.",
	where:   EveryNode,
	applies: needsConfigure,
	commands: []string{
		"kubeadm init phase certs apiserver --apiserver-advertise-address {{.Node.IP}} --cert-dir {{.KubeDir}}/pki",
		"kubeadm init phase certs etcd-server --cert-dir {{.KubeDir}}/pki && kubeadm init phase certs etcd-peer --cert-dir {{.KubeDir}}/pki",
		"openssl x509 -noout -ext subjectAltName -in {{.KubeDir}}/pki/apiserver.crt",
	},
	expect:      "The certificates list {{.Node.Name}} and {{.Node.IP}} among their names and verify against the restored CAs.",
	destructive: true,
	action:      configureNode,
	check:       checkConfigured,
}

var stepRestoreEtcd = stepDef{
	id:    "restore-etcd",
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

var stepStartEtcd = stepDef{
	id:    "start-etcd",
	title: "Start etcd",
	why: "etcd is started on every node before anything that reads it; the cluster has quorum once a " +
		"majority of members run, so run this step on all nodes without waiting for one to finish.",
	where: EveryNode,
	commands: []string{
		"{{if eq .Topology \"systemd\"}}systemctl start etcd{{else}}cp {{.Staging}}/manifests/etc/kubernetes/manifests/etcd.yaml {{.KubeDir}}/manifests/{{end}}",
		"etcdctl --endpoints {{.Endpoints}}{{.EtcdctlTLS}} endpoint health",
	},
	expect: "Every endpoint reports healthy.",
	action: startEtcd,
	check:  checkEtcdHealthy,
}

var stepCheckEtcd = stepDef{
	id:    "check-etcd",
	title: "Prove the restored etcd",
	why: "The restored cluster must have exactly the planned members, and a revision above every revision " +
		"the lost cluster handed out.",
	where: FirstNode,
	commands: []string{
		"etcdctl --endpoints {{.Endpoints}}{{.EtcdctlTLS}} member list -w table",
		"etcdctl --endpoints {{.Endpoints}}{{.EtcdctlTLS}} endpoint status -w table",
	},
	expect: "The members of the plan, one leader, and revisions of at least {{.MinRevision}}.",
	action: checkEtcd,
	check:  checkEtcd,
}

var stepStartControlPlane = stepDef{
	id:    "start-control-plane",
	title: "Start the control plane",
	why: "kube-apiserver, controller-manager and scheduler start on the restored etcd; starting them only now " +
		"means none of them serves from a stale watch cache. Restart every kubelet afterwards.",
	where:   EveryNode,
	applies: hasControlPlane,
	commands: []string{
		"cp {{.Staging}}/manifests/etc/kubernetes/manifests/*.yaml {{.KubeDir}}/manifests/",
		"kubectl --kubeconfig {{.KubeDir}}/admin.conf get --raw /readyz",
		"systemctl restart kubelet",
	},
	expect: "/readyz answers ok.",
	action: startControlPlane,
	check:  checkAPIServer,
}
