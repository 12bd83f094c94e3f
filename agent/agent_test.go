package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/capture"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
)

// TestMetricsCoverDeploy: every kdr_ series the shipped alert rules and
// dashboard use is one the agent exports.
func TestMetricsCoverDeploy(t *testing.T) {
	m := newMetrics()
	described := map[string]bool{}
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range m.own() {
			c.Describe(ch)
		}
		close(ch)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if s := fqName.FindStringSubmatch(d.String()); s != nil {
			described[s[1]] = true
		}
	}
	used := regexp.MustCompile(`\bkdr_[a-z_]+`)
	for _, f := range []string{"../deploy/monitoring/prometheusrule.yaml", "../deploy/monitoring/kdr-dashboard.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names := used.FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Fatalf("%s uses no kdr_ series: the check would prove nothing", f)
		}
		for _, n := range names {
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(n, suffix) && described[strings.TrimSuffix(n, suffix)] {
					base = strings.TrimSuffix(n, suffix)
				}
			}
			if !described[base] {
				t.Errorf("%s uses %s, which the agent does not export", filepath.Base(f), n)
			}
		}
	}
}

const testConfig = `clusters:
  - name: prod
    etcd: {endpoints: ["http://127.0.0.1:1"], insecure: true, dialTimeout: 1s}
    state: []
encryption:
  recipients: [age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh]
signing: {trustedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDkgk7G8drVjg7ABJHxC/jw5i0O5/dYexhQP+MkHl32q"]}
targets:
  - name: usb
    local: {path: %q}
schedule: {backup: %q, prune: "@every 1h"}
agent: {listen: "127.0.0.1:0"}
`

func newTestAgent(t *testing.T, schedule string) (*Agent, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "kdr.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(testConfig, dir, schedule)), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ln.Close() })
	return a, path
}

// trustingAgent is a test agent that trusts key, and its local target.
func trustingAgent(t *testing.T, key *testenv.SigningKey) (*Agent, storage.Target) {
	t.Helper()
	a, path := newTestAgent(t, "@every 1h")
	cfgText := testenv.ReadFile(t, path)
	testenv.WriteFile(t, path, regexp.MustCompile(`trustedKeys: \["[^"]+"\]`).ReplaceAll(cfgText, []byte(`trustedKeys: ["`+key.Public+`"]`)), 0o600)
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	usb, err := storage.NewLocal("usb", a.config().Targets[0].Local.Path)
	if err != nil {
		t.Fatal(err)
	}
	return a, usb
}

// TestCatchUp: a new leader whose targets hold no set since the
// schedule's last time runs the backup at once, counted as it starts;
// with a set since then it runs nothing, and with no trusted set at all
// (a set of a key it does not trust) it leaves the first one to the
// schedule.
func TestCatchUp(t *testing.T) {
	key := testenv.NewSigningKey(t)
	a, usb := trustingAgent(t, key)
	rs, _ := testenv.AgeKeys(t)
	a.mu.Lock()
	if err := a.scheduleLocked(a.cfg); err != nil {
		t.Fatal(err)
	}
	a.mu.Unlock()
	t.Cleanup(func() { a.sched.Stop() })
	running, release := make(chan struct{}), make(chan struct{})
	runs := 0
	a.jobs["backup"].run = func(context.Context, *config.Config) error {
		runs++
		close(running)
		<-release
		return nil
	}
	a.leader.Store(true) // setLeader would start a catch-up of its own

	testenv.PutSet(t, usb, testenv.NewSigningKey(t), rs, time.Now().Add(-3*time.Hour), 50)
	a.catchUp(context.Background())
	if runs != 0 {
		t.Fatalf("a catch-up ran with no trusted set on the target")
	}
	testenv.PutSet(t, usb, key, rs, time.Now().Add(-3*time.Hour), 100)
	go a.catchUp(context.Background())
	select {
	case <-running:
	case <-time.After(time.Minute):
		t.Fatal("no catch-up ran for a set three hours old and an hourly schedule")
	}
	if got := testutil.ToFloat64(a.m.catchUps); got != 1 {
		t.Errorf("catch-ups counted while the run goes on: %v, want 1", got)
	}
	close(release)
	a.running.Wait()

	testenv.PutSet(t, usb, key, rs, time.Now(), 200)
	a.catchUp(context.Background())
	a.running.Wait()
	if runs != 1 || testutil.ToFloat64(a.m.catchUps) != 1 {
		t.Errorf("with a set just taken: %d runs, %v catch-ups; want the one before alone", runs, testutil.ToFloat64(a.m.catchUps))
	}
}

// TestReload: a config that does not validate is refused with its line,
// and the running one stays; a good one replaces it.
func TestReload(t *testing.T) {
	a, path := newTestAgent(t, "@every 1h")
	good, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(good), "@every 1h", "every hour", 1)), 0o600)
	err := a.Reload()
	if err == nil || !strings.Contains(err.Error(), "kdr.yaml:11") {
		t.Fatalf("bad schedule reloaded: %v, want an error naming kdr.yaml:11", err)
	}
	if got := testutil.ToFloat64(a.m.reloadOK); got != 0 {
		t.Errorf("config_last_reload_successful %v after a refused reload", got)
	}
	if a.config().Schedule.Backup != "@every 1h" {
		t.Errorf("the refused config replaced the running one")
	}
	os.WriteFile(path, []byte(strings.Replace(string(good), "@every 1h", "@every 2h", 1)), 0o600)
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if a.config().Schedule.Backup != "@every 2h" || testutil.ToFloat64(a.m.reloadOK) != 1 {
		t.Errorf("good config not taken: %q", a.config().Schedule.Backup)
	}
}

// TestTriggerNeverOverlaps: a run that starts while the previous run of
// the same job goes on is skipped and counted; a standby runs nothing.
// The started callback comes before the run, not after it.
func TestTriggerNeverOverlaps(t *testing.T) {
	a, _ := newTestAgent(t, "@every 1h")
	release := make(chan struct{})
	var mu sync.Mutex
	runs := 0
	var started, startedBeforeRun atomic.Int32
	j := &job{name: "backup", run: func(context.Context, *config.Config) error {
		mu.Lock()
		runs++
		mu.Unlock()
		startedBeforeRun.Store(started.Load())
		<-release
		return nil
	}}
	a.setLeader(true)
	go a.trigger(j, func() { started.Add(1) })
	deadline := time.Now().Add(10 * time.Second)
	for !j.running.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	a.trigger(j, nil) // the first still runs
	if got := testutil.ToFloat64(a.m.jobSkipped.WithLabelValues("backup")); got != 1 {
		t.Errorf("skipped %v, want 1", got)
	}
	close(release)
	a.running.Wait()
	a.setLeader(false)
	a.trigger(j, nil)
	a.running.Wait()
	mu.Lock()
	defer mu.Unlock()
	if runs != 1 {
		t.Errorf("%d runs, want 1 (one skipped, one on a standby)", runs)
	}
	if started.Load() != 1 || startedBeforeRun.Load() != 1 {
		t.Errorf("started called %d times, %d before the run", started.Load(), startedBeforeRun.Load())
	}
	if got := testutil.ToFloat64(a.m.jobRuns.WithLabelValues("backup", "success")); got != 1 {
		t.Errorf("job_runs_total success %v, want 1", got)
	}
}

// TestReloadForgetsRemovedTargets: the series of a target dropped from
// the config go with it, or its frozen last success would alert forever;
// a configured target that never had a backup reads as never (0).
func TestReloadForgetsRemovedTargets(t *testing.T) {
	a, path := newTestAgent(t, "@every 1h")
	series := func(target string) int {
		families, err := a.m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range families {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "target" && l.GetValue() == target {
						n++
					}
				}
			}
		}
		return n
	}
	if series("usb") == 0 {
		t.Fatal("no series for the configured target before any backup")
	}
	if got := testutil.ToFloat64(a.m.lastSuccess.WithLabelValues("prod", "usb")); got != 0 {
		t.Errorf("last success of a target never backed up to: %v, want 0", got)
	}
	good, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(good), "name: usb", "name: usb2", 1)), 0o600)
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := series("usb"); n != 0 {
		t.Errorf("%d series still name the removed target", n)
	}
	if series("usb2") == 0 {
		t.Error("no series for the new target")
	}
}

// TestDrillWithoutIdentity: the agent holds no identity unless given one,
// so a scheduled drill fails, says why, and counts as a drill failure.
func TestDrillWithoutIdentity(t *testing.T) {
	a, _ := newTestAgent(t, "@every 1h")
	err := a.drill(context.Background(), a.config())
	if err == nil || !strings.Contains(err.Error(), "drill.identityFile") {
		t.Fatalf("drill without an identity: %v, want an error naming drill.identityFile", err)
	}
	if got := testutil.ToFloat64(a.m.drillFailures.WithLabelValues("prod")); got != 1 {
		t.Errorf("drill_failures_total %v, want 1", got)
	}
}

// TestKitFailureIsCountedNotFailed: a backup whose set is whole but whose
// recovery kit could not be written succeeds, and counts under
// reason="kit", where the rules and the dashboard see it.
func TestKitFailureIsCountedNotFailed(t *testing.T) {
	a, _ := newTestAgent(t, "@every 1h")
	now := time.Now()
	err := a.recordBackup(action.ClusterBackup{Cluster: "prod",
		Result: &snapshot.Result{Manifest: &manifest.Manifest{Cluster: "prod", ID: manifest.NewID(now, [3]byte{1, 2, 3}), Created: now, Completed: now},
			Complete: []string{"usb"}},
		KitFailed: []string{"usb"}})
	if err != nil {
		t.Fatalf("recordBackup: %v, want the backup to stand", err)
	}
	if got := testutil.ToFloat64(a.m.failures.WithLabelValues("prod", "usb", reasonKit)); got != 1 {
		t.Errorf(`backup_failures_total{reason="kit"} %v, want 1`, got)
	}
	if got := testutil.ToFloat64(a.m.failures.WithLabelValues("prod", "usb", reasonTarget)); got != 0 {
		t.Errorf(`backup_failures_total{reason="target"} %v, want 0`, got)
	}
}

// TestTargetEndsLag: how far each target is behind what the capture
// received, in revisions and in the time the oldest of them waited.
func TestTargetEndsLag(t *testing.T) {
	now := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	chain := capture.Status{Base: "b1", Targets: []string{"usb", "s3"}, Durable: 100, DurableSeen: ago(time.Minute)}
	for _, tc := range []struct {
		name   string
		st     capture.Status
		stored map[string][2]int64 // target -> last revision, seconds ago it was seen
		target string
		wait   time.Duration
		revs   int64
	}{
		{"no chain yet", capture.Status{Received: 0}, nil, "usb", 0, 0},
		{"all durable", with(chain, 100, time.Time{}), nil, "usb", 0, 0},
		{"pending everywhere", with(chain, 130, ago(20*time.Second)), nil, "usb", 20 * time.Second, 30},
		{"a target ahead waits since its last segment", with(chain, 130, ago(20*time.Second)), map[string][2]int64{"usb": {120, 5}}, "usb", 5 * time.Second, 10},
		{"a target ahead, all stored", with(chain, 130, ago(20*time.Second)), map[string][2]int64{"usb": {130, 5}}, "usb", 0, 0},
		{"a target behind the others", with(chain, 130, ago(20*time.Second)), map[string][2]int64{"usb": {130, 5}}, "s3", 20 * time.Second, 30},
		// Outside the chain, never stored to: it lacks at least what the
		// chain lacks.
		{"a target outside the chain", with(chain, 130, ago(20*time.Second)), nil, "nfs", 20 * time.Second, 30},
		{"outside the chain, stored before", with(chain, 130, ago(20*time.Second)), map[string][2]int64{"nfs": {90, 600}}, "nfs", 10 * time.Minute, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e targetEnds
			for target, s := range tc.stored {
				e.stored(target, &manifest.SegmentHead{Last: s[0], SeenLast: ago(time.Duration(s[1]) * time.Second)})
			}
			wait, revs := e.lag(tc.target, tc.st, now)
			if wait != tc.wait || revs != tc.revs {
				t.Errorf("lag %v, %d revisions; want %v, %d", wait, revs, tc.wait, tc.revs)
			}
		})
	}
}

// with is a capture status that received through received, the oldest
// revision not durable everywhere since pending.
func with(st capture.Status, received int64, pending time.Time) capture.Status {
	st.Received, st.OldestPending = received, pending
	return st
}

// TestPackRunsCounted: the pack loop's runs and segments, by result,
// from zero for every configured target.
func TestPackRunsCounted(t *testing.T) {
	a, _ := newTestAgent(t, "@every 1h")
	for _, r := range []string{packOK, packFailed} {
		if got := testutil.ToFloat64(a.m.packRuns.WithLabelValues("prod", "usb", r)); got != 0 {
			t.Errorf("pack runs %s before any: %v", r, got)
		}
	}
	a.m.packRun("prod", "usb", 12, nil)
	a.m.packRun("prod", "usb", 0, errors.New("target usb: disk full"))
	ok, failed := testutil.ToFloat64(a.m.packRuns.WithLabelValues("prod", "usb", packOK)), testutil.ToFloat64(a.m.packRuns.WithLabelValues("prod", "usb", packFailed))
	if packed := testutil.ToFloat64(a.m.packedSegments.WithLabelValues("prod", "usb")); ok != 1 || failed != 1 || packed != 12 {
		t.Errorf("runs ok %v, failed %v, segments packed %v; want 1, 1, 12", ok, failed, packed)
	}
	if got := testutil.ToFloat64(a.m.rpoObjective.WithLabelValues("prod")); got != config.DefaultRPO.Seconds() {
		t.Errorf("rpo objective %v, want the default %v", got, config.DefaultRPO.Seconds())
	}
	if got := testutil.ToFloat64(a.m.windowObjective.WithLabelValues("prod")); got != 0 {
		t.Errorf("window objective %v, want 0: nothing promised", got)
	}
}

// TestWindowInStatusAndMetrics: a check reads the window of a real
// captured log, with its gap, into /status and the metrics; the replay
// time comes from the newest drill that replayed a log.
func TestWindowInStatusAndMetrics(t *testing.T) {
	ctx := context.Background()
	key := testenv.NewSigningKey(t)
	a, usb := trustingAgent(t, key)
	cfg := a.config()
	rs, _ := testenv.AgeKeys(t)
	day := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	// set 100: 101..110; set 120: 121..130.
	for i, rev := range []int64{100, 120} {
		created := day.Add(time.Duration(i) * time.Hour)
		log := testenv.PutSet(t, usb, key, rs, created, rev)
		log.Append(t, testenv.Creates(rev+1, rev+10, func(r int64) time.Time { return created.Add(time.Duration(r-rev) * time.Second) }), nil, nil)
	}
	// Drills: the newest restored a set as it is, the one before replayed.
	for i, replay := range []*drill.ReplaySummary{{Revision: 125, Applied: 5, Segments: 1, Seconds: 42}, nil} {
		id := manifest.NewID(day.Add(time.Duration(2+i)*time.Hour), [3]byte{9, 9, byte(i)})
		b, err := json.Marshal(drill.Summary{ID: id, Backup: "x", Finished: day.Add(time.Duration(2+i) * time.Hour), Result: drill.Pass, Replay: replay})
		if err != nil {
			t.Fatal(err)
		}
		if err := manifest.PutSigned(ctx, usb, "prod/drills/"+id+".json", b, manifest.NamespaceDrillReport, key.Signer, storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	a.refresh(ctx, cfg)
	v := a.status().Backups["prod"]["usb"]
	w := v.Window
	if w == nil {
		t.Fatalf("no window in /status: %+v", v)
	}
	if w.From.Revision != 100 || w.To.Revision != 130 || w.Contiguous.Revision != 120 || len(w.Gaps) != 1 || w.Gaps[0].First != 111 || w.Gaps[0].Last != 119 {
		t.Errorf("window %d..%d from %d, gaps %+v; want 100..130 from 120, the gap 111..119", w.From.Revision, w.To.Revision, w.Contiguous.Revision, w.Gaps)
	}
	for _, c := range []struct {
		g    *prometheus.GaugeVec
		want float64
	}{
		{a.m.windowStart, float64(day.Unix())},
		{a.m.windowEnd, float64(day.Add(time.Hour + 10*time.Second).Unix())},
		{a.m.windowStartRevision, 100},
		{a.m.windowEndRevision, 130},
		{a.m.windowContiguousStart, float64(day.Add(time.Hour).Unix())},
		{a.m.windowGaps, 1},
		{a.m.logStart, float64(day.Add(time.Second).Unix())},
	} {
		if got := testutil.ToFloat64(c.g.WithLabelValues("prod", "usb")); got != c.want {
			t.Errorf("%s = %v, want %v", c.g.WithLabelValues("prod", "usb").Desc(), got, c.want)
		}
	}
	if got := testutil.ToFloat64(a.m.drillReplay.WithLabelValues("prod")); got != 42 {
		t.Errorf("drill_replay_seconds %v, want 42 from the drill that replayed", got)
	}
}
