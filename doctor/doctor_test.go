package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
)

const testCluster = "prod"

// newConfig is a validated config of one cluster reached at endpoints
// over plain http, one recipient, and the given targets.
func newConfig(t *testing.T, endpoints []string, targets ...config.Target) *config.Config {
	t.Helper()
	_, recipient, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Clusters:   []config.Cluster{{Name: testCluster, Etcd: config.Etcd{Endpoints: endpoints, Insecure: true, DialTimeout: 2 * time.Second}}},
		Encryption: config.Encryption{Recipients: []string{recipient}},
		Signing:    config.Signing{TrustedKeys: []string{testSigner.PublicKey()}},
		Targets:    targets,
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// localTarget is a local target in a new, empty directory.
func localTarget(t *testing.T, name string) config.Target {
	t.Helper()
	return config.Target{Name: name, Local: &config.LocalTarget{Path: t.TempDir()}}
}

// want is what a report must say of one check.
type want struct {
	grade Grade
	words []string
}

// run runs the doctor and checks the report of the one cluster: every
// check in table order, the grades and words wanted, the worst grade.
func run(t *testing.T, cfg *config.Config, wants map[string]want) *Report {
	t.Helper()
	rep, err := Run(t.Context(), cfg, Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Clusters) != 1 || rep.Clusters[0].Name != testCluster {
		t.Fatalf("report of clusters %+v, want %s alone", rep.Clusters, testCluster)
	}
	got := rep.Clusters[0].Checks
	if len(got) != len(checks) {
		t.Fatalf("%d results, want one per check (%d)", len(got), len(checks))
	}
	worst := Pass
	for i, r := range got {
		worst = max(worst, r.Grade)
		if r.ID != checks[i].ID {
			t.Errorf("result %d is %s, want %s", i, r.ID, checks[i].ID)
		}
		w, ok := wants[r.ID]
		if !ok {
			continue
		}
		if r.Grade != w.grade {
			t.Errorf("%s: %s, want %s: %s", r.ID, r.Grade, w.grade, r.Reason)
		}
		for _, word := range w.words {
			if !strings.Contains(r.Reason, word) {
				t.Errorf("%s: reason does not say %q: %s", r.ID, word, r.Reason)
			}
		}
	}
	if rep.Worst != worst {
		t.Errorf("worst %s, want %s", rep.Worst, worst)
	}
	return rep
}

func TestRunOneMember(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{Members: 1})
	gone := config.Target{Name: "gone", Local: &config.LocalTarget{Path: filepath.Join(t.TempDir(), "unplugged")}}
	cfg := newConfig(t, etcd.Endpoints(), localTarget(t, "usb"), gone)
	rep := run(t, cfg, map[string]want{
		"etcd-members":            {Fail, []string{"1 voting member: no redundancy"}},
		"etcd-hosts":              {Fail, []string{"1 member on one host (loopback) survives no host failure"}},
		"etcd-quota":              {Pass, []string{"fullest member m1", "of its 2.0 GiB quota"}},
		"etcd-fragmentation":      {Pass, []string{"m1"}},
		"etcd-leader-changes":     {Pass, []string{"its 1 member names leader m1"}},
		"backup-age":              {Fail, []string{"target usb holds no complete backup", "target gone cannot be listed"}},
		"targets-failure-domains": {Warn, []string{"all local"}},
		"object-lock":             {Pass, nil},
		"drill":                   {Warn, []string{"a backup that was never restored is a hope", "target gone"}},
		"certificates":            {Warn, []string{"no backup"}},
		"recipients":              {Warn, []string{"1 age recipient"}},
		"recovery-kit":            {Warn, []string{"target usb holds no recovery kit", "the recovery kit on gone cannot be checked", "does not exist"}},
	})
	if rep.Worst != Fail {
		t.Errorf("worst %s, want fail", rep.Worst)
	}
}

func TestRunThreeMembersOnLoopback(t *testing.T) {
	etcd := testenv.StartEtcd(t, testenv.EtcdOptions{Members: 3})
	// One endpoint in the config: the others are found by the member list.
	cfg := newConfig(t, etcd.Endpoints()[:1], localTarget(t, "usb"))
	run(t, cfg, map[string]want{
		"etcd-members":        {Pass, []string{"3 voting members tolerate 1 failure"}},
		"etcd-hosts":          {Fail, []string{"3 members on one host (loopback) survive no host failure"}},
		"etcd-leader-changes": {Pass, []string{"all 3 members agree on leader"}},
		"backup-age":          {Fail, []string{"no complete backup"}},
		"drill":               {Warn, []string{"never drilled"}},
	})

	etcd.Kill(2)
	run(t, newConfig(t, etcd.Endpoints(), localTarget(t, "usb")), map[string]want{
		"etcd-members":        {Pass, []string{"3 voting members"}},
		"etcd-leader-changes": {Warn, []string{"1 of 3 members do not answer (m3: status of " + etcd.Members[2].ClientURL + ": no answer within 2s"}},
		"etcd-quota":          {Pass, nil},
	})
}

// writeDrill stores a drill report on a local target as the drill does.
func writeDrill(t *testing.T, dir string, started time.Time, result string) string {
	t.Helper()
	id := idAt(started)
	r := drill.Summary{ID: id, Backup: idAt(started.Add(-time.Hour)),
		Finished: started.Add(3 * time.Minute), Result: drill.Grade(result), RTOSeconds: 180, RPOSeconds: 3600}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, testCluster, "drills", id+".json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sig, err := testSigner.Sign(b, manifest.NamespaceDrillReport)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifest.SignatureKey(path), sig, 0o644); err != nil {
		t.Fatal(err)
	}
	return id
}

// testSigner signs the drill reports the tests write; the configs trust it.
var testSigner = testenv.MustSigningKey().Signer

func TestRunWithoutEtcd(t *testing.T) {
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	usb := localTarget(t, "usb")
	now := time.Now()
	writeDrill(t, usb.Local.Path, now.Add(-40*day), "fail")
	newest := writeDrill(t, usb.Local.Path, now.Add(-2*day), "pass")
	// Beside the reports: what the drill also stores, and stray files.
	for _, name := range []string{newest + ".md", "notes.json"} {
		if err := os.WriteFile(filepath.Join(usb.Local.Path, testCluster, "drills", name), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := newConfig(t, []string{endpoint}, usb)
	cfg.Clusters[0].Etcd.DialTimeout = 500 * time.Millisecond
	unreachable := []string{"no etcd endpoint of cluster prod answered: status of " + endpoint + ": no answer within 500ms"}
	run(t, cfg, map[string]want{
		"etcd-members":        {Fail, unreachable},
		"etcd-hosts":          {Fail, unreachable},
		"etcd-quota":          {Fail, unreachable},
		"etcd-fragmentation":  {Fail, unreachable},
		"etcd-leader-changes": {Fail, unreachable},
		"backup-age":          {Fail, []string{"no complete backup"}},
		"drill":               {Pass, []string{"the newest drill, " + newest + " on usb", "passed: RTO 3m, RPO 1h"}},
		"recipients":          {Warn, nil},
	})

	if _, err := Run(t.Context(), cfg, Options{Cluster: "staging"}); err == nil || !strings.Contains(err.Error(), `no cluster "staging"`) {
		t.Errorf("an unknown cluster: %v", err)
	}
}

func TestReportJSON(t *testing.T) {
	f := &facts{now: monday8, schedule: "@hourly", recipients: 2,
		targets: []config.Target{local("usb")}, stores: []storeFacts{{name: "usb"}},
		etcd: etcdFacts{err: errors.New("no etcd endpoint of cluster prod answered: refused")}}
	rep := Report{Clusters: []ClusterReport{{Name: testCluster, Checks: grade(f)}}, Worst: Fail}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Clusters []struct {
			Name   string                       `json:"name"`
			Checks []map[string]json.RawMessage `json:"checks"`
		} `json:"clusters"`
		Worst string `json:"worst"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Worst != "fail" || len(doc.Clusters) != 1 || doc.Clusters[0].Name != testCluster {
		t.Fatalf("report: %s", b)
	}
	grades, reasons := map[string]string{}, map[string]string{}
	for _, c := range doc.Clusters[0].Checks {
		for _, k := range []string{"id", "grade", "reason", "evidence"} {
			if _, ok := c[k]; !ok {
				t.Errorf("a check lacks %q: %s", k, b)
			}
		}
		if string(c["evidence"]) == "null" {
			t.Errorf("evidence is null, want an object: %s", b)
		}
		var id, g, reason string
		if json.Unmarshal(c["id"], &id) != nil || json.Unmarshal(c["grade"], &g) != nil || json.Unmarshal(c["reason"], &reason) != nil {
			t.Fatalf("id, grade or reason is not a string: %s", b)
		}
		grades[id], reasons[id] = g, reason
	}
	// Every etcd check says why etcd was not graded, not what no members mean.
	for _, id := range []string{"etcd-members", "etcd-hosts", "etcd-quota", "etcd-fragmentation", "etcd-leader-changes"} {
		if reasons[id] != f.etcd.err.Error() {
			t.Errorf("%s: reason %q, want the dial error", id, reasons[id])
		}
	}
	for id, g := range map[string]string{"etcd-members": "fail", "etcd-leader-changes": "fail", "backup-age": "fail", "recipients": "pass", "targets-failure-domains": "warn"} {
		if grades[id] != g {
			t.Errorf("%s: %q, want %q: %s", id, grades[id], g, b)
		}
	}
}

// TestRunObjectLock grades what real buckets say of Object Lock: the
// config's objectLock alone proves nothing.
func TestRunObjectLock(t *testing.T) {
	m := testenv.StartMinIO(t, testenv.MinIOOptions{})
	m.CreateBucket(t, "plain", false)
	m.CreateBucket(t, "locked", true)
	m.CreateBucket(t, "defaulted", true)
	mode, validity, unit := minio.Compliance, uint(3), minio.Days
	if err := m.Client().SetObjectLockConfig(t.Context(), "defaulted", &mode, &validity, &unit); err != nil {
		t.Fatal(err)
	}
	s3 := func(name, bucket string, lockDays int) config.Target {
		tg := config.Target{Name: name, S3: &config.S3Target{Endpoint: m.Endpoint(), Bucket: bucket, Insecure: true, PathStyle: true,
			AccessKey: m.AccessKey(), SecretKey: m.SecretKey()}}
		if lockDays > 0 {
			tg.S3.ObjectLock = &config.ObjectLock{Days: lockDays}
		}
		return tg
	}
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	check := func(targets []config.Target, w want) map[string]any {
		t.Helper()
		cfg := newConfig(t, []string{endpoint}, targets...)
		cfg.Clusters[0].Etcd.DialTimeout = 500 * time.Millisecond
		rep := run(t, cfg, map[string]want{"object-lock": w})
		for _, r := range rep.Clusters[0].Checks {
			if r.ID == "object-lock" {
				return r.Evidence
			}
		}
		t.Fatal("no object-lock check in the report")
		return nil
	}

	ev := check([]config.Target{s3("s3", "plain", 14)}, want{Fail, []string{"target s3 has objectLock, but bucket plain has no Object Lock enabled"}})
	if got := ev["targets"].(map[string]any)["s3"].(map[string]any); got["objectLockEnabled"] != false || got["configuredDays"] != 14 {
		t.Errorf("evidence of the plain bucket: %v", got)
	}
	check([]config.Target{s3("s3", "plain", 0)}, want{Warn, []string{"bucket plain has no Object Lock"}})
	check([]config.Target{s3("s3", "locked", 0)}, want{Warn, []string{"bucket locked has Object Lock but no default retention"}})
	check([]config.Target{s3("s3", "locked", 14), localTarget(t, "usb")}, want{Pass, []string{"(s3: GOVERNANCE 14 days)"}})
	ev = check([]config.Target{s3("s3", "defaulted", 0)}, want{Pass, []string{"(s3: bucket default COMPLIANCE 3 days)"}})
	if got := ev["targets"].(map[string]any)["s3"].(map[string]any); got["objectLockEnabled"] != true || got["defaultMode"] != "COMPLIANCE" || got["defaultValidity"] != uint(3) || got["defaultUnit"] != "DAYS" {
		t.Errorf("evidence of the bucket with a default: %v", got)
	}
	check([]config.Target{s3("s3", "no-such-bucket", 14)}, want{Warn, []string{"target s3: the Object Lock of bucket no-such-bucket cannot be read", "bucket does not exist"}})
}
