package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"filippo.io/age"

	"github.com/kdr-io/kdr/storage"
)

// Env is what a step's action and check work with on one node. Apply
// works on a copy, so the caller's Env is left as it was and can serve
// another node of the same plan.
type Env struct {
	Plan *Plan
	// Node is the node the steps are for: Apply sets it, on its copy, to
	// the node it is asked to restore.
	Node Node
	// Root is prefixed to every host path ("/" on a real host; a temp
	// directory in tests and drills).
	Root string
	// Target holds the backup set.
	Target storage.Target
	// Identities decrypt the set.
	Identities []age.Identity
	// Runner stops and starts etcd and the control plane.
	Runner Runner
	Log    *slog.Logger
	// WaitTimeout bounds how long a check waits for etcd or the API
	// server to come up (default 5 minutes).
	WaitTimeout time.Duration
	// APIServer is the URL of this node's API server (default
	// https://<node IP>:6443).
	APIServer string

	// journal is the node's record of the restore, opened by Apply.
	journal *Journal
}

// forNode is the Env Apply runs node's steps with: a copy of e for that
// node, with every default filled in. A copy, because a caller that
// restores several nodes, or the same node twice, must not find the first
// run's node, journal or defaults in its Env.
func (e *Env) forNode(node string) (*Env, error) {
	n, err := e.Plan.node(node)
	if err != nil {
		return nil, err
	}
	c := *e
	c.Node, c.journal = n, nil
	if c.Root == "" {
		c.Root = "/"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Runner == nil {
		c.Runner = HostRunner{}
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = 5 * time.Minute
	}
	return &c, nil
}

// record changes the journal and saves it at once: what a step records
// must outlive the step being killed right after.
func (e *Env) record(change func(j *Journal)) error {
	change(e.journal)
	return e.journal.save()
}

// ApplyOptions change how Apply runs a node's steps.
type ApplyOptions struct {
	// FromStep restarts at this step, forgetting the journal of it and
	// every later step; for an operator who knows better.
	FromStep string
	// Reset forgets the whole journal first.
	Reset bool
	// Until stops after this step, for an operator who does the rest by
	// hand (or a benchmark of the restore itself).
	Until string
	// DryRun prints what would run and changes nothing.
	DryRun bool
	// Progress, if set, hears about every step as it starts and ends.
	Progress func(s Step, state string, err error)
}

// journalPath is where a node's journal lives.
func (e *Env) journalPath() string {
	return filepath.Join(e.staging(), "journal-"+e.Node.Name+".json")
}

// Apply runs node's steps of the plan, resuming from its journal. A step
// already done is skipped. An interrupted step whose check passes is
// recorded as done without running again; otherwise it runs again, and
// every destructive action is written to pick up its own partial work
// (moves check what was moved, the etcd restore builds in a scratch
// directory renamed into place at the end), so nothing is done twice.
//
// env is not changed: Apply works on its own copy (see forNode).
func Apply(ctx context.Context, env *Env, node string, o ApplyOptions) error {
	e, err := env.forNode(node)
	if err != nil {
		return err
	}
	steps, err := e.Plan.NodeSteps(node)
	if err != nil {
		return err
	}
	if o.DryRun {
		for _, s := range steps {
			if o.Progress != nil {
				o.Progress(s, "would run", nil)
			}
		}
		return nil
	}
	if o.Reset {
		if err := os.Remove(e.journalPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("reset journal: %w", err)
		}
	}
	if e.journal, err = openJournal(e.journalPath(), e.Plan.BackupID, e.Plan.ToRevision, node); err != nil {
		return err
	}
	if o.Until != "" && !slices.ContainsFunc(steps, func(s Step) bool { return s.ID == o.Until }) {
		return fmt.Errorf("--until %q: node %s has no such step", o.Until, node)
	}
	if o.FromStep != "" {
		found := false
		for _, s := range steps {
			found = found || s.ID == o.FromStep
			if found {
				e.journal.forget(s.ID)
			}
		}
		if !found {
			return fmt.Errorf("--from-step %q: node %s has no such step", o.FromStep, node)
		}
		if err := e.journal.save(); err != nil {
			return err
		}
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.run(ctx, s, o); err != nil {
			return fmt.Errorf("step %s on %s: %w", s.ID, node, err)
		}
		if s.ID == o.Until {
			return nil
		}
	}
	return nil
}

func (e *Env) run(ctx context.Context, s Step, o ApplyOptions) error {
	report := func(state string, err error) {
		if o.Progress != nil {
			o.Progress(s, state, err)
		}
	}
	entry := e.journal.entry(s.ID)
	switch entry.State {
	case StateDone:
		report("done already", nil)
		return nil
	case StateStarted:
		// Finished but not recorded, or done by hand after a failure (an
		// operator who started etcd themselves)? The check says, quickly.
		if err := e.quickCheck(ctx, s); err == nil {
			return e.finish(s, entry, report)
		}
		e.Log.Warn("resuming an interrupted step", "step", s.ID)
	}
	entry.State, entry.Started, entry.Error = StateStarted, time.Now().UTC(), ""
	if err := e.journal.save(); err != nil {
		return err
	}
	report("running", nil)
	e.Log.Info("step", "step", s.ID, "title", s.Title)
	if err := s.action(ctx, e); err != nil {
		entry.Error = err.Error()
		if serr := e.journal.save(); serr != nil {
			return errors.Join(err, serr)
		}
		report("failed", err)
		return err
	}
	if err := s.check(ctx, e); err != nil {
		err = fmt.Errorf("check failed after the step ran: %w", err)
		entry.Error = err.Error()
		if serr := e.journal.save(); serr != nil {
			return errors.Join(err, serr)
		}
		report("failed", err)
		return err
	}
	return e.finish(s, entry, report)
}

// quickCheck runs a step's check with a short wait: it asks whether the
// step is done, it does not wait for it to become done.
func (e *Env) quickCheck(ctx context.Context, s Step) error {
	quick := *e
	quick.WaitTimeout = min(e.WaitTimeout, 2*time.Second)
	return s.check(ctx, &quick)
}

func (e *Env) finish(s Step, entry *JournalEntry, report func(string, error)) error {
	entry.State, entry.Finished = StateDone, time.Now().UTC()
	if err := e.journal.save(); err != nil {
		return err
	}
	report("done", nil)
	return nil
}
