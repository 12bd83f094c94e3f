package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// verifyEnv holds sets a <- b <- c on target usb, and b <- c on s3 (which
// has no a, so its copy of b links nothing and differs from usb's).
type verifyEnv struct {
	f       *fixture
	usb, s3 storage.Target
	a, b, c builtSet
}

func newVerifyEnv(t *testing.T) *verifyEnv {
	t.Helper()
	e := &verifyEnv{f: newFixture(t), usb: newLocal(t, "usb"), s3: newLocal(t, "s3")}
	e.a = e.f.write(setSpec{}, e.usb)
	e.b = e.f.write(setSpec{}, e.usb, e.s3)
	e.c = e.f.write(setSpec{}, e.usb, e.s3)
	return e
}

func (e *verifyEnv) key(id, object string) string { return manifest.Key(testCluster, id, object) }

type wantProblem struct {
	object string
	is     error
	reason string
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		// prepare damages the env and returns what to verify.
		prepare     func(t *testing.T, e *verifyEnv) (storage.Target, string)
		decrypt     bool
		wrongKey    bool
		cancelled   bool
		want        []wantProblem
		wantChecked []string
		wantDecrypt bool
	}{
		{
			name:    "whole set without identities",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) { return e.usb, e.c.id },
			wantChecked: []string{
				"manifest.json: signed by a trusted key, parses",
				"etcd.db.zst.age: stored size and sha256 match",
				"state.tar.zst.age: stored size and sha256 match",
				"hash chain: previous backup ",
			},
		},
		{
			name:        "whole set with identities",
			prepare:     func(t *testing.T, e *verifyEnv) (storage.Target, string) { return e.usb, e.c.id },
			decrypt:     true,
			wantDecrypt: true,
			wantChecked: []string{
				"etcd.db.zst.age: decrypted: plaintext size and sha256 match, etcd's trailing sha256 valid",
				"state.tar.zst.age: decrypted: plaintext size and sha256 match, 3 files, 2 directories, 1 symlinks match the index",
			},
		},
		{
			name:        "first set links nothing",
			prepare:     func(t *testing.T, e *verifyEnv) (storage.Target, string) { return e.usb, e.a.id },
			decrypt:     true,
			wantDecrypt: true,
			wantChecked: []string{"hash chain: no previous backup linked"},
		},
		{
			name: "flipped byte in etcd object",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				replaceObject(t, e.usb, e.key(e.c.id, manifest.EtcdObject), flipByte(func(n int) int { return n / 2 }))
				return e.usb, e.c.id
			},
			decrypt: true,
			want:    []wantProblem{{manifest.EtcdObject, ErrDamaged, "sha256 mismatch (stored object changed or corrupt)"}},
			// The other object is still decrypted and checked.
			wantDecrypt: true,
			wantChecked: []string{"state.tar.zst.age: decrypted"},
		},
		{
			name: "flipped byte in state object",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				replaceObject(t, e.usb, e.key(e.c.id, manifest.StateObject), flipByte(func(n int) int { return n - 1 }))
				return e.usb, e.c.id
			},
			decrypt:     true,
			wantDecrypt: true,
			want:        []wantProblem{{manifest.StateObject, ErrDamaged, "sha256 mismatch (stored object changed or corrupt)"}},
		},
		{
			name: "flipped byte breaks the manifest",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				replaceObject(t, e.usb, e.key(e.c.id, manifest.ManifestObject), flipByte(func(int) int { return 0 }))
				return e.usb, e.c.id
			},
			want: []wantProblem{{manifest.ManifestObject, manifest.ErrUntrusted, "but not over these bytes"}},
		},
		{
			name: "flipped byte in the predecessor's manifest text",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				replaceObject(t, e.usb, e.key(e.b.id, manifest.ManifestObject), func(b []byte) []byte {
					i := bytes.Index(b, []byte(`"kdrVersion": "test"`))
					if i < 0 {
						t.Fatal("kdrVersion not found in manifest")
					}
					return flipByte(func(int) int { return i + len(`"kdrVersion": "tes`) })(b)
				})
				return e.usb, e.c.id
			},
			want: []wantProblem{{manifest.ManifestObject, ErrChain, "has sha256"}},
		},
		{
			name: "truncated etcd object",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				replaceObject(t, e.usb, e.key(e.c.id, manifest.EtcdObject), func(b []byte) []byte { return b[:len(b)/2] })
				return e.usb, e.c.id
			},
			decrypt:     true,
			wantDecrypt: true,
			want:        []wantProblem{{manifest.EtcdObject, ErrDamaged, "truncated: "}},
		},
		{
			name: "grown state object",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				replaceObject(t, e.usb, e.key(e.c.id, manifest.StateObject), func(b []byte) []byte { return append(b, 0) })
				return e.usb, e.c.id
			},
			want: []wantProblem{{manifest.StateObject, ErrDamaged, "bytes, the manifest records"}},
		},
		{
			name: "missing state object",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				deleteObject(t, e.usb, e.key(e.c.id, manifest.StateObject))
				return e.usb, e.c.id
			},
			decrypt:     true,
			wantDecrypt: true,
			want:        []wantProblem{{manifest.StateObject, ErrMissing, "missing"}},
		},
		{
			name: "predecessor's manifest swapped with its copy from another target",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				replaceObject(t, e.usb, e.key(e.b.id, manifest.ManifestObject), func([]byte) []byte { return e.b.raw["s3"] })
				return e.usb, e.c.id
			},
			want: []wantProblem{{manifest.ManifestObject, ErrChain, "replaced or swapped"}},
		},
		{
			name: "manifest copied from another set",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				// Signature and all: a genuine set stored under another ID
				// is not a new backup.
				mkey := e.key(e.b.id, manifest.ManifestObject)
				sig := readObject(t, e.usb, manifest.SignatureKey(e.key(e.a.id, manifest.ManifestObject)))
				replaceObject(t, e.usb, manifest.SignatureKey(mkey), func([]byte) []byte { return sig })
				replaceObject(t, e.usb, mkey, func([]byte) []byte { return e.a.raw["usb"] })
				return e.usb, e.b.id
			},
			want: []wantProblem{{manifest.ManifestObject, manifest.ErrInvalid, "it describes"}},
		},
		{
			name: "predecessor deleted without a tombstone",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				for _, o := range []string{manifest.ManifestObject, manifest.EtcdObject, manifest.StateObject} {
					deleteObject(t, e.usb, e.key(e.b.id, o))
				}
				return e.usb, e.c.id
			},
			want: []wantProblem{{manifest.ManifestObject, ErrChain, "predecessor "}},
		},
		{
			name: "predecessor pruned with a tombstone",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				if err := writeTombstone(ctx, e.usb, testSigner, testCluster, Tombstone{ID: e.b.id, SHA256: e.b.sums["usb"], Pruned: time.Now()}); err != nil {
					t.Fatal(err)
				}
				deleteObject(t, e.usb, e.key(e.b.id, manifest.ManifestObject))
				return e.usb, e.c.id
			},
			wantChecked: []string{"was pruned"},
		},
		{
			name: "tombstone of another manifest",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				if err := writeTombstone(ctx, e.usb, testSigner, testCluster, Tombstone{ID: e.b.id, SHA256: e.b.sums["s3"], Pruned: time.Now()}); err != nil {
					t.Fatal(err)
				}
				deleteObject(t, e.usb, e.key(e.b.id, manifest.ManifestObject))
				return e.usb, e.c.id
			},
			want: []wantProblem{{manifest.ManifestObject, ErrChain, "tombstone records"}},
		},
		{
			name:     "wrong identity is one problem",
			prepare:  func(t *testing.T, e *verifyEnv) (storage.Target, string) { return e.s3, e.c.id },
			decrypt:  true,
			wrongKey: true,
			want:     []wantProblem{{manifest.EtcdObject, crypto.ErrWrongIdentity, "cannot decrypt: "}},
			// Stored bytes are still checked without the key.
			wantChecked: []string{"etcd.db.zst.age: stored size and sha256 match", "state.tar.zst.age: stored size and sha256 match"},
		},
		{
			name: "state file differs from the index",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				state := buildStateTar(t, defaultStateFiles(), func(idx *manifest.StateIndex) {
					idx.Entries[4].SHA256 = strings.Repeat("0", 64)
				})
				return e.usb, e.f.write(setSpec{state: state}, e.usb).id
			},
			decrypt:     true,
			wantDecrypt: true,
			want:        []wantProblem{{manifest.StateObject, ErrDamaged, "state: etc/kubernetes/pki/ca.key: sha256 differs from the index"}},
		},
		{
			name: "state file differs from the index, not decrypted",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				state := buildStateTar(t, defaultStateFiles(), func(idx *manifest.StateIndex) {
					idx.Entries[4].SHA256 = strings.Repeat("0", 64)
				})
				return e.usb, e.f.write(setSpec{state: state}, e.usb).id
			},
		},
		{
			name: "etcd snapshot with a wrong trailing hash",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				bad := etcdSnapshot([]byte("database"))
				bad[len(bad)-1] ^= 1
				return e.usb, e.f.write(setSpec{etcd: bad, dbSize: 8}, e.usb).id
			},
			decrypt:     true,
			wantDecrypt: true,
			want:        []wantProblem{{manifest.EtcdObject, manifest.ErrTrailingHash, "etcd snapshot fails its own check"}},
		},
		{
			name: "etcd database size differs from the manifest",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				return e.usb, e.f.write(setSpec{etcd: etcdSnapshot([]byte("database")), dbSize: 9}, e.usb).id
			},
			decrypt:     true,
			wantDecrypt: true,
			want:        []wantProblem{{manifest.EtcdObject, ErrDamaged, "etcd database is 8 bytes, the manifest records 9"}},
		},
		{
			name: "plaintext differs from the manifest",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) {
				return e.usb, e.f.write(setSpec{editManifest: func(m *manifest.Manifest) {
					m.Objects[1].PlainSHA256 = strings.Repeat("a", 64)
				}}, e.usb).id
			},
			decrypt:     true,
			wantDecrypt: true,
			want:        []wantProblem{{manifest.StateObject, ErrDamaged, "plaintext sha256 differs from the manifest"}},
		},
		{
			name:    "no such set",
			prepare: func(t *testing.T, e *verifyEnv) (storage.Target, string) { return e.s3, e.a.id },
			want:    []wantProblem{{manifest.ManifestObject, ErrMissing, "missing: no complete set"}},
		},
		{
			name:      "cancelled",
			prepare:   func(t *testing.T, e *verifyEnv) (storage.Target, string) { return e.usb, e.c.id },
			cancelled: true,
			want:      []wantProblem{{"", context.Canceled, "verification stopped"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newVerifyEnv(t)
			target, id := tc.prepare(t, e)
			o := VerifyOptions{Trust: testTrust}
			if tc.decrypt {
				o.Identities, _ = e.f.keys()
				if tc.wrongKey {
					other, _ := newKeys(t)
					o.Identities = []age.Identity{other}
				}
			}
			vctx := ctx
			if tc.cancelled {
				c, cancel := context.WithCancel(ctx)
				cancel()
				vctx = c
			}
			r := Verify(vctx, target, testCluster, id, o)
			t.Logf("problems:\n%s", problemLines(r.Problems))
			if r.Target != target.Name() || r.Cluster != testCluster || r.ID != id {
				t.Errorf("report names %s/%s/%s", r.Target, r.Cluster, r.ID)
			}
			checkProblems(t, r.Problems, tc.want, target.Name())
			if r.OK() != (len(tc.want) == 0) || (r.Err() == nil) != r.OK() {
				t.Errorf("OK() = %v, Err() = %v with %d problems", r.OK(), r.Err(), len(r.Problems))
			}
			for _, w := range tc.wantChecked {
				if !containsLine(r.Checked, w) {
					t.Errorf("Checked lacks %q:\n%s", w, strings.Join(r.Checked, "\n"))
				}
			}
			if r.Decrypted != tc.wantDecrypt {
				t.Errorf("Decrypted = %v, want %v", r.Decrypted, tc.wantDecrypt)
			}
		})
	}
}

// TestVerifyTruncatedReason pins the exact wording operators see.
func TestVerifyTruncatedReason(t *testing.T) {
	e := newVerifyEnv(t)
	key := e.key(e.c.id, manifest.EtcdObject)
	o, _ := e.c.manifests["usb"].Object(manifest.EtcdObject)
	replaceObject(t, e.usb, key, func(b []byte) []byte { return b[:1000] })
	r := Verify(context.Background(), e.usb, testCluster, e.c.id, VerifyOptions{Trust: testTrust})
	want := fmt.Sprintf("target usb: %s: truncated: 1000 of %d bytes", key, o.Size)
	if len(r.Problems) != 1 || r.Problems[0].Error() != want {
		t.Fatalf("problems %v, want exactly %q", r.Problems, want)
	}
}

func checkProblems(t *testing.T, got []Problem, want []wantProblem, target string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d problems, want %d:\n%s", len(got), len(want), problemLines(got))
	}
	for i, w := range want {
		p := got[i]
		if p.Object != w.object {
			t.Errorf("problem %d: object %q, want %q (%s)", i, p.Object, w.object, p.Error())
		}
		if w.is != nil && !errors.Is(p, w.is) {
			t.Errorf("problem %d: %s: does not match %v", i, p.Error(), w.is)
		}
		if !strings.Contains(p.Reason, w.reason) {
			t.Errorf("problem %d: reason %q, want it to contain %q", i, p.Reason, w.reason)
		}
		if p.Target != target || !strings.HasPrefix(p.Error(), "target "+target+": ") {
			t.Errorf("problem %d does not name target %s: %s", i, target, p.Error())
		}
		if w.object != "" && !strings.Contains(p.Error(), w.object+": ") {
			t.Errorf("problem %d does not name object %s: %s", i, w.object, p.Error())
		}
		if strings.ContainsAny(p.Error(), "\n\r") {
			t.Errorf("problem %d is not one line: %q", i, p.Error())
		}
	}
}

func problemLines(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.Error() + "\n")
	}
	return b.String()
}

func containsLine(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
