package restore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
)

// revisionManifest is a set at revision 1000 of a two-node cluster.
func revisionManifest() *manifest.Manifest {
	return &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "cp1",
		Created: time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC),
		Etcd:    manifest.Etcd{Revision: 1000, DBSize: 1 << 20},
		State:   manifest.State{Sets: testSets},
		Inventory: config.Inventory{Hosts: []config.Host{
			{Name: "cp1", IP: "10.0.0.11", Roles: []string{"etcd"}}, {Name: "cp2", IP: "10.0.0.12", Roles: []string{"etcd"}}}}}
}

// handChain is a captured log of m held in memory: one segment per last
// revision given, each starting after the one before; the segments whose
// last revision is in proved record a HashKV there.
func handChain(m *manifest.Manifest, lasts []int64, proved ...int64) *catalog.Chain {
	c := &catalog.Chain{Target: "usb", Base: m, BaseSum: strings.Repeat("a", 64)}
	first := m.Etcd.Revision + 1
	for i, last := range lasts {
		h := &manifest.SegmentHead{FormatVersion: manifest.FormatVersion, Cluster: m.Cluster,
			Base: manifest.Link{ID: m.ID, SHA256: c.BaseSum}, First: first, Last: last,
			Body: manifest.Object{Name: manifest.SegmentBodyName(first, last), Kind: manifest.KindLog, Size: 4096,
				SHA256: strings.Repeat("b", 64), PlainSHA256: strings.Repeat("c", 64)}}
		if slices.Contains(proved, last) {
			h.HashKV = &manifest.LogHash{Revision: last, Hash: uint32(last)}
		}
		c.Segments = append(c.Segments, catalog.Segment{Key: manifest.SegmentHeadKey(m.Cluster, m.ID, first), Head: h,
			Sum: fmt.Sprintf("%064d", i)})
		first = last + 1
	}
	return c
}

// TestBuildPlanAt: a plan to a revision takes the segments through the
// one holding it and the newest proof at or before it, replays on every
// node right after decrypt, restores the replayed database, and bumps
// past the log's end, not past the revision restored.
func TestBuildPlanAt(t *testing.T) {
	m := revisionManifest()
	chain := handChain(m, []int64{1100, 1250, 1400}, 1100, 1400)
	for _, tc := range []struct {
		name     string
		rev      int64
		segments int
		proof    int64 // 0: none
	}{
		{"the set's own revision", 1000, 0, 0},
		{"inside the first segment", 1050, 1, 0},
		{"at the first segment's end", 1100, 1, 1100},
		{"inside the last segment", 1300, 3, 1100},
		{"the log's end", 1400, 3, 1400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := BuildPlanAt(chain, tc.rev, Source{Kind: "local", Path: "/mnt/usb"}, Options{Target: "usb"})
			if err != nil {
				t.Fatal(err)
			}
			if p.ToRevision != tc.rev || p.Revision != 1000 || p.LogEnd != 1400 || len(p.Replay.Segments) != tc.segments {
				t.Fatalf("plan to %d from %d, log end %d, %d segments; want %d from 1000, 1400, %d",
					p.ToRevision, p.Revision, p.LogEnd, len(p.Replay.Segments), tc.rev, tc.segments)
			}
			switch got := p.Replay.Proof; {
			case tc.proof == 0 && got != nil:
				t.Errorf("proof at %d, want none", got.Revision)
			case tc.proof != 0 && (got == nil || got.Revision != tc.proof):
				t.Errorf("proof %+v, want one at %d", got, tc.proof)
			}
			if want := uint64(DefaultRevisionBump + 1400 - tc.rev); p.Bump() != want || p.MinRevision() != 1400+DefaultRevisionBump {
				t.Errorf("bump %d and floor %d, want %d and %d: the restored etcd must start above the log's end",
					p.Bump(), p.MinRevision(), want, 1400+DefaultRevisionBump)
			}
			db := fmt.Sprintf("/var/lib/kdr/restore/prod/%s/revision-%d.db", m.ID, tc.rev)
			if p.RestoredDB() != db {
				t.Errorf("restored database %s, want %s", p.RestoredDB(), db)
			}
			for _, n := range p.NodeNames() {
				steps, err := p.NodeSteps(n)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, s := range steps {
					ids = append(ids, s.ID)
				}
				want := []string{StepPreflight, StepFetch, StepDecrypt, StepReplay, StepStopControlPlane, StepMoveAside, StepRestoreFiles,
					StepConfigureNode, StepRestoreEtcd, StepStartEtcd}
				if n == "cp1" {
					want = append(want, StepCheckEtcd)
				}
				if !slices.Equal(ids[:len(want)], want) {
					t.Errorf("%s's steps %v, want %v first", n, ids, want)
				}
				replay := steps[slices.Index(ids, StepReplay)]
				for _, c := range []string{fmt.Sprintf("--revision %d", tc.rev), "--node " + n, "--until replay", "--target usb"} {
					if !strings.Contains(replay.Commands[0], c) {
						t.Errorf("replay's command %q lacks %q", replay.Commands[0], c)
					}
				}
				if !strings.Contains(replay.Title, fmt.Sprint(tc.rev)) || !strings.Contains(replay.Why, "everything after revision 1000 is lost") {
					t.Errorf("replay step %q: %s", replay.Title, replay.Why)
				}
				etcd := strings.Join(steps[slices.Index(ids, StepRestoreEtcd)].Commands, "\n")
				for _, c := range []string{"etcdutl snapshot restore " + db + " --skip-hash-check", fmt.Sprintf("--bump-revision %d ", p.Bump())} {
					if !strings.Contains(etcd, c) {
						t.Errorf("restore-etcd's commands lack %q:\n%s", c, etcd)
					}
				}
			}
			set, err := p.SetOnly()
			if err != nil {
				t.Fatal(err)
			}
			if set.ToRevision != 0 || set.Bump() != uint64(DefaultRevisionBump+1400-1000) || slices.ContainsFunc(set.Steps, func(s Step) bool { return s.ID == StepReplay }) {
				t.Errorf("the set-only plan: to %d, bump %d, with a replay step", set.ToRevision, set.Bump())
			}
		})
	}
}

// TestBuildPlanAtRefuses: a revision the chain does not reach is a gap,
// named; one before the set is refused; a plan without a revision has no
// replay step and bumps as always.
func TestBuildPlanAtRefuses(t *testing.T) {
	m := revisionManifest()
	chain := handChain(m, []int64{1100})
	chain.Broken = &catalog.Problem{Target: "usb", Object: "log/00000000000000001101.json", Reason: "not signed by a trusted key"}
	_, err := BuildPlanAt(chain, 1101, Source{}, Options{})
	if !errors.Is(err, catalog.ErrGap) || !strings.Contains(err.Error(), "reaches revision 1100") || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("past the log's end: %v", err)
	}
	if _, err := BuildPlanAt(chain, 999, Source{}, Options{}); err == nil || !strings.Contains(err.Error(), "before backup") {
		t.Errorf("before the set: %v", err)
	}
	p, err := BuildPlan(m, Source{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(p.Steps, func(s Step) bool { return s.ID == StepReplay }) || p.Bump() != DefaultRevisionBump || p.RestoredDB() != p.Staging()+"/snapshot.db" {
		t.Errorf("a plan without a revision: bump %d, database %s, steps %v", p.Bump(), p.RestoredDB(), p.Steps)
	}
}
