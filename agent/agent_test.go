package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/snapshot"
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
func TestTriggerNeverOverlaps(t *testing.T) {
	a, _ := newTestAgent(t, "@every 1h")
	release := make(chan struct{})
	var mu sync.Mutex
	runs := 0
	j := &job{name: "backup", run: func(context.Context, *config.Config) error {
		mu.Lock()
		runs++
		mu.Unlock()
		<-release
		return nil
	}}
	a.setLeader(true)
	go a.trigger(j)
	deadline := time.Now().Add(10 * time.Second)
	for !j.running.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	a.trigger(j) // the first still runs
	if got := testutil.ToFloat64(a.m.jobSkipped.WithLabelValues("backup")); got != 1 {
		t.Errorf("skipped %v, want 1", got)
	}
	close(release)
	a.running.Wait()
	a.setLeader(false)
	a.trigger(j)
	a.running.Wait()
	mu.Lock()
	defer mu.Unlock()
	if runs != 1 {
		t.Errorf("%d runs, want 1 (one skipped, one on a standby)", runs)
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
