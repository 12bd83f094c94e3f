package restore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kdr-io/kdr/manifest"
)

// Step states in the journal.
const (
	StateStarted = "started"
	StateDone    = "done"
)

// Journal is one node's record of a restore: which steps started and
// finished, and what they recorded. It is written before and after every
// step, atomically, so a restore killed at any point knows where it was.
type Journal struct {
	path string
	// BackupID ties the journal to one backup: a journal of another
	// restore is never resumed by mistake.
	BackupID string `json:"backupID"`
	// Revision is the revision the restore replays to (0: the set as it
	// is): a journal of a restore to another revision is not resumed
	// either, since its fetch and its database are another's.
	Revision int64                    `json:"revision,omitempty"`
	Node     string                   `json:"node"`
	Steps    map[string]*JournalEntry `json:"steps"`
	// Fetched maps each object fetch copied and checked to the sha256 it
	// checked: a resumed fetch trusts a staged copy only when it is here
	// with the manifest's sum.
	Fetched map[string]string `json:"fetched,omitempty"`
	// ManifestsAside is where stop-control-plane moved the static pod
	// manifests, and DataDirAside where move-aside moved the old etcd
	// data dir: the way back, for the operator.
	ManifestsAside string `json:"manifestsAside,omitempty"`
	DataDirAside   string `json:"dataDirAside,omitempty"`
	// NodeFiles say what configure-node did with each file that names
	// the node.
	NodeFiles []NodeFile `json:"nodeFiles,omitempty"`
	// Replayed is what the replay step did.
	Replayed *Replayed `json:"replayed,omitempty"`
}

// Replayed is what the replay step did, as its journal records it.
type Replayed struct {
	// Base is the revision of the snapshot the replay started from,
	// Revision the one it reached, Applied how many revisions it applied
	// from how many Segments.
	Base     int64 `json:"base"`
	Revision int64 `json:"revision"`
	Applied  int64 `json:"applied"`
	Segments int   `json:"segments"`
	// Proved is the HashKV the replayed keyspace matched; nil when the log
	// recorded none at or before Revision.
	Proved *manifest.LogHash `json:"proved,omitempty"`
	// Leases is how many leases the result holds, Dropped how many the
	// log's records removed.
	Leases  int `json:"leases"`
	Dropped int `json:"dropped"`
	// Seconds is how long the replay took, the copy of the snapshot
	// included.
	Seconds float64 `json:"seconds"`
}

// JournalEntry is one step's record.
type JournalEntry struct {
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// openJournal loads the node's journal of the restore of backupID to
// revision (0: the set as it is), or starts a new one.
func openJournal(path, backupID string, revision int64, node string) (*Journal, error) {
	j := &Journal{path: path, BackupID: backupID, Revision: revision, Node: node, Steps: map[string]*JournalEntry{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return j, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	if err := json.Unmarshal(data, j); err != nil {
		return nil, fmt.Errorf("journal %s is damaged (%v): move it away to start over", path, err)
	}
	if j.BackupID != backupID || j.Revision != revision || j.Node != node {
		return nil, fmt.Errorf("journal %s belongs to the restore of %s on %s, not %s on %s: finish that one, or --reset",
			path, restoreName(j.BackupID, j.Revision), j.Node, restoreName(backupID, revision), node)
	}
	if j.Steps == nil {
		j.Steps = map[string]*JournalEntry{}
	}
	return j, nil
}

// restoreName names a restore in messages.
func restoreName(backupID string, revision int64) string {
	if revision > 0 {
		return fmt.Sprintf("%s to revision %d", backupID, revision)
	}
	return backupID
}

// save writes the journal to a temp file, syncs it and renames it over
// the old one: a crash leaves the old journal or the new, never half.
func (j *Journal) save() error {
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(j.path), 0o700); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return syncDir(filepath.Dir(j.path))
}

// entry returns the step's entry, creating it.
func (j *Journal) entry(id string) *JournalEntry {
	e := j.Steps[id]
	if e == nil {
		e = &JournalEntry{}
		j.Steps[id] = e
	}
	return e
}

// fetched records an object fetch copied and checked, by its name
// within the set, with the sha256 it was checked against.
func (j *Journal) fetched(name, sum string) {
	if j.Fetched == nil {
		j.Fetched = map[string]string{}
	}
	j.Fetched[name] = sum
}

// forget drops a step's entry and what the step recorded, so that it
// runs again as if for the first time.
func (j *Journal) forget(id string) {
	delete(j.Steps, id)
	switch id {
	case StepFetch:
		j.Fetched = nil
	case StepStopControlPlane:
		j.ManifestsAside = ""
	case StepMoveAside:
		j.DataDirAside = ""
	case StepReplay:
		j.Replayed = nil
	}
}
