package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
)

// untrustedEntry is an element of `kdr list --all -o json`.
type untrustedEntry struct {
	ID        string   `json:"id"`
	Targets   []string `json:"targets"`
	Untrusted string   `json:"untrusted"`
}

// drillDoc is the part of a drill report these tests read.
type drillDoc struct {
	ID     string `json:"id"`
	Backup string `json:"backup"`
	Result string `json:"result"`
	Checks []struct {
		ID      string `json:"id"`
		Subject string `json:"subject"`
		Grade   string `json:"grade"`
		Reason  string `json:"reason"`
	} `json:"checks"`
}

// TestAttackPlantedSetsPassedOver plants, on both targets, sets that sort
// after the newest genuine one, each a way to pass a set off as kdr's:
// unsigned, signed by keys of the attacker's own (made with ssh-keygen and
// with kdr keys generate), carrying a genuine signature over other bytes,
// carrying an empty signature, and a genuine manifest with its signature
// copied under a later ID. Every reader passes over all of them: list,
// verify, restore plan, runbook, drill, prune and doctor work on the
// genuine newest set, and each planted set named by its ID is refused with
// the reason. Nothing is deleted.
func TestAttackPlantedSetsPassedOver(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1, s3: true})
	cfg := writeConfig(t, w.spec())
	older := w.backup(t, cfg)
	genuine := w.backup(t, cfg)
	genuineRaw := testenv.ReadFile(t, w.usbPath(genuine, "manifest.json"))
	genuineSig := testenv.ReadFile(t, w.usbPath(genuine, "manifest.json.sig"))
	created := parseManifest(t, genuineRaw).Created

	sshKey, sshPub := sshKeygen(t, "attacker")
	kdrKey, kdrPub := generateSigningKey(t, t.TempDir())

	shapes := []struct {
		name string
		// sign returns the manifest planted and its signature (nil: none).
		sign   func(edited []byte) (manifest, sig []byte)
		reason []string
	}{
		{name: "unsigned", sign: func(m []byte) ([]byte, []byte) { return m, nil },
			reason: []string{"not signed"}},
		{name: "signed by a key made with ssh-keygen", sign: func(m []byte) ([]byte, []byte) { return m, sshSign(t, sshKey, m, "kdr-manifest") },
			reason: []string{fingerprint(t, sshPub), "not a trusted key"}},
		{name: "signed by a kdr signing key no config trusts", sign: func(m []byte) ([]byte, []byte) { return m, sshSign(t, kdrKey, m, "kdr-manifest") },
			reason: []string{fingerprint(t, kdrPub), "not a trusted key"}},
		{name: "a genuine signature over another manifest", sign: func(m []byte) ([]byte, []byte) { return m, genuineSig },
			reason: []string{fingerprint(t, w.signingPub), "not over these bytes"}},
		{name: "an empty signature", sign: func(m []byte) ([]byte, []byte) { return m, []byte{} },
			reason: []string{"signature does not parse"}},
		{name: "the genuine manifest and signature under a later ID", sign: func([]byte) ([]byte, []byte) { return genuineRaw, genuineSig },
			reason: []string{"describes " + cluster + "/" + genuine}},
	}
	planted := make([]string, len(shapes))
	for i, s := range shapes {
		f := w.forge(t, genuine, created.Add(time.Minute+time.Duration(i)*time.Second), fmt.Sprintf("bad%03x", i))
		m, sig := s.sign(f.edited(t))
		extra := map[string][]byte{}
		if sig != nil {
			extra["manifest.json.sig"] = sig
		}
		f.plant(t, w, m, extra)
		w.copyToS3(t, f.id)
		planted[i] = f.id
	}
	plantedFiles := pathsUnder(t, w.usb)
	plantedKeys := w.s3Keys(t)
	isPlanted := func(line string) bool {
		return slices.ContainsFunc(planted, func(id string) bool { return strings.Contains(line, id) })
	}

	t.Run("list", func(t *testing.T) {
		if got, want := listTrusted(t, w, cfg, len(planted)), []string{genuine, older}; !slices.Equal(got, want) {
			t.Errorf("list shows %v, want the genuine sets %v alone", got, want)
		}
	})
	t.Run("list --all", func(t *testing.T) {
		r := w.kdr(t, cfg, "list", "--all", "-o", "json")
		wantExit(t, r, 0)
		var entries []untrustedEntry
		if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
			t.Fatalf("list --all -o json: %v\n%s", err, r)
		}
		byID := map[string]untrustedEntry{}
		for _, e := range entries {
			byID[e.ID] = e
		}
		for _, id := range []string{genuine, older} {
			if e, ok := byID[id]; !ok || e.Untrusted != "" {
				t.Errorf("genuine set %s: %+v, want listed and trusted", id, e)
			}
		}
		for i, id := range planted {
			e, ok := byID[id]
			if !ok || len(e.Targets) != 2 {
				t.Errorf("%s (%s): %+v, want listed on both targets", id, shapes[i].name, e)
				continue
			}
			mustContain(t, "the untrusted mark of "+shapes[i].name, e.Untrusted, shapes[i].reason...)
		}
		r = w.kdr(t, cfg, "list", "--all")
		wantExit(t, r, 0)
		for i, id := range planted {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + ` UNTRUSTED\s`).MatchString(r.stdout) {
				t.Errorf("list --all does not mark %s (%s) UNTRUSTED\n%s", id, shapes[i].name, r)
			}
		}
	})
	t.Run("verify latest", func(t *testing.T) {
		r := w.kdr(t, cfg, "verify", "latest")
		for _, target := range []string{"s3", "usb"} {
			if !regexp.MustCompile(`(?m)^ok\s+` + cluster + ` ` + genuine + ` on ` + target + ` \(`).MatchString(r.stdout) {
				t.Errorf("verify latest does not check the genuine %s on %s\n%s", genuine, target, r)
			}
		}
		// The planted sets are reported as foreign objects on the
		// target, without failing the genuine set's verification.
		wantExit(t, r, 0)
		foreign := 0
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.HasPrefix(l, "foreign ") {
				foreign++
				if !isPlanted(strings.Fields(l)[2]) || !strings.Contains(l, "not a trusted set") {
					t.Errorf("verify latest calls something other than a planted set foreign: %s", l)
				}
			}
		}
		if foreign != 2*len(planted) {
			t.Errorf("verify latest names %d foreign sets, want each of the %d planted on both targets\n%s", foreign, len(planted), r)
		}
	})
	t.Run("verify a planted set", func(t *testing.T) {
		for i, s := range shapes {
			t.Run(s.name, func(t *testing.T) {
				r := w.kdr(t, cfg, "verify", planted[i])
				wantExit(t, r, 1)
				failureLine(t, r)
				for _, target := range []string{"s3", "usb"} {
					prefix := fmt.Sprintf("FAILED  %s %s: target %s: manifest.json: not a trusted set: ", cluster, planted[i], target)
					found := false
					for _, l := range failedLines(r.stdout) {
						if strings.HasPrefix(l, prefix) {
							found = true
							mustContain(t, "the reason on "+target, l, s.reason...)
						}
					}
					if !found {
						t.Errorf("no line %q...\n%s", prefix, r)
					}
				}
			})
		}
	})
	t.Run("restore plan", func(t *testing.T) {
		r := w.kdr(t, cfg, "restore", "plan", "-o", "json")
		wantExit(t, r, 0)
		var p planDoc
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			t.Fatalf("restore plan -o json: %v\n%s", err, r)
		}
		if p.BackupID != genuine {
			t.Errorf("restore plan picks %s, want the genuine %s", p.BackupID, genuine)
		}
		for i, s := range shapes {
			r := w.kdr(t, cfg, "restore", "plan", "--backup", planted[i])
			wantExit(t, r, 1)
			mustContain(t, "restore plan of "+s.name, failureLine(t, r), append([]string{planted[i]}, s.reason...)...)
		}
	})
	t.Run("runbook", func(t *testing.T) {
		r := w.kdr(t, cfg, "runbook", "--format", "md")
		wantExit(t, r, 0)
		mustContain(t, "the runbook", r.stdout, genuine)
		if isPlanted(r.stdout) {
			t.Errorf("the runbook names a planted set\n%s", r.stdout)
		}
		for i, s := range shapes {
			r := w.kdr(t, cfg, "runbook", "--format", "md", "--backup", planted[i])
			wantExit(t, r, 1)
			mustContain(t, "runbook of "+s.name, failureLine(t, r), s.reason...)
		}
	})
	t.Run("drill", func(t *testing.T) {
		r := w.kdr(t, cfg, "drill", "--identity", w.identity, "--sandbox", t.TempDir(), "-o", "json")
		var rep drillDoc
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("drill -o json: %v\n%s", err, r)
		}
		if rep.Backup != genuine {
			t.Errorf("the drill restored %s, want the genuine %s", rep.Backup, genuine)
		}
		for i, s := range shapes {
			r := w.kdr(t, cfg, "drill", "--identity", w.identity, "--backup", planted[i])
			wantExit(t, r, 1)
			mustContain(t, "drill of "+s.name, failureLine(t, r), s.reason...)
		}
	})
	t.Run("prune", func(t *testing.T) {
		r := w.kdr(t, cfg, "prune")
		wantExit(t, r, 0)
		for _, target := range []string{"s3", "usb"} {
			for _, id := range []string{genuine, older} {
				if !strings.Contains(r.stdout, fmt.Sprintf("keep          %s %s on %s (", cluster, id, target)) {
					t.Errorf("prune does not keep %s on %s\n%s", id, target, r)
				}
			}
			for i, id := range planted {
				line := fmt.Sprintf("foreign       %s %s on %s (not counted, not removed: ", cluster, id, target)
				if !strings.Contains(r.stdout, line) {
					t.Errorf("prune does not report %s (%s) on %s as foreign\n%s", id, shapes[i].name, target, r)
				}
			}
		}
		if strings.Contains(r.stdout, "would remove") {
			t.Errorf("prune would remove something\n%s", r)
		}
	})
	t.Run("doctor", func(t *testing.T) {
		r := w.kdr(t, cfg, "doctor", "-o", "json")
		var rep doctorReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Clusters) != 1 {
			t.Fatalf("doctor -o json: %v\n%s", err, r)
		}
		seen := false
		for _, c := range rep.Clusters[0].Checks {
			if isPlanted(c.Reason) {
				t.Errorf("doctor's %s check names a planted set: %s", c.ID, c.Reason)
			}
			if c.ID != "backup-age" {
				continue
			}
			seen = true
			targets, _ := c.Evidence["targets"].(map[string]any)
			for _, target := range []string{"s3", "usb"} {
				ev, _ := targets[target].(map[string]any)
				if ev["id"] != genuine {
					t.Errorf("backup-age on %s: %v, want the genuine %s", target, ev, genuine)
				}
			}
		}
		if !seen {
			t.Errorf("no backup-age check\n%s", r)
		}
	})

	// Everything planted and everything genuine is still there: the drill
	// only added its report.
	after := pathsUnder(t, w.usb)
	for _, p := range plantedFiles {
		if !slices.Contains(after, p) {
			t.Errorf("%s was deleted from the local target", p)
		}
	}
	keys := w.s3Keys(t)
	for _, k := range plantedKeys {
		if !slices.Contains(keys, k) {
			t.Errorf("%s was deleted from the bucket", k)
		}
	}
}

// TestAttackFarFutureLatest plants sets whose IDs sort after every
// genuine one: a genuine manifest and its valid signature copied under an
// ID in 2099 (so its creation time is long before its ID's), the same
// manifest edited to claim that ID, and a zero-byte manifest.json under
// the last ID there can be. "latest" stays the genuine set everywhere.
func TestAttackFarFutureLatest(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	cfg := writeConfig(t, w.spec())
	genuine := w.backup(t, cfg)
	raw := testenv.ReadFile(t, w.usbPath(genuine, "manifest.json"))
	sig := testenv.ReadFile(t, w.usbPath(genuine, "manifest.json.sig"))

	replayed := w.forge(t, genuine, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), "099000")
	replayed.plant(t, w, raw, map[string][]byte{"manifest.json.sig": sig})
	// An old creation time under a 2099 ID.
	claimed := w.forge(t, genuine, time.Date(2099, 6, 1, 0, 0, 0, 0, time.UTC), "099001")
	claimed.manifest["created"] = parseManifest(t, raw).Created.Format(time.RFC3339Nano)
	claimed.plant(t, w, nil, map[string][]byte{"manifest.json.sig": sig})
	empty := "99991231T235959.999Z-ffffff"
	testenv.WriteFile(t, w.usbPath(empty, "manifest.json"), nil, 0o444)
	planted := []string{replayed.id, claimed.id, empty}

	if got := listTrusted(t, w, cfg, len(planted)); !slices.Equal(got, []string{genuine}) {
		t.Errorf("list shows %v, want the genuine %s alone", got, genuine)
	}
	r := w.kdr(t, cfg, "list", "--all")
	wantExit(t, r, 0)
	for _, id := range planted {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + ` UNTRUSTED\s`).MatchString(r.stdout) {
			t.Errorf("list --all does not mark %s UNTRUSTED\n%s", id, r)
		}
	}

	r = w.kdr(t, cfg, "restore", "plan", "-o", "json")
	wantExit(t, r, 0)
	var p planDoc
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("restore plan -o json: %v\n%s", err, r)
	}
	if p.BackupID != genuine {
		t.Errorf("restore plan picks %s, want the genuine %s", p.BackupID, genuine)
	}
	r = w.kdr(t, cfg, "restore", "plan", "--before", "2100-01-01T00:00:00Z", "-o", "json")
	wantExit(t, r, 0)
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.BackupID != genuine {
		t.Errorf("restore plan --before 2100 picks %s (%v), want the genuine %s", p.BackupID, err, genuine)
	}
	r = w.kdr(t, cfg, "verify", "latest")
	if !regexp.MustCompile(`(?m)^ok\s+` + cluster + ` ` + genuine + ` on usb \(`).MatchString(r.stdout) {
		t.Errorf("verify latest does not check the genuine %s\n%s", genuine, r)
	}
	for i, want := range []string{"describes " + cluster + "/" + genuine, "not over these bytes", "not signed"} {
		r := w.kdr(t, cfg, "restore", "plan", "--backup", planted[i])
		wantExit(t, r, 1)
		mustContain(t, "restore plan of "+planted[i], failureLine(t, r), want)
	}
}

// TestAttackPruneForeign plants five empty manifest.json under IDs in
// 2099 beside three genuine sets, with keepLast 3: were the planted sets
// counted, prune would keep them as the newest three and remove every
// genuine set. It keeps the genuine sets, writes no tombstone, reports
// the planted ones and deletes none of them.
func TestAttackPruneForeign(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	spec := w.spec()
	spec.keepLast = 3
	cfg := writeConfig(t, spec)
	var genuine []string
	for range 3 {
		genuine = append(genuine, w.backup(t, cfg))
	}
	var planted []string
	for i := range 5 {
		id := idAt(time.Date(2099, 1, 1+i, 0, 0, 0, 0, time.UTC), fmt.Sprintf("e0000%x", i))
		testenv.WriteFile(t, w.usbPath(id, "manifest.json"), nil, 0o444)
		planted = append(planted, id)
	}
	before := pathsUnder(t, w.usb)

	r := w.kdr(t, cfg, "prune", "--apply")
	wantExit(t, r, 0)
	for _, id := range genuine {
		if !strings.Contains(r.stdout, fmt.Sprintf("keep          %s %s on usb (", cluster, id)) {
			t.Errorf("prune does not keep the genuine %s\n%s", id, r)
		}
	}
	for _, id := range planted {
		if !regexp.MustCompile(`(?m)^foreign\s+` + cluster + ` ` + id + ` on usb \(not counted, not removed: .*not signed`).MatchString(r.stdout) {
			t.Errorf("prune does not report the planted %s as foreign and unsigned\n%s", id, r)
		}
	}
	if regexp.MustCompile(`(?m)^removed\s+` + cluster).MatchString(r.stdout) {
		t.Errorf("prune removed a set\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(w.usb, cluster, "pruned")); !os.IsNotExist(err) {
		t.Errorf("prune wrote tombstones (%v): %v", err, pathsUnder(t, w.usb))
	}
	if after := pathsUnder(t, w.usb); !slices.Equal(after, before) {
		t.Errorf("the local target changed:\nbefore %v\nafter  %v", before, after)
	}
	if got, want := listTrusted(t, w, cfg, len(planted)), []string{genuine[2], genuine[1], genuine[0]}; !slices.Equal(got, want) {
		t.Errorf("after prune list shows %v, want %v", got, want)
	}
}

// verifyOf picks out of a verify's output what it says of one set on one
// target: whether it passed, and its FAILED lines.
func verifyOf(r result, id, target string) (ok bool, failed []string) {
	ok = regexp.MustCompile(`(?m)^ok\s+` + cluster + ` ` + regexp.QuoteMeta(id) + ` on ` + target + ` \(`).MatchString(r.stdout)
	prefix := fmt.Sprintf("FAILED  %s %s: target %s: ", cluster, id, target)
	for _, l := range failedLines(r.stdout) {
		if strings.HasPrefix(l, prefix) {
			failed = append(failed, l)
		}
	}
	return ok, failed
}

// restoreApplyArgs are the arguments of `kdr restore apply` of a world's
// backup onto an empty root, on free loopback ports.
func restoreApplyArgs(t *testing.T, w *world, cfg, id, root string) []string {
	t.Helper()
	ports := distinctPorts(t)
	return []string{"--config", cfg, "restore", "apply", "--backup", id, "--node", "cp1",
		"--node-ip", fmt.Sprintf("cp1=127.0.0.1,https://127.0.0.1:%d,https://127.0.0.1:%d", ports.EtcdPeer, ports.EtcdClient),
		"--root", root, "--identity", w.identity, "--wait", "10s"}
}

// TestAttackRestoreWritesOnlyBeneathRoot crafts sets that an operator
// accepts by the hash of their manifest, whose state tries to write
// outside the restore root: through a symlink of the backup's own that
// points out of it, into a directory no state set names, and through a
// symlink where later restore steps write. Each restore fails with a
// one-line reason and nothing appears outside the root.
func TestAttackRestoreWritesOnlyBeneathRoot(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	cfg := writeConfig(t, w.spec())
	genuine := w.backup(t, cfg)
	files, idx := w.openState(t, w.usbPath(genuine, "state.tar.zst.age"))
	cron := []byte("* * * * * root touch /tmp/owned\n")

	tests := []struct {
		name  string
		craft func(canary string) ([]tarFile, stateIndex)
		// verify says whether kdr verify --identity finds the state bad
		// itself, before any restore.
		verify bool
		want   []string
		// links are the backup's own symlinks the restore may have made
		// (as data, never followed) before it failed.
		links []string
	}{
		{
			name: "the pki directory a symlink out of the root, a file below it, a cron job",
			craft: func(canary string) ([]tarFile, stateIndex) {
				f, i := without(files, idx, "etc/kubernetes/pki")
				f, i = withSymlink(f, i, "etc/kubernetes/pki", "pki", canary)
				f, i = withFile(f, i, "etc/kubernetes/pki/x", "pki", []byte("planted\n"), 0o644)
				return withFile(f, i, "etc/cron.d/x", "pki", cron, 0o644)
			},
			verify: true,
			want:   []string{"etc/kubernetes/pki/x", "symlink"},
		},
		{
			name: "a cron job among the genuine files",
			craft: func(string) ([]tarFile, stateIndex) {
				return withFile(files, idx, "etc/cron.d/x", "pki", cron, 0o644)
			},
			want: []string{"refused", "etc/cron.d/x", "no pattern"},
		},
		{
			name: "a symlink out of the root where the restore reissues certificates",
			craft: func(canary string) ([]tarFile, stateIndex) {
				f, i := without(files, idx, "etc/kubernetes/pki/etcd")
				return withSymlink(f, i, "etc/kubernetes/pki/etcd", "pki", canary)
			},
			want:  []string{"etc/kubernetes/pki/etcd", "symlink", "not follow"},
			links: []string{"etc/kubernetes/pki/etcd"},
		},
	}
	base := time.Now().Add(-time.Minute)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The canary stands for a host directory the attacker aims at,
			// with a file of its own to be overwritten.
			canary := t.TempDir()
			testenv.WriteFile(t, filepath.Join(canary, "ca.crt"), []byte("the host's own\n"), 0o644)
			root := filepath.Join(t.TempDir(), "root")
			testenv.Mkdir(t, root, 0o755)

			cf, ci := tt.craft(canary)
			stored, plainSize, plainSHA := w.sealState(t, cf, ci)
			f := w.forge(t, genuine, base.Add(time.Duration(i)*time.Second), fmt.Sprintf("c0ffe%x", i))
			f.setObject(t, "state.tar.zst.age", stored, plainSize, plainSHA)
			a := accept(f.id, f.plant(t, w, nil, nil))

			// Verify, given the hash too, reads the state as a restore
			// would. Other crafted sets on the target fail it as well, as
			// foreign objects; only this set's lines count here.
			r := w.kdr(t, cfg, "--accept-unauthenticated", a, "verify", "--identity", w.identity, f.id)
			ok, failed := verifyOf(r, f.id, "usb")
			if tt.verify {
				wantExit(t, r, 1)
				mustContain(t, "verify", strings.Join(failed, "\n"), "state.tar.zst.age", "below the symlink")
			} else if !ok || len(failed) > 0 {
				t.Errorf("verify does not pass the crafted set, whose tar agrees with its index\n%s", r)
			}

			r = runKdr(t, w.env(), append([]string{"--accept-unauthenticated", a}, restoreApplyArgs(t, w, cfg, f.id, root)...)...)
			wantExit(t, r, 1)
			line := failureLine(t, r)
			mustContain(t, "the refusal", line, tt.want...)
			t.Logf("%s", line)

			if got := pathsUnder(t, canary); !slices.Equal(got, []string{"ca.crt"}) {
				t.Errorf("the directory outside the root now holds %v", got)
			}
			if got := string(testenv.ReadFile(t, filepath.Join(canary, "ca.crt"))); got != "the host's own\n" {
				t.Errorf("the file outside the root was overwritten: %q", got)
			}
			for _, p := range pathsUnder(t, root) {
				link, _, isLink := strings.Cut(p, " -> ")
				if isLink && !slices.Contains(tt.links, link) || strings.HasPrefix(p, "etc/cron.d") {
					t.Errorf("the restore left %s under the root", p)
				}
			}
		})
	}
}

// superAdminExec is a kubeconfig whose user runs a credential plugin.
const superAdminExec = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://10.0.0.10:6443
  name: kubernetes
contexts:
- context: {cluster: kubernetes, user: kubernetes-super-admin}
  name: kubernetes-super-admin@kubernetes
current-context: kubernetes-super-admin@kubernetes
users:
- name: kubernetes-super-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: %s
      interactiveMode: Never
`

// TestAttackDrillKubeconfigExec crafts a set, accepted by hash, whose
// super-admin.conf has a user with an exec credential plugin: a script
// that would leave a marker. The drill, configured with a kube-apiserver,
// fails its apiserver check naming the refused field, and the script
// never runs.
func TestAttackDrillKubeconfigExec(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	spec := w.spec()
	spec.extra = fmt.Sprintf("drill: {kubeAPIServer: %q}\n", testenv.Binary(t, "kube-apiserver"))
	cfg := writeConfig(t, spec)
	genuine := w.backup(t, cfg)

	dir := t.TempDir()
	marker := filepath.Join(dir, "plugin-ran")
	plugin := filepath.Join(dir, "credential-plugin")
	testenv.WriteFile(t, plugin, []byte(fmt.Sprintf(`#!/bin/sh
touch %s
echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"x"}}'
`, marker)), 0o755)
	// The plugin does what it says when something runs it.
	tool(t, plugin)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the plugin left no marker when run: %v", err)
	}
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}

	files, idx := w.openState(t, w.usbPath(genuine, "state.tar.zst.age"))
	ca := testenv.ReadFile(t, filepath.Join(w.host.root, "etc/kubernetes/pki/ca.crt"))
	files, idx = withFile(files, idx, "etc/kubernetes/super-admin.conf", "kubeconfigs", []byte(fmt.Sprintf(superAdminExec, b64(ca), plugin)), 0o600)
	stored, plainSize, plainSHA := w.sealState(t, files, idx)
	f := w.forge(t, genuine, time.Now().Add(-time.Minute), "e8ec00")
	f.setObject(t, "state.tar.zst.age", stored, plainSize, plainSHA)
	a := accept(f.id, f.plant(t, w, nil, nil))

	r := w.kdr(t, cfg, "--accept-unauthenticated", a, "drill", "--backup", f.id, "--identity", w.identity, "--sandbox", t.TempDir(), "-o", "json")
	var rep drillDoc
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("drill -o json: %v\n%s", err, r)
	}
	if rep.Backup != f.id {
		t.Fatalf("the drill restored %s, want the crafted %s\n%s", rep.Backup, f.id, r)
	}
	found := false
	for _, c := range rep.Checks {
		if c.ID == "kube-apiserver" {
			found = true
			if c.Grade != "fail" {
				t.Errorf("kube-apiserver check: %s, want fail: %s", c.Grade, c.Reason)
			}
			mustContain(t, "the kube-apiserver check", c.Reason, "super-admin.conf", "exec", "refused")
			t.Logf("kube-apiserver check: %s: %s", c.Grade, c.Reason)
		}
	}
	if !found {
		t.Errorf("no kube-apiserver check in the report\n%s", r)
	}
	wantExit(t, r, 1)
	mustContain(t, "the drill's error", failureLine(t, r), "kube-apiserver")
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the kubeconfig's exec plugin ran (%v)", err)
	}
}

// TestAttackDecompressionBomb crafts a set, accepted by hash, whose etcd
// object is a small zstd frame that inflates to 2 GiB of zeros while the
// manifest says 1 MiB. verify --identity and restore apply fail with a
// one-line reason, and the restore's staging never holds a file larger
// than the manifest allows.
func TestAttackDecompressionBomb(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	cfg := writeConfig(t, w.spec())
	genuine := w.backup(t, cfg)

	const plainSize = 1 << 20
	const inflated = 2 << 30
	start := time.Now()
	frame := zstdZeros(t, inflated)
	stored := w.encrypt(t, frame)
	t.Logf("the bomb: %d stored bytes inflating to %d, made in %s", len(stored), int64(inflated), time.Since(start).Round(time.Millisecond))
	f := w.forge(t, genuine, time.Now().Add(-time.Minute), "b0b000")
	f.setObject(t, "etcd.db.zst.age", stored, plainSize, sum(make([]byte, plainSize)))
	f.manifest["etcd"].(map[string]any)["dbSize"] = plainSize - 32
	a := accept(f.id, f.plant(t, w, nil, nil))

	t.Run("verify", func(t *testing.T) {
		start := time.Now()
		r := w.kdr(t, cfg, "--accept-unauthenticated", a, "verify", "--identity", w.identity, f.id)
		t.Logf("verify ran %s", time.Since(start).Round(time.Millisecond))
		wantExit(t, r, 1)
		failureLine(t, r)
		_, failed := verifyOf(r, f.id, "usb")
		mustContain(t, "verify", strings.Join(failed, "\n"), "etcd.db.zst.age")
		t.Logf("%s", strings.Join(failed, "\n"))
	})
	t.Run("restore apply", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "root")
		testenv.Mkdir(t, root, 0o755)
		staging := filepath.Join(root, "var/lib/kdr/restore")
		// The staging directory is watched while the restore runs: a
		// file that grows past the manifest's size and is removed on
		// failure would leave no trace afterwards.
		var mu sync.Mutex
		largest, largestName := int64(0), ""
		look := func() {
			filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				if fi, err := d.Info(); err == nil {
					mu.Lock()
					if fi.Size() > largest {
						largest, largestName = fi.Size(), p
					}
					mu.Unlock()
				}
				return nil
			})
		}
		done := make(chan struct{})
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					look()
				}
			}
		}()
		start := time.Now()
		r := runKdr(t, w.env(), append([]string{"--accept-unauthenticated", a}, restoreApplyArgs(t, w, cfg, f.id, root)...)...)
		close(done)
		<-watched
		look()
		t.Logf("restore apply ran %s; the largest file in staging: %s, %d bytes", time.Since(start).Round(time.Millisecond), largestName, largest)
		wantExit(t, r, 1)
		line := failureLine(t, r)
		t.Logf("%s", line)
		mustContain(t, "the restore's error", line, "etcd.db.zst.age")
		if largest > plainSize+1 {
			t.Errorf("staging held %s of %d bytes; the manifest says the object is %d bytes", largestName, largest, plainSize)
		}
	})
}
