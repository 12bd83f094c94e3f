package agent

import (
	"context"
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
	newest, ok := a.newestTaken(ctx, cfg)
	if !ok {
		a.log.Info("no catch-up: no target shows a trusted set of every cluster; the schedule decides")
		return
	}
	due := sched.Next(newest)
	if due.After(time.Now()) || j.running.Load() {
		a.log.Debug("no catch-up: no backup fell due while no replica led", "newest", newest.UTC().Format(time.RFC3339),
			"running", j.running.Load())
		return
	}
	a.log.Info("a scheduled backup fell due while no replica led: running it now",
		"due", due.UTC().Format(time.RFC3339), "newest", newest.UTC().Format(time.RFC3339))
	a.trigger(j, a.m.catchUps.Inc)
}

// newestTaken is when the least recently backed-up cluster's newest
// trusted set was taken, on whichever target holds it; false when a
// cluster has none or no target answers.
func (a *Agent) newestTaken(ctx context.Context, cfg *config.Config) (time.Time, bool) {
	trust, err := fromconfig.Trust(cfg)
	if err != nil {
		return time.Time{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Agent.CheckInterval)
	defer cancel()
	var oldest time.Time
	for _, c := range cfg.Clusters {
		var newest time.Time
		for _, tcfg := range cfg.Targets {
			t, err := fromconfig.Target(ctx, tcfg)
			if err != nil {
				continue
			}
			// The sets alone: reading every captured log for the window
			// would hold the catch-up back, perhaps past the next tick.
			if v, _ := a.trustedSets(ctx, t, trust, c.Name); v.Taken.After(newest) {
				newest = v.Taken
			}
		}
		if newest.IsZero() {
			return time.Time{}, false
		}
		if oldest.IsZero() || newest.Before(oldest) {
			oldest = newest
		}
	}
	return oldest, !oldest.IsZero()
}
