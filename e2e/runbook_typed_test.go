package e2e

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/pkicheck"
	"github.com/kdr-io/kdr/staticpod"
)

// minimalDebian are the commands a minimal Debian host has (its essential
// and required packages: bash, dash, coreutils, util-linux, mount,
// findutils, grep, sed, tar, gzip, hostname, with iproute2 and procps),
// as far as the runbook could use them. Neither rsync nor openssl is
// among them.
var minimalDebian = []string{
	"bash", "sh",
	// coreutils
	"[", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "df", "dirname", "echo", "env", "false",
	"head", "id", "ln", "ls", "mkdir", "mktemp", "mv", "printf", "readlink", "rm", "rmdir", "sha256sum",
	"sleep", "sort", "stat", "tail", "tee", "test", "touch", "tr", "true", "uname", "wc",
	// util-linux and mount
	"findmnt", "mount", "mountpoint", "umount", "unshare",
	"find", "xargs", "grep", "sed", "tar", "gzip", "hostname",
	"ip", "ss", // iproute2
	"pgrep", "ps", // procps
}

// restoreTools are what the runbook's preflight asks to be installed.
var restoreTools = []string{"age", "zstd", "etcdutl", "etcdctl", "kubeadm"}

// typedStep is one step of `kdr restore plan -o json`, with its commands.
type typedStep struct {
	ID       string   `json:"id"`
	Node     string   `json:"node"`
	Phase    int      `json:"phase"`
	Commands []string `json:"commands"`
}

// typedPlan is the part of `kdr restore plan -o json` a typed restore
// reads.
type typedPlan struct {
	BackupID string `json:"backupID"`
	Revision int64  `json:"revision"`
	Options  struct {
		EtcdDataDir  string `json:"etcdDataDir"`
		RevisionBump int64  `json:"revisionBump"`
	} `json:"options"`
	Steps []typedStep `json:"steps"`
}

// typedCase is one node's restore, typed from the runbook and done by kdr
// from the same plan, on a host in a network namespace of its own: the
// node's address is the host's (preflight checks it, and kubeadm refuses
// to issue certificates for a loopback address).
type typedCase struct {
	node     *testenv.Host
	nodeName string
	env      []string
	// planArgs select the plan for both: config, identity, --node-ip.
	planArgs []string
	plan     typedPlan
	// steps are the node's first stage, preflight to restore-etcd.
	steps []typedStep
	// rawKeys must be in both restored members, with these values.
	rawKeys map[string]string
	// shims are more commands on the typed host's PATH, by name, each a
	// bash script.
	shims map[string]string
}

// newTypedCase plans the restore of nodeName, checks that the runbooks
// print its commands as the plan gives them, and keeps the node's first
// stage.
func newTypedCase(t *testing.T, node *testenv.Host, nodeName string, env, planArgs []string) *typedCase {
	t.Helper()
	c := &typedCase{node: node, nodeName: nodeName, env: env, planArgs: planArgs}
	r := runKdr(t, env, append([]string{"restore", "plan", "-o", "json"}, planArgs...)...)
	wantExit(t, r, 0)
	if err := json.Unmarshal([]byte(r.stdout), &c.plan); err != nil {
		t.Fatalf("restore plan -o json: %v", err)
	}
	for _, s := range c.plan.Steps {
		if s.Node == nodeName && s.Phase == 1 {
			c.steps = append(c.steps, s)
		}
	}
	if len(c.steps) == 0 || c.steps[len(c.steps)-1].ID != "restore-etcd" {
		t.Fatalf("the plan's first stage for %s does not end in restore-etcd: %+v", nodeName, c.steps)
	}
	// The typed run binds directories of the test's over these.
	for _, d := range c.ownDirs() {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Fatalf("the plan restores into %s: the typed run binds a directory over %s, which this machine lacks", c.plan.Options.EtcdDataDir, d)
		}
	}
	checkRunbookPrints(t, env, planArgs, c.plan.Steps)
	return c
}

// ownDirs are the host directories the typed run binds a directory of
// the test's over, so that the restore writes nothing of the machine's:
// /var/lib for the staging dir (and the default data dir), and the top
// directory of a data dir elsewhere (/srv for /srv/etcd-disk/data), which
// must exist to be mounted over.
func (c *typedCase) ownDirs() []string {
	dirs := []string{"/var/lib"}
	if d := c.plan.Options.EtcdDataDir; !strings.HasPrefix(d, "/var/lib/") {
		top, _, _ := strings.Cut(strings.TrimPrefix(d, "/"), "/")
		dirs = append(dirs, "/"+top)
	}
	return dirs
}

// typedResult is what one restore, typed or kdr's, left.
type typedResult struct {
	// root is the host's root as the restore saw it: the typed /etc is
	// an overlay, whose upper directory root/etc is.
	root string
	// dataDir holds the member: the data dir, or the disk mounted there.
	dataDir string
	// underMount is the directory under the disk's mount ("" unmounted).
	underMount string
}

// oldMember is what the data dir held before the restore, which both
// restores must keep aside.
const oldMember = "old-member-file"

// dataDirIn makes the data dir below root with old data in it; with
// mounted, the old data is on a disk of its own (a directory of dir) to
// be bind-mounted at the data dir, which is left empty. It returns where
// the member will be, and the directory under the mount.
func (c *typedCase) dataDirIn(t *testing.T, dir, root, name string, mounted bool) typedResult {
	t.Helper()
	res := typedResult{root: root, dataDir: filepath.Join(root, c.plan.Options.EtcdDataDir)}
	testenv.Mkdir(t, res.dataDir, 0o700)
	if mounted {
		res.underMount, res.dataDir = res.dataDir, mkdirAt(t, dir, name+"-disk")
		if err := os.Chmod(res.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WriteFile(t, filepath.Join(res.dataDir, oldMember), []byte("old"), 0o600)
	return res
}

// typed runs the node's first stage exactly as the plan gives its
// commands, in one bash with `set -euo pipefail`, on a host that has only
// a minimal Debian's tools plus age, zstd, etcdutl, etcdctl and kubeadm,
// and where /etc is an overlay and /var/lib (which holds the staging dir)
// and the data dir's top directory (ownDirs) the test's own directories,
// in a private mount namespace. With mounted, a disk of the test's is
// bind-mounted at the data dir first.
func (c *typedCase) typed(t *testing.T, dir string, mounted bool) typedResult {
	t.Helper()
	root := mkdirAt(t, dir, "typed")
	for _, d := range c.ownDirs() {
		testenv.Mkdir(t, filepath.Join(root, d), 0o755)
	}
	res := c.dataDirIn(t, dir, root, "typed", mounted)
	var script strings.Builder
	// The test's own setup, not the runbook's: /etc gets an overlay in the
	// namespace so that what the restore writes there lands in root/etc,
	// without touching the machine's /etc.
	fmt.Fprintf(&script, "set -euo pipefail\n")
	fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc\n", mkdirAt(t, root, "etc"), mkdirAt(t, dir, "etc-work"))
	for _, d := range c.ownDirs() {
		fmt.Fprintf(&script, "mount --bind %s %s\n", filepath.Join(root, d), d)
	}
	if mounted {
		fmt.Fprintf(&script, "mount --bind %s %s\n", res.dataDir, c.plan.Options.EtcdDataDir)
	}
	script.WriteString("cd /\n")
	for _, s := range c.steps {
		fmt.Fprintf(&script, "echo '>>> %s'\n", s.ID)
		for _, cmd := range s.Commands {
			script.WriteString(cmd + "\n")
		}
	}
	bin := minimalPath(t, filepath.Join(dir, "bin"))
	for name, body := range c.shims {
		testenv.WriteFile(t, filepath.Join(bin, name), []byte("#!"+filepath.Join(bin, "bash")+"\n"+body), 0o755)
	}
	ctx, cancel := context.WithTimeout(t.Context(), kdrTimeout)
	defer cancel()
	start := time.Now()
	cmd := c.node.Command(ctx, "unshare", "--mount", "--propagation", "private", filepath.Join(bin, "bash"), "-c", script.String())
	cmd.Env = []string{"PATH=" + bin, "HOME=" + dir, "LC_ALL=C"}
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the typed restore failed: %v\n%s\n--- script ---\n%s", err, out, script.String())
	}
	t.Logf("typed restore in %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	return res
}

// engine is kdr's own restore of the same plan on the same host, into a
// root of its own: `kdr restore apply --until restore-etcd`, in a private
// mount namespace where the disk is bind-mounted at the data dir when
// mounted (as TestRestoreOntoMountedDataDir does).
func (c *typedCase) engine(t *testing.T, dir string, mounted bool) typedResult {
	t.Helper()
	root := mkdirAt(t, dir, "engine")
	res := c.dataDirIn(t, dir, root, "engine", mounted)
	args := append([]string{kdrBin, "restore", "apply", "--node", c.nodeName, "--root", root, "--until", "restore-etcd"}, c.planArgs...)
	if mounted {
		args = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", `mount --bind "$1" "$2" && shift 2 && exec "$@"`,
			"sh", res.dataDir, res.underMount}, args...)
	}
	ctx, cancel := context.WithTimeout(t.Context(), kdrTimeout)
	defer cancel()
	cmd := c.node.Command(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), c.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kdr restore apply: %v\n%s", err, out)
	}
	return res
}

// compareMembers checks where each restore put the member and the old
// data, and that the two members serve the same: the same keyspace and
// HashKV, above the backup's revision plus the bump. Each is served by an
// etcd of the test's on loopback.
func (c *typedCase) compareMembers(t *testing.T, typed, engine typedResult) {
	t.Helper()
	aside := ".kdr-aside-" + c.plan.BackupID
	for _, r := range []typedResult{typed, engine} {
		oldAt := r.dataDir + aside
		if r.underMount != "" {
			// The member is on the disk, the old data aside on it, and
			// nothing under the mount.
			if entries, err := os.ReadDir(r.underMount); err != nil || len(entries) != 0 {
				t.Errorf("%s, under the mount, holds %v (%v): the restore wrote beside the disk", r.underMount, names(entries), err)
			}
			oldAt = filepath.Join(r.dataDir, aside)
		}
		if got, err := os.ReadFile(filepath.Join(oldAt, oldMember)); err != nil || string(got) != "old" {
			t.Errorf("the old data is not kept aside in %s: %q, %v", oldAt, got, err)
		}
		if _, err := os.Stat(filepath.Join(r.dataDir, "member/snap/db")); err != nil {
			t.Errorf("no member in %s: %v", r.dataDir, err)
		}
	}
	// The data dirs as both left them: the type, mode and owner of the
	// data dir, of the old data's place (inside a mounted data dir, beside
	// a plain one) and of what it holds.
	for _, rel := range []string{"", "/" + aside, "/" + aside + "/" + oldMember} {
		if typed.underMount == "" && rel != "" {
			rel = strings.TrimPrefix(rel, "/")
		}
		a, b := entryAt(t, typed.dataDir+rel), entryAt(t, engine.dataDir+rel)
		if a != b {
			t.Errorf("%s%s: typed %s, kdr's %s", c.plan.Options.EtcdDataDir, rel, a.meta, b.meta)
		}
	}
	// The same entries in them, less the member's files, which etcdutl
	// and kdr write each their own way (the members are compared as
	// served, below), and kdr's marker of its own member.
	a, b := treeEntries(t, typed.dataDir), treeEntries(t, engine.dataDir)
	for rel := range b {
		if _, ok := a[rel]; !ok && !strings.HasPrefix(rel, "member/") && rel != ".kdr-restored-"+c.plan.BackupID {
			t.Errorf("%s/%s: kdr's only", c.plan.Options.EtcdDataDir, rel)
		}
	}
	for rel := range a {
		if _, ok := b[rel]; !ok && !strings.HasPrefix(rel, "member/") {
			t.Errorf("%s/%s: typed only", c.plan.Options.EtcdDataDir, rel)
		}
	}

	tm := etcdContent(t, startRestoredEtcd(t, typed.dataDir, c.nodeName,
		fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))))
	em := etcdContent(t, startRestoredEtcd(t, engine.dataDir, c.nodeName,
		fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))))
	if tm.hash != em.hash || tm.revision != em.revision || tm.compacted != em.compacted {
		t.Errorf("typed etcd: HashKV %d at revision %d compacted at %d; kdr's: %d at %d compacted at %d",
			tm.hash, tm.revision, tm.compacted, em.hash, em.revision, em.compacted)
	}
	if !reflect.DeepEqual(tm.keys, em.keys) {
		t.Errorf("typed etcd holds %d keys, kdr's %d, and they differ", len(tm.keys), len(em.keys))
	}
	for k, want := range c.rawKeys {
		if got := tm.keys[k]; !strings.HasPrefix(got, want+"@") {
			t.Errorf("typed etcd: %s = %q, want %q", k, got, want)
		}
	}
	if floor := c.plan.Revision + c.plan.Options.RevisionBump; tm.revision < floor || tm.compacted < floor {
		t.Errorf("typed etcd at revision %d compacted at %d, want both at least %d", tm.revision, tm.compacted, floor)
	}
}

// dataDirCase is a data dir both restores are proven on.
type dataDirCase struct {
	name string
	// mounted makes the data dir the mount point of a disk of its own,
	// whose contents are moved aside on that disk; else it is a plain
	// directory, which is renamed aside.
	mounted bool
	// dataDir is the plan's --data-dir ("" the backup's).
	dataDir string
}

// dataDirCases are the backup's data dir, plain and mounted.
var dataDirCases = []dataDirCase{{name: "plain-data-dir"}, {name: "mounted-data-dir", mounted: true}}

// TestRunbookTyped proves the runbook as typed for a kubeadm node (see
// typedCase.typed): every step of the first stage runs, up to
// restore-etcd; the later steps start etcd and the control plane through
// a kubelet and systemctl, which this host lacks, so the test starts etcd
// itself on the typed data dir. The result must equal what `kdr restore
// apply --until restore-etcd` makes of the same plan: the same keyspace
// and HashKV, the same files under /etc/kubernetes (content, mode, owner)
// but for the node certificates issued again (same names, same CA;
// kubeadm makes new keys where kdr keeps the old), and the same staged
// static pod manifests, whose etcd runs from the plan's data dir.
//
// The source's etcd has a disk of its own (etcd.local.dataDir, as in
// TestRestoreOntoMountedDataDir), backed up once for both cases: restored
// onto that data dir, a mount point on the new machine too, and moved off
// it with --data-dir onto kubeadm's default, a plain directory, whose
// manifest is the one a source on that default restores to.
func TestRunbookTyped(t *testing.T) {
	src := newKubeSourceWith(t, kubeSourceOptions{kube: testenv.KubeOptions{EtcdDataDir: etcdDisk}})
	src.host.Stop()

	node := testenv.NewNetwork(t).AddHost(t, kubeNode)
	ports := distinctPorts(t)
	flag := fmt.Sprintf("%s=%s,https://%s:%d,https://%s:%d", kubeNode, node.IP, node.IP, ports.EtcdPeer, node.IP, ports.EtcdClient)
	for _, dc := range []dataDirCase{
		{name: "own-disk-mounted", mounted: true},
		{name: "moved-to-default", dataDir: testenv.KubeEtcdDataDir},
	} {
		t.Run(dc.name, func(t *testing.T) {
			start := time.Now()
			args := []string{"--config", src.cfg, "--node-ip", flag, "--identity", src.w.identity}
			if dc.dataDir != "" {
				args = append(args, "--data-dir", dc.dataDir)
			}
			c := newTypedCase(t, node, kubeNode, src.w.env(), args)
			c.rawKeys = src.rawKeys
			if want := cmp.Or(dc.dataDir, etcdDisk); c.plan.Options.EtcdDataDir != want {
				t.Fatalf("the plan restores into %s, want %s", c.plan.Options.EtcdDataDir, want)
			}
			dir := t.TempDir()
			typed := c.typed(t, dir, dc.mounted)
			engine := c.engine(t, dir, dc.mounted)
			staging := strings.TrimPrefix(src.stagingDir("/"), "/")
			compareKubeDirs(t, filepath.Join(typed.root, "etc/kubernetes"), filepath.Join(engine.root, "etc/kubernetes"))
			compareStagedManifests(t, filepath.Join(typed.root, staging), filepath.Join(engine.root, staging))
			for _, r := range []typedResult{typed, engine} {
				checkEtcdDataDir(t, filepath.Join(r.root, staging, "manifests/etc/kubernetes/manifests/etcd.yaml"), c.plan.Options.EtcdDataDir)
			}
			c.compareMembers(t, typed, engine)
			t.Logf("typed and kdr's restore compared in %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

// checkEtcdDataDir checks that a restored etcd manifest runs etcd from
// dataDir: its --data-dir, the volume mounted there and that volume's
// hostPath all name it.
func checkEtcdDataDir(t *testing.T, manifest, dataDir string) {
	t.Helper()
	var pod corev1.Pod
	if err := yaml.Unmarshal(testenv.ReadFile(t, manifest), &pod); err != nil || len(pod.Spec.Containers) == 0 {
		t.Fatalf("%s: no container (%v)", manifest, err)
	}
	c := pod.Spec.Containers[0]
	var flags, mounts, hostPaths []string
	for _, a := range c.Command {
		if v, ok := strings.CutPrefix(a, "--data-dir="); ok {
			flags = append(flags, v)
		}
	}
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil && (m.MountPath == dataDir || v.HostPath.Path == dataDir) {
				mounts, hostPaths = append(mounts, m.MountPath), append(hostPaths, v.HostPath.Path)
			}
		}
	}
	want := []string{dataDir}
	if !slices.Equal(flags, want) || !slices.Equal(mounts, want) || !slices.Equal(hostPaths, want) {
		t.Errorf("%s runs etcd with --data-dir %v, a volume mounted at %v from the host's %v; want %s for each",
			manifest, flags, mounts, hostPaths, dataDir)
	}
}

// TestRunbookTypedSystemd proves the runbook as typed for an external
// etcd under systemd, laid out as kubespray does (newExternalSource),
// planned with --topology systemd, against kdr's restore of the same
// plan: the same member, in the data dir the source's /etc/etcd.env
// names, and the same /etc/etcd.env and /etc/ssl/etcd/** (content, mode,
// owner).
//
// systemctl cannot run here: no systemd manages this host's units, and
// the machine's own must not be touched. A systemctl of the test's stands
// on the typed host's PATH instead: it records its arguments and does
// nothing for `stop etcd` and `start etcd`, the only units the runbook may
// ask for, and fails the run for anything else. No etcd runs on the host,
// so stopping one is nothing to do; the command after it proves etcd's
// ports free, as it would on a real host.
func TestRunbookTypedSystemd(t *testing.T) {
	src := newExternalSource(t)
	node := testenv.NewNetwork(t).AddHost(t, externalNode)
	ports := distinctPorts(t)
	flag := fmt.Sprintf("%s=%s,https://%s:%d,https://%s:%d", externalNode, node.IP, node.IP, ports.EtcdPeer, node.IP, ports.EtcdClient)
	c := newTypedCase(t, node, externalNode, src.w.env(),
		[]string{"--config", src.cfg, "--topology", "systemd", "--node-ip", flag, "--identity", src.w.identity})
	c.rawKeys = src.want
	if c.plan.Options.EtcdDataDir != etcdDisk {
		t.Fatalf("the plan restores into %s, not the source's ETCD_DATA_DIR %s", c.plan.Options.EtcdDataDir, etcdDisk)
	}
	for _, dc := range dataDirCases {
		t.Run(dc.name, func(t *testing.T) {
			start := time.Now()
			dir := t.TempDir()
			calls := filepath.Join(dir, "systemctl.calls")
			c.shims = map[string]string{"systemctl": fmt.Sprintf(`echo "$*" >> %s
case "$*" in
"stop etcd"|"start etcd") ;;
*) echo "systemctl $*: not a unit the runbook may ask for" >&2; exit 1;;
esac
`, calls)}
			typed := c.typed(t, dir, dc.mounted)
			if got := string(testenv.ReadFile(t, calls)); got != "stop etcd\n" {
				t.Errorf("the typed restore called systemctl as\n%swant stop etcd, once", got)
			}
			engine := c.engine(t, dir, dc.mounted)
			n := 0
			for _, rel := range []string{"etc/etcd.env", "etc/ssl/etcd"} {
				n += compareRestored(t, filepath.Join(typed.root, rel), filepath.Join(engine.root, rel))
			}
			if n < 10 {
				t.Errorf("the restores compared hold %d files and directories", n)
			}
			if got := string(testenv.ReadFile(t, filepath.Join(typed.root, "etc/ssl/etcd/ssl/member-node1-key.pem"))); got != string(testenv.ReadFile(t, filepath.Join(src.ssl, "member-node1-key.pem"))) {
				t.Errorf("the typed member key is not the host's")
			}
			c.compareMembers(t, typed, engine)
			t.Logf("typed and kdr's restore compared in %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

// compareRestored compares what the typed restore and kdr's put at a path:
// a file, or a directory and all below it, by type, mode, owner and
// content. It returns how many entries it compared.
func compareRestored(t *testing.T, typed, engine string) int {
	t.Helper()
	if a, b := entryAt(t, typed), entryAt(t, engine); a != b {
		t.Errorf("%s: typed %s, kdr's %s (or their content differs)", filepath.Base(typed), a.meta, b.meta)
	}
	a, b := treeEntries(t, typed), treeEntries(t, engine)
	for rel, ea := range a {
		if eb, ok := b[rel]; !ok {
			t.Errorf("%s: typed only", rel)
		} else if ea != eb {
			t.Errorf("%s: typed %s, kdr's %s (or their content differs)", rel, ea.meta, eb.meta)
		}
	}
	for rel := range b {
		if _, ok := a[rel]; !ok {
			t.Errorf("%s: kdr's only", rel)
		}
	}
	return 1 + len(a)
}

// checkRunbookPrints asserts that every command of the plan appears as it
// is in the Markdown runbook, and in the PDF's text when pdftotext is
// installed (make debian-tools), with only its line wrapping undone.
func checkRunbookPrints(t *testing.T, env, planArgs []string, steps []typedStep) {
	t.Helper()
	md := runKdr(t, env, append([]string{"runbook", "--format", "md"}, planArgs...)...)
	wantExit(t, md, 0)
	pdfFile := filepath.Join(t.TempDir(), "runbook.pdf")
	wantExit(t, runKdr(t, env, append([]string{"runbook", "--format", "pdf", "--out", pdfFile}, planArgs...)...), 0)
	var pdfLines []string
	if tool, err := exec.LookPath("pdftotext"); err != nil {
		t.Logf("pdftotext is not installed (make debian-tools): the PDF's text is not checked")
	} else {
		out, err := exec.Command(tool, "-layout", "-enc", "UTF-8", pdfFile, "-").Output()
		if err != nil {
			t.Fatalf("pdftotext: %v", err)
		}
		pdfLines = unwrapPDF(string(out))
	}
	n := 0
	for _, s := range steps {
		for _, c := range s.Commands {
			n++
			if !strings.Contains(md.stdout, "\n"+c+"\n") {
				t.Errorf("%s on %s: the Markdown runbook lacks the command\n%s", s.ID, s.Node, c)
			}
			if pdfLines != nil && !slices.Contains(pdfLines, "$ "+c) {
				t.Errorf("%s on %s: the PDF runbook lacks the command\n%s\nits nearest line:\n%s", s.ID, s.Node, c, nearest(pdfLines, "$ "+c))
			}
		}
	}
	if n == 0 {
		t.Fatal("the plan has no commands")
	}
}

// unwrapPDF undoes the PDF's wrapping of commands (runbooks.wrapShell)
// and nothing else. A line ending in a backslash continues on the next,
// which starts in the column of the command's "$" when the break was
// inside a word (its text, spaces too, is the command's), two columns
// further when it was at a space (the line ends in " \"), and opens
// single quotes again when the break closed them. pdftotext -layout keeps
// the columns of the monospaced code.
func unwrapPDF(text string) []string {
	var out []string
	cur, base, open, atSpace := "", 0, false, false
	for _, l := range strings.Split(strings.ReplaceAll(text, "\f", "\n"), "\n") {
		l = strings.TrimRight(l, " ")
		if open {
			if len(l) >= base && strings.TrimLeft(l[:base], " ") == "" {
				l = l[base:]
			} else {
				l = strings.TrimLeft(l, " ")
			}
			if atSpace && strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "   ") {
				l = l[2:]
			}
			if strings.HasSuffix(cur, "'") && strings.HasPrefix(l, "'") {
				cur, l = strings.TrimSuffix(cur, "'"), strings.TrimPrefix(l, "'")
			}
			cur += l
		} else {
			cur = strings.TrimLeft(l, " ")
			base = len(l) - len(cur)
		}
		if open = strings.HasSuffix(cur, `\`) && !strings.HasSuffix(cur, `\\`); open {
			cur = strings.TrimSuffix(cur, `\`)
			atSpace = strings.HasSuffix(cur, " ")
			continue
		}
		out = append(out, cur)
	}
	return out
}

// nearest is the line that shares the longest prefix with want.
func nearest(lines []string, want string) string {
	best, n := "", -1
	for _, l := range lines {
		i := 0
		for i < len(l) && i < len(want) && l[i] == want[i] {
			i++
		}
		if i > n {
			best, n = l, i
		}
	}
	return best
}

// minimalPath makes dir a directory of symlinks to the commands of a
// minimal Debian host and the restore's tools, and returns it.
func minimalPath(t *testing.T, dir string) string {
	t.Helper()
	testenv.Mkdir(t, dir, 0o755)
	for _, name := range minimalDebian {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s, which a minimal Debian host has, is not on this machine: %v", name, err)
		}
		if err := os.Symlink(p, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range restoreTools {
		if err := os.Symlink(testenv.Binary(t, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mkdirAt(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	testenv.Mkdir(t, p, 0o755)
	return p
}

// nodeCertFiles are the certificates a restore onto another address
// issues again, with their keys.
var nodeCertFiles = []string{"pki/apiserver", "pki/etcd/server", "pki/etcd/peer"}

// compareKubeDirs compares the typed and kdr's /etc/kubernetes: the same
// entries with the same type, mode and owner; the same content, but for
// the node certificates and their keys, which must carry the same names
// from the same CA.
func compareKubeDirs(t *testing.T, typed, engine string) {
	t.Helper()
	a, b := treeEntries(t, typed), treeEntries(t, engine)
	if len(a) < 20 {
		t.Fatalf("the typed /etc/kubernetes holds %d entries", len(a))
	}
	for rel, ea := range a {
		eb, ok := b[rel]
		if !ok {
			t.Errorf("%s: typed only", rel)
			continue
		}
		if ea.meta != eb.meta {
			t.Errorf("%s: typed %s, kdr's %s", rel, ea.meta, eb.meta)
		}
		node := slices.ContainsFunc(nodeCertFiles, func(c string) bool { return rel == c+".crt" || rel == c+".key" })
		switch {
		case node && strings.HasSuffix(rel, ".crt"):
			compareNodeCert(t, rel, typed, engine)
		case node:
			// kubeadm makes a new key where kdr keeps the backup's; each
			// must belong to its certificate.
			for _, root := range []string{typed, engine} {
				cert := parseCert(t, testenv.ReadFile(t, filepath.Join(root, strings.TrimSuffix(rel, ".key")+".crt")))
				key, err := pkicheck.ParseKey(testenv.ReadFile(t, filepath.Join(root, rel)))
				if err != nil {
					t.Fatalf("%s: %v", filepath.Join(root, rel), err)
				}
				if !pkicheck.SamePublicKey(cert.PublicKey, key.Public()) {
					t.Errorf("%s does not belong to its certificate", filepath.Join(root, rel))
				}
			}
		case strings.HasSuffix(rel, ".conf") && ea.content != eb.content:
			if !sameKubeconfig(t, filepath.Join(typed, rel), filepath.Join(engine, rel)) {
				t.Errorf("%s: the typed kubeconfig differs from kdr's", rel)
			} else {
				t.Logf("%s: the same kubeconfig, written differently", rel)
			}
		case ea.content != eb.content:
			t.Errorf("%s: typed content differs from kdr's", rel)
		}
	}
	for rel := range b {
		if _, ok := a[rel]; !ok {
			t.Errorf("%s: kdr's only", rel)
		}
	}
}

type treeEntry struct {
	meta    string // type, mode and owner
	content string // a file's bytes or a link's target
}

func treeEntries(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	fi, err := os.Lstat(root)
	if err != nil || !fi.IsDir() {
		return out
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = entryAt(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// entryAt is the entry at p, not following a symlink.
func entryAt(t *testing.T, p string) treeEntry {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	e := treeEntry{meta: fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		e.content, err = os.Readlink(p)
	case fi.Mode().IsRegular():
		var b []byte
		b, err = os.ReadFile(p)
		e.content = string(b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// compareNodeCert checks that the typed certificate and kdr's carry the
// same subject, names and usages, each signed by its tree's CA.
func compareNodeCert(t *testing.T, rel, typed, engine string) {
	t.Helper()
	ca := "pki/ca.crt"
	if strings.HasPrefix(rel, "pki/etcd/") {
		ca = "pki/etcd/ca.crt"
	}
	type names struct {
		Subject, Issuer string
		DNS, IPs        []string
		KeyUsage        x509.KeyUsage
		ExtKeyUsage     []x509.ExtKeyUsage
	}
	var got [2]names
	for i, root := range []string{typed, engine} {
		cert := parseCert(t, testenv.ReadFile(t, filepath.Join(root, rel)))
		caCert := parseCert(t, testenv.ReadFile(t, filepath.Join(root, ca)))
		if err := cert.CheckSignatureFrom(caCert); err != nil {
			t.Errorf("%s is not signed by the restored %s: %v", filepath.Join(root, rel), ca, err)
		}
		n := names{Subject: cert.Subject.String(), Issuer: cert.Issuer.String(), DNS: slices.Clone(cert.DNSNames),
			KeyUsage: cert.KeyUsage, ExtKeyUsage: slices.Clone(cert.ExtKeyUsage)}
		for _, ip := range cert.IPAddresses {
			n.IPs = append(n.IPs, ip.String())
		}
		slices.Sort(n.DNS)
		slices.Sort(n.IPs)
		slices.Sort(n.ExtKeyUsage)
		got[i] = n
	}
	if !reflect.DeepEqual(got[0], got[1]) {
		t.Errorf("%s: typed %+v, kdr's %+v", rel, got[0], got[1])
	}
}

// sameKubeconfig reports whether two kubeconfigs say the same once read.
func sameKubeconfig(t *testing.T, a, b string) bool {
	t.Helper()
	var out [2][]byte
	for i, p := range []string{a, b} {
		cfg, err := clientcmd.LoadFromFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, c := range cfg.Clusters {
			c.LocationOfOrigin = ""
		}
		for _, u := range cfg.AuthInfos {
			u.LocationOfOrigin = ""
		}
		for _, c := range cfg.Contexts {
			c.LocationOfOrigin = ""
		}
		if out[i], err = clientcmd.Write(*cfg); err != nil {
			t.Fatal(err)
		}
	}
	return bytes.Equal(out[0], out[1])
}

// compareStagedManifests compares the static pod manifests the typed
// restore and kdr staged: the same pods, read and written back by
// staticpod, with each container's flags in any order (the runbook adds
// --initial-cluster-token beside --initial-cluster, kdr at the end).
func compareStagedManifests(t *testing.T, typedStaging, engineStaging string) {
	t.Helper()
	rel := "manifests/etc/kubernetes/manifests"
	names, err := os.ReadDir(filepath.Join(engineStaging, rel))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("kdr staged no manifests")
	}
	for _, n := range names {
		var got [2]any
		for i, staging := range []string{typedStaging, engineStaging} {
			p := filepath.Join(staging, rel, n.Name())
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("%s: %v", n.Name(), err)
				continue
			}
			got[i] = normalPod(t, p, raw)
		}
		if !reflect.DeepEqual(got[0], got[1]) {
			a, _ := yaml.Marshal(got[0])
			b, _ := yaml.Marshal(got[1])
			t.Errorf("staged %s: typed\n%s\nkdr's\n%s", n.Name(), a, b)
		}
	}
	if n, err := os.ReadDir(filepath.Join(typedStaging, rel)); err != nil || len(n) != len(names) {
		t.Errorf("the typed restore staged %d manifests (%v), kdr %d", len(n), err, len(names))
	}
}

func normalPod(t *testing.T, p string, raw []byte) any {
	t.Helper()
	pod, err := staticpod.Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	out, err := pod.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Metadata map[string]any `json:"metadata"`
		Spec     map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	containers, _ := v.Spec["containers"].([]any)
	for _, c := range containers {
		if m, ok := c.(map[string]any); ok {
			if cmd, ok := m["command"].([]any); ok {
				slices.SortFunc(cmd, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
			}
		}
	}
	return v
}

// etcdState is what a restored member serves.
type etcdState struct {
	hash                uint32
	revision, compacted int64
	// keys maps each key to its value@modRevision/createRevision/version.
	keys map[string]string
}

func etcdContent(t *testing.T, cli *clientv3.Client) etcdState {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ep := cli.Endpoints()[0]
	h, err := cli.HashKV(ctx, ep, 0)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	s := etcdState{hash: h.Hash, revision: h.Header.Revision, compacted: h.CompactRevision, keys: map[string]string{}}
	for _, kv := range resp.Kvs {
		s.keys[string(kv.Key)] = fmt.Sprintf("%s@%d/%d/%d", kv.Value, kv.ModRevision, kv.CreateRevision, kv.Version)
	}
	if len(s.keys) == 0 {
		t.Fatalf("etcd at %s holds no keys", ep)
	}
	return s
}
