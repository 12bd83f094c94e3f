package e2e

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// TestLogPackWhileCapturingAndRestoring: the agent captures under a
// write load and packs every 10 s while `kdr pack` packs the same chain
// from another process, and restores of random revisions run before any
// pack, beside one, and after several: each equals what the source
// served at that revision, from MinIO and from the local target.
func TestLogPackWhileCapturingAndRestoring(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1, s3: true})
	cli := w.etcd.Client()
	wr := newWriter(cli, 7)
	wr.write(t, 40)
	const packed = `  capture: {segmentPeriod: 1s, hashEvery: 2s, packEvery: 10s}
`
	spec := w.spec()
	spec.extra = "agent:\n" + packed
	cfg := writeConfig(t, spec)
	id := w.backup(t, cfg)
	base := setRevision(t, w, id)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	spec.extra = strings.Replace(captureConfig(addr, "  leaderElection: {enabled: false}\n"),
		"  capture: {segmentPeriod: 1s, hashEvery: 2s}\n", packed, 1)
	a := startAgent(t, w.env(), writeConfig(t, spec), w.host.root, "cp1", addr)

	rnd := rand.New(rand.NewPCG(17, 0))
	restoreRandom := func(when string, from, to int64) {
		t.Helper()
		n := from + rnd.Int64N(to-from+1)
		target := []string{"usb", "s3"}[rnd.IntN(2)]
		got := w.restoreAt(t, cfg, target, n)
		if d := diffKVs(got.kvs, sourceAt(t, cli, n)); d != "" {
			t.Fatalf("%s: restore to %d from %s: %s", when, n, target, d)
		}
		t.Logf("%s: revision %d from %s restored exactly", when, n, target)
	}
	capture := func(count int) int64 {
		t.Helper()
		var end int64
		for range count {
			end = wr.write(t, 20)
			time.Sleep(300 * time.Millisecond)
		}
		testenv.Eventually(t, time.Minute, "the log reaches the last write", func() bool { return a.logDurable(t) >= end })
		return end
	}

	// Before any pack: the first segments are loose.
	end := capture(3)
	if n := packObjects(t, w); n != 0 {
		t.Logf("the agent packed before the first restore (%d pack objects)", n)
	}
	restoreRandom("before a pack", base+1, end)

	// Beside a pack: `kdr pack` runs while a restore reads, and while the
	// agent captures and packs on its own schedule.
	end = capture(40) // 12 s and more: at least one 10-second interval is over
	done := make(chan result, 1)
	go func() {
		r, err := execKdr(t.Context(), w.env(), "--config", cfg, "pack")
		if err != nil {
			r.stderr += err.Error()
			r.code = -1
		}
		done <- r
	}()
	restoreRandom("beside a pack", base+1, end)
	if r := <-done; r.code != 0 {
		t.Fatalf("kdr pack:\n%s", r)
	}

	// After: more load, more packs, restores anywhere in the log.
	end = capture(40)
	wantExit(t, w.kdr(t, cfg, "pack"), 0)
	if n := packObjects(t, w); n == 0 {
		t.Fatal("no pack on the targets after two runs")
	}
	for range 4 {
		restoreRandom("after packs", base+1, end)
	}
	// The agent packed on its schedule too, beside `kdr pack`, and no run
	// failed on either target.
	for _, tg := range []string{"usb", "s3"} {
		ok := a.metric(fmt.Sprintf(`kdr_log_pack_runs_total{cluster=%q,result="ok",target=%q}`, cluster, tg))
		failed := a.metric(fmt.Sprintf(`kdr_log_pack_runs_total{cluster=%q,result="failed",target=%q}`, cluster, tg))
		if ok == 0 || failed != 0 {
			t.Errorf("the agent's pack runs on %s: %v ok, %v failed", tg, ok, failed)
		}
	}
	r := w.kdr(t, cfg, "verify", "--identity", w.identity)
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "log: revisions") {
		t.Errorf("verify does not report the log:\n%s", r)
	}
}

// packObjects counts the pack objects on the world's targets.
func packObjects(t *testing.T, w *world) int {
	t.Helper()
	n := 0
	for _, tg := range w.targets(t) {
		err := tg.List(t.Context(), cluster+"/", func(oi storage.ObjectInfo) error {
			if _, set, _, ok := manifest.SplitKey(oi.Key); ok && manifest.IsPackObject(manifest.LogPrefix(cluster, set), oi.Key) {
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}
