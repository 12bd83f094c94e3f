package doctor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/internal/version"
)

// Grade is a check's verdict; a higher grade is a worse one.
type Grade int

// The grades, best first.
const (
	Pass Grade = iota
	Warn
	Fail
)

var gradeNames = [...]string{Pass: "pass", Warn: "warn", Fail: "fail"}

func (g Grade) String() string {
	if g < Pass || g > Fail {
		return fmt.Sprintf("grade(%d)", int(g))
	}
	return gradeNames[g]
}

// MarshalText writes the grade as its name, the JSON contract.
func (g Grade) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// Result is one check's verdict on one cluster.
type Result struct {
	ID     string `json:"id"`
	Grade  Grade  `json:"grade"`
	Reason string `json:"reason"`
	// Evidence holds the numbers the reason quotes, for scripts and alerts.
	Evidence map[string]any `json:"evidence"`
}

// ClusterReport is every check's verdict on one cluster.
type ClusterReport struct {
	Name   string   `json:"name"`
	Checks []Result `json:"checks"`
}

// Report is the doctor's verdict on the deployment.
type Report struct {
	Clusters []ClusterReport `json:"clusters"`
	// Worst is the worst grade of any check.
	Worst Grade `json:"worst"`
}

// Check is one criterion the doctor grades.
type Check struct {
	ID string
	// About says what the check looks at, for help texts.
	About string
	// live checks judge etcd's answers; when no member answered they fail
	// with the reason instead.
	live  bool
	grade func(*facts) Result
}

var checks = []Check{
	{ID: "etcd-members", About: "voting etcd members: an odd count, at least 3", live: true, grade: gradeMembers},
	{ID: "etcd-hosts", About: "etcd members spread over hosts, so that losing one host keeps quorum", live: true, grade: gradeHosts},
	{ID: "etcd-quota", About: "etcd database size against its quota", live: true, grade: gradeQuota},
	{ID: "etcd-fragmentation", About: "free space inside the etcd database that a defrag gives back", live: true, grade: gradeFragmentation},
	{ID: "etcd-leader-changes", About: "every member reachable, agreeing on one leader and raft term", live: true, grade: gradeLeader},
	{ID: "backup-age", About: "the newest complete backup on each target against schedule.backup", grade: gradeBackupAge},
	{ID: "log-rpo", About: "the age of the newest revision the captured log holds on each target against agent.capture.rpo", grade: gradeLogRPO},
	{ID: "log-window", About: "how far back every revision restores on each target against agent.capture.window", grade: gradeLogWindow},
	{ID: "targets-failure-domains", About: "targets on offline media and remote storage both", grade: gradeFailureDomains},
	{ID: "object-lock", About: "S3 buckets with Object Lock that retains every backup, so a stolen credential cannot delete them", grade: gradeObjectLock},
	{ID: "drill", About: "the newest restore drill: its result and its age", grade: gradeDrill},
	{ID: "certificates", About: "expiry of the certificates the newest backup holds", grade: gradeCertificates},
	{ID: "recipients", About: "age recipients: more than one, so a lost key loses no backup", grade: gradeRecipients},
	{ID: "static-pods", About: "the files this host's static pod manifests reference, each held by the newest backup", grade: gradeStaticPods},
	{ID: "recovery-kit", About: "each local target's offline recovery kit: signed, whole, and of this kdr version", grade: gradeKit},
}

// Checks lists the criteria in the order reports give them.
func Checks() []Check { return slices.Clone(checks) }

// facts is everything the checks of one cluster look at, gathered before
// any grading so that grading is pure.
type facts struct {
	now time.Time
	// schedule is the backup cron expression.
	schedule string
	// capture is the agent's capture of the log, with its objectives.
	capture       config.Capture
	targets       []config.Target
	recipients    int
	recipientsErr error
	etcd          etcdFacts
	// locks are what the bucket of each S3 target says of Object Lock,
	// in config order.
	locks []lockFacts
	// stores are what each target holds of the cluster, in config order.
	stores []storeFacts
	certs  certFacts
	// kits are what each local target's recovery kit holds, in config
	// order; version is the running kdr's, which a kit should hold.
	kits    []kitFacts
	version string
	// staticPods is what this host's static pod manifests reference.
	staticPods staticPodFacts
}

// Options say what the doctor grades.
type Options struct {
	// Cluster limits the report to one configured cluster (default all).
	Cluster string
	// Root is where this host's files are read, its static pod manifests
	// (default "/"; tests give a directory).
	Root string
}

// Run grades every configured cluster, or only o.Cluster. Problems of
// the deployment are grades in the report; the error is for a cluster
// name the config lacks or a cancelled context.
func Run(ctx context.Context, cfg *config.Config, o Options) (*Report, error) {
	if o.Root == "" {
		o.Root = "/"
	}
	clusters, err := fromconfig.Clusters(cfg, o.Cluster)
	if err != nil {
		return nil, err
	}
	trust, err := fromconfig.Trust(cfg)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	targets := openTargets(ctx, cfg.Targets)
	locks := readLocks(ctx, cfg.Targets, targets)
	kits := readKits(ctx, cfg.Targets, targets, trust)
	rs, rerr := fromconfig.Recipients(cfg)
	rep := &Report{}
	for _, c := range clusters {
		f := &facts{
			now:           now,
			schedule:      cfg.Schedule.Backup,
			capture:       cfg.Agent.Capture,
			targets:       cfg.Targets,
			recipients:    len(rs),
			recipientsErr: rerr,
			locks:         locks,
			kits:          kits,
			version:       version.Version,
			etcd:          probeEtcd(ctx, c),
		}
		f.stores, f.certs = readTargets(ctx, trust, targets, c.Name)
		f.staticPods = readStaticPods(o.Root, f.certs.controlPlane)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("doctor: cluster %s: %w", c.Name, err)
		}
		cr := ClusterReport{Name: c.Name, Checks: grade(f)}
		for _, r := range cr.Checks {
			rep.Worst = max(rep.Worst, r.Grade)
		}
		rep.Clusters = append(rep.Clusters, cr)
	}
	return rep, nil
}

// grade runs every check on the facts of one cluster.
func grade(f *facts) []Result {
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		var r Result
		if c.live && f.etcd.err != nil {
			r = Result{Grade: Fail, Reason: f.etcd.err.Error()}
		} else {
			r = c.grade(f)
		}
		r.ID = c.ID
		if r.Evidence == nil {
			r.Evidence = map[string]any{}
		}
		out = append(out, r)
	}
	return out
}
