package action

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// putSet stores a signed manifest of a set at etcd revision rev, as a
// backup would; its objects are not needed to resolve it.
func putSet(t *testing.T, tg storage.Target, key *testenv.SigningKey, created time.Time, rev int64) (*manifest.Manifest, string) {
	t.Helper()
	sum := func(c string) string { return strings.Repeat(c, 64) }
	m := &manifest.Manifest{FormatVersion: manifest.FormatVersion, KdrVersion: "test", ID: manifest.NewID(created, [3]byte{1, 2, 3}),
		Cluster: "prod", Created: created, Completed: created.Add(time.Second), Node: "cp1",
		Etcd: manifest.Etcd{Revision: rev, DBSize: 1 << 20},
		Objects: []manifest.Object{{Name: manifest.EtcdObject, Kind: manifest.KindEtcdSnapshot,
			PlainSize: 1 << 20, PlainSHA256: sum("a"), Size: 1 << 19, SHA256: sum("b")}}}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	err = manifest.PutSigned(context.Background(), tg, manifest.Key("prod", m.ID, manifest.ManifestObject), raw, manifest.NamespaceManifest, key.Signer, storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m, manifest.Sum(raw)
}

// puts are revisions first..last, each creating one key, the revision's
// second after 1970.
func puts(first, last int64) []manifest.LogRevision {
	return testenv.Creates(first, last, func(r int64) time.Time { return time.Unix(r, 0).UTC() })
}

// revisionEnv is a target holding two sets and their captured logs:
//
//	set 1 at 100: segments 101..120 (HashKV), 121..150, then 151..155
//	              signed by a key nobody trusts
//	set 2 at 160: segments 161..180, then 191..200 (181..190 missing)
func revisionEnv(t *testing.T) (*Env, [2]*manifest.Manifest) {
	t.Helper()
	dir := t.TempDir()
	usb, err := storage.NewLocal("usb", dir)
	if err != nil {
		t.Fatal(err)
	}
	key, stranger := testenv.NewSigningKey(t), testenv.NewSigningKey(t)
	rs, _ := testenv.AgeKeys(t)
	var sets [2]*manifest.Manifest
	day := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	var sum string
	sets[0], sum = putSet(t, usb, key, day, 100)
	log := &testenv.CapturedLog{Target: usb, Key: key, Recipients: rs, Base: sets[0], BaseSum: sum}
	log.Append(t, puts(101, 120), nil, &manifest.LogHash{Revision: 120, Hash: 42})
	log.Append(t, puts(121, 150), nil, nil)
	log.Key = stranger
	log.Append(t, puts(151, 155), nil, nil)
	sets[1], sum = putSet(t, usb, key, day.Add(time.Hour), 160)
	log = &testenv.CapturedLog{Target: usb, Key: key, Recipients: rs, Base: sets[1], BaseSum: sum}
	log.Append(t, puts(161, 180), nil, nil)
	gap := &testenv.CapturedLog{Target: usb, Key: key, Recipients: rs, Base: sets[1], BaseSum: sum}
	gap.Append(t, puts(181, 190), nil, nil)
	log.Append(t, puts(191, 200), nil, nil)
	if err := usb.Delete(context.Background(), manifest.SegmentHeadKey("prod", sets[1].ID, 181)); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Clusters: []config.Cluster{{Name: "prod"}},
		Signing:  config.Signing{TrustedKeys: []string{key.Public}},
		Targets:  []config.Target{{Name: "usb", Local: &config.LocalTarget{Path: dir}}},
	}
	env, err := Load(context.Background(), cfg, "kdr.yaml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return env, sets
}

// TestResolveRevision: a revision resolves to the newest set at or
// before it whose captured log reaches it; one that no log reaches is
// refused in one line that names where the log stops and why, and the
// last revision restorable before it.
func TestResolveRevision(t *testing.T) {
	env, sets := revisionEnv(t)
	for _, tc := range []struct {
		rev  int64
		set  int      // the set resolved, when wants is empty
		err  error    // the sentinel of the refusal
		want []string // what the refusal names
	}{
		{rev: 100, set: 0},
		{rev: 130, set: 0},
		{rev: 150, set: 0},
		{rev: 160, set: 1},
		{rev: 170, set: 1},
		{rev: 155, err: catalog.ErrGap, want: []string{"reaches revision 150, not 155", "00000000000000000151.json", "not a trusted key", "the last revision restorable before it is 150"}},
		{rev: 185, err: catalog.ErrGap, want: []string{"reaches revision 180, not 185", "revisions 181..190 are missing", "the last revision restorable before it is 180"}},
		{rev: 5000, err: catalog.ErrGap, want: []string{"reaches revision 180, not 5000", "the last revision restorable before it is 180"}},
		{rev: 50, err: catalog.ErrNoBackup, want: []string{"at or before revision 50", "the oldest, " + sets[0].ID + ", is at revision 100"}},
	} {
		t.Run(fmt.Sprint(tc.rev), func(t *testing.T) {
			r, err := env.Resolve(context.Background(), Ref{Revision: tc.rev})
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("revision %d: %v, want %v", tc.rev, err, tc.err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) || strings.Contains(err.Error(), "\n") {
						t.Errorf("refusal %q does not say %q on one line", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Manifest.ID != sets[tc.set].ID || r.Revision != tc.rev || r.Chain == nil || r.Chain.Base.ID != r.Manifest.ID || r.Chain.End() < tc.rev {
				t.Errorf("revision %d resolved to %s, revision %d, want %s", tc.rev, r.Manifest.ID, r.Revision, sets[tc.set].ID)
			}
		})
	}
}

// TestResolveRevisionRefusals: a revision picks its own backup, and only
// drills pick a random one.
func TestResolveRevisionRefusals(t *testing.T) {
	env, _ := revisionEnv(t)
	for _, tc := range []struct {
		ref  Ref
		want string
	}{
		{Ref{Revision: 130, Backup: "latest"}, "drop --backup and --before"},
		{Ref{Revision: 130, Before: time.Now()}, "drop --backup and --before"},
		{Ref{Revision: RandomRevision}, "only a drill"},
		{Ref{Revision: -7}, "want a positive etcd revision"},
	} {
		if _, err := env.Resolve(context.Background(), tc.ref); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.ref, err, tc.want)
		}
	}
}

// TestRandomRevision: a drill's random revision lies in the newest
// captured log that holds any, from its set's revision + 1 to its end.
func TestRandomRevision(t *testing.T) {
	env, sets := revisionEnv(t)
	for range 20 {
		r, err := env.resolveRandomRevision(context.Background(), Ref{Revision: RandomRevision})
		if err != nil {
			t.Fatal(err)
		}
		if r.Manifest.ID != sets[1].ID || r.Revision < 161 || r.Revision > 180 || r.Chain.End() != 180 {
			t.Fatalf("random revision %d of %s, want one of 161..180 of %s", r.Revision, r.Manifest.ID, sets[1].ID)
		}
	}
}
