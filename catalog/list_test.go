package catalog

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

func TestList(t *testing.T) {
	ctx := context.Background()
	type want struct {
		id      func(sets map[string]builtSet) string
		targets []string
	}
	cases := []struct {
		name string
		// build writes sets named by key onto the targets.
		build       func(f *fixture, usb, s3 storage.Target) map[string]builtSet
		targets     func(usb, s3, gone storage.Target) []storage.Target
		cluster     string
		want        []want
		wantErrFrom []string
	}{
		{
			name: "merged across two targets, newest first",
			build: func(f *fixture, usb, s3 storage.Target) map[string]builtSet {
				return map[string]builtSet{
					"both":   f.write(setSpec{}, usb, s3),
					"usb":    f.write(setSpec{}, usb),
					"s3":     f.write(setSpec{}, s3),
					"broken": f.write(setSpec{noManifest: true}, usb, s3),
				}
			},
			targets: func(usb, s3, _ storage.Target) []storage.Target { return []storage.Target{usb, s3} },
			cluster: testCluster,
			want: []want{
				{func(s map[string]builtSet) string { return s["s3"].id }, []string{"s3"}},
				{func(s map[string]builtSet) string { return s["usb"].id }, []string{"usb"}},
				{func(s map[string]builtSet) string { return s["both"].id }, []string{"usb", "s3"}},
			},
		},
		{
			name: "every cluster when none is named",
			build: func(f *fixture, usb, s3 storage.Target) map[string]builtSet {
				return map[string]builtSet{"one": f.write(setSpec{}, usb)}
			},
			targets: func(usb, s3, _ storage.Target) []storage.Target { return []storage.Target{s3, usb} },
			want:    []want{{func(s map[string]builtSet) string { return s["one"].id }, []string{"usb"}}},
		},
		{
			name: "an unlistable target is reported, the others listed",
			build: func(f *fixture, usb, s3 storage.Target) map[string]builtSet {
				return map[string]builtSet{"one": f.write(setSpec{}, usb, s3)}
			},
			targets:     func(usb, s3, gone storage.Target) []storage.Target { return []storage.Target{usb, gone, s3} },
			cluster:     testCluster,
			want:        []want{{func(s map[string]builtSet) string { return s["one"].id }, []string{"usb", "s3"}}},
			wantErrFrom: []string{"gone"},
		},
		{
			name: "an unreadable manifest is reported, the copy on another target used",
			build: func(f *fixture, usb, s3 storage.Target) map[string]builtSet {
				s := f.write(setSpec{}, usb, s3)
				replaceObject(f.t, usb, manifest.Key(testCluster, s.id, manifest.ManifestObject), func([]byte) []byte { return []byte("{") })
				return map[string]builtSet{"one": s}
			},
			targets:     func(usb, s3, _ storage.Target) []storage.Target { return []storage.Target{usb, s3} },
			cluster:     testCluster,
			want:        []want{{func(s map[string]builtSet) string { return s["one"].id }, []string{"usb", "s3"}}},
			wantErrFrom: []string{"usb"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			usb, s3, gone := newLocal(t, "usb"), newLocal(t, "s3"), missingLocal(t, "gone")
			sets := tc.build(f, usb, s3)
			backups, targetErrs, err := List(ctx, tc.targets(usb, s3, gone), testTrust, tc.cluster)
			if err != nil {
				t.Fatal(err)
			}
			if len(backups) != len(tc.want) {
				t.Fatalf("%d backups, want %d: %+v", len(backups), len(tc.want), backups)
			}
			for i, w := range tc.want {
				b := backups[i]
				id := w.id(sets)
				if b.ID != id || !reflect.DeepEqual(b.Targets, w.targets) {
					t.Errorf("backup %d: %s on %v, want %s on %v", i, b.ID, b.Targets, id, w.targets)
				}
				var m *manifest.Manifest
				for _, bs := range sets {
					if bs.id == id {
						m = bs.manifests[w.targets[len(w.targets)-1]]
					}
				}
				if b.Manifest == nil || b.Manifest.ID != id {
					t.Fatalf("backup %d: manifest %+v", i, b.Manifest)
				}
				if b.Cluster != testCluster || !b.Created.Equal(m.Created) || b.Revision != m.Etcd.Revision || b.DBSize != m.Etcd.DBSize {
					t.Errorf("backup %d: %+v, want values of manifest %+v", i, b, m)
				}
				if min := m.Objects[0].Size + m.Objects[1].Size; b.Size <= min {
					t.Errorf("backup %d: size %d, want more than the objects' %d", i, b.Size, min)
				}
			}
			var gotErr []string
			for name, err := range targetErrs {
				if err == nil {
					t.Errorf("target %s: nil error in the map", name)
				}
				gotErr = append(gotErr, name)
			}
			if len(gotErr) != len(tc.wantErrFrom) || (len(gotErr) == 1 && gotErr[0] != tc.wantErrFrom[0]) {
				t.Errorf("errors from %v, want %v (%v)", gotErr, tc.wantErrFrom, targetErrs)
			}
		})
	}
}

func TestListRefuses(t *testing.T) {
	usb := newLocal(t, "usb")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name    string
		ctx     context.Context
		targets []storage.Target
		cluster string
		is      error
	}{
		{"invalid cluster", context.Background(), []storage.Target{usb}, "Prod/x", nil},
		{"two targets of one name", context.Background(), []storage.Target{usb, newLocal(t, "usb")}, testCluster, nil},
		{"cancelled", cancelled, []storage.Target{usb}, testCluster, context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := List(tc.ctx, tc.targets, testTrust, tc.cluster)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("error %v, want one (matching %v)", err, tc.is)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	usb, empty := newLocal(t, "usb"), newLocal(t, "empty")
	day := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	a := f.write(setSpec{created: day}, usb)
	// b and c share their second, so their IDs share a 19-character prefix.
	b := f.write(setSpec{created: day.Add(time.Hour)}, usb)
	c := f.write(setSpec{created: day.Add(time.Hour + 500*time.Millisecond)}, usb)
	inc := f.write(setSpec{created: day.Add(2 * time.Hour), noManifest: true}, usb)
	cases := []struct {
		name   string
		target storage.Target
		ref    string
		want   string
		is     error
	}{
		{"latest", usb, LatestRef, c.id, nil},
		{"full id", usb, a.id, a.id, nil},
		{"unique prefix", usb, a.id[:11], a.id, nil},
		{"ambiguous prefix", usb, b.id[:15], "", ErrAmbiguous},
		{"unknown", usb, "20990101T000000.000Z-abcdef", "", ErrUnknownBackup},
		{"incomplete set", usb, inc.id, "", ErrUnknownBackup},
		{"empty target", empty, LatestRef, "", ErrNoBackup},
		{"empty ref", usb, "", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(ctx, tc.target, testTrust, testCluster, tc.ref)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("Resolve(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
				}
				return
			}
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("Resolve(%q) = %q, %v; want an error matching %v", tc.ref, got, err, tc.is)
			}
		})
	}
}

func TestBefore(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	usb := newLocal(t, "usb")
	day := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	a := f.write(setSpec{created: day}, usb)
	b := f.write(setSpec{created: day.Add(time.Hour + 200*time.Millisecond)}, usb)
	c := f.write(setSpec{created: day.Add(time.Hour + 700*time.Millisecond)}, usb)
	f.write(setSpec{created: day.Add(2 * time.Hour), noManifest: true}, usb)
	cases := []struct {
		name   string
		before time.Time
		want   string
	}{
		{"after everything", day.Add(48 * time.Hour), c.id},
		{"incomplete sets do not count", day.Add(2*time.Hour + time.Minute), c.id},
		{"between sets", day.Add(30 * time.Minute), a.id},
		{"inside the boundary second, after both", day.Add(time.Hour + 900*time.Millisecond), c.id},
		{"inside the boundary second, between two", day.Add(time.Hour + 500*time.Millisecond), b.id},
		{"inside the boundary second, before both", day.Add(time.Hour + 100*time.Millisecond), a.id},
		{"exactly at a creation time", day.Add(time.Hour + 200*time.Millisecond), a.id},
		{"in another zone", day.Add(30 * time.Minute).In(time.FixedZone("UTC-5", -5*3600)), a.id},
		{"before everything", day, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Before(ctx, usb, testTrust, testCluster, tc.before)
			if tc.want == "" {
				if !errors.Is(err, ErrNoBackup) {
					t.Fatalf("Before = %q, %v; want ErrNoBackup", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Before = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestResolveIn(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	s3, usb := newLocal(t, "s3"), newLocal(t, "usb")
	day := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	old := f.write(setSpec{created: day}, s3, usb)
	// The newest set is only on one target: latest across targets is it.
	newest := f.write(setSpec{created: day.Add(time.Hour)}, usb)
	cases := []struct {
		name    string
		targets []storage.Target
		ref     string
		want    string
		is      error
	}{
		{"latest anywhere", []storage.Target{s3, usb}, LatestRef, newest.id, nil},
		{"latest on one", []storage.Target{s3}, LatestRef, old.id, nil},
		{"prefix", []storage.Target{s3, usb}, old.id[:13], old.id, nil},
		{"ambiguous", []storage.Target{s3, usb}, "2024", "", ErrAmbiguous},
		{"unknown", []storage.Target{s3, usb}, "2099", "", ErrUnknownBackup},
		{"nothing anywhere", []storage.Target{newLocal(t, "empty")}, LatestRef, "", ErrNoBackup},
		{"unlistable target passed over", []storage.Target{s3, missingLocal(t, "usb2")}, LatestRef, old.id, nil},
		{"nothing listable", []storage.Target{missingLocal(t, "usb2")}, LatestRef, "", ErrNoBackup},
		{"full id of a set nowhere", []storage.Target{s3}, "20990101T000000.000Z-abcdef", "20990101T000000.000Z-abcdef", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveIn(ctx, tc.targets, testTrust, testCluster, tc.ref)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("ResolveIn(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
				}
				return
			}
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("ResolveIn(%q) = %q, %v; want an error matching %v", tc.ref, got, err, tc.is)
			}
		})
	}
}
