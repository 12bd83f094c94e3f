package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

const (
	day = 24 * time.Hour
	// drillMaxAge is how old the newest drill may be: a quarterly drill
	// schedule plus slack.
	drillMaxAge = 100 * day
	// certWarning is how long before expiry a certificate warns: time to
	// renew it in a maintenance window rather than in an outage.
	certWarning = 30 * day
	// scheduleRuns is how many coming backup runs are looked at for the
	// longest gap, so a weekday-only schedule is graded by its weekend.
	scheduleRuns = 10
)

// storeFacts is what one target holds of a cluster.
type storeFacts struct {
	name string
	// err says why the target could not be opened or listed.
	err error
	// newest is the ID of the newest complete backup, "" when none.
	newest string
	// drill is the newest drill report, nil when none could be read;
	// drillErr says why.
	lastDrill *drill.Summary
	drillErr  error
	// window is what a restore from the target reaches, nil when it
	// holds no trusted set or could not be read; windowErr says why not.
	window    *catalog.Window
	windowErr error
}

// certFacts are the certificates the newest backup recorded.
type certFacts struct {
	// backup is the newest complete backup's ID, "" when there is none.
	backup string
	certs  []manifest.Certificate
	// controlPlane is what it recorded of the static pods, nil for none.
	controlPlane *manifest.ControlPlane
	// err says why its manifest could not be read.
	err error
}

// opened is a configured target, opened or not.
type opened struct {
	name string
	t    storage.Target
	err  error
}

// openTargets opens every configured target; one that cannot be opened
// keeps its error for the checks that need it.
func openTargets(ctx context.Context, ts []config.Target) []opened {
	out := make([]opened, len(ts))
	for i, ct := range ts {
		t, err := fromconfig.Target(ctx, ct)
		out[i] = opened{name: ct.Name, t: t, err: err}
	}
	return out
}

// lockFacts is what one S3 target's bucket says of Object Lock.
type lockFacts struct {
	name, bucket string
	// want is the target's objectLock, nil when the config sets none.
	want *config.ObjectLock
	got  storage.BucketLock
	// err says why the bucket could not be asked.
	err error
}

// bucketLocker is a target that can read its bucket's Object Lock
// configuration: the S3 target.
type bucketLocker interface {
	BucketLock(context.Context) (storage.BucketLock, error)
}

// readLocks asks the bucket of every S3 target for its Object Lock
// configuration, once for all clusters: the config says what is wanted,
// only the bucket what is done.
func readLocks(ctx context.Context, ts []config.Target, targets []opened) []lockFacts {
	var out []lockFacts
	for i, ct := range ts {
		if ct.S3 == nil {
			continue
		}
		l := lockFacts{name: ct.Name, bucket: ct.S3.Bucket, want: ct.S3.ObjectLock}
		bl, ok := targets[i].t.(bucketLocker)
		switch {
		case targets[i].err != nil:
			l.err = targets[i].err
		case !ok:
			l.err = fmt.Errorf("target %s cannot tell its bucket's Object Lock", ct.Name)
		default:
			l.got, l.err = bl.BucketLock(ctx)
		}
		out = append(out, l)
	}
	return out
}

// readTargets finds the cluster's newest backup and drill report on each
// target, and reads the certificates from the newest backup of all.
//
// Only sets and reports a trusted key signed count: a planted set or
// report must not make a stale backup or an old drill look fresh.
func readTargets(ctx context.Context, trust *manifest.Trust, targets []opened, cluster string) ([]storeFacts, certFacts) {
	stores := make([]storeFacts, len(targets))
	for i, o := range targets {
		s := &stores[i]
		s.name = o.name
		if o.err != nil {
			s.err, s.drillErr = o.err, o.err
			continue
		}
		s.newest, s.err = newestBackup(ctx, o.t, trust, cluster)
		s.lastDrill, s.drillErr = newestDrill(ctx, o.t, trust, cluster)
		if s.err == nil && s.newest != "" {
			s.window, s.windowErr = catalog.ReadWindow(ctx, o.t, trust, cluster, catalog.WindowOptions{})
		}
	}
	var cf certFacts
	for _, s := range stores {
		cf.backup = max(cf.backup, s.newest)
	}
	if cf.backup == "" {
		return stores, cf
	}
	for i, s := range stores {
		if s.newest != cf.backup {
			continue
		}
		m, _, err := catalog.LoadManifest(ctx, targets[i].t, trust, cluster, cf.backup)
		if err != nil {
			cf.err = err
			continue
		}
		cf.certs, cf.controlPlane, cf.err = m.State.Certificates, m.State.ControlPlane, nil
		break
	}
	return stores, cf
}

// newestBackup returns the ID of the newest trusted set, "" when none.
func newestBackup(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string) (string, error) {
	m, _, err := catalog.Latest(ctx, t, trust, cluster)
	switch {
	case errors.Is(err, catalog.ErrNoBackup):
		return "", nil
	case err != nil:
		return "", err
	}
	return m.ID, nil
}

// newestDrill reads the newest drill report of the cluster on a target.
func newestDrill(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string) (*drill.Summary, error) {
	hist, err := drill.History(ctx, t, trust, cluster)
	if err != nil {
		return nil, fmt.Errorf("drill reports on target %s: %w", t.Name(), err)
	}
	if len(hist) == 0 {
		return nil, nil
	}
	return &hist[0], nil
}

// scheduleGap is the longest time between consecutive runs of a cron
// schedule among its next few runs after now. The config was validated,
// so the expression parses.
func scheduleGap(spec string, now time.Time) (time.Duration, error) {
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return 0, err
	}
	var gap time.Duration
	prev := sched.Next(now)
	for range scheduleRuns {
		next := sched.Next(prev)
		if next.IsZero() {
			break
		}
		gap = max(gap, next.Sub(prev))
		prev = next
	}
	if gap == 0 {
		return 0, errors.New("it does not run twice in the coming years")
	}
	return gap, nil
}

func gradeBackupAge(f *facts) Result {
	gap, err := scheduleGap(f.schedule, f.now)
	if err != nil {
		return verdict(Fail, nil, "schedule.backup %q: %v", f.schedule, err)
	}
	perTarget := map[string]any{}
	ev := map[string]any{"scheduleGapSeconds": gap.Seconds(), "targets": perTarget}
	if len(f.stores) == 0 {
		return verdict(Fail, ev, "no targets in the config")
	}
	worst := Pass
	var parts []string
	for _, s := range f.stores {
		g, part := Fail, ""
		switch {
		case s.err != nil:
			part = fmt.Sprintf("target %s cannot be listed: %v", s.name, s.err)
			perTarget[s.name] = map[string]any{"error": s.err.Error()}
		case s.newest == "":
			part = fmt.Sprintf("target %s holds no complete backup", s.name)
			perTarget[s.name] = map[string]any{}
		default:
			taken, _ := manifest.IDTime(s.newest)
			age := max(f.now.Sub(taken), 0)
			switch {
			case age <= 2*gap:
				g = Pass
			case age <= 4*gap:
				g = Warn
			}
			part = fmt.Sprintf("newest on %s is %s old", s.name, span(age))
			perTarget[s.name] = map[string]any{"id": s.newest, "ageSeconds": age.Seconds()}
		}
		worst = max(worst, g)
		parts = append(parts, part)
	}
	return verdict(worst, ev, "%s (backups at most %s apart: up to %s old passes, up to %s warns)",
		strings.Join(parts, "; "), span(gap), span(2*gap), span(4*gap))
}

func gradeDrill(f *facts) Result {
	var best *drill.Summary
	var where string
	var errs []string
	for _, s := range f.stores {
		if s.drillErr != nil {
			errs = append(errs, fmt.Sprintf("target %s: %v", s.name, s.drillErr))
		}
		if s.lastDrill != nil && (best == nil || s.lastDrill.ID > best.ID) {
			best, where = s.lastDrill, s.name
		}
	}
	if best == nil {
		if len(errs) > 0 {
			return verdict(Warn, nil, "no drill report found, and not every target could be read (%s): a backup that was never restored is a hope", strings.Join(errs, "; "))
		}
		return verdict(Warn, nil, "never drilled: a backup that was never restored is a hope (kdr drill)")
	}
	when := best.Finished
	if when.IsZero() {
		when, _ = manifest.IDTime(best.ID)
	}
	age := max(f.now.Sub(when), 0)
	rto, rpo := seconds(best.RTOSeconds), seconds(best.RPOSeconds)
	ev := map[string]any{"id": best.ID, "target": where, "backup": best.Backup, "result": best.Result,
		"finished": when, "ageSeconds": age.Seconds(), "rtoSeconds": best.RTOSeconds, "rpoSeconds": best.RPOSeconds}
	about := fmt.Sprintf("the newest drill, %s on %s, %s ago", best.ID, where, span(age))
	switch {
	case best.Result == drill.Fail:
		return verdict(Fail, ev, "%s, failed: backup %s did not restore whole (its report says why)", about, best.Backup)
	case age > drillMaxAge:
		return verdict(Warn, ev, "%s, is older than %s: drill at least quarterly, the cluster has changed since", about, span(drillMaxAge))
	case best.Result == drill.Warn:
		return verdict(Warn, ev, "%s, passed with warnings: RTO %s, RPO %s", about, span(rto), span(rpo))
	case best.Result != drill.Pass:
		return verdict(Warn, ev, "%s, has result %q, which is not pass, warn or fail", about, best.Result)
	}
	return verdict(Pass, ev, "%s, passed: RTO %s, RPO %s", about, span(rto), span(rpo))
}

func gradeCertificates(f *facts) Result {
	c := f.certs
	switch {
	case c.err != nil:
		return verdict(Warn, nil, "the manifest of the newest backup %s cannot be read: %v", c.backup, c.err)
	case c.backup == "":
		return verdict(Warn, nil, "no backup records certificates yet")
	case len(c.certs) == 0:
		return verdict(Warn, map[string]any{"backup": c.backup}, "the newest backup, %s, holds no certificate: is the PKI among the captured state?", c.backup)
	}
	certs := slices.Clone(c.certs)
	slices.SortStableFunc(certs, func(a, b manifest.Certificate) int { return a.NotAfter.Compare(b.NotAfter) })
	expired, soon := 0, 0
	for _, crt := range certs {
		switch left := crt.NotAfter.Sub(f.now); {
		case left <= 0:
			expired++
		case left < certWarning:
			soon++
		}
	}
	first := certs[0]
	left := first.NotAfter.Sub(f.now)
	ev := map[string]any{"backup": c.backup, "certificates": len(certs), "expired": expired, "expiringSoon": soon,
		"soonest": first.Path, "soonestNotAfter": first.NotAfter, "soonestDaysLeft": round1(left.Hours() / 24)}
	expiry := first.NotAfter.UTC().Format(time.DateOnly)
	switch {
	case expired > 0:
		return verdict(Fail, ev, "%s of %d in backup %s expired, the first %s on %s: renew them (kubeadm certs renew)",
			plural(expired, "certificate"), len(certs), c.backup, first.Path, expiry)
	case soon > 0:
		return verdict(Warn, ev, "%s of %d in backup %s expire within %s, the first %s in %s (%s): renew them (kubeadm certs renew)",
			plural(soon, "certificate"), len(certs), c.backup, span(certWarning), first.Path, span(left), expiry)
	}
	return verdict(Pass, ev, "%s in backup %s; the first to expire, %s, has %s left (%s)",
		plural(len(certs), "certificate"), c.backup, first.Path, span(left), expiry)
}
