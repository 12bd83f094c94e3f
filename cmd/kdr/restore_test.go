package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
)

// TestRestorePlanToARevision: restore plan and runbook take --revision,
// say which set and how much of its captured log they restore, and
// refuse a backup named beside it; a drill's --revision is a revision or
// random.
func TestRestorePlanToARevision(t *testing.T) {
	cfg, key, usb := logSetup(t, false)
	rs, _ := testenv.AgeKeys(t)
	log := testenv.PutSet(t, usb, key, rs, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), 100)
	m := log.Base
	for _, seg := range [][2]int64{{101, 110}, {111, 130}} {
		log.Append(t, testenv.Creates(seg[0], seg[1], func(r int64) time.Time { return time.Unix(r, 0) }), nil, &manifest.LogHash{Revision: seg[1], Hash: 7})
	}

	base := []string{"--config", cfg, "restore", "plan", "--node-ip", "cp1=10.0.0.11"}
	out, err := kdr(t, append(base, "--revision", "120")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Restore of prod to revision 120: full set " + m.ID + " (2025-03-01T00:00:00Z, revision 100) + 2 segments (101..120), onto cp1",
		"The log reaches revision 130; the restored etcd starts at 1000000130 or above; proved against the HashKV recorded at revision 110",
		"replay on cp1: Replay the captured log to revision 120",
		"--revision 120 --node-ip cp1=10.0.0.11,https://10.0.0.11:2380,https://10.0.0.11:2379 --node cp1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("restore plan --revision 120 lacks %q:\n%s", want, out)
		}
	}
	md, err := kdr(t, "--config", cfg, "runbook", "--node-ip", "cp1=10.0.0.11", "--revision", "130")
	if err != nil || !strings.Contains(md, "revision-130.db --skip-hash-check") {
		t.Errorf("runbook --revision 130: %v\n%s", err, md)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(base, "--revision", "120", "--backup", "latest"), "drop --backup and --before"},
		{append(base, "--revision", "131"), "the last revision restorable before it is 130"},
		{append(base, "--revision", "99"), "the oldest, " + m.ID + ", is at revision 100"},
		{[]string{"--config", cfg, "drill", "--identity", "x", "--no-store", "--revision", "soon"}, `--revision "soon": want an etcd revision or random`},
	} {
		if _, err := kdr(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
