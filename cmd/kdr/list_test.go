package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
)

// TestListShowsTheWindow: list says what a restore reaches on each
// target, with each gap and why, in text and in JSON, where the newest
// set of the cluster carries it and every entry keeps its fields.
func TestListShowsTheWindow(t *testing.T) {
	ctx := context.Background()
	cfg, key, usb := logSetup(t, false)
	rs, _ := testenv.AgeKeys(t)
	day := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	// set 100 with 101..120 and 121..130 (its head and signature removed);
	// set 140 with
	// 141..150.
	var ids []string
	for i, s := range []struct {
		rev      int64
		segments [][2]int64
	}{{100, [][2]int64{{101, 120}, {121, 130}}}, {140, [][2]int64{{141, 150}}}} {
		created := day.Add(time.Duration(i) * time.Hour)
		log := testenv.PutSet(t, usb, key, rs, created, s.rev)
		ids = append(ids, log.Base.ID)
		var last string
		for _, seg := range s.segments {
			last = log.Append(t, testenv.Creates(seg[0], seg[1], func(r int64) time.Time { return created.Add(time.Duration(r-s.rev) * time.Second) }), nil, nil)
		}
		if i == 0 {
			for _, k := range []string{last, manifest.SignatureKey(last)} {
				if err := usb.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	out, err := kdr(t, "--config", cfg, "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &entries); err != nil || len(entries) != 2 {
		t.Fatalf("list -o json: %v, %d entries\n%s", err, len(entries), out)
	}
	for _, e := range entries {
		for _, k := range []string{"id", "cluster", "created", "revision", "dbSize", "size", "targets"} {
			if _, ok := e[k]; !ok {
				t.Errorf("an entry lacks %q:\n%s", k, out)
			}
		}
	}
	if _, ok := entries[1]["window"]; ok {
		t.Errorf("an older set carries the window:\n%s", out)
	}
	var window map[string]struct {
		From           struct{ Revision int64 } `json:"from"`
		To             struct{ Revision int64 } `json:"to"`
		ContiguousFrom struct{ Revision int64 } `json:"contiguousFrom"`
		Gaps           []struct {
			First, Last int64
			Why         string
		} `json:"gaps"`
	}
	if err := json.Unmarshal(entries[0]["window"], &window); err != nil {
		t.Fatalf("the newest entry's window: %v\n%s", err, out)
	}
	w, ok := window["usb"]
	if !ok || w.From.Revision != 100 || w.To.Revision != 150 || w.ContiguousFrom.Revision != 140 || len(w.Gaps) != 1 ||
		w.Gaps[0].First != 121 || w.Gaps[0].Last != 139 || !strings.Contains(w.Gaps[0].Why, "the log of "+ids[0]+" ends at revision 120") {
		t.Errorf("window on usb %+v, want 100..150 from 140, the gap 121..139 after the log of %s\n%s", w, ids[0], out)
	}

	out, err = kdr(t, "--config", cfg, "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"RESTORABLE FROM", "prod     usb     100 (",
		"gap in prod on usb: revisions 121..139, seen between ",
		": the log of " + ids[0] + " ends at revision 120, before set " + ids[1] + " (revision 140)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
}
