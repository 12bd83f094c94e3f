package catalog

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

func TestVerifyChain(t *testing.T) {
	type want struct {
		id     func(e *verifyEnv) string
		is     error
		reason string
	}
	idOf := func(pick func(e *verifyEnv) builtSet) func(e *verifyEnv) string {
		return func(e *verifyEnv) string { return pick(e).id }
	}
	c := idOf(func(e *verifyEnv) builtSet { return e.c })
	b := idOf(func(e *verifyEnv) builtSet { return e.b })
	none := func(*verifyEnv) string { return "" }
	cases := []struct {
		name    string
		prepare func(t *testing.T, e *verifyEnv) storage.Target
		ctx     func() context.Context
		want    []want
	}{
		{name: "whole", prepare: func(t *testing.T, e *verifyEnv) storage.Target { return e.usb }},
		{name: "whole on a target with a shorter history", prepare: func(t *testing.T, e *verifyEnv) storage.Target { return e.s3 }},
		{
			name: "middle set deleted without a tombstone",
			prepare: func(t *testing.T, e *verifyEnv) storage.Target {
				for _, o := range []string{manifest.ManifestObject, manifest.EtcdObject, manifest.StateObject} {
					deleteObject(t, e.usb, e.key(e.b.id, o))
				}
				return e.usb
			},
			want: []want{{c, ErrChain, "missing, and no prune tombstone"}},
		},
		{
			name: "middle set deleted with a tombstone",
			prepare: func(t *testing.T, e *verifyEnv) storage.Target {
				if err := writeTombstone(context.Background(), e.usb, testSigner, testCluster, Tombstone{ID: e.b.id, SHA256: e.b.sums["usb"], Pruned: time.Now()}); err != nil {
					t.Fatal(err)
				}
				for _, o := range []string{manifest.ManifestObject, manifest.EtcdObject, manifest.StateObject} {
					deleteObject(t, e.usb, e.key(e.b.id, o))
				}
				return e.usb
			},
		},
		{
			name: "middle manifest swapped",
			prepare: func(t *testing.T, e *verifyEnv) storage.Target {
				replaceObject(t, e.usb, e.key(e.b.id, manifest.ManifestObject), func([]byte) []byte { return e.b.raw["s3"] })
				return e.usb
			},
			want: []want{{b, ErrForeign, "not over these bytes"}, {c, ErrChain, "replaced or swapped"}},
		},
		{
			name: "middle manifest unparsable",
			prepare: func(t *testing.T, e *verifyEnv) storage.Target {
				replaceObject(t, e.usb, e.key(e.b.id, manifest.ManifestObject), func(raw []byte) []byte { return raw[:len(raw)/2] })
				return e.usb
			},
			want: []want{{b, manifest.ErrUntrusted, "not over these bytes"}, {c, ErrChain, "replaced or swapped"}},
		},
		{
			name: "link to a newer set",
			prepare: func(t *testing.T, e *verifyEnv) storage.Target {
				m := *e.b.manifests["usb"]
				m.Previous = &manifest.Link{ID: e.c.id, SHA256: e.c.sums["usb"]}
				raw, err := m.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				// Signed by the trusted key: the chain rule holds for trusted
				// writers too.
				if err := manifest.PutSigned(context.Background(), e.usb, e.key(e.b.id, manifest.ManifestObject), raw, manifest.NamespaceManifest, testSigner, storage.PutOptions{}); err != nil {
					t.Fatal(err)
				}
				return e.usb
			},
			// b's own link is refused, and c's link to b no longer matches.
			want: []want{{b, ErrChain, "not older than this backup"}, {c, ErrChain, "replaced or swapped"}},
		},
		{
			name:    "unlistable target",
			prepare: func(t *testing.T, e *verifyEnv) storage.Target { return missingLocal(t, "gone") },
			want:    []want{{none, storage.ErrPermanent, "cannot list"}},
		},
		{
			name:    "cancelled",
			prepare: func(t *testing.T, e *verifyEnv) storage.Target { return e.usb },
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			want: []want{{none, context.Canceled, ""}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newVerifyEnv(t)
			target := tc.prepare(t, e)
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			got := VerifyChain(ctx, target, testTrust, testCluster)
			if len(got) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(got), len(tc.want), problemLines(got))
			}
			for i, w := range tc.want {
				p := got[i]
				if p.ID != w.id(e) || !errors.Is(p, w.is) || !strings.Contains(p.Reason, w.reason) {
					t.Errorf("problem %d: %s (id %q), want id %q, %v, %q", i, p.Error(), p.ID, w.id(e), w.is, w.reason)
				}
				if p.Target != target.Name() {
					t.Errorf("problem %d names target %q", i, p.Target)
				}
			}
		})
	}
}

func TestParseTombstone(t *testing.T) {
	id := "20240101T000000.000Z-abcdef"
	sum := strings.Repeat("ab", 32)
	cases := []struct {
		name string
		raw  string
		ok   bool
	}{
		{"valid", `{"id":"` + id + `","sha256":"` + sum + `","pruned":"2024-02-01T00:00:00Z"}`, true},
		{"another set's", `{"id":"20240101T000000.000Z-000000","sha256":"` + sum + `","pruned":"2024-02-01T00:00:00Z"}`, false},
		{"short sha256", `{"id":"` + id + `","sha256":"abc","pruned":"2024-02-01T00:00:00Z"}`, false},
		{"uppercase sha256", `{"id":"` + id + `","sha256":"` + strings.ToUpper(sum) + `","pruned":"2024-02-01T00:00:00Z"}`, false},
		{"unknown field", `{"id":"` + id + `","sha256":"` + sum + `","pruned":"2024-02-01T00:00:00Z","why":"x"}`, false},
		{"not JSON", `tombstone`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := parseTombstone([]byte(tc.raw), id)
			if (err == nil) != tc.ok {
				t.Fatalf("parse: %v, want ok %v", err, tc.ok)
			}
			if tc.ok && (ts.ID != id || ts.SHA256 != sum) {
				t.Fatalf("parsed %+v", ts)
			}
		})
	}
}

// TestTombstoneFormat pins the stored form other tools may read.
func TestTombstoneFormat(t *testing.T) {
	usb := newLocal(t, "usb")
	id := "20240101T000000.000Z-abcdef"
	ts := Tombstone{ID: id, SHA256: strings.Repeat("0", 64), Pruned: time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)}
	if err := writeTombstone(context.Background(), usb, testSigner, testCluster, ts); err != nil {
		t.Fatal(err)
	}
	got := readObject(t, usb, "prod/pruned/"+id+".json")
	want := `{"id":"` + id + `","sha256":"` + ts.SHA256 + `","pruned":"2024-02-01T00:00:00Z"}` + "\n"
	if !bytes.Equal(got, []byte(want)) {
		t.Fatalf("stored %q, want %q", got, want)
	}
}
