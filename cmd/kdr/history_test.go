package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
)

// seenAt is when the test log's writer saw revision r: one second apart.
func seenAt(r int64) time.Time {
	return time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r-100) * time.Second)
}

// historyConfig writes a config, a set at revision 100 and its captured
// log of revisions 101..110 in two segments, each seen at seenAt: the
// namespace shop is created at 101, marked for deletion at 103 (as a
// custom resource's JSON says it), deleted at 105 and created again at
// 107. It returns the config and the identity file.
func historyConfig(t *testing.T) (cfg, identity string) {
	t.Helper()
	cfg, key, usb := logSetup(t, false)
	identity = filepath.Join(t.TempDir(), "operator.key")
	recipient, err := kdr(t, "keys", "generate", "--out", identity)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := crypto.ParseRecipients([]string{strings.TrimSpace(recipient)})
	if err != nil {
		t.Fatal(err)
	}
	const ns = "/registry/namespaces/shop"
	changes := map[int64]manifest.LogEvent{
		101: {Key: []byte(ns), Value: []byte("v1"), CreateRevision: 101, Version: 1},
		103: {Key: []byte(ns), Value: []byte(`{"metadata":{"deletionTimestamp":"2025-03-01T00:00:03Z"}}`), CreateRevision: 101, Version: 2},
		105: {Key: []byte(ns), Delete: true},
		107: {Key: []byte(ns), Value: []byte("again"), CreateRevision: 107, Version: 1},
	}
	log := testenv.PutSet(t, usb, key, rs, seenAt(0), 100)
	for _, seg := range [][2]int64{{101, 105}, {106, 110}} {
		var revs []manifest.LogRevision
		for r := seg[0]; r <= seg[1]; r++ {
			ev, ok := changes[r]
			if !ok {
				ev = manifest.LogEvent{Key: fmt.Appendf(nil, "/k/%d", r), Value: []byte("v"), CreateRevision: r, Version: 1}
			}
			revs = append(revs, manifest.LogRevision{Revision: r, Seen: seenAt(r), Events: []manifest.LogEvent{ev}})
		}
		log.Append(t, revs, nil, nil)
	}
	return cfg, identity
}

// TestHistoryCommand: kdr history lists each change of a key with its
// seen time, as a table or JSON, and says how to undo the last delete.
func TestHistoryCommand(t *testing.T) {
	cfg, identity := historyConfig(t)
	out, err := kdr(t, "--config", cfg, "history", "--identity", identity, "/registry/namespaces/shop")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"REVISION    SEEN                        WHAT     VERSION      SIZE  KEY",
		"101         2025-03-01T00:00:01.000000Z created        1         2  /registry/namespaces/shop",
		"103         2025-03-01T00:00:03.000000Z deleting       2        57  /registry/namespaces/shop",
		"105         2025-03-01T00:00:05.000000Z deleted        -         -  /registry/namespaces/shop",
		"107         2025-03-01T00:00:07.000000Z created        1         5  /registry/namespaces/shop",
		"4 change(s) in revisions 101..110, seen 2025-03-01T00:00:01.000000Z to 2025-03-01T00:00:10.000000Z",
		"to undo the delete of /registry/namespaces/shop at revision 105 (marked for deletion at revision 103: what it held may have gone since): kdr restore plan --revision 102",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("history:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}

	out, err = kdr(t, "--config", cfg, "history", "-i", identity, "-o", "json", "--from", "102", "--to", "2025-03-01T00:00:06Z", "/registry/")
	if err != nil {
		t.Fatal(err)
	}
	var got []catalog.Change
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("history -o json: %v\n%s", err, out)
	}
	if len(got) != 2 || got[0].Revision != 103 || got[0].What != catalog.ChangeDeleting || got[0].ValueSize != 57 ||
		got[1].Revision != 105 || got[1].What != catalog.ChangeDeleted || !got[1].Seen.Equal(seenAt(105)) {
		t.Errorf("history -o json --from 102 --to 00:00:06: %+v", got)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"/registry/"}, "--identity is required"},
		{[]string{"-i", identity, "-o", "yaml", "/registry/"}, `-o "yaml": want table or json`},
		{[]string{"-i", identity, "--from", "yesterday", "/registry/"}, `--from "yesterday": want a positive etcd revision or a time`},
		{[]string{"-i", identity, "--from", "108", "--to", "102", "/registry/"}, "--from is after --to"},
	} {
		if _, err := kdr(t, append([]string{"--config", cfg, "history"}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("history %v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestRestorePlanAt: --at picks the last revision seen at or before the
// time, and the plan says which and between which seen times; a time
// outside the log, a revision beside it or no identity is refused.
func TestRestorePlanAt(t *testing.T) {
	cfg, identity := historyConfig(t)
	base := []string{"--config", cfg, "restore", "plan", "--node-ip", "cp1=10.0.0.11", "--identity", identity}
	// Just before the delete at 105 was seen.
	at := seenAt(105).Add(-time.Microsecond).Format(time.RFC3339Nano)
	out, err := kdr(t, append(base, "--at", at)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Restore of prod to revision 104:",
		"Point in time: revision 104, the last seen at or before 2025-03-01T00:00:04.999999Z: the moment lies between revision 104, seen 2025-03-01T00:00:04.000000Z, and revision 105, seen 2025-03-01T00:00:05.000000Z",
		"--revision 104 --node-ip",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("restore plan --at %s lacks %q:\n%s", at, want, out)
		}
	}
	out, err = kdr(t, append(base, "-o", "json", "--at", "2025-03-01T00:00:05.5Z")...)
	if err != nil {
		t.Fatal(err)
	}
	var plan struct {
		ToRevision int64                `json:"toRevision"`
		At         *catalog.PointInTime `json:"at"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err)
	}
	if plan.ToRevision != 105 || plan.At == nil || plan.At.Revision != 105 || !plan.At.Seen.Equal(seenAt(105)) || !plan.At.NextSeen.Equal(seenAt(106)) {
		t.Errorf("restore plan -o json --at between two segments: toRevision %d, at %+v", plan.ToRevision, plan.At)
	}
	md, err := kdr(t, "--config", cfg, "runbook", "--node-ip", "cp1=10.0.0.11", "--identity", identity, "--at", at)
	if err != nil || !strings.Contains(md, "Point in time") || !strings.Contains(md, "revision 104, the last seen") {
		t.Errorf("runbook --at: %v\n%s", err, md)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(base, "--at", at, "--revision", "104"), "drop --revision, --backup and --before"},
		{[]string{"--config", cfg, "restore", "plan", "--at", at}, "--at needs --identity"},
		{append(base, "--at", "soon"), `--at "soon": want a time like`},
		{append(base, "--at", "2025-02-01T00:00:00Z"), "before the first revision it saw; the log on target usb holds revisions 101..110, seen from 2025-03-01T00:00:01.000000Z"},
		{append(base, "--at", "2025-03-01T00:01:00Z"), "after the last revision it saw, 110, seen 2025-03-01T00:00:10.000000Z"},
		{append(base, "--at", time.Now().Add(time.Hour).Format(time.RFC3339)), "in the future; the last revision captured, 110, was seen 2025-03-01T00:00:10.000000Z"},
		{[]string{"--config", cfg, "drill", "--identity", identity, "--no-store", "--at", at, "--revision", "random"}, "drop --revision"},
	} {
		if _, err := kdr(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
