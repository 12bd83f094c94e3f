package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/replay"
)

// StepReplay names the step that replays the captured log to the plan's
// revision. Only a plan with a revision (Plan.ToRevision) has it.
const StepReplay = "replay"

var stepReplay = stepDef{
	id:    StepReplay,
	title: "Replay the captured log to revision {{.ToRevision}}",
	why: "The backup's full set holds etcd as it was at revision {{.SetRevision}}; its captured log holds every " +
		"revision after it. {{if .Segments}}kdr replays {{.Segments}} segment(s) of the log, revisions {{.ReplayFrom}} to " +
		"{{.ToRevision}}, into a copy of the decrypted snapshot, one revision per write transaction through etcd's own " +
		"storage code, each checked to land on the revision, create revision and version etcd reported" +
		"{{if .ProofRevision}}, and proves the result against the HashKV etcd reported at revision {{.ProofRevision}} " +
		"when the log was captured{{else}}; the log recorded no HashKV at or before {{.ToRevision}} to prove the " +
		"result against{{end}}.{{else}}The set is at revision {{.ToRevision}} already: kdr checks that its snapshot " +
		"holds no later revision.{{end}} restore-etcd then restores {{.RestoredDB}} instead of snapshot.db. " +
		"Break glass: without kdr, the full set alone restores with etcdutl to revision {{.SetRevision}}, and " +
		"everything after revision {{.SetRevision}} is lost.",
	where: EveryNode,
	commands: []string{
		"{{.ApplyReplay}}",
		"ls -l {{.RestoredDB}}",
	},
	expect: "kdr prints \"done\" for replay after logging \"replayed the captured log\" with revision={{.ToRevision}}" +
		"{{if .ProofRevision}} and proved=true{{end}}; {{.RestoredDB}} exists.",
	applies: hasReplay,
	action:  replayLog,
	check:   checkReplayed,
}

func hasReplay(p *Plan, _ Node) bool { return p.ToRevision > 0 && p.Replay != nil }

// replayedName is the staging file of the database replayed to rev.
func replayedName(rev int64) string { return "revision-" + strconv.FormatInt(rev, 10) + ".db" }

// replayLog replays the fetched segments into a fresh copy of the
// decrypted snapshot and gives the result its name only once the replay
// proved it and synced it: an interrupted replay leaves a copy that
// the next run throws away, since a replay works in place and does not
// resume. The decrypted snapshot itself is left as it was.
func replayLog(ctx context.Context, e *Env) error {
	p := e.Plan
	staging := e.staging()
	snapshot := filepath.Join(staging, snapshotFile)
	if _, err := os.Stat(snapshot); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the decrypted snapshot %s is gone: run again with --from-step %s", snapshotFile, StepDecrypt)
	} else if err != nil {
		return err
	}
	local, err := e.stagingTarget()
	if err != nil {
		return err
	}
	start := time.Now()
	tmp := filepath.Join(staging, tempPrefix+"replay.db")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	defer os.Remove(tmp)
	if err := CopyFile(ctx, snapshot, tmp); err != nil {
		return err
	}
	if err := PrepareSnapshotDB(tmp); err != nil {
		return err
	}
	segs := p.Replay.Segments
	last := int64(-1)
	res, err := replay.Replay(ctx, replay.Options{
		DB: tmp, Revision: p.ToRevision, Proof: p.Replay.Proof, Logger: e.Log,
		Source: replay.Segments(local, catalogSegments(segs), e.Identities),
		Progress: func(applied, total int64) {
			if tenth := applied * 10 / max(total, 1); tenth != last {
				last = tenth
				e.Log.Info("replaying the captured log", "applied", applied, "of", total)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("replay %s to revision %d: %w", p.BackupID, p.ToRevision, err)
	}
	if res.Revision != p.ToRevision {
		return fmt.Errorf("the replay reached revision %d, not %d", res.Revision, p.ToRevision)
	}
	rec := &Replayed{Base: res.Base, Revision: res.Revision, Applied: res.Applied, Segments: len(segs), Proved: res.Proved,
		Leases: res.Leases, Dropped: res.Dropped, Seconds: time.Since(start).Seconds()}
	// Recorded before the database takes its name: the check holds the
	// file to the record.
	if err := e.record(func(j *Journal) { j.Replayed = rec }); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(staging, replayedName(p.ToRevision))); err != nil {
		return err
	}
	return syncDir(staging)
}

// catalogSegments are a plan's segments as the chain reader gives them.
func catalogSegments(segs []Segment) []catalog.Segment {
	out := make([]catalog.Segment, len(segs))
	for i, s := range segs {
		out[i] = s.catalog()
	}
	return out
}

// checkReplayed proves the replayed database there, at the plan's
// revision, and the journal's record of a replay that reached it.
func checkReplayed(_ context.Context, e *Env) error {
	want := e.Plan.ToRevision
	if r := e.journal.Replayed; r == nil || r.Revision != want {
		return fmt.Errorf("the journal records no replay to revision %d", want)
	}
	db := filepath.Join(e.staging(), replayedName(want))
	got, err := dbRevision(db)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s holds revision %d, not %d", replayedName(want), got, want)
	}
	return nil
}

// dbRevision is the newest revision of an etcd database, read without
// writing to it: its newest key revision, or the compaction that removed
// it. bbolt reads a read-only database through its meta pages only.
func dbRevision(path string) (int64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, fmt.Errorf("%s is not an etcd database: %w", filepath.Base(path), err)
	}
	defer db.Close()
	var rev int64
	err = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(schema.Key.Name()); b != nil {
			if k, _ := b.Cursor().Last(); k != nil {
				rev = mvcc.BytesToRev(k).Main
			}
		}
		if b := tx.Bucket(schema.Meta.Name()); b != nil {
			if v := b.Get(schema.FinishedCompactKeyName); len(v) > 0 {
				rev = max(rev, mvcc.BytesToRev(v).Main)
			}
		}
		return nil
	})
	return rev, err
}

// Replayed returns what the replay step recorded in node's journal: nil
// when it has not run. Drills report it.
func (e *Env) Replayed(node string) (*Replayed, error) {
	c, err := e.forNode(node)
	if err != nil {
		return nil, err
	}
	j, err := openJournal(c.journalPath(), c.Plan.BackupID, c.Plan.ToRevision, node)
	if err != nil {
		return nil, err
	}
	return j.Replayed, nil
}
