package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"golang.org/x/crypto/ssh"

	"github.com/kdr-io/kdr/internal/testenv"
)

// The attacker of these tests holds what a target's credentials give:
// reading and writing its objects, the public age recipients (every
// config names them) and keys of their own. Everything they plant is made
// with standard tools and formats (ssh-keygen, age, zstd, Go's
// archive/tar and encoding/json), never with kdr's own code.

// idAt is the backup ID of a set started at tm, with the given 6 hex
// digits as its random part.
func idAt(tm time.Time, suffix string) string {
	return tm.UTC().Format("20060102T150405.000Z") + "-" + suffix
}

// forgedSet is a backup set an attacker builds from a genuine one: its
// stored objects and its manifest as plain JSON, to be edited.
type forgedSet struct {
	id       string
	manifest map[string]any
	objects  map[string][]byte
}

// forge copies the genuine set from on the local target into a new set
// started at at: the manifest's ID and times moved there, consistently,
// and no link to a predecessor, as a hand-made set would have.
func (w *world) forge(t *testing.T, from string, at time.Time, suffix string) *forgedSet {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(testenv.ReadFile(t, w.usbPath(from, "manifest.json")), &m); err != nil {
		t.Fatal(err)
	}
	created, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(m["created"]))
	completed, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(m["completed"]))
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("manifest of %s: %v", from, err)
	}
	at = at.UTC().Truncate(time.Millisecond)
	f := &forgedSet{id: idAt(at, suffix), manifest: m, objects: map[string][]byte{}}
	m["id"] = f.id
	m["created"] = at.Format(time.RFC3339Nano)
	m["completed"] = at.Add(completed.Sub(created)).Format(time.RFC3339Nano)
	delete(m, "previous")
	for _, o := range f.objectList(t) {
		name := fmt.Sprint(o["name"])
		f.objects[name] = testenv.ReadFile(t, w.usbPath(from, name))
	}
	return f
}

func (f *forgedSet) objectList(t *testing.T) []map[string]any {
	t.Helper()
	raw, ok := f.manifest["objects"].([]any)
	if !ok || len(raw) == 0 {
		t.Fatalf("the manifest lists no objects: %v", f.manifest["objects"])
	}
	out := make([]map[string]any, len(raw))
	for i, o := range raw {
		out[i] = o.(map[string]any)
	}
	return out
}

// setObject replaces one stored object and what the manifest says of it.
func (f *forgedSet) setObject(t *testing.T, name string, stored []byte, plainSize int64, plainSHA256 string) {
	t.Helper()
	for _, o := range f.objectList(t) {
		if o["name"] == name {
			o["size"], o["sha256"] = len(stored), sum(stored)
			o["plainSize"], o["plainSHA256"] = plainSize, plainSHA256
			f.objects[name] = stored
			return
		}
	}
	t.Fatalf("the manifest lists no %s", name)
}

// edited is the edited manifest's bytes.
func (f *forgedSet) edited(t *testing.T) []byte {
	t.Helper()
	b, err := json.MarshalIndent(f.manifest, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// plant writes the set onto the local target: its objects, then the
// manifest (the edited one unless given) and what else is given (a
// signature). It returns the manifest's bytes.
func (f *forgedSet) plant(t *testing.T, w *world, manifestJSON []byte, extra map[string][]byte) []byte {
	t.Helper()
	if manifestJSON == nil {
		manifestJSON = f.edited(t)
	}
	for name, data := range f.objects {
		testenv.WriteFile(t, w.usbPath(f.id, name), data, 0o444)
	}
	for name, data := range extra {
		testenv.WriteFile(t, w.usbPath(f.id, name), data, 0o444)
	}
	testenv.WriteFile(t, w.usbPath(f.id, "manifest.json"), manifestJSON, 0o444)
	return manifestJSON
}

// accept is the --accept-unauthenticated value naming a set by the hash
// of its manifest.
func accept(id string, manifestJSON []byte) string { return id + "@sha256:" + sum(manifestJSON) }

// putS3 stores an object in MinIO with MinIO's own client.
func (w *world) putS3(t *testing.T, key string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := w.minio.Client().PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// copyToS3 plants the files of a set on the local target in the bucket
// too.
func (w *world) copyToS3(t *testing.T, id string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(w.usb, cluster, id))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		w.putS3(t, s3Key(id, e.Name()), testenv.ReadFile(t, w.usbPath(id, e.Name())))
	}
}

// tarFile is one entry of a state tar, with its content.
type tarFile struct {
	hdr  *tar.Header
	data []byte
}

// stateIndex is the state tar's .kdr/index.json as plain JSON.
type stateIndex struct {
	Node    string           `json:"node"`
	Entries []map[string]any `json:"entries"`
}

// openState decrypts a stored state object with age and zstd and reads
// the tar with Go's archive/tar: its entries, and its index.
func (w *world) openState(t *testing.T, stored string) ([]tarFile, stateIndex) {
	t.Helper()
	plain := filepath.Join(t.TempDir(), "state.tar")
	decrypt(t, w.identity, stored, plain)
	tr := tar.NewReader(bytes.NewReader(testenv.ReadFile(t, plain)))
	var files []tarFile
	var idx stateIndex
	found := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == ".kdr/index.json" {
			if err := json.Unmarshal(data, &idx); err != nil {
				t.Fatalf("state index: %v", err)
			}
			found = true
			continue
		}
		files = append(files, tarFile{hdr: hdr, data: data})
	}
	if !found || len(files) == 0 || len(idx.Entries) == 0 {
		t.Fatalf("the state of %s has %d entries and index %v: nothing to forge from", stored, len(files), found)
	}
	return files, idx
}

// withFile adds a regular file to a state and its index, in the given set.
func withFile(files []tarFile, idx stateIndex, path, set string, data []byte, mode int64) ([]tarFile, stateIndex) {
	mt := time.Now().UTC().Truncate(time.Second)
	files = append(files, tarFile{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: path, Size: int64(len(data)), Mode: mode,
		ModTime: mt, Format: tar.FormatPAX}, data: data})
	idx.Entries = append(idx.Entries, map[string]any{"path": path, "set": set, "type": "file", "size": len(data),
		"mode": mode, "uid": 0, "gid": 0, "modTime": mt.Format(time.RFC3339), "sha256": sum(data)})
	return files, idx
}

// withSymlink adds a symlink to a state and its index.
func withSymlink(files []tarFile, idx stateIndex, path, set, target string) ([]tarFile, stateIndex) {
	mt := time.Now().UTC().Truncate(time.Second)
	files = append(files, tarFile{hdr: &tar.Header{Typeflag: tar.TypeSymlink, Name: path, Linkname: target, Mode: 0o777,
		ModTime: mt, Format: tar.FormatPAX}})
	idx.Entries = append(idx.Entries, map[string]any{"path": path, "set": set, "type": "symlink", "size": 0,
		"mode": 0o777, "uid": 0, "gid": 0, "modTime": mt.Format(time.RFC3339), "target": target})
	return files, idx
}

// without drops every entry at or below path from a state and its index.
func without(files []tarFile, idx stateIndex, path string) ([]tarFile, stateIndex) {
	under := func(p string) bool {
		p = strings.TrimSuffix(p, "/")
		return p == path || strings.HasPrefix(p, path+"/")
	}
	var fs []tarFile
	for _, f := range files {
		if !under(f.hdr.Name) {
			fs = append(fs, f)
		}
	}
	out := stateIndex{Node: idx.Node}
	for _, e := range idx.Entries {
		if !under(fmt.Sprint(e["path"])) {
			out.Entries = append(out.Entries, e)
		}
	}
	return fs, out
}

// sealState writes a state tar with its index last, compresses it with
// zstd and encrypts it with age to the world's recipient: the stored
// object, and the plaintext's size and sha256.
func (w *world) sealState(t *testing.T, files []tarFile, idx stateIndex) (stored []byte, plainSize int64, plainSHA256 string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	index, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	all := append(append([]tarFile{}, files...), tarFile{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: ".kdr/index.json",
		Size: int64(len(index)), Mode: 0o600, ModTime: time.Now(), Format: tar.FormatPAX}, data: index})
	for _, f := range all {
		if err := tw.WriteHeader(f.hdr); err != nil {
			t.Fatalf("tar %s: %v", f.hdr.Name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatalf("tar %s: %v", f.hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "state.tar")
	testenv.WriteFile(t, plain, buf.Bytes(), 0o600)
	tool(t, "zstd", "-q", "-o", plain+".zst", plain)
	return w.encrypt(t, testenv.ReadFile(t, plain+".zst")), int64(buf.Len()), sum(buf.Bytes())
}

// encrypt encrypts bytes with `age -r` to the world's recipient.
func (w *world) encrypt(t *testing.T, data []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out.age")
	testenv.WriteFile(t, in, data, 0o600)
	tool(t, "age", "-r", w.recipient, "-o", out, in)
	return testenv.ReadFile(t, out)
}

// zstdZeros is one zstd frame, made with klauspost's encoder, that
// inflates to n zero bytes and does not say so in its header.
func zstdZeros(t *testing.T, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyBuffer(enc, io.LimitReader(zeroReader{}, n), make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// sshKeygen makes an Ed25519 key pair with ssh-keygen: the private key
// file and the public key line.
func sshKeygen(t *testing.T, comment string) (file, public string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "id_ed25519")
	tool(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file)
	return file, strings.TrimSpace(string(testenv.ReadFile(t, file+".pub")))
}

// sshSign signs data with `ssh-keygen -Y sign` in a namespace: the
// armored signature, as kdr stores it beside an object.
func sshSign(t *testing.T, key string, data []byte, namespace string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "data")
	testenv.WriteFile(t, p, data, 0o600)
	tool(t, "ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", namespace, p)
	return testenv.ReadFile(t, p+".sig")
}

// allowedSigners is the allowed_signers line of a trusted key, as the
// runbook prints it.
func allowedSigners(public string) string {
	return `kdr namespaces="kdr-manifest,kdr-tombstone,kdr-drill-report,kdr-runbook" ` + public + "\n"
}

// sshVerify checks a detached signature over data with `ssh-keygen -Y
// verify` against one trusted key: nil when OpenSSH accepts it.
func sshVerify(t *testing.T, public, namespace string, data, sig []byte) error {
	t.Helper()
	dir := t.TempDir()
	signers, sigFile := filepath.Join(dir, "allowed_signers"), filepath.Join(dir, "data.sig")
	testenv.WriteFile(t, signers, []byte(allowedSigners(public)), 0o644)
	testenv.WriteFile(t, sigFile, sig, 0o644)
	ctx, cancel := context.WithTimeout(t.Context(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t, "ssh-keygen"), "-Y", "verify", "-f", signers, "-I", "kdr", "-n", namespace, "-s", sigFile)
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// fingerprint is the OpenSSH SHA256 fingerprint of a public key line.
func fingerprint(t *testing.T, public string) string {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(public))
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(k)
}

// failedLines are the FAILED lines of a verify, prune or similar output.
func failedLines(stdout string) []string {
	var out []string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "FAILED") {
			out = append(out, l)
		}
	}
	return out
}

// pathsUnder lists every path below dir, relative to it, with a mark for
// symlinks: what a test compares before and after a run.
func pathsUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			link, _ := os.Readlink(p)
			rel += " -> " + link
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// listTrusted runs `kdr list -o json` on a target holding left out sets
// that no trusted key signed: it lists the IDs of the others, and exits 1
// saying how many it left out, unless there are none.
func listTrusted(t *testing.T, w *world, cfg string, leftOut int) []string {
	t.Helper()
	r := w.kdr(t, cfg, "list", "-o", "json")
	var entries []listEntry
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, r)
	}
	// A planted set never makes the listing fail; it is said on stderr.
	wantExit(t, r, 0)
	if leftOut > 0 {
		mustContain(t, "list's warning", r.stderr, "no trusted key signed left out", fmt.Sprintf(`"count":%d`, leftOut), "kdr list --all")
	}
	ids := []string{}
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	return ids
}
