package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kdr-io/kdr/internal/testenv"
)

const (
	// buildTimeout bounds `go build` of kdr in TestMain; a cold build
	// cache on a busy machine takes minutes.
	buildTimeout = 10 * time.Minute
	// kdrTimeout bounds one kdr run. A run that needs longer is hanging,
	// and the test says so instead of waiting for go test's own timeout.
	kdrTimeout = 3 * time.Minute
	// toolTimeout bounds one run of age, zstd, tar or etcdutl.
	toolTimeout = 2 * time.Minute
	// cluster is the name of the etcd cluster in every config.
	cluster = "prod"
	// bucket and prefix place the S3 target in MinIO.
	bucket   = "kdr"
	s3Prefix = "backups"
)

// kdrBin is the kdr binary under test, built once by TestMain.
var kdrBin string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kdr-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	kdrBin = filepath.Join(dir, "kdr")
	// The binary an operator runs, not the packages behind it: flags,
	// config loading, exit codes and messages are part of what is tested.
	build := exec.CommandContext(ctx, "go", "build", "-o", kdrBin, "./cmd/kdr")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/kdr: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot walks up from the package directory to the module's go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// result is what one kdr run did.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r result) String() string {
	return fmt.Sprintf("kdr %s: exit %d\n--- stdout ---\n%s--- stderr ---\n%s",
		strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// execKdr runs kdr with env added to the test's environment. It does not
// touch a testing.T, so it may run on a goroutine of its own.
func execKdr(ctx context.Context, env []string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, kdrTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kdrBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		return r, fmt.Errorf("kdr was still running at its deadline and was killed: %w\n%s", ctx.Err(), r)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		return r, fmt.Errorf("run kdr: %w", err)
	}
	return r, nil
}

// runKdr runs kdr and fails the test when it cannot run or hangs.
func runKdr(t *testing.T, env []string, args ...string) result {
	t.Helper()
	r, err := execKdr(t.Context(), env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantExit fails the test unless kdr exited with code.
func wantExit(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d\n%s", code, r)
	}
}

// failureLine returns kdr's error line and fails the test unless the
// message is exactly one line. Every other line of stderr must be a JSON
// log record (kdr logs JSON when stderr is not a terminal), so text that
// is neither is the rest of a message that broke across lines.
func failureLine(t *testing.T, r result) string {
	t.Helper()
	var msg string
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "kdr: "):
			if msg != "" || i != len(lines)-1 {
				t.Errorf("the error message is not one last line of stderr\n%s", r)
			}
			msg = l
		case json.Valid([]byte(l)):
		default:
			t.Errorf("stderr line %d is neither a log record nor the error line (a message broke across lines?): %q\n%s", i+1, l, r)
		}
	}
	if msg == "" {
		t.Fatalf("no `kdr: ...` error line on stderr\n%s", r)
	}
	return msg
}

// mustContain fails the test unless s holds every one of wants.
func mustContain(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not mention %q: %s", what, w, s)
		}
	}
}

// host is a kubeadm control-plane node's files in a temporary directory,
// which kdr backup reads as its filesystem root (--root).
type host struct {
	root string
	// The etcd client credentials, where kubeadm keeps the API server's.
	etcdCA, etcdCert, etcdKey string
}

// newHost lays out /etc/kubernetes as kubeadm does, with the etcd
// cluster's real CA and client certificate in it, plus a load balancer
// config owned by another user.
func newHost(t *testing.T, etcdPKI *testenv.PKI) *host {
	t.Helper()
	root := t.TempDir()
	pki := filepath.Join(root, "etc/kubernetes/pki")
	kube := testenv.NewPKI(t, pki)
	h := &host{
		root:     root,
		etcdCA:   filepath.Join(pki, "etcd/ca.crt"),
		etcdCert: filepath.Join(pki, "apiserver-etcd-client.crt"),
		etcdKey:  filepath.Join(pki, "apiserver-etcd-client.key"),
	}
	// Modes as kubeadm leaves them: certificates world-readable, keys
	// 0600, and one directory with a mode of its own to see it kept.
	testenv.Mkdir(t, pki, 0o755)
	testenv.Mkdir(t, filepath.Join(pki, "etcd"), 0o750)
	for _, f := range []struct {
		src, dst string
		mode     fs.FileMode
	}{
		{kube.CA, "ca.crt", 0o644},
		{kube.ServerCert, "server.crt", 0o644},
		{kube.ClientCert, "client.crt", 0o644},
		{etcdPKI.CA, "etcd/ca.crt", 0o644},
		{etcdPKI.CAKey, "etcd/ca.key", 0o600},
		{etcdPKI.ServerCert, "etcd/server.crt", 0o644},
		{etcdPKI.ServerKey, "etcd/server.key", 0o600},
		{etcdPKI.ClientCert, "apiserver-etcd-client.crt", 0o644},
		{etcdPKI.ClientKey, "apiserver-etcd-client.key", 0o600},
	} {
		testenv.WriteFile(t, filepath.Join(pki, f.dst), testenv.ReadFile(t, f.src), f.mode)
	}
	if err := os.Symlink("ca.crt", filepath.Join(pki, "etcd/ca-bundle.crt")); err != nil {
		t.Fatal(err)
	}
	testenv.WriteFile(t, filepath.Join(root, "etc/kubernetes/admin.conf"), []byte(fmt.Sprintf(adminConf,
		b64(testenv.ReadFile(t, kube.CA)), b64(testenv.ReadFile(t, kube.ClientCert)), b64(testenv.ReadFile(t, kube.ClientKey)))), 0o600)
	testenv.WriteFile(t, filepath.Join(root, "etc/kubernetes/manifests/etcd.yaml"), []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n"), 0o600)
	testenv.WriteFile(t, filepath.Join(root, "etc/kubernetes/manifests/kube-apiserver.yaml"), []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n"), 0o600)
	lb := filepath.Join(root, "etc/haproxy/haproxy.cfg")
	testenv.WriteFile(t, lb, []byte("frontend kube-apiserver\n  bind *:6443\n"), 0o644)
	if os.Geteuid() == 0 {
		// Owners are part of what a restore must give back.
		if err := os.Chown(lb, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// adminConf is a kubeadm admin.conf; like the real one it carries a
// private key, base64-encoded, for the secret scans to look for.
const adminConf = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://10.0.0.10:6443
  name: kubernetes
users:
- name: kubernetes-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
`

// keyFiles lists the private key files of the host.
func (h *host) keyFiles(t *testing.T) []string {
	t.Helper()
	var keys []string
	err := filepath.WalkDir(h.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".key") {
			keys = append(keys, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("the host has no key files: the checks on them would prove nothing")
	}
	return keys
}

// world is what one test runs against: a TLS etcd cluster, the host whose
// files are captured, a local target directory (the "usb" target), an age
// key pair made by kdr, and optionally MinIO (the "s3" target).
type world struct {
	etcd      *testenv.EtcdCluster
	minio     *testenv.MinIO
	host      *host
	usb       string
	identity  string
	recipient string
	// signingKey is the writers' signing key file; signingPub its public
	// key, the one every config trusts.
	signingKey string
	signingPub string
	dir        string
}

type worldOptions struct {
	members int
	s3      bool
}

func newWorld(t *testing.T, o worldOptions) *world {
	t.Helper()
	w := &world{dir: t.TempDir()}
	w.etcd = testenv.StartEtcd(t, testenv.EtcdOptions{Members: o.members, TLS: true})
	w.host = newHost(t, w.etcd.PKI)
	w.usb = filepath.Join(w.dir, "usb")
	testenv.Mkdir(t, w.usb, 0o755)
	if o.s3 {
		w.minio = testenv.StartMinIO(t, testenv.MinIOOptions{})
		w.minio.CreateBucket(t, bucket, false)
	}
	w.identity, w.recipient = w.generateKey(t, "operator.key")
	w.signingKey, w.signingPub = generateSigningKey(t, w.dir)
	return w
}

// generateSigningKey makes a signing key pair with `kdr keys generate
// --signing` in dir: the key file and the printed public key.
func generateSigningKey(t *testing.T, dir string) (file, public string) {
	t.Helper()
	file = filepath.Join(dir, "signing.key")
	r := runKdr(t, nil, "keys", "generate", "--signing", "--out", file)
	wantExit(t, r, 0)
	public = strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(public, "ssh-ed25519 ") || strings.Contains(public, "\n") {
		t.Fatalf("keys generate --signing printed %q, want one ssh-ed25519 line\n%s", public, r)
	}
	return file, public
}

// generateKey makes an age key pair with `kdr keys generate`.
func (w *world) generateKey(t *testing.T, name string) (identity, recipient string) {
	t.Helper()
	identity = filepath.Join(w.dir, name)
	r := runKdr(t, nil, "keys", "generate", "--out", identity)
	wantExit(t, r, 0)
	recipient = strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(recipient, "age1") || strings.Contains(recipient, "\n") {
		t.Fatalf("keys generate printed %q, want one age1... recipient\n%s", recipient, r)
	}
	fi, err := os.Stat(identity)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file %s has mode %v, want 0600", identity, fi.Mode().Perm())
	}
	return identity, recipient
}

// configSpec is what a test's kdr.yaml says.
type configSpec struct {
	endpoints       []string
	ca, cert, key   string
	recipients      []string
	signingKey      string // signing.keyFile; none when empty
	trustedKeys     []string
	s3Endpoint      string // no s3 target when empty
	usb             string // no local target when empty
	incompleteGrace string
	bucket          string // default the world's bucket
	objectLockDays  int    // Object Lock retention on the S3 target when > 0
	keepLast        int    // default 10
	extra           string // appended as it is: schedule, agent
}

// spec is the config of the world as it is: both targets where there
// are both.
func (w *world) spec() configSpec {
	c := configSpec{
		endpoints: w.etcd.Endpoints(),
		ca:        w.host.etcdCA, cert: w.host.etcdCert, key: w.host.etcdKey,
		recipients:      []string{w.recipient},
		signingKey:      w.signingKey,
		trustedKeys:     []string{w.signingPub},
		usb:             w.usb,
		incompleteGrace: "24h",
	}
	if w.minio != nil {
		c.s3Endpoint = w.minio.Endpoint()
	}
	return c
}

// render writes the config as a user would, with the S3 credentials
// referenced from the environment.
func (c configSpec) render() string {
	var b strings.Builder
	q := func(ss []string) string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	fmt.Fprintf(&b, `clusters:
  - name: %s
    etcd:
      endpoints: %s
      tls:
        ca: %q
        cert: %q
        key: %q
      prefer: follower
      dialTimeout: 2s
    state:
      - {name: pki, paths: ["/etc/kubernetes/pki/**"], required: true}
      - {name: kubeconfigs, paths: ["/etc/kubernetes/*.conf"]}
      - {name: manifests, paths: ["/etc/kubernetes/manifests/*"]}
      - {name: loadbalancer, paths: ["/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf"]}
    inventory:
      apiEndpoint: https://10.0.0.10:6443
      hosts:
        - {name: cp1, ip: 10.0.0.11, roles: [control-plane, etcd]}
encryption:
  recipients: %s
signing:
  trustedKeys: %s
`, cluster, q(c.endpoints), c.ca, c.cert, c.key, q(c.recipients), q(c.trustedKeys))
	if c.signingKey != "" {
		fmt.Fprintf(&b, "  keyFile: %q\n", c.signingKey)
	}
	b.WriteString("targets:\n")
	if c.s3Endpoint != "" {
		fmt.Fprintf(&b, `  - name: s3
    s3:
      endpoint: %q
      bucket: %s
      prefix: %s
      accessKey: "${S3_ACCESS_KEY}"
      secretKey: "${S3_SECRET_KEY}"
      insecure: true
      pathStyle: true
      partSizeMiB: 5
`, c.s3Endpoint, cmp.Or(c.bucket, bucket), s3Prefix)
		if c.objectLockDays > 0 {
			fmt.Fprintf(&b, "      objectLock: {mode: GOVERNANCE, days: %d}\n", c.objectLockDays)
		}
	}
	if c.usb != "" {
		fmt.Fprintf(&b, "  - name: usb\n    local:\n      path: %q\n", c.usb)
	}
	fmt.Fprintf(&b, "retention:\n  keepLast: %d\n  incompleteGrace: %s\n", cmp.Or(c.keepLast, 10), c.incompleteGrace)
	return b.String() + c.extra
}

// writeConfig writes the config to a new file and returns its path.
func writeConfig(t *testing.T, c configSpec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kdr.yaml")
	testenv.WriteFile(t, path, []byte(c.render()), 0o600)
	return path
}

// env gives kdr the S3 credentials the config references.
func (w *world) env() []string {
	if w.minio == nil {
		return nil
	}
	return []string{"S3_ACCESS_KEY=" + w.minio.AccessKey(), "S3_SECRET_KEY=" + w.minio.SecretKey()}
}

// kdr runs `kdr --config cfg args...`.
func (w *world) kdr(t *testing.T, cfg string, args ...string) result {
	t.Helper()
	return runKdr(t, w.env(), append([]string{"--config", cfg}, args...)...)
}

// backupArgs are the arguments of a backup of the world's host.
func (w *world) backupArgs(cfg string) []string {
	return []string{"--config", cfg, "backup", "--root", w.host.root}
}

// backup runs kdr backup, which must succeed, and returns the printed ID.
func (w *world) backup(t *testing.T, cfg string) string {
	t.Helper()
	r := runKdr(t, w.env(), w.backupArgs(cfg)...)
	wantExit(t, r, 0)
	return backupID(t, r)
}

// backupID is the one line kdr backup prints on stdout.
func backupID(t *testing.T, r result) string {
	t.Helper()
	id := strings.TrimSpace(r.stdout)
	if id == "" || strings.ContainsAny(id, " \n") {
		t.Fatalf("backup printed %q, want one backup ID\n%s", id, r)
	}
	return id
}

// listEntry is one element of `kdr list -o json`.
type listEntry struct {
	ID       string    `json:"id"`
	Cluster  string    `json:"cluster"`
	Created  time.Time `json:"created"`
	Revision int64     `json:"revision"`
	Size     int64     `json:"size"`
	Targets  []string  `json:"targets"`
}

// list runs `kdr list -o json`, which must succeed, and checks that every
// entry has the fields the JSON contract promises.
func (w *world) list(t *testing.T, cfg string) []listEntry {
	t.Helper()
	r := w.kdr(t, cfg, "list", "-o", "json")
	wantExit(t, r, 0)
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("list -o json is not a JSON array: %v\n%s", err, r)
	}
	for _, e := range raw {
		for _, k := range []string{"id", "cluster", "created", "revision", "size", "targets"} {
			if _, ok := e[k]; !ok {
				t.Errorf("list entry lacks %q: %s", k, r.stdout)
			}
		}
	}
	var entries []listEntry
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, r)
	}
	return entries
}

// manifestDoc is the part of manifest.json these tests read, decoded by
// the field names of the published format rather than kdr's own types.
type manifestDoc struct {
	ID      string    `json:"id"`
	Cluster string    `json:"cluster"`
	Created time.Time `json:"created"`
	Etcd    struct {
		Revision int64             `json:"revision"`
		HashKV   uint32            `json:"hashKV"`
		DBSize   int64             `json:"dbSize"`
		Members  []json.RawMessage `json:"members"`
	} `json:"etcd"`
	Objects []struct {
		Name        string `json:"name"`
		PlainSize   int64  `json:"plainSize"`
		PlainSHA256 string `json:"plainSHA256"`
		Size        int64  `json:"size"`
		SHA256      string `json:"sha256"`
	} `json:"objects"`
	Previous *struct {
		ID     string `json:"id"`
		SHA256 string `json:"sha256"`
	} `json:"previous"`
}

func parseManifest(t *testing.T, raw []byte) manifestDoc {
	t.Helper()
	var m manifestDoc
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("manifest.json: %v\n%s", err, raw)
	}
	return m
}

// object returns the manifest's record of one object of the set.
func (m manifestDoc) object(t *testing.T, name string) (plainSize int64, plainSHA256 string, size int64, sha256 string) {
	t.Helper()
	for _, o := range m.Objects {
		if o.Name == name {
			return o.PlainSize, o.PlainSHA256, o.Size, o.SHA256
		}
	}
	t.Fatalf("manifest of %s lists no %s", m.ID, name)
	return 0, "", 0, ""
}

// usbPath is where the local target keeps an object of a set.
func (w *world) usbPath(id, object string) string {
	return filepath.Join(w.usb, cluster, id, object)
}

// s3Key is the key of an object of a set in the bucket.
func s3Key(id, object string) string {
	return s3Prefix + "/" + cluster + "/" + id + "/" + object
}

// getS3 downloads an object from MinIO with MinIO's own client.
func (w *world) getS3(t *testing.T, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	obj, err := w.minio.Client().GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

// s3Keys lists every object in the bucket.
func (w *world) s3Keys(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var keys []string
	for o := range w.minio.Client().ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list bucket: %v", o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// tool runs one of the standard tools an operator restores with and
// returns its stdout.
func tool(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t, name), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// decrypt turns a stored object into its plaintext file with age and
// zstd alone, as the break-glass path does.
func decrypt(t *testing.T, identity, src, dst string) {
	t.Helper()
	tool(t, "age", "-d", "-i", identity, "-o", dst+".zst", src)
	tool(t, "zstd", "-d", "-q", "-o", dst, dst+".zst")
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// copyTree copies the directory tree src to dst (which must not exist),
// keeping modes and symlinks, as a disk image of a host would.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	type dirMode struct {
		path string
		mode fs.FileMode
	}
	var dirs []dirMode
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			// The mode is set once the contents are in, so that a
			// read-only directory can still be filled.
			dirs = append(dirs, dirMode{target, info.Mode().Perm()})
			return os.Mkdir(target, 0o700)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, b, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm())
		default:
			return fmt.Errorf("%s: cannot copy a %v", p, d.Type())
		}
	})
	for i := len(dirs) - 1; i >= 0 && err == nil; i-- {
		err = os.Chmod(dirs[i].path, dirs[i].mode)
	}
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}
