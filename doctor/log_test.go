package doctor

import (
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

// logWindow is a window on a target from a set at revision 100 created
// from ago, whose log reaches revision 500 seen to ago; a cut (not 0)
// makes a gap before a set at revision 400, created cut ago.
func logWindow(from, to, cut time.Duration) *catalog.Window {
	at := func(rev int64, ago time.Duration) catalog.Point {
		return catalog.Point{Revision: rev, Time: monday8.Add(-ago)}
	}
	w := &catalog.Window{Cluster: "prod", From: at(100, from), To: at(500, to), Contiguous: at(100, from), LogFrom: &catalog.Point{Revision: 101, Time: monday8.Add(-from)}, Gaps: []catalog.Gap{}}
	if cut > 0 {
		w.Gaps = append(w.Gaps, catalog.Gap{First: 300, Last: 399, Why: "the log of X ends at revision 299, before set Y (revision 400)"})
		w.Contiguous = at(400, cut)
	}
	return w
}

func captureConfig(on bool, rpo, window time.Duration) config.Capture {
	return config.Capture{Enabled: &on, RPO: rpo, Window: window}
}

func TestGradeLogRPO(t *testing.T) {
	at := func(c config.Capture, stores ...storeFacts) facts {
		return facts{now: monday8, capture: c, stores: stores}
	}
	on := captureConfig(true, time.Minute, 0)
	fresh := logWindow(day, 20*time.Second, 0)
	noLog := logWindow(day, time.Hour, 0)
	noLog.LogFrom = nil
	broken := logWindow(day, 5*time.Minute, 0)
	broken.Broken = &catalog.Problem{Target: "usb", Object: "prod/X/log/00000000000000000501.json", Reason: "signed by an unknown key"}
	runGradeCases(t, gradeLogRPO, []gradeCase{
		{"fresh", at(on, storeFacts{name: "usb", window: fresh}), Pass,
			[]string{"the log on usb reaches revision 500, seen 20s ago", "agent.capture.rpo 1m: up to 1m old passes, up to 10m warns"}},
		{"late warns", at(on, storeFacts{name: "usb", window: logWindow(day, 3*time.Minute, 0)}), Warn, []string{"seen 3m ago"}},
		{"ten times late warns", at(on, storeFacts{name: "usb", window: logWindow(day, 10*time.Minute, 0)}), Warn, nil},
		{"stopped fails", at(on, storeFacts{name: "usb", window: logWindow(day, 11*time.Minute, 0)}), Fail, []string{"seen 11m ago"}},
		{"a broken log says where", at(on, storeFacts{name: "usb", window: broken}), Warn, []string{"and stops there: target usb: prod/X/log/00000000000000000501.json: signed by an unknown key"}},
		{"no log fails", at(on, storeFacts{name: "usb", window: noLog}), Fail, []string{"target usb holds no captured log: is kdr agent running"}},
		{"no backup fails", at(on, storeFacts{name: "usb"}), Fail, []string{"target usb holds no complete backup"}},
		{"an unreadable log fails", at(on, storeFacts{name: "usb", windowErr: errors.New("list prod/ on target usb: connection refused")}), Fail,
			[]string{"the log on usb cannot be read: list prod/"}},
		{"the worst target counts", at(on, storeFacts{name: "usb", window: fresh}, storeFacts{name: "s3", err: errors.New("connection refused")}), Fail,
			[]string{"reaches revision 500", "target s3 cannot be listed"}},
		{"a longer objective", at(captureConfig(true, 15*time.Minute, 0), storeFacts{name: "usb", window: logWindow(day, 11*time.Minute, 0)}), Pass, nil},
		{"capture off", at(captureConfig(false, time.Minute, 0), storeFacts{name: "usb", window: noLog}), Pass, []string{"agent.capture is off"}},
		{"no targets", at(on), Fail, []string{"no targets"}},
	})
}

func TestGradeLogWindow(t *testing.T) {
	at := func(window time.Duration, stores ...storeFacts) facts {
		return facts{now: monday8, capture: captureConfig(true, time.Minute, window), stores: stores}
	}
	whole := logWindow(8*day, 10*time.Second, 0)
	cut := logWindow(8*day, 10*time.Second, 2*time.Hour)
	runGradeCases(t, gradeLogWindow, []gradeCase{
		{"no promise", at(0, storeFacts{name: "usb", window: cut}), Pass,
			[]string{"no window promised (agent.capture.window): on usb every revision from 400 to 500 restores (2h)"}},
		{"kept", at(7*day, storeFacts{name: "usb", window: whole}), Pass,
			[]string{"on usb every revision from 100 to 500 restores (7 days)", "agent.capture.window promises 7 days"}},
		{"cut short by a gap", at(7*day, storeFacts{name: "usb", window: cut}), Warn,
			[]string{"from 400 to 500 restores (2h)", "after a gap at 300..399: the log of X ends at revision 299"}},
		{"not yet as long", at(7*day, storeFacts{name: "usb", window: logWindow(time.Hour, 0, 0)}), Warn, []string{"restores (1h)"}},
		{"no backup warns", at(7*day, storeFacts{name: "usb"}), Warn, []string{"target usb holds no complete backup"}},
		{"no backup, no promise", at(0, storeFacts{name: "usb"}), Pass, nil},
		{"the worst target counts", at(time.Hour, storeFacts{name: "usb", window: whole}, storeFacts{name: "s3", window: logWindow(30*time.Minute, 0, 0)}), Warn,
			[]string{"on usb", "on s3 every revision from 100 to 500 restores (30m)"}},
		{"no targets", at(time.Hour), Warn, []string{"no targets"}},
	})
}

// TestRunLog grades a real captured log on a target: fresh, so the RPO
// passes, and 10 minutes long, shorter than the promised window, which
// warns.
func TestRunLog(t *testing.T) {
	ctx := t.Context()
	usb := localTarget(t, "usb")
	tg, err := storage.NewLocal("usb", usb.Local.Path)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Millisecond)
	m := &manifest.Manifest{FormatVersion: manifest.FormatVersion, KdrVersion: "test", ID: idAt(created),
		Cluster: testCluster, Created: created, Completed: created.Add(time.Second), Node: "cp1", Etcd: manifest.Etcd{Revision: 100, DBSize: 1 << 20},
		Objects: []manifest.Object{{Name: manifest.EtcdObject, Kind: manifest.KindEtcdSnapshot,
			PlainSize: 1 << 20, PlainSHA256: strings.Repeat("a", 64), Size: 1 << 19, SHA256: strings.Repeat("b", 64)}}}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := manifest.PutSigned(ctx, tg, manifest.Key(testCluster, m.ID, manifest.ManifestObject), raw, manifest.NamespaceManifest, testSigner, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rs, _ := testenv.AgeKeys(t)
	log := &testenv.CapturedLog{Target: tg, Key: &testenv.SigningKey{Signer: testSigner}, Recipients: rs, Base: m, BaseSum: manifest.Sum(raw)}
	log.Append(t, []manifest.LogRevision{{Revision: 101, Seen: time.Now().UTC(), Events: []manifest.LogEvent{{Key: []byte("/k"), Value: []byte("v"), CreateRevision: 101, Version: 1}}}}, nil, nil)

	cfg := newConfig(t, []string{fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))}, usb)
	cfg.Clusters[0].Etcd.DialTimeout = 500 * time.Millisecond
	// Objectives far from the test's own duration: no timed assertion.
	cfg.Agent.Capture.RPO, cfg.Agent.Capture.Window = time.Hour, 24*time.Hour
	run(t, cfg, map[string]want{
		"backup-age": {Pass, []string{"newest on usb is"}},
		"log-rpo":    {Pass, []string{"the log on usb reaches revision 101, seen", "agent.capture.rpo 1h"}},
		"log-window": {Warn, []string{"on usb every revision from 100 to 101 restores (10m)", "promises 24h"}},
	})
}
