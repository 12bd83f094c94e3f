package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestPackCommand: kdr pack packs the hours that are over and says so;
// a target gone (an unplugged disk) fails the command, named, in one line.
func TestPackCommand(t *testing.T) {
	cfg, key, usb := logSetup(t, false)
	rs, _ := testenv.AgeKeys(t)
	created := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	log := testenv.PutSet(t, usb, key, rs, created, 100)
	// Six segments of ten revisions, twenty minutes apart: three in the
	// first hour, which is over, three in the second, which is not.
	for i := range 6 {
		at := created.Add(time.Duration(i*20) * time.Minute)
		log.Append(t, testenv.Creates(int64(101+10*i), int64(110+10*i), func(int64) time.Time { return at }), nil, nil)
	}
	out, err := kdr(t, "--config", cfg, "pack")
	if err != nil {
		t.Fatalf("kdr pack: %v\n%s", err, out)
	}
	for _, want := range []string{
		fmt.Sprintf("packed  prod %s on usb: revisions 101..130, 3 segments", log.Base.ID),
		"prod on usb: 1 pack(s), 9 loose object(s) removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kdr pack prints no %q:\n%s", want, out)
		}
	}
	if out, err := kdr(t, "--config", cfg, "pack"); err != nil || !strings.Contains(out, "prod on usb: 0 pack(s), 0 loose object(s) removed") {
		t.Errorf("kdr pack again: %v\n%s", err, out)
	}

	dir := filepath.Join(filepath.Dir(cfg), "usb")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	out, err = kdr(t, "--config", cfg, "pack")
	if err == nil || !strings.Contains(out, "FAILED  prod on usb: ") || !strings.Contains(out, "does not exist (is the disk mounted?)") {
		t.Errorf("kdr pack with the target gone: %v\n%s", err, out)
	}
}
