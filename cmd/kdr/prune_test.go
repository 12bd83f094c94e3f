package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// TestPruneListsLogs: prune names each captured log it removes, with its
// revisions and why, in the dry run and with --apply, and removes them.
func TestPruneListsLogs(t *testing.T) {
	ctx := context.Background()
	cfg, key, usb := logSetup(t, true)
	rs, _ := testenv.AgeKeys(t)
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(raw), "retention: {keepLast: 1}", "retention: {keepLast: 2, keepLog: 24h}", 1)
	if edited == string(raw) {
		t.Fatal("no retention to edit in the test config")
	}
	if err := os.WriteFile(cfg, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	// Three sets an hour apart, long ago, each continued by 10 revisions.
	day := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 3 {
		created := day.Add(time.Duration(i) * time.Hour)
		rev := int64(100 + 10*i)
		log := testenv.PutSet(t, usb, key, rs, created, rev)
		ids = append(ids, log.Base.ID)
		log.Append(t, testenv.Creates(rev+1, rev+10, func(r int64) time.Time { return created.Add(time.Duration(r-rev) * time.Minute) }), nil, nil)
	}
	logLines := func(verb string) []string {
		return []string{
			fmt.Sprintf("%-13s prod %s on usb\n", verb, ids[0]),
			fmt.Sprintf("%-13s prod %s log on usb (revisions 101..110; set removed)\n", verb, ids[0]),
			fmt.Sprintf("%-13s prod %s log on usb (revisions 111..120; keepLog 24h)\n", verb, ids[1]),
		}
	}
	logged := func(i int) bool {
		n := 0
		if err := usb.List(ctx, manifest.LogPrefix("prod", ids[i]), func(storage.ObjectInfo) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	out, err := kdr(t, "--config", cfg, "prune")
	if err != nil {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	for _, want := range logLines("would remove") {
		if !strings.Contains(out, want) {
			t.Errorf("the dry run lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, ids[2]+" log") || !logged(0) || !logged(1) {
		t.Errorf("the dry run removed a log, or would remove the newest:\n%s", out)
	}

	out, err = kdr(t, "--config", cfg, "prune", "--apply")
	if err != nil {
		t.Fatalf("prune --apply: %v\n%s", err, out)
	}
	for _, want := range logLines("removed") {
		if !strings.Contains(out, want) {
			t.Errorf("prune --apply lacks %q:\n%s", want, out)
		}
	}
	if logged(0) || logged(1) || !logged(2) {
		t.Errorf("logs left: %v %v %v, want only the newest set's:\n%s", logged(0), logged(1), logged(2), out)
	}
}
