package doctor

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/kit"
	"github.com/kdr-io/kdr/manifest"
)

// monday8 is a Monday, 08:00 UTC.
var monday8 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

// idAt is a backup or drill ID taken at t.
func idAt(t time.Time) string { return manifest.NewID(t, [3]byte{1, 2, 3}) }

func TestScheduleGap(t *testing.T) {
	cases := []struct {
		spec string
		want time.Duration
	}{
		{"*/30 * * * *", 30 * time.Minute},
		{"@hourly", time.Hour},
		{"@daily", 24 * time.Hour},
		{"@every 6h", 6 * time.Hour},
		{"0 9,17 * * *", 16 * time.Hour},
		// The weekend, not the weekday gap the next run shows.
		{"0 9 * * 1-5", 72 * time.Hour},
	}
	// The longest gap, wherever the coming runs start.
	starts := []time.Time{monday8, monday8.Add(27 * time.Hour), monday8.Add(98 * time.Hour)}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			for _, now := range starts {
				got, err := scheduleGap(tc.spec, now)
				if err != nil || got != tc.want {
					t.Errorf("from %s: gap %v, %v; want %v", now.Format(time.RFC1123), got, err, tc.want)
				}
			}
		})
	}
	for _, spec := range []string{"0 0 30 2 *", "not cron"} {
		if got, err := scheduleGap(spec, monday8); err == nil {
			t.Errorf("%q: gap %v, want an error", spec, got)
		}
	}
}

func TestGradeBackupAge(t *testing.T) {
	ago := func(d time.Duration) string { return idAt(monday8.Add(-d)) }
	at := func(schedule string, stores ...storeFacts) facts {
		return facts{now: monday8, schedule: schedule, stores: stores}
	}
	const every30m = "*/30 * * * *"
	listErr := errors.New("list prod/ on target s3: connection refused")
	runGradeCases(t, gradeBackupAge, []gradeCase{
		{"fresh", at(every30m, storeFacts{name: "usb", newest: ago(20 * time.Minute)}), Pass,
			[]string{"newest on usb is 20m old", "at most 30m apart: up to 1h old passes, up to 2h warns"}},
		{"two intervals pass", at(every30m, storeFacts{name: "usb", newest: ago(time.Hour)}), Pass, nil},
		{"three intervals warn", at(every30m, storeFacts{name: "usb", newest: ago(90 * time.Minute)}), Warn, []string{"1h30m old"}},
		{"four intervals warn", at(every30m, storeFacts{name: "usb", newest: ago(2 * time.Hour)}), Warn, nil},
		{"older fails", at(every30m, storeFacts{name: "usb", newest: ago(2*time.Hour + time.Minute)}), Fail, []string{"2h1m old"}},
		{"none fails", at(every30m, storeFacts{name: "usb"}), Fail, []string{"target usb holds no complete backup"}},
		{"an unlistable target fails, named", at(every30m, storeFacts{name: "usb", newest: ago(time.Minute)}, storeFacts{name: "s3", err: listErr}), Fail,
			[]string{"newest on usb is 1m old", "target s3 cannot be listed: list prod/ on target s3: connection refused"}},
		{"the worst target counts", at(every30m, storeFacts{name: "usb", newest: ago(time.Minute)}, storeFacts{name: "s3", newest: ago(100 * time.Minute)}), Warn, nil},
		{"a backup from the future is fresh", at(every30m, storeFacts{name: "usb", newest: ago(-time.Hour)}), Pass, []string{"0s old"}},
		{"a descriptor", at("@daily", storeFacts{name: "usb", newest: ago(47 * time.Hour)}), Pass, []string{"47h old", "at most 24h apart: up to 2 days old passes"}},
		{"weekdays only, over the weekend", at("0 9 * * 1-5", storeFacts{name: "usb", newest: ago(71 * time.Hour)}), Pass, []string{"at most 3 days apart"}},
		{"a schedule that never runs", at("0 0 30 2 *", storeFacts{name: "usb", newest: ago(time.Minute)}), Fail, []string{`schedule.backup "0 0 30 2 *"`}},
		{"no targets", at(every30m), Fail, []string{"no targets"}},
	})
}

func TestGradeDrill(t *testing.T) {
	report := func(age time.Duration, result string) *drill.Summary {
		started := monday8.Add(-age - 3*time.Minute)
		return &drill.Summary{ID: idAt(started), Backup: idAt(started.Add(-time.Hour)),
			Finished: monday8.Add(-age), Result: drill.Grade(result), RTOSeconds: 180, RPOSeconds: 3600}
	}
	at := func(stores ...storeFacts) facts { return facts{now: monday8, stores: stores} }
	readErr := errors.New("list drill reports on target s3: connection refused")
	runGradeCases(t, gradeDrill, []gradeCase{
		{"never", at(storeFacts{name: "usb"}), Warn, []string{"never drilled: a backup that was never restored is a hope"}},
		{"unreadable and none found", at(storeFacts{name: "usb"}, storeFacts{name: "s3", drillErr: readErr}), Warn, []string{"no drill report found", "target s3: list drill reports"}},
		{"passed lately", at(storeFacts{name: "usb", lastDrill: report(10*day, "pass")}), Pass, []string{"10 days ago, passed: RTO 3m, RPO 1h"}},
		{"failed", at(storeFacts{name: "usb", lastDrill: report(day, "fail")}), Fail, []string{"failed: backup"}},
		{"failed long ago", at(storeFacts{name: "usb", lastDrill: report(200*day, "fail")}), Fail, nil},
		{"old", at(storeFacts{name: "usb", lastDrill: report(101*day, "pass")}), Warn, []string{"101 days ago, is older than 100 days"}},
		{"100 days is not old", at(storeFacts{name: "usb", lastDrill: report(100*day, "pass")}), Pass, nil},
		{"warnings", at(storeFacts{name: "usb", lastDrill: report(day, "warn")}), Warn, []string{"passed with warnings"}},
		{"an unknown result", at(storeFacts{name: "usb", lastDrill: report(day, "maybe")}), Warn, []string{`result "maybe"`}},
		{"the newest on any target", at(storeFacts{name: "usb", lastDrill: report(30*day, "fail")}, storeFacts{name: "s3", lastDrill: report(day, "pass")}), Pass, []string{"on s3, 24h ago, passed"}},
		{"no finish time: the ID's", at(storeFacts{name: "usb", lastDrill: func() *drill.Summary { r := report(101*day, "pass"); r.Finished = time.Time{}; return r }()}), Warn, nil},
	})
}

func TestGradeCertificates(t *testing.T) {
	backup := idAt(monday8.Add(-time.Hour))
	cert := func(path string, left time.Duration) manifest.Certificate {
		return manifest.Certificate{Path: path, NotBefore: monday8.Add(-365 * day), NotAfter: monday8.Add(left)}
	}
	at := func(certs ...manifest.Certificate) facts {
		return facts{now: monday8, certs: certFacts{backup: backup, certs: certs}}
	}
	runGradeCases(t, gradeCertificates, []gradeCase{
		{"no backup", facts{now: monday8}, Warn, []string{"no backup records certificates"}},
		{"unreadable manifest", facts{now: monday8, certs: certFacts{backup: backup, err: errors.New("invalid manifest")}}, Warn, []string{backup, "invalid manifest"}},
		{"none captured", at(), Warn, []string{"holds no certificate"}},
		{"all far off", at(cert("/etc/kubernetes/pki/ca.crt", 3000*day), cert("/etc/kubernetes/pki/apiserver.crt", 200*day)), Pass,
			[]string{"2 certificates in backup", "the first to expire, /etc/kubernetes/pki/apiserver.crt, has 200 days left (2026-09-18)"}},
		{"one within 30 days", at(cert("/etc/kubernetes/pki/ca.crt", 3000*day), cert("/etc/kubernetes/pki/apiserver.crt", 10*day)), Warn,
			[]string{"1 certificate of 2", "expire within 30 days, the first /etc/kubernetes/pki/apiserver.crt in 10 days"}},
		{"30 days is not soon", at(cert("a.crt", 30*day)), Pass, nil},
		{"expired", at(cert("a.crt", 10*day), cert("b.crt", -time.Hour), cert("c.crt", -48*time.Hour)), Fail,
			[]string{"2 certificates of 3", "expired, the first c.crt on 2026-02-28"}},
	})
}

func TestGradeKit(t *testing.T) {
	at := func(kits ...kitFacts) facts { return facts{now: monday8, version: "v1.4.0", kits: kits} }
	ok := kitFacts{name: "usb", version: "v1.4.0", files: 8}
	damaged := fmt.Errorf("target usb: %w: kit/kdr is not the file SHA256SUMS lists", kit.ErrDamaged)
	forged := fmt.Errorf("kit/SHA256SUMS on target nfs: %w: signed by SHA256:x, which is not a trusted key", manifest.ErrUntrusted)
	runGradeCases(t, gradeKit, []gradeCase{
		{"verified, this version", at(ok), Pass, []string{"the recovery kit on usb verifies: 8 files, kdr v1.4.0"}},
		{"no local target", at(), Pass, []string{"no local target"}},
		{"none yet", at(kitFacts{name: "usb", err: fmt.Errorf("target usb: %w (no kit/SHA256SUMS)", kit.ErrNoKit)}), Warn,
			[]string{"target usb holds no recovery kit"}},
		{"another version", at(kitFacts{name: "usb", version: "v1.3.9", files: 8}), Warn, []string{"holds kdr v1.3.9, not this v1.4.0"}},
		{"unreadable", at(kitFacts{name: "usb", err: errors.New("target usb: directory does not exist (is the disk mounted?)")}), Warn,
			[]string{"cannot be checked", "is the disk mounted"}},
		{"a changed binary fails", at(ok, kitFacts{name: "nfs", err: damaged}), Fail, []string{"on usb verifies", "on nfs does not verify, do not run its binary", "kit/kdr"}},
		{"a forged list fails", at(kitFacts{name: "nfs", err: forged}), Fail, []string{"not a trusted key"}},
	})
}
