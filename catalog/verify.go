package catalog

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// Sentinels a Problem's error wraps, for callers that branch on the kind
// of damage. Problems may also wrap crypto.ErrWrongIdentity,
// crypto.ErrCorrupt, manifest.ErrInvalid, manifest.ErrTrailingHash or a
// target's own error.
var (
	// ErrMissing: an object the manifest lists (or the manifest itself) is
	// not on the target.
	ErrMissing = errors.New("object missing")
	// ErrDamaged: stored bytes, or their decrypted content, differ from
	// what the manifest or the state index records. It is the format
	// reader's own sentinel, so its errors match it as they are.
	ErrDamaged = manifest.ErrDamaged
	// ErrChain: the hash chain of manifests is broken: a predecessor was
	// deleted without a prune tombstone, or its manifest was replaced.
	ErrChain = errors.New("hash chain broken")
	// ErrForeign: an object on the target that no trusted key signed:
	// someone who is not a trusted writer put it there.
	ErrForeign = errors.New("foreign object")
)

// VerifyOptions change what Verify checks.
type VerifyOptions struct {
	// Identities decrypt the objects so their contents are checked too.
	// Nil checks only what needs no key: the manifest, the stored sizes
	// and hashes, and the hash chain.
	Identities []age.Identity
	// Only, if set, names the objects to check; the others are passed
	// over (a restore streams the etcd object itself).
	Only []string
	// Trust decides whose signature makes a manifest ours.
	Trust *manifest.Trust
	// Manifest, if set, is the set's manifest as the caller already
	// verified it (a restore's plan, whose fetched copy was compared by
	// hash): it is used instead of the stored one, and the hash chain,
	// which needs the other sets, is not checked.
	Manifest *manifest.Manifest
}

// Problem is one thing wrong with a set on a target.
type Problem struct {
	Target  string `json:"target"`
	Cluster string `json:"cluster,omitempty"`
	ID      string `json:"id,omitempty"`
	// Object is the object's name in the set (etcd.db.zst.age,
	// state.tar.zst.age, manifest.json); empty for the set as a whole.
	Object string `json:"object,omitempty"`
	// Reason is one line for a person.
	Reason string `json:"reason"`
	// Err wraps the sentinels the problem is an instance of.
	Err error `json:"-"`
}

// Error names the target, the object's key and the reason on one line.
func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString("target " + p.Target + ": ")
	switch {
	case p.ID != "" && p.Object != "":
		b.WriteString(manifest.Key(p.Cluster, p.ID, p.Object) + ": ")
	case p.ID != "":
		b.WriteString(p.Cluster + "/" + p.ID + ": ")
	case p.Object != "":
		b.WriteString(p.Object + ": ")
	}
	b.WriteString(p.Reason)
	return b.String()
}

func (p Problem) Unwrap() error { return p.Err }

// Report is the result of verifying one set on one target.
type Report struct {
	Target  string `json:"target"`
	Cluster string `json:"cluster"`
	ID      string `json:"id"`
	// Decrypted says whether contents were checked (identities given and
	// at least one object opened with them).
	Decrypted bool      `json:"decrypted"`
	Problems  []Problem `json:"problems"`
	// Checked lists, one line each, what was found whole.
	Checked []string `json:"checked"`
}

// OK reports whether nothing was found wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Err returns the problems as one error, or nil when there are none.
func (r *Report) Err() error {
	errs := make([]error, len(r.Problems))
	for i, p := range r.Problems {
		errs[i] = p
	}
	return errors.Join(errs...)
}

func (r *Report) problem(object string, err error, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{
		Target: r.Target, Cluster: r.Cluster, ID: r.ID, Object: object,
		Reason: oneLine(fmt.Sprintf(format, args...)), Err: err,
	})
}

func (r *Report) checked(format string, args ...any) {
	r.Checked = append(r.Checked, oneLine(fmt.Sprintf(format, args...)))
}

// Verify checks one set on one target and reports everything it finds
// wrong rather than stopping at the first problem. Without identities it
// checks that the manifest parses and describes this set, that every
// object it lists is stored with the recorded size and sha256, and the
// hash chain link to the previous set. With identities it also decrypts
// and decompresses each object in the same pass: the plaintext's size and
// sha256, etcd's trailing hash of the snapshot, and every entry of the
// state tar against the state index. Objects are streamed, never held in
// memory. A cancelled context ends the check with a problem saying so.
func Verify(ctx context.Context, t storage.Target, cluster, id string, o VerifyOptions) *Report {
	r := &Report{Target: t.Name(), Cluster: cluster, ID: id}
	if !manifest.ValidCluster(cluster) || !manifest.ValidID(id) {
		r.problem("", nil, "not a valid cluster name and backup ID")
		return r
	}
	v := &verifier{t: t, r: r, ids: o.Identities, only: o.Only, trust: o.Trust, m: o.Manifest}
	v.run(ctx)
	if err := ctx.Err(); err != nil {
		r.problem("", err, "verification stopped before the end: %v", err)
	}
	return r
}

type verifier struct {
	t     storage.Target
	trust *manifest.Trust
	r     *Report
	ids   []age.Identity
	only  []string
	m     *manifest.Manifest
	// wrongIdentity is set once a wrong key was reported, so the other
	// objects do not repeat it.
	wrongIdentity bool
}

func (v *verifier) run(ctx context.Context) {
	r := v.r
	if v.m != nil {
		v.objects(ctx)
		return
	}
	m, _, err := LoadManifest(ctx, v.t, v.trust, r.Cluster, r.ID)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		r.problem(manifest.ManifestObject, errors.Join(ErrMissing, err), "missing: no complete set %s on this target", r.ID)
		return
	case IsForeign(err):
		r.problem(manifest.ManifestObject, errors.Join(ErrForeign, err), "not a trusted set: %v", err)
		return
	case err != nil:
		if ctx.Err() == nil {
			r.problem(manifest.ManifestObject, err, "cannot read: %v", err)
		}
		return
	}
	v.m = m
	r.checked("%s: signed by a trusted key, parses (format %d, created %s, revision %d)", manifest.ManifestObject, m.FormatVersion, m.Created.UTC().Format(time.RFC3339), m.Etcd.Revision)
	v.objects(ctx)
	if ctx.Err() != nil {
		return
	}
	// The predecessor's bytes need no signature of their own: this
	// trusted manifest names their sha256.
	checked, p := checkLink(ctx, v.t, v.trust, r.Cluster, r.ID, m.Previous, func(prev string) (string, bool, error) {
		raw, err := manifest.ReadBounded(ctx, v.t, manifest.Key(r.Cluster, prev, manifest.ManifestObject), maxManifestRead)
		if errors.Is(err, storage.ErrNotExist) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		return manifest.Sum(raw), true, nil
	})
	if p != nil {
		r.Problems = append(r.Problems, *p)
	} else {
		r.checked("%s", checked)
	}
}

// objects checks the manifest's objects, or those of them asked for.
func (v *verifier) objects(ctx context.Context) {
	for _, obj := range v.m.Objects {
		if ctx.Err() != nil {
			return
		}
		if v.only != nil && !slices.Contains(v.only, obj.Name) {
			continue
		}
		v.object(ctx, obj)
	}
}

// object checks one stored object: size first (cheap, and a truncated
// object needs no reading), then its bytes, decrypted on the way when
// identities were given.
func (v *verifier) object(ctx context.Context, obj manifest.Object) {
	r := v.r
	key := manifest.Key(r.Cluster, r.ID, obj.Name)
	info, err := v.t.Stat(ctx, key)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		r.problem(obj.Name, errors.Join(ErrMissing, err), "missing")
		return
	case err != nil:
		if ctx.Err() == nil {
			r.problem(obj.Name, err, "cannot stat: %v", err)
		}
		return
	case info.Size != obj.Size:
		r.problem(obj.Name, ErrDamaged, "%s", sizeReason(info.Size, obj.Size))
		return
	}
	rc, err := v.t.Get(ctx, key)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		r.problem(obj.Name, errors.Join(ErrMissing, err), "missing")
		return
	case err != nil:
		if ctx.Err() == nil {
			r.problem(obj.Name, err, "cannot read: %v", err)
		}
		return
	}
	defer rc.Close()
	// The object may have changed since Stat: the reader stops one byte
	// past the recorded size whatever the target now serves.
	stored := manifest.NewStoredReader(&ctxReader{ctx: ctx, r: rc}, obj)

	var content *Report // problems and checks of the plaintext, kept apart
	if len(v.ids) > 0 && !v.wrongIdentity {
		content = &Report{Target: r.Target, Cluster: r.Cluster, ID: r.ID}
		v.content(ctx, obj, stored, content)
	}
	if err := stored.Check(); err != nil {
		if errors.Is(err, ErrDamaged) || ctx.Err() == nil {
			r.problem(obj.Name, err, "%v", err)
		}
		return
	}
	r.checked("%s: stored size and sha256 match (%d bytes)", obj.Name, obj.Size)
	// Content problems of an object whose stored bytes are damaged are
	// consequences of that damage and are not reported; with intact
	// stored bytes they mean the set was bad when written, or forged.
	if content == nil {
		return
	}
	r.Problems = append(r.Problems, content.Problems...)
	r.Checked = append(r.Checked, content.Checked...)
	if content.Decrypted {
		r.Decrypted = true
	}
	for _, p := range content.Problems {
		if errors.Is(p.Err, crypto.ErrWrongIdentity) {
			v.wrongIdentity = true
		}
	}
}

// content reads the object's plaintext through the format's one reader,
// which checks sizes, hashes and etcd's trailing hash, and checks the
// state tar against its index on the way. It may stop reading early; the
// caller checks the stored bytes to their end.
func (v *verifier) content(ctx context.Context, obj manifest.Object, stored *manifest.StoredReader, c *Report) {
	plain, err := manifest.OpenObject(stored, v.ids, manifest.ReadOptions{})
	switch {
	case errors.Is(err, crypto.ErrWrongIdentity):
		c.problem(obj.Name, err, "cannot decrypt: %v; the manifest lists recipients %s; contents not checked",
			err, strings.Join(v.m.Recipients, ", "))
		return
	case err != nil:
		if ctx.Err() == nil {
			c.problem(obj.Name, err, "cannot decrypt: %v", err)
		}
		return
	}
	defer plain.Close()
	c.Decrypted = true

	var detail string
	if obj.Name == manifest.StateObject {
		res, err := manifest.CheckStateTar(plain)
		if err != nil {
			v.readFailed(ctx, c, obj, err)
			return
		}
		for _, p := range res.Problems {
			c.problem(obj.Name, ErrDamaged, "state: %s", p)
		}
		if res.More > 0 {
			c.problem(obj.Name, ErrDamaged, "state: %d more problems", res.More)
		}
		if len(res.Problems) == 0 {
			detail = fmt.Sprintf(", %d files, %d directories, %d symlinks match the index", res.Files, res.Dirs, res.Symlinks)
		}
	}
	// A tar ends before its stream does; the rest is read for the checks
	// at the end of the object.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		v.readFailed(ctx, c, obj, err)
		return
	}
	if obj.Name == manifest.EtcdObject {
		// The reader proved the plaintext is PlainSize bytes ending in a
		// valid sha256 of the database before it.
		if db := obj.PlainSize - sha256.Size; db != v.m.Etcd.DBSize {
			c.problem(obj.Name, ErrDamaged, "etcd database is %d bytes, the manifest records %d", db, v.m.Etcd.DBSize)
			return
		}
		detail = ", etcd's trailing sha256 valid"
	}
	c.checked("%s: decrypted: plaintext size and sha256 match%s", obj.Name, detail)
}

// readFailed reports why the plaintext could not be read to its end.
func (v *verifier) readFailed(ctx context.Context, c *Report, obj manifest.Object, err error) {
	switch {
	case errors.Is(err, manifest.ErrTrailingHash):
		c.problem(obj.Name, err, "etcd snapshot fails its own check: %v", err)
	case errors.Is(err, ErrDamaged) || ctx.Err() == nil:
		c.problem(obj.Name, err, "%v", err)
	}
}

// sizeReason says how a stored size differs from the recorded one.
func sizeReason(got, want int64) string {
	if got < want {
		return fmt.Sprintf("truncated: %d of %d bytes", got, want)
	}
	return fmt.Sprintf("%d bytes, the manifest records %d (stored object changed)", got, want)
}

// ctxReader stops a long read when the context ends, whatever the
// target's reader does with it.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// oneLine escapes control characters, so a name read from a damaged or
// hostile object cannot break a report into misleading lines.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, c := range s {
		if isControl(c) {
			q := strconv.QuoteRune(c)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func isControl(c rune) bool { return c < 0x20 || c == 0x7f }
