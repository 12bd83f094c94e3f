package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestVerifySwappedManifest swaps the manifests of two backups on the USB
// target, as someone hiding a backup might. Each swapped set must fail
// verify, and so must the next backup, whose hash chain link names the
// manifest that is no longer there.
func TestVerifySwappedManifest(t *testing.T) {
	w := newWorld(t, worldOptions{})
	cfg := writeConfig(t, w.spec())
	var ids []string
	for range 3 {
		ids = append(ids, w.backup(t, cfg))
	}
	// Whole before the swap, so what fails below fails because of it.
	for _, id := range ids {
		wantExit(t, w.kdr(t, cfg, "verify", id), 0)
	}
	// Signatures and all: each manifest is genuine, only not where it is.
	for _, name := range []string{"manifest.json", "manifest.json.sig"} {
		first, second := w.usbPath(ids[0], name), w.usbPath(ids[1], name)
		a, b := testenv.ReadFile(t, first), testenv.ReadFile(t, second)
		for _, p := range []string{first, second} {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		testenv.WriteFile(t, first, b, 0o444)
		testenv.WriteFile(t, second, a, 0o444)
	}

	tests := []struct {
		name string
		id   string
		want []string
	}{
		{name: "first set holding the second's manifest", id: ids[0], want: []string{"manifest.json", ids[1]}},
		{name: "second set holding the first's manifest", id: ids[1], want: []string{"manifest.json", ids[0]}},
		{name: "next set, linked to the second", id: ids[2], want: []string{"manifest.json", "hash chain", ids[1]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := w.kdr(t, cfg, "verify", tt.id)
			wantExit(t, r, 1)
			failureLine(t, r)
			// Verify also walks the whole chain, so other sets' problems
			// may be listed; one line must name this set and its problem.
			found := false
			for _, line := range strings.Split(r.stdout, "\n") {
				if !strings.HasPrefix(line, "FAILED") || !strings.Contains(line, "target usb:") || !strings.Contains(line, tt.id) {
					continue
				}
				all := true
				for _, w := range tt.want {
					all = all && strings.Contains(line, w)
				}
				found = found || all
			}
			if !found {
				t.Errorf("no FAILED line names %s on usb with %q\n%s", tt.id, tt.want, r)
			}
		})
	}
}

// TestChainOfBackupsBackToBack takes backups as fast as they run, several
// within one second. IDs must sort in the order the backups ran, each
// manifest must link to the backup taken just before it, and every set
// must verify: a backup run twice in a row is not a broken chain.
func TestChainOfBackupsBackToBack(t *testing.T) {
	w := newWorld(t, worldOptions{})
	cfg := writeConfig(t, w.spec())
	const backups = 6
	var ids []string
	for range backups {
		id := w.backup(t, cfg)
		if n := len(ids); n > 0 && id <= ids[n-1] {
			t.Errorf("backup %s sorts before the one taken before it, %s", id, ids[n-1])
		}
		ids = append(ids, id)
	}
	for i, id := range ids[1:] {
		m := parseManifest(t, testenv.ReadFile(t, w.usbPath(id, "manifest.json")))
		if m.Previous == nil || m.Previous.ID != ids[i] {
			t.Errorf("backup %s links to %+v, want the one taken just before it, %s", id, m.Previous, ids[i])
		}
	}
	for _, id := range ids {
		if r := w.kdr(t, cfg, "verify", id); r.code != 0 {
			t.Errorf("verify of a backup nobody touched failed\n%s", r)
		}
	}
}

// TestVerifyLatestSeesAnOlderDeletedBackup deletes the oldest of three
// sets behind kdr's back: verifying the newest still walks the chain and
// says the second set's predecessor is gone.
func TestVerifyLatestSeesAnOlderDeletedBackup(t *testing.T) {
	w := newWorld(t, worldOptions{})
	cfg := writeConfig(t, w.spec())
	var ids []string
	for range 3 {
		ids = append(ids, w.backup(t, cfg))
	}
	dir := filepath.Dir(w.usbPath(ids[0], "manifest.json"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	r := w.kdr(t, cfg, "verify", "latest")
	wantExit(t, r, 1)
	failureLine(t, r)
	mustContain(t, "verify output", r.stdout, "target usb:", ids[1], "hash chain", ids[0])
}
