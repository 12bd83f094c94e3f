package kit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/version"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// Dir is the kit's directory at the root of a local target. The config
// refuses a cluster of this name, whose sets would share it.
const Dir = "kit"

// The kit's files, in Dir.
const (
	BinaryFile         = "kdr"
	ConfigFile         = "kdr.yaml"
	ReadmeFile         = "README.txt"
	AllowedSignersFile = "allowed_signers"
	// VersionFile holds the version of BinaryFile, so that a check need
	// not run a binary it has not verified yet.
	VersionFile = "VERSION"
	// SumsFile lists every other file with its sha256, in sha256sum's
	// format, and is signed (SumsFile + ".sig").
	SumsFile = "SHA256SUMS"
)

// RunbookFile is the kit's copy of a cluster's newest runbook.
func RunbookFile(cluster string) string { return "runbook-" + cluster + ".md" }

// Tools are what the runbook's break-glass path runs besides tar and
// sha256sum, which every Debian host has: a minimal one lacks these.
func Tools() []string { return []string{"age", "zstd", "etcdutl", "etcdctl"} }

var (
	// ErrNoKit means the target holds no kit (no SumsFile).
	ErrNoKit = errors.New("no recovery kit")
	// ErrDamaged means a kit's files are not the ones its signed
	// SumsFile lists: changed, missing, or a list that does not parse.
	ErrDamaged = errors.New("recovery kit damaged")
)

const (
	// maxSums bounds what is read of SumsFile: a line per file, a dozen
	// files.
	maxSums = 64 << 10
	// maxVersion bounds what is read of VersionFile.
	maxVersion = 1 << 10
	// maxFiles bounds the files a SumsFile may list.
	maxFiles = 256
)

// selfExe is the running program on Linux, whatever became of its file.
const selfExe = "/proc/self/exe"

// Runbook is a cluster's newest runbook, as stored signed beside its set.
type Runbook struct {
	Cluster string
	// Backup is the ID of the set the runbook restores.
	Backup   string
	Markdown []byte
}

// Options are what a kit holds beyond the binary that writes it.
type Options struct {
	// Binary is the kdr binary copied into the kit. Default: the running
	// one (os.Executable).
	Binary string
	// Version is Binary's version, recorded in VersionFile. Default: the
	// running kdr's.
	Version string
	// ToolDirs are searched in order for Tools(). Default: the
	// directories of $PATH, then Binary's directory (an image may ship
	// etcdutl beside kdr).
	ToolDirs []string
	// Runbooks are each cluster's newest runbook.
	Runbooks []Runbook
	// Config is the kit's kdr.yaml, from RestoreConfig.
	Config []byte
	// Trust gives the allowed_signers file, and checks the signature of
	// the kit already there.
	Trust *manifest.Trust
	// Signer signs SumsFile.
	Signer *manifest.Signer
	// Log gets the warning about missing tools. Default: discarded.
	Log *slog.Logger
}

// Result is what a Refresh did.
type Result struct {
	// Written names the kit files rewritten, SumsFile among them; empty
	// when the kit was already current.
	Written []string
	// Removed names files of the previous kit that this one lacks (a
	// tool no longer found, a cluster no longer configured).
	Removed []string
	// Missing names the tools not found on this host.
	Missing []string
}

// file is one file of the kit: bytes, or a file of this host.
type file struct {
	name       string
	data       []byte
	path       string
	executable bool
}

// tool is a tool found on this host.
type tool struct{ name, path string }

// Refresh writes the kit to the local target t, rewriting only the files
// whose content or mode differs from what is there, then SumsFile when
// the list changed or its signature does not verify. Each file is
// written as every object of a local target is: whole or not at all.
func Refresh(ctx context.Context, t *storage.Local, o Options) (*Result, error) {
	if o.Signer == nil || o.Trust == nil {
		return nil, errors.New("recovery kit: a signing key and the trusted keys are needed")
	}
	binDir := filepath.Dir(o.Binary)
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("recovery kit: the running kdr binary: %w", err)
		}
		o.Binary, binDir = exe, filepath.Dir(exe)
		// The running binary itself, also when an upgrade has replaced
		// the file it was started from: VERSION must describe what is
		// copied.
		if _, err := os.Stat(selfExe); err == nil {
			o.Binary = selfExe
		}
	}
	if o.Version == "" {
		o.Version = version.Version
	}
	if o.ToolDirs == nil {
		o.ToolDirs = append(filepath.SplitList(os.Getenv("PATH")), binDir)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	found, missing := findTools(o.ToolDirs)
	files := []file{
		{name: BinaryFile, path: o.Binary, executable: true},
		{name: VersionFile, data: []byte(o.Version + "\n")},
		{name: ConfigFile, data: o.Config},
		{name: AllowedSignersFile, data: []byte(o.Trust.AllowedSigners())},
		{name: ReadmeFile, data: readme(t.Name(), o, found, missing)},
	}
	for _, tl := range found {
		files = append(files, file{name: tl.name, path: tl.path, executable: true})
	}
	for _, rb := range o.Runbooks {
		files = append(files, file{name: RunbookFile(rb.Cluster), data: rb.Markdown})
	}
	res := &Result{Missing: missing}
	listed := listedSums(ctx, t, o.Trust)
	var sums strings.Builder
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.name, b.name) })
	for _, f := range files {
		sum, wrote, err := put(ctx, t, f, listed[f.name])
		if err != nil {
			return res, fmt.Errorf("recovery kit on target %s: %s: %w", t.Name(), f.name, err)
		}
		if wrote {
			res.Written = append(res.Written, f.name)
		}
		fmt.Fprintf(&sums, "%s  %s\n", sum, f.name)
	}
	old, err := putSums(ctx, t, []byte(sums.String()), o)
	if err != nil {
		return res, fmt.Errorf("recovery kit on target %s: %w", t.Name(), err)
	}
	if old != nil {
		res.Written = append(res.Written, SumsFile)
	}
	// Only what an earlier kit listed goes: the kit directory is kdr's,
	// but a file kdr did not write there is not kdr's to delete.
	for _, e := range old {
		if slices.ContainsFunc(files, func(f file) bool { return f.name == e.name }) {
			continue
		}
		if err := t.Delete(ctx, key(e.name)); err != nil {
			return res, fmt.Errorf("recovery kit on target %s: remove %s: %w", t.Name(), e.name, err)
		}
		res.Removed = append(res.Removed, e.name)
	}
	// The README lists the missing tools: it changes when they do, so
	// this warns once per change rather than every half hour.
	if len(missing) > 0 && slices.Contains(res.Written, ReadmeFile) {
		o.Log.Warn("recovery kit without some tools of the runbook's break-glass path: not found on this host",
			"target", t.Name(), "missing", missing, "searched", "PATH and the kdr binary's directory")
	}
	return res, nil
}

func key(name string) string { return Dir + "/" + name }

// put stores f unless the target already holds it with the same content
// and mode, and returns its sha256. listed is the sum the kit's signed
// list gives for f ("" when none verifies): a binary whose kit copy is
// byte for byte its source keeps that sum, so a backup compares ~110 MB
// of binaries instead of hashing them twice.
func put(ctx context.Context, t *storage.Local, f file, listed string) (sum string, wrote bool, err error) {
	opts := storage.PutOptions{Executable: f.executable}
	if f.path == "" {
		sum = sha256Hex(f.data)
		if sum == stored(ctx, t, f, int64(len(f.data))) {
			return sum, false, nil
		}
		return sum, true, t.Put(ctx, key(f.name), bytes.NewReader(f.data), opts)
	}
	src, err := os.Open(f.path)
	if err != nil {
		return "", false, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return "", false, err
	}
	if listed != "" && sameSize(t, f, fi.Size()) {
		same, err := sameContent(filepath.Join(t.Dir(), Dir, f.name), src)
		if err != nil {
			return "", false, fmt.Errorf("read %s: %w", f.path, err)
		}
		if same {
			return listed, false, nil
		}
		if _, err := src.Seek(0, io.SeekStart); err != nil {
			return "", false, err
		}
	}
	// Hashed while copying: the list must name what was stored.
	h := sha256.New()
	if err := t.Put(ctx, key(f.name), io.TeeReader(src, h), opts); err != nil {
		return "", false, err
	}
	return hex.EncodeToString(h.Sum(nil)), true, nil
}

// listedSums are the sums of the kit's list when its signature verifies,
// by file name; empty otherwise, and then every file is hashed.
func listedSums(ctx context.Context, t *storage.Local, trust *manifest.Trust) map[string]string {
	k := key(SumsFile)
	raw, err := manifest.ReadBounded(ctx, t, k, maxSums)
	if err != nil {
		return nil
	}
	if _, err := manifest.VerifyStored(ctx, t, k, raw, manifest.NamespaceKit, trust); err != nil {
		return nil
	}
	entries, err := parseSums(raw)
	if err != nil {
		return nil
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		out[e.name] = e.sum
	}
	return out
}

// sameSize reports whether the kit holds a regular file for f of size
// bytes with f's mode.
func sameSize(t *storage.Local, f file, size int64) bool {
	fi, err := os.Lstat(filepath.Join(t.Dir(), Dir, f.name))
	return err == nil && fi.Mode().IsRegular() && fi.Size() == size && (fi.Mode().Perm()&0o111 != 0) == f.executable
}

// sameContent compares the file at p with r, to the end of both.
func sameContent(p string, r io.Reader) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, nil // no copy to keep
	}
	defer f.Close()
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		n, errA := io.ReadFull(f, a)
		m, errB := io.ReadFull(r, b)
		for _, err := range []error{errA, errB} {
			if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
				return false, err
			}
		}
		if n != m || !bytes.Equal(a[:n], b[:m]) {
			return false, nil
		}
		if n < len(a) {
			return true, nil // both ended here
		}
	}
}

// stored is the sha256 of the kit's copy of f, or "" when there is none,
// or its size or mode is not the one f is written with.
func stored(ctx context.Context, t *storage.Local, f file, size int64) string {
	if !sameSize(t, f, size) {
		return ""
	}
	sum, err := hashObject(ctx, t, key(f.name))
	if err != nil {
		return ""
	}
	return sum
}

// putSums stores the signed list unless the same list is there with a
// signature that verifies. It returns the entries of the list it
// replaced (empty, not nil, when there was none), nil when it kept it.
func putSums(ctx context.Context, t *storage.Local, sums []byte, o Options) ([]entry, error) {
	k := key(SumsFile)
	raw, err := manifest.ReadBounded(ctx, t, k, maxSums)
	switch {
	case errors.Is(err, storage.ErrNotExist):
	case err != nil:
		return nil, err
	case bytes.Equal(raw, sums):
		if _, verr := manifest.VerifyStored(ctx, t, k, raw, manifest.NamespaceKit, o.Trust); verr == nil {
			return nil, nil
		}
	}
	old, _ := parseSums(raw) // an unreadable old list only leaves stale files behind
	if err := manifest.PutSigned(ctx, t, k, sums, manifest.NamespaceKit, o.Signer, storage.PutOptions{ContentType: "text/plain"}); err != nil {
		return nil, err
	}
	if old == nil {
		old = []entry{}
	}
	return old, nil
}

// findTools looks each tool up in dirs, in order.
func findTools(dirs []string) (found []tool, missing []string) {
	for _, name := range Tools() {
		path := ""
		for _, d := range dirs {
			// A relative entry of PATH ("", ".") names wherever kdr was
			// started: exec.LookPath refuses what it finds there too.
			if !filepath.IsAbs(d) {
				continue
			}
			p := filepath.Join(d, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				path = p
				break
			}
		}
		if path == "" {
			missing = append(missing, name)
			continue
		}
		found = append(found, tool{name: name, path: path})
	}
	return found, missing
}

// linkage says what a copied binary needs to run: a static one runs on
// any Linux host of its architecture, a dynamic one only where its
// libraries are.
func linkage(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return "not an ELF binary"
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	switch {
	case err != nil:
		return "an ELF binary whose libraries cannot be read"
	case len(libs) > 0:
		return "dynamic: needs the host's " + strings.Join(libs, ", ")
	}
	return "static: runs on any Linux host of its architecture"
}

// readme is the kit's README.txt: what an operator reads at 2 a.m.
// It holds no time, so that it changes only when the kit does.
func readme(target string, o Options, found []tool, missing []string) []byte {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	cluster := ""
	if len(o.Runbooks) > 1 {
		cluster = " --cluster NAME"
	}
	p("kdr offline recovery kit")
	p("=========================")
	p("")
	p("Written by kdr %s beside the backups of target %q. With this disk and an", o.Version, target)
	p("age identity that decrypts the backups, a host without network, Go or kdr")
	p("restores. Run every command from the directory that holds kit/ (the root")
	p("of the target), as root, on the node being restored.")
	p("")
	p("1. Check the kit before running anything in it")
	p("")
	p("Whoever can write to this disk can replace the whole kit, allowed_signers")
	p("included: first compare the key(s) in kit/allowed_signers with the")
	p("allowed_signers line of a runbook you printed earlier, or with")
	p("signing.trustedKeys of your own config. Then, with OpenSSH and coreutils:")
	p("")
	p("    ssh-keygen -Y verify -f kit/%s -I %s -n %s \\", AllowedSignersFile, manifest.SignaturePrincipal, manifest.NamespaceKit)
	p("        -s kit/%s.sig < kit/%s", SumsFile, SumsFile)
	p("    (cd kit && sha256sum -c %s)", SumsFile)
	p("")
	p("2. Restore")
	p("")
	p("kit/%s names this disk as target %q (path: .., wherever it is mounted),", ConfigFile, target)
	p("the trusted signing keys and the age recipients; no secret. The plan lists")
	p("every node and step; run apply on each node of the plan, in its order:")
	p("")
	p("    ./kit/kdr --config ./kit/%s restore plan%s", ConfigFile, cluster)
	p("    ./kit/kdr --config ./kit/%s restore apply%s --node NAME --identity /path/to/identity.key", ConfigFile, cluster)
	p("")
	p("apply keeps a journal: run it again to resume after a stop. --until STEP")
	p("stops after a step, --node-ip NAME=IP a node with a new address.")
	p("")
	p("3. Runbooks")
	p("")
	if len(o.Runbooks) == 0 {
		p("None: no backup on this target had a runbook when the kit was written.")
	}
	for _, rb := range o.Runbooks {
		p("    kit/%-30s cluster %s, backup %s", RunbookFile(rb.Cluster), rb.Cluster, rb.Backup)
	}
	p("")
	p("Each is the newest backup's runbook, as stored signed beside it. Its kdr")
	p("commands name the config of the host that took the backup: use")
	p("./kit/kdr --config ./kit/%s instead. Its break-glass path needs only the", ConfigFile)
	p("tools below, tar and sha256sum.")
	p("")
	p("4. Tools")
	p("")
	p("    export PATH=\"$PWD/kit:$PATH\"")
	p("")
	p("    kit/%-10s %s", BinaryFile, linkage(o.Binary))
	for _, tl := range found {
		p("    kit/%-10s %s", tl.name, linkage(tl.path))
	}
	if len(missing) > 0 {
		p("")
		p("Not found on the host that wrote this kit, so not here: %s.", strings.Join(missing, ", "))
		p("Install them on the restoring host, or restore with kit/kdr alone.")
	}
	return []byte(b.String())
}

// restoreConfig is the kit's kdr.yaml: what a restore needs, no secret.
type restoreConfig struct {
	Clusters   []restoreCluster `yaml:"clusters"`
	Encryption struct {
		Recipients []string `yaml:"recipients"`
	} `yaml:"encryption"`
	Signing struct {
		TrustedKeys []string `yaml:"trustedKeys"`
	} `yaml:"signing"`
	Targets []restoreTarget `yaml:"targets"`
}

type restoreCluster struct {
	Name string      `yaml:"name"`
	Etcd restoreEtcd `yaml:"etcd"`
}

// restoreEtcd keeps what the config needs to load and nothing that
// authenticates: the TLS entries are paths (where a restored node has
// its certificates again), never the files' content; the username and
// password stay behind.
type restoreEtcd struct {
	Endpoints []string    `yaml:"endpoints,flow"`
	TLS       *restoreTLS `yaml:"tls,omitempty"`
	Insecure  bool        `yaml:"insecure,omitempty"`
}

type restoreTLS struct {
	CA         string `yaml:"ca,omitempty"`
	Cert       string `yaml:"cert,omitempty"`
	Key        string `yaml:"key,omitempty"`
	ServerName string `yaml:"serverName,omitempty"`
}

type restoreTarget struct {
	Name  string `yaml:"name"`
	Local struct {
		Path string `yaml:"path"`
	} `yaml:"local"`
}

// RestoreConfig renders the kit's kdr.yaml for the local target named
// target of cfg: its clusters, the recipients and trusted keys inline
// (their files are not on a blank host), and that target alone, at "..":
// the directory above the kit, since the config loader resolves a
// relative path against the config file's directory. No S3 target, no
// credential, no key file. The result is checked by loading it.
func RestoreConfig(cfg *config.Config, target string, recipients, trustedKeys []string) ([]byte, error) {
	// The loader expands ${VAR} in every value: a "$" of a path is
	// written as "$$" to come back as itself.
	lit := func(s string) string { return strings.ReplaceAll(s, "$", "$$") }
	var rc restoreConfig
	for _, c := range cfg.Clusters {
		e := restoreEtcd{Insecure: c.Etcd.Insecure}
		for _, ep := range c.Etcd.Endpoints {
			e.Endpoints = append(e.Endpoints, lit(ep))
		}
		if t := c.Etcd.TLS; t != nil {
			e.TLS = &restoreTLS{CA: lit(t.CA), Cert: lit(t.Cert), Key: lit(t.Key), ServerName: lit(t.ServerName)}
		}
		rc.Clusters = append(rc.Clusters, restoreCluster{Name: c.Name, Etcd: e})
	}
	rc.Encryption.Recipients = recipients
	for _, k := range trustedKeys {
		if k = strings.TrimSpace(k); k != "" && !strings.HasPrefix(k, "#") {
			rc.Signing.TrustedKeys = append(rc.Signing.TrustedKeys, k)
		}
	}
	if !slices.ContainsFunc(cfg.Targets, func(t config.Target) bool { return t.Name == target && t.Local != nil }) {
		return nil, fmt.Errorf("recovery kit: no local target %q in the config", target)
	}
	tt := restoreTarget{Name: target}
	tt.Local.Path = ".."
	rc.Targets = []restoreTarget{tt}
	var buf bytes.Buffer
	buf.WriteString(`# kdr.yaml of the offline recovery kit, written with every backup. It
# restores from the disk it lies on (path: .. is relative to this file)
# and names no secret: no S3 target, no credential, no key file.
`)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&rc); err != nil {
		return nil, fmt.Errorf("recovery kit: %s: %w", ConfigFile, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("recovery kit: %s: %w", ConfigFile, err)
	}
	out := buf.Bytes()
	if _, err := config.Parse(filepath.Join(Dir, ConfigFile), out); err != nil {
		return nil, fmt.Errorf("recovery kit: the %s written would not load: %w", ConfigFile, err)
	}
	return out, nil
}

// Status is what Check found in a kit.
type Status struct {
	// Version is the version of the kit's kdr binary.
	Version string
	// Signer is the fingerprint of the trusted key that signed SumsFile.
	Signer string
	// Files are the files SumsFile lists, all verified.
	Files []string
}

// entry is one line of SumsFile.
type entry struct{ sum, name string }

// Check verifies the kit on t: SumsFile signed by a trusted key, and
// every file it lists present with that sha256. The error wraps ErrNoKit
// when there is no kit, ErrDamaged when a file differs or is missing,
// and manifest.ErrUnsigned or manifest.ErrUntrusted for the signature.
func Check(ctx context.Context, t storage.Target, trust *manifest.Trust) (*Status, error) {
	k := key(SumsFile)
	raw, err := manifest.ReadBounded(ctx, t, k, maxSums)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, fmt.Errorf("target %s: %w (no %s)", t.Name(), ErrNoKit, k)
	}
	if err != nil {
		return nil, err
	}
	st := &Status{}
	if st.Signer, err = manifest.VerifyStored(ctx, t, k, raw, manifest.NamespaceKit, trust); err != nil {
		return nil, err
	}
	entries, err := parseSums(raw)
	if err != nil {
		return nil, fmt.Errorf("%s on target %s: %w", k, t.Name(), err)
	}
	for _, want := range []string{BinaryFile, VersionFile} {
		if !slices.ContainsFunc(entries, func(e entry) bool { return e.name == want }) {
			return nil, fmt.Errorf("%s on target %s: %w: it lists no %s", k, t.Name(), ErrDamaged, want)
		}
	}
	for _, e := range entries {
		var sum string
		if e.name == VersionFile {
			var v []byte
			if v, err = manifest.ReadBounded(ctx, t, key(e.name), maxVersion); err == nil {
				sum, st.Version = sha256Hex(v), strings.TrimSpace(string(v))
			}
		} else {
			sum, err = hashObject(ctx, t, key(e.name))
		}
		switch {
		case errors.Is(err, storage.ErrNotExist):
			return nil, fmt.Errorf("target %s: %w: %s is missing", t.Name(), ErrDamaged, key(e.name))
		case err != nil:
			return nil, err
		case sum != e.sum:
			return nil, fmt.Errorf("target %s: %w: %s is not the file %s lists", t.Name(), ErrDamaged, key(e.name), SumsFile)
		}
		st.Files = append(st.Files, e.name)
	}
	return st, nil
}

// parseSums reads sha256sum's format: "<64 hex>  <name>" per line, names
// plain files of the kit directory, each once.
func parseSums(raw []byte) ([]entry, error) {
	if raw == nil {
		return nil, nil
	}
	var out []entry
	for i, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		_, herr := hex.DecodeString(sum)
		switch {
		case !ok || len(sum) != 64 || herr != nil || sum != strings.ToLower(sum):
			return nil, fmt.Errorf("%w: %s line %d is not \"<sha256>  <name>\"", ErrDamaged, SumsFile, i+1)
		case strings.Contains(name, "/") || storage.ValidateKey(key(name)) != nil || name == SumsFile || strings.HasSuffix(name, ".sig"):
			return nil, fmt.Errorf("%w: %s line %d names %q, not a file of the kit", ErrDamaged, SumsFile, i+1, name)
		case slices.ContainsFunc(out, func(e entry) bool { return e.name == name }):
			return nil, fmt.Errorf("%w: %s lists %s twice", ErrDamaged, SumsFile, name)
		case len(out) == maxFiles:
			return nil, fmt.Errorf("%w: %s lists more than %d files", ErrDamaged, SumsFile, maxFiles)
		}
		out = append(out, entry{sum: sum, name: name})
	}
	return out, nil
}

func hashObject(ctx context.Context, t storage.Target, k string) (string, error) {
	rc, err := t.Get(ctx, k)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", fmt.Errorf("read %s on target %s: %w", k, t.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
