package e2e

import (
	"bytes"
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

// TestRunbookTyped proves the runbook as typed: the commands of a
// kubeadm node's restore, exactly as `kdr restore plan` gives them and
// as the Markdown and PDF runbooks print them, run in one bash with
// `set -euo pipefail`, on a host that has only a minimal Debian's tools
// plus age, zstd, etcdutl, etcdctl and kubeadm, and where /etc/kubernetes
// and /var/lib (which holds the etcd data dir and the staging dir) are the
// test's own directories, bind-mounted in a private mount namespace. Every
// step of the first stage runs, up to restore-etcd; the later steps start
// etcd and the control plane through a kubelet and systemctl, which this
// host lacks, so the test starts etcd itself on the typed data dir. The
// result must equal what `kdr restore apply --until restore-etcd` makes
// of the same plan: the same keyspace and HashKV, the same files under
// /etc/kubernetes (content, mode, owner) but for the node certificates
// issued again (same names, same CA; kubeadm makes new keys where kdr
// keeps the old), and the same staged static pod manifests.
//
// The node is a host in a network namespace of its own, with an address
// of a test network: kubeadm refuses to issue certificates for a loopback
// address, and preflight checks that the host has the node's address.
func TestRunbookTyped(t *testing.T) {
	src := newKubeSource(t, false)
	src.host.Stop()

	node := testenv.NewNetwork(t).AddHost(t, kubeNode)
	ports := distinctPorts(t)
	flag := fmt.Sprintf("%s=%s,https://%s:%d,https://%s:%d", kubeNode, node.IP, node.IP, ports.EtcdPeer, node.IP, ports.EtcdClient)
	planArgs := []string{"--config", src.cfg, "--node-ip", flag, "--identity", src.w.identity}

	r := runKdr(t, src.w.env(), append([]string{"restore", "plan", "-o", "json"}, planArgs...)...)
	wantExit(t, r, 0)
	var plan struct {
		Steps []typedStep `json:"steps"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
		t.Fatalf("restore plan -o json: %v", err)
	}
	var steps []typedStep
	for _, s := range plan.Steps {
		if s.Node == kubeNode && s.Phase == 1 {
			steps = append(steps, s)
		}
	}
	if len(steps) == 0 || steps[len(steps)-1].ID != "restore-etcd" {
		t.Fatalf("the plan's first stage for %s does not end in restore-etcd: %+v", kubeNode, steps)
	}
	checkRunbookPrints(t, src, planArgs, plan.Steps)

	// The typed restore.
	dir := t.TempDir()
	typedKube, typedVarLib := filepath.Join(dir, "typed/etc/kubernetes"), filepath.Join(dir, "typed/var/lib")
	mkdir(t, typedKube, 0o755)
	mkdir(t, typedVarLib, 0o755)
	var script strings.Builder
	// The test's own setup, not the runbook's: /etc gets an overlay in the
	// namespace so that /etc/kubernetes can be made where the machine has
	// none, without touching the machine's /etc.
	fmt.Fprintf(&script, "set -euo pipefail\n")
	fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc\n", mkdirAt(t, dir, "etc-upper"), mkdirAt(t, dir, "etc-work"))
	fmt.Fprintf(&script, "mkdir -p /etc/kubernetes && mount --bind %s /etc/kubernetes\n", typedKube)
	fmt.Fprintf(&script, "mount --bind %s /var/lib\ncd /\n", typedVarLib)
	for _, s := range steps {
		fmt.Fprintf(&script, "echo '>>> %s'\n", s.ID)
		for _, c := range s.Commands {
			script.WriteString(c + "\n")
		}
	}
	bin := minimalPath(t, filepath.Join(dir, "bin"))
	ctx, cancel := context.WithTimeout(t.Context(), kdrTimeout)
	defer cancel()
	start := time.Now()
	cmd := node.Command(ctx, "unshare", "--mount", "--propagation", "private", filepath.Join(bin, "bash"), "-c", script.String())
	cmd.Env = []string{"PATH=" + bin, "HOME=" + dir, "LC_ALL=C"}
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the typed restore failed: %v\n%s\n--- script ---\n%s", err, out, script.String())
	}
	t.Logf("typed restore in %s:\n%s", time.Since(start).Round(time.Millisecond), out)

	// kdr's own restore of the same plan, on the same host.
	engineRoot := filepath.Join(dir, "engine")
	mkdir(t, engineRoot, 0o755)
	ectx, ecancel := context.WithTimeout(t.Context(), kdrTimeout)
	defer ecancel()
	ecmd := node.Command(ectx, kdrBin, append([]string{"restore", "apply", "--node", kubeNode, "--root", engineRoot, "--until", "restore-etcd"}, planArgs...)...)
	ecmd.Env = append(os.Environ(), src.w.env()...)
	if out, err := ecmd.CombinedOutput(); err != nil {
		t.Fatalf("kdr restore apply: %v\n%s", err, out)
	}

	staging := strings.TrimPrefix(src.stagingDir("/"), "/var/lib/")
	compareKubeDirs(t, typedKube, filepath.Join(engineRoot, "etc/kubernetes"))
	compareStagedManifests(t, filepath.Join(typedVarLib, staging), filepath.Join(engineRoot, "var/lib", staging))

	// The members, each served by an etcd of the test's on loopback; the
	// data dirs are where the runbook and kdr put them.
	typed := etcdContent(t, startRestoredEtcd(t, filepath.Join(typedVarLib, "etcd"), kubeNode,
		fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))))
	engine := etcdContent(t, startRestoredEtcd(t, filepath.Join(engineRoot, "var/lib/etcd"), kubeNode,
		fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))))
	if typed.hash != engine.hash || typed.revision != engine.revision || typed.compacted != engine.compacted {
		t.Errorf("typed etcd: HashKV %d at revision %d compacted at %d; kdr's: %d at %d compacted at %d",
			typed.hash, typed.revision, typed.compacted, engine.hash, engine.revision, engine.compacted)
	}
	if !reflect.DeepEqual(typed.keys, engine.keys) {
		t.Errorf("typed etcd holds %d keys, kdr's %d, and they differ", len(typed.keys), len(engine.keys))
	}
	for k, want := range src.rawKeys {
		if got := typed.keys[k]; !strings.HasPrefix(got, want+"@") {
			t.Errorf("typed etcd: %s = %q, want %q", k, got, want)
		}
	}
	if floor := src.m.Etcd.Revision + bump; typed.revision < floor || typed.compacted < floor {
		t.Errorf("typed etcd at revision %d compacted at %d, want both at least %d", typed.revision, typed.compacted, floor)
	}
}

// checkRunbookPrints asserts that every command of the plan appears as it
// is in the Markdown runbook, and in the PDF's text when pdftotext is
// installed (make debian-tools), with only its line wrapping undone.
func checkRunbookPrints(t *testing.T, src *kubeSource, planArgs []string, steps []typedStep) {
	t.Helper()
	md := runKdr(t, src.w.env(), append([]string{"runbook", "--format", "md"}, planArgs...)...)
	wantExit(t, md, 0)
	pdfFile := filepath.Join(t.TempDir(), "runbook.pdf")
	wantExit(t, runKdr(t, src.w.env(), append([]string{"runbook", "--format", "pdf", "--out", pdfFile}, planArgs...)...), 0)
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
	mkdir(t, dir, 0o755)
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
	mkdir(t, p, 0o755)
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
				cert := parseCert(t, readFile(t, filepath.Join(root, strings.TrimSuffix(rel, ".key")+".crt")))
				key, err := pkicheck.ParseKey(readFile(t, filepath.Join(root, rel)))
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
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
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
		out[rel] = e
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
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
		cert := parseCert(t, readFile(t, filepath.Join(root, rel)))
		caCert := parseCert(t, readFile(t, filepath.Join(root, ca)))
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
