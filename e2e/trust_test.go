package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestTrustKeyRotation rotates the signing key end to end: sets written
// with key A verify while A and B are trusted; with B alone they are
// refused, named by A's fingerprint; countersigned with B, one by one,
// they verify and restore again; and a set written with B links to them.
func TestTrustKeyRotation(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	pubA := w.signingPub // the key the world's sets are written with
	keyB, pubB := generateSigningKey(t, t.TempDir())
	fpA, fpB := fingerprint(t, pubA), fingerprint(t, pubB)

	specA := w.spec()
	cfgA := writeConfig(t, specA)
	older := w.backup(t, cfgA)
	newer := w.backup(t, cfgA)

	both := w.spec()
	both.trustedKeys = []string{pubA, pubB}
	cfgBoth := writeConfig(t, both)
	onlyB := w.spec()
	onlyB.signingKey, onlyB.trustedKeys = keyB, []string{pubB}
	cfgB := writeConfig(t, onlyB)

	// verifyOK verifies ref, which must be the set id and pass whole.
	verifyOK := func(t *testing.T, cfg, ref, id string) {
		t.Helper()
		r := w.kdr(t, cfg, "verify", ref)
		wantExit(t, r, 0)
		if ok, _ := verifyOf(r, id, "usb"); !ok {
			t.Errorf("verify %s does not pass %s\n%s", ref, id, r)
		}
	}
	planID := func(t *testing.T, cfg string, args ...string) string {
		t.Helper()
		r := w.kdr(t, cfg, append([]string{"restore", "plan", "-o", "json"}, args...)...)
		wantExit(t, r, 0)
		var p planDoc
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			t.Fatalf("restore plan -o json: %v\n%s", err, r)
		}
		return p.BackupID
	}

	t.Run("A and B trusted", func(t *testing.T) {
		if got := listTrusted(t, w, cfgBoth, 0); !slices.Equal(got, []string{newer, older}) {
			t.Errorf("list shows %v, want %v", got, []string{newer, older})
		}
		verifyOK(t, cfgBoth, "latest", newer)
		verifyOK(t, cfgBoth, older, older)
	})
	t.Run("B alone trusted", func(t *testing.T) {
		if got := listTrusted(t, w, cfgB, 2); len(got) != 0 {
			t.Errorf("list shows %v, want nothing", got)
		}
		r := w.kdr(t, cfgB, "list", "--all")
		wantExit(t, r, 0)
		for _, id := range []string{newer, older} {
			if !regexp.MustCompile(`(?m)^` + id + ` UNTRUSTED\s`).MatchString(r.stdout) {
				t.Errorf("list --all does not mark %s UNTRUSTED\n%s", id, r)
			}
		}
		r = w.kdr(t, cfgB, "verify", newer)
		wantExit(t, r, 1)
		failureLine(t, r)
		mustContain(t, "verify", strings.Join(failedLines(r.stdout), "\n"), newer, "not a trusted set", fpA, "not a trusted key")
		r = w.kdr(t, cfgB, "verify", "latest")
		wantExit(t, r, 1)
		mustContain(t, "verify latest", r.stdout, "no complete backup", fpA)
		r = w.kdr(t, cfgB, "restore", "plan")
		wantExit(t, r, 1)
		mustContain(t, "restore plan", failureLine(t, r), "no complete backup", fpA)
	})

	countersign := func(t *testing.T, id string) {
		t.Helper()
		raw := testenv.ReadFile(t, w.usbPath(id, "manifest.json"))
		r := w.kdr(t, cfgB, "keys", "countersign", accept(id, raw))
		wantExit(t, r, 0)
		mustContain(t, "countersign", r.stdout, "countersigned "+cluster+" "+id+" on usb with "+fpB)
		sigs, _ := filepath.Glob(w.usbPath(id, "manifest.json.countersig-*.sig"))
		if len(sigs) != 1 {
			t.Fatalf("countersignatures beside %s: %v, want one", id, sigs)
		}
		// Plain OpenSSH accepts it with B's allowed_signers line.
		if err := sshVerify(t, pubB, "kdr-manifest", raw, testenv.ReadFile(t, sigs[0])); err != nil {
			t.Errorf("ssh-keygen refuses B's countersignature of %s: %v", id, err)
		}
	}
	t.Run("countersign with a wrong hash", func(t *testing.T) {
		r := w.kdr(t, cfgB, "keys", "countersign", older+"@sha256:"+strings.Repeat("0", 64))
		wantExit(t, r, 1)
		mustContain(t, "countersign", failureLine(t, r), "no target holds", older)
		mustContain(t, "countersign's log", r.stderr, "target skipped", sum(testenv.ReadFile(t, w.usbPath(older, "manifest.json"))))
		if sigs, _ := filepath.Glob(w.usbPath(older, "manifest.json.countersig-*")); len(sigs) > 0 {
			t.Errorf("a countersignature was stored for the wrong hash: %v", sigs)
		}
	})
	t.Run("older countersigned with B", func(t *testing.T) {
		countersign(t, older)
		if got := listTrusted(t, w, cfgB, 1); !slices.Equal(got, []string{older}) {
			t.Errorf("list shows %v, want %v", got, []string{older})
		}
		// The older set is now the newest B trusts.
		if got := planID(t, cfgB); got != older {
			t.Errorf("restore plan picks %s, want %s", got, older)
		}
		if got := planID(t, cfgB, "--backup", older); got != older {
			t.Errorf("restore plan --backup %s picks %s", older, got)
		}
		r := w.kdr(t, cfgB, "verify", older)
		if !regexp.MustCompile(`(?m)^ok\s+` + cluster + ` ` + older + ` on usb \(`).MatchString(r.stdout) {
			t.Errorf("verify does not pass %s\n%s", older, r)
		}
	})
	t.Run("newer countersigned with B", func(t *testing.T) {
		countersign(t, newer)
		if got := listTrusted(t, w, cfgB, 0); !slices.Equal(got, []string{newer, older}) {
			t.Errorf("list shows %v, want %v", got, []string{newer, older})
		}
		verifyOK(t, cfgB, "latest", newer)
		verifyOK(t, cfgB, older, older)
		if got := planID(t, cfgB); got != newer {
			t.Errorf("restore plan picks %s, want %s", got, newer)
		}
	})
	t.Run("a set written with B continues the chain", func(t *testing.T) {
		next := w.backup(t, cfgB)
		m := parseManifest(t, testenv.ReadFile(t, w.usbPath(next, "manifest.json")))
		if m.Previous == nil || m.Previous.ID != newer {
			t.Errorf("%s links to %+v, want %s", next, m.Previous, newer)
		}
		if err := sshVerify(t, pubB, "kdr-manifest", testenv.ReadFile(t, w.usbPath(next, "manifest.json")), testenv.ReadFile(t, w.usbPath(next, "manifest.json.sig"))); err != nil {
			t.Errorf("ssh-keygen refuses B's signature of %s: %v", next, err)
		}
		verifyOK(t, cfgB, "latest", next)
		// A, no longer trusted, does not see the set B wrote.
		if got := listTrusted(t, w, cfgA, 1); slices.Contains(got, next) {
			t.Errorf("a config trusting A alone lists %s, written with B", next)
		}
	})
}

// TestTrustAgent runs the agent on a schedule, with backups and drills,
// beside a planted set and planted drill reports dated 2099: its sets,
// runbooks and reports are signed so that plain OpenSSH accepts them, its
// metrics ignore what was planted, and `kdr drill` of the backup the agent
// drilled gives the same report: the same checks, with the same subjects
// and grades.
func TestTrustAgent(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	root := filepath.Join(t.TempDir(), "host")
	testenv.KubeadmInit(t, root, testenv.KubeOptions{})
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	spec := w.spec()
	spec.extra = fmt.Sprintf(`schedule: {backup: "@every 2s", prune: "@every 1h", drill: "@every 5s"}
agent: {listen: %q, checkInterval: 1s}
drill: {identityFile: %q, target: usb, sandbox: %q}
`, addr, w.identity, t.TempDir())
	cfg := writeConfig(t, spec)
	started := time.Now()

	// A genuine set to copy from, then the planted ones.
	r := runKdr(t, w.env(), "--config", cfg, "backup", "--root", root)
	wantExit(t, r, 0)
	first := backupID(t, r)
	plantedSet := w.forge(t, first, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), "099abc")
	plantedSet.plant(t, w, nil, nil)
	attackerKey, _ := sshKeygen(t, "attacker")
	plantedReports := map[string]bool{}
	for i, signed := range []bool{false, true} {
		id := idAt(time.Date(2099, 1, 1, 0, 0, i, 0, time.UTC), fmt.Sprintf("d0d00%d", i))
		plantedReports[id] = true
		report := []byte(fmt.Sprintf(`{"id": %q, "cluster": %q, "backup": %q, "backupTaken": "2099-01-01T00:00:00Z", "target": "usb",
  "started": "2099-01-01T00:00:00Z", "finished": "2099-01-01T00:01:00Z", "result": "pass", "rtoSeconds": 1, "rpoSeconds": 1,
  "verifySeconds": 1, "members": 1, "keys": 1, "checks": [], "steps": []}`, id, cluster, plantedSet.id))
		key := filepath.Join(w.usb, cluster, "drills", id+".json")
		testenv.WriteFile(t, key, report, 0o444)
		if signed {
			testenv.WriteFile(t, key+".sig", sshSign(t, attackerKey, report, "kdr-drill-report"), 0o444)
		}
	}

	a := startAgent(t, w.env(), cfg, root, "cp1", addr)
	backups := fmt.Sprintf(`kdr_backups{cluster=%q,target="usb"}`, cluster)
	drillLast := fmt.Sprintf(`kdr_drill_last_success_timestamp_seconds{cluster=%q}`, cluster)
	testenv.Eventually(t, 3*time.Minute, "backups by the agent and a successful scheduled drill", func() bool {
		return a.metric(backups) >= 3 && a.metric(drillLast) > 0
	})
	// A few more checks of the targets, each of which reads the planted
	// objects again.
	time.Sleep(3 * time.Second)

	t.Run("metrics", func(t *testing.T) {
		now := time.Now()
		for _, series := range []string{
			fmt.Sprintf(`kdr_backup_last_success_timestamp_seconds{cluster=%q,target="usb"}`, cluster),
			fmt.Sprintf(`kdr_backup_newest_timestamp_seconds{cluster=%q,target="usb"}`, cluster),
			drillLast,
		} {
			v := a.metric(series)
			if v < float64(started.Add(-time.Minute).Unix()) || v > float64(now.Add(time.Minute).Unix()) {
				t.Errorf("%s = %v (%s), want a time of this test, not of the planted objects", series, v, time.Unix(int64(v), 0).UTC())
			}
		}
		if rpo := a.metric(fmt.Sprintf(`kdr_drill_rpo_seconds{cluster=%q}`, cluster)); rpo <= 0 || rpo > now.Sub(started).Seconds()+60 {
			t.Errorf("kdr_drill_rpo_seconds = %v, want the age of a backup of this test", rpo)
		}
		manifests, _ := filepath.Glob(filepath.Join(w.usb, cluster, "*", "manifest.json"))
		if n := a.metric(backups); n < 1 || int(n) >= len(manifests) {
			t.Errorf("%s = %v with %d manifests on the target, one of them planted", backups, n, len(manifests))
		}
		if t.Failed() {
			_, body := a.get("/metrics")
			t.Logf("metrics:\n%s", body)
		}
	})

	t.Run("signatures", func(t *testing.T) {
		// A manifest is stored after its signature, so every set whose
		// manifest is there has both, while the agent goes on.
		all, _ := filepath.Glob(filepath.Join(w.usb, cluster, "*", "manifest.json"))
		var sets []string
		for _, m := range all {
			if filepath.Base(filepath.Dir(m)) != plantedSet.id {
				sets = append(sets, m)
			}
		}
		if len(sets) < 3 {
			t.Fatalf("%d sets of the agent on the target, want at least 3", len(sets))
		}
		checked := 0
		for _, m := range sets[len(sets)-3:] {
			dir, sig := filepath.Dir(m), m+".sig"
			raw := testenv.ReadFile(t, m)
			if err := sshVerify(t, w.signingPub, "kdr-manifest", raw, testenv.ReadFile(t, sig)); err != nil {
				t.Errorf("ssh-keygen refuses the agent's signature of %s: %v", dir, err)
			}
			// One namespace per kind: a manifest's signature is no runbook's.
			if err := sshVerify(t, w.signingPub, "kdr-runbook", raw, testenv.ReadFile(t, sig)); err == nil {
				t.Errorf("ssh-keygen accepts %s's manifest signature as a runbook's", dir)
			}
			if md := filepath.Join(dir, "runbook.md"); exists(md) {
				if err := sshVerify(t, w.signingPub, "kdr-runbook", testenv.ReadFile(t, md), testenv.ReadFile(t, md+".sig")); err != nil {
					t.Errorf("ssh-keygen refuses the signature of %s: %v", md, err)
				}
				checked++
			}
		}
		if checked == 0 {
			t.Errorf("no runbook beside the newest sets")
		}
		reports := agentReports(t, w, plantedReports)
		if len(reports) == 0 {
			t.Fatal("no drill report by the agent")
		}
		for _, p := range reports {
			if err := sshVerify(t, w.signingPub, "kdr-drill-report", testenv.ReadFile(t, p), testenv.ReadFile(t, p+".sig")); err != nil {
				t.Errorf("ssh-keygen refuses the signature of %s: %v", p, err)
			}
		}
		// The planted set's manifest has no signature OpenSSH accepts.
		if exists(w.usbPath(plantedSet.id, "manifest.json.sig")) {
			t.Errorf("the planted set %s got a signature", plantedSet.id)
		}
	})

	// The agent stops, so that the drill below is the only one.
	a.cmd.Process.Kill()
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not exit after SIGKILL")
	}
	a.exited <- nil // for the harness's cleanup

	t.Run("kdr drill reports what the agent reported", func(t *testing.T) {
		reports := agentReports(t, w, plantedReports)
		if len(reports) == 0 {
			t.Fatal("no drill report by the agent")
		}
		var agent drillDoc
		if err := json.Unmarshal(testenv.ReadFile(t, reports[len(reports)-1]), &agent); err != nil {
			t.Fatal(err)
		}
		if agent.Backup == plantedSet.id || plantedReports[agent.ID] {
			t.Fatalf("the agent drilled a planted set: %+v", agent)
		}
		r := w.kdr(t, cfg, "drill", "--backup", agent.Backup, "--identity", w.identity, "-o", "json")
		var printed drillDoc
		if err := json.Unmarshal([]byte(r.stdout), &printed); err != nil {
			t.Fatalf("drill -o json: %v\n%s", err, r)
		}
		var cli drillDoc
		if err := json.Unmarshal(testenv.ReadFile(t, filepath.Join(w.usb, cluster, "drills", printed.ID+".json")), &cli); err != nil {
			t.Fatalf("the stored report of drill %s: %v", printed.ID, err)
		}
		if cli.Backup != agent.Backup || cli.Result != agent.Result {
			t.Errorf("kdr drill: backup %s, result %s; the agent: backup %s, result %s", cli.Backup, cli.Result, agent.Backup, agent.Result)
		}
		checks := func(d drillDoc) []string {
			var out []string
			for _, c := range d.Checks {
				out = append(out, fmt.Sprintf("%s %s %s", c.Grade, c.ID, c.Subject))
			}
			return out
		}
		t.Logf("the agent's drill %s and kdr drill %s of backup %s:\n  %s", agent.ID, cli.ID, agent.Backup, strings.Join(checks(agent), "\n  "))
		if a, c := checks(agent), checks(cli); !slices.Equal(a, c) || len(a) == 0 {
			t.Errorf("the checks differ:\nagent's drill %s:\n  %s\nkdr drill %s:\n  %s",
				agent.ID, strings.Join(a, "\n  "), cli.ID, strings.Join(c, "\n  "))
		}
	})
}

// agentReports lists the drill reports on the local target, oldest first,
// but for the planted ones.
func agentReports(t *testing.T, w *world, planted map[string]bool) []string {
	t.Helper()
	all, _ := filepath.Glob(filepath.Join(w.usb, cluster, "drills", "*.json"))
	var out []string
	for _, p := range all {
		if !planted[strings.TrimSuffix(filepath.Base(p), ".json")] {
			out = append(out, p)
		}
	}
	return out
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
