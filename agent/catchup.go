package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
)

// catchUp runs, once, the backup that fell due while no replica led: the
// tick came during a handover, or while the API server holding the Lease
// was away, or the old leader's run was cancelled when it lost the Lease.
// The targets decide, not any replica's memory: only when no trusted set
// was taken since the schedule's last time does the new leader back up,
// so a backup the old leader finished is never taken twice. With no set
// at all the schedule's first time is awaited as usual.
func (a *Agent) catchUp(ctx context.Context) {
	a.mu.Lock()
	if a.sched == nil || a.stopping {
		a.mu.Unlock()
		return
	}
	j := a.jobs["backup"]
	sched := a.sched.Entry(j.entry).Schedule
	cfg := a.cfg
	a.mu.Unlock()
	if sched == nil {
		return
	}
	newest, err := a.newestTaken(ctx, cfg)
	if err != nil {
		a.log.Info("no catch-up: the schedule decides", "why", err)
		return
	}
	due := sched.Next(newest)
	switch {
	case due.After(time.Now()):
		a.log.Debug("no catch-up: no backup fell due while no replica led", "newest", newest.UTC().Format(time.RFC3339))
		return
	case j.running.Load():
		a.log.Debug("no catch-up: a backup is running")
		return
	}
	a.log.Info("a scheduled backup fell due while no replica led: running it now",
		"due", due.UTC().Format(time.RFC3339), "newest", newest.UTC().Format(time.RFC3339))
	a.trigger(j, a.m.catchUps.Inc)
}

// newestTaken is when the least recently backed-up cluster's newest
// trusted set was taken, on whichever target holds it; an error says why
// it cannot tell: a cluster with no trusted set on any target (none
// answered, or none holds one), or a trust configuration it cannot load.
func (a *Agent) newestTaken(ctx context.Context, cfg *config.Config) (time.Time, error) {
	trust, err := fromconfig.Trust(cfg)
	if err != nil {
		return time.Time{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Agent.CheckInterval)
	defer cancel()
	var oldest time.Time
	for _, c := range cfg.Clusters {
		var newest time.Time
		var errs []error
		for _, tcfg := range cfg.Targets {
			t, err := fromconfig.Target(ctx, tcfg)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			// The sets alone: reading every captured log for the window
			// would hold the catch-up back, perhaps past the next tick.
			v, _ := a.trustedSets(ctx, t, trust, c.Name)
			if v.Error != "" {
				errs = append(errs, fmt.Errorf("target %s: %s", tcfg.Name, v.Error))
			}
			if v.Taken.After(newest) {
				newest = v.Taken
			}
		}
		if newest.IsZero() {
			return time.Time{}, fmt.Errorf("no trusted set of cluster %s on any target: %w", c.Name, errors.Join(errs...))
		}
		if oldest.IsZero() || newest.Before(oldest) {
			oldest = newest
		}
	}
	if oldest.IsZero() {
		return time.Time{}, errors.New("no cluster configured")
	}
	return oldest, nil
}
