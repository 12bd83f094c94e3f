package e2e

import (
	"encoding/json"
	"regexp"
	"testing"
)

// doctorReport is `kdr doctor -o json`, decoded by the names of its
// contract.
type doctorReport struct {
	Clusters []struct {
		Name   string `json:"name"`
		Checks []struct {
			ID       string         `json:"id"`
			Grade    string         `json:"grade"`
			Reason   string         `json:"reason"`
			Evidence map[string]any `json:"evidence"`
		} `json:"checks"`
	} `json:"clusters"`
	Worst string `json:"worst"`
}

// TestDoctor grades a one-member TLS etcd with one local target after a
// backup: the JSON report, the text lines and the exit codes of the
// binary.
func TestDoctor(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	cfg := writeConfig(t, w.spec())
	id := w.backup(t, cfg)

	r := w.kdr(t, cfg, "doctor", "-o", "json")
	wantExit(t, r, 2)
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor -o json is not the report: %v\n%s", err, r)
	}
	if rep.Worst != "fail" || len(rep.Clusters) != 1 || rep.Clusters[0].Name != cluster {
		t.Fatalf("want one cluster %s, worst fail\n%s", cluster, r)
	}
	want := map[string]string{
		"etcd-members":        "fail",
		"etcd-hosts":          "fail",
		"etcd-quota":          "pass",
		"etcd-fragmentation":  "pass",
		"etcd-leader-changes": "pass",
		"backup-age":          "pass",
		// The capture is on by default, and no agent wrote a log.
		"log-rpo":    "fail",
		"log-window": "pass",
		// usb alone is one failure domain.
		"targets-failure-domains": "warn",
		"object-lock":             "pass",
		"drill":                   "warn",
		// The test PKI is valid for a day.
		"certificates": "warn",
		"recipients":   "warn",
		// The backup wrote it with this very binary.
		"recovery-kit": "pass",
		// This machine runs no static pods.
		"static-pods": "pass",
	}
	seen := map[string]bool{}
	for _, c := range rep.Clusters[0].Checks {
		seen[c.ID] = true
		if g, ok := want[c.ID]; !ok || c.Grade != g {
			t.Errorf("%s: %s, want %q: %s", c.ID, c.Grade, g, c.Reason)
		}
		if c.Reason == "" || c.Evidence == nil {
			t.Errorf("%s: no reason or no evidence\n%s", c.ID, r)
		}
		if c.ID == "backup-age" {
			usb, _ := c.Evidence["targets"].(map[string]any)["usb"].(map[string]any)
			if usb["id"] != id {
				t.Errorf("backup-age evidence %v does not name backup %s on usb", c.Evidence, id)
			}
		}
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("no check %s in the report\n%s", id, r)
		}
	}

	r = w.kdr(t, cfg, "doctor")
	wantExit(t, r, 2)
	for _, line := range []string{
		`fail\s+prod\s+etcd-members\s+1 voting member: no redundancy`,
		`fail\s+prod\s+etcd-hosts\s+1 member on one host \(loopback\)`,
		`pass\s+prod\s+backup-age\s+newest on usb is \S+ old`,
		`warn\s+prod\s+certificates\s+\d+ certificates of \d+ in backup ` + id + ` expire within 30 days`,
	} {
		if !regexp.MustCompile(`(?m)^` + line).MatchString(r.stdout) {
			t.Errorf("no line %q\n%s", line, r)
		}
	}
	mustContain(t, "the error line", failureLine(t, r), "doctor: 3 check(s) fail, 4 warn")

	// Not a grade: the doctor could not run.
	r = w.kdr(t, cfg, "doctor", "--cluster", "staging")
	wantExit(t, r, 3)
	mustContain(t, "the error line", failureLine(t, r), `no cluster "staging"`)
}
