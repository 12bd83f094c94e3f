package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// health is what the agent last learnt of its targets and their backups.
type health struct {
	mu      sync.Mutex
	checked bool
	targets map[string]*targetHealth
	// sets is cluster -> target -> what the target holds.
	sets map[string]map[string]setsView
	// manifests is the newest backup ID per cluster whose manifest was
	// read into the metrics.
	manifests map[string]string
	// chains keeps what each set's log reaches, so a check reads only
	// the sets whose objects changed since the last.
	chains catalog.ChainCache
}

type targetHealth struct {
	// pingErr is the last check's error; backupErr the last backup's on
	// this target, kept until a backup lands there again.
	pingErr, backupErr error
	checked            time.Time
}

func (t *targetHealth) err() error { return errors.Join(t.pingErr, t.backupErr) }

// setsView is what the status page shows of one cluster on one target.
type setsView struct {
	Backups int       `json:"backups"`
	Newest  string    `json:"newest,omitempty"`
	Taken   time.Time `json:"taken,omitzero"`
	Oldest  string    `json:"oldest,omitempty"`
	Error   string    `json:"error,omitempty"`
	// Window is what a restore from the target reaches, as the last
	// check read it; WindowError why the check could not.
	Window      *catalog.Window `json:"window,omitempty"`
	WindowError string          `json:"windowError,omitempty"`
}

func (h *health) target(name string) *targetHealth {
	if h.targets == nil {
		h.targets = map[string]*targetHealth{}
	}
	if h.targets[name] == nil {
		h.targets[name] = &targetHealth{}
	}
	return h.targets[name]
}

func (h *health) backupFailed(target string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.target(target).backupErr = err
}

func (h *health) backupStored(target string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.target(target).backupErr = nil
}

// sawManifest records the newest manifest read into the metrics, and says
// whether id is newer than the one there: a check that read an older one
// while a backup recorded a newer one must not set the figures back.
func (h *health) sawManifest(cluster, id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.manifests == nil {
		h.manifests = map[string]string{}
	}
	if id <= h.manifests[cluster] {
		return false
	}
	h.manifests[cluster] = id
	return true
}

// standby forgets the backup errors of the runs this replica made: the
// leader's backups now say how the targets are, and a standby must not
// stay unready on a failure it can no longer clear.
func (h *health) standby() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.targets {
		t.backupErr = nil
	}
}

// unready lists why the agent should not count as ready, or nothing.
func (a *Agent) unready() []string {
	var why []string
	if !a.leaderKnown.Load() {
		why = append(why, "no leader known yet: the API server holding the lease has not answered")
	}
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	if !a.health.checked {
		return append(why, "targets not checked yet")
	}
	for _, t := range a.config().Targets {
		if th := a.health.targets[t.Name]; th != nil && th.err() != nil {
			why = append(why, fmt.Sprintf("target %s: %v", t.Name, th.err()))
		}
	}
	return why
}

// checkLoop refreshes the targets' health and counts now and then, so a
// standby and a quiet schedule report them too.
func (a *Agent) checkLoop(ctx context.Context) {
	for {
		a.reloadIfChanged()
		cfg := a.config()
		a.refresh(ctx, cfg)
		select {
		case <-ctx.Done():
			return
		case <-time.After(cfg.Agent.CheckInterval):
		}
	}
}

// refresh pings every target and reads what backups it holds: count,
// oldest and newest per cluster, and the window a restore reaches. The
// newest backup's manifest, when it is one the agent has not read, gives
// the etcd and certificate figures.
func (a *Agent) refresh(parent context.Context, cfg *config.Config) {
	// A target that does not answer within the interval counts as down.
	ctx, cancel := context.WithTimeout(parent, cfg.Agent.CheckInterval)
	defer cancel()
	sets := map[string]map[string]setsView{}
	for _, c := range cfg.Clusters {
		sets[c.Name] = map[string]setsView{}
	}
	trust, terr := fromconfig.Trust(cfg)
	// reachable holds the targets opened and pinged here, for the reads
	// that follow.
	reachable := map[string]storage.Target{}
	for _, tcfg := range cfg.Targets {
		t, err := fromconfig.Target(ctx, tcfg)
		if err == nil {
			err = t.Ping(ctx)
		}
		if parent.Err() != nil {
			return // shutting down: leave the last figures alone
		}
		a.health.mu.Lock()
		th := a.health.target(tcfg.Name)
		th.pingErr, th.checked = err, time.Now()
		up := th.err() == nil
		a.health.mu.Unlock()
		a.m.targetUp.WithLabelValues(tcfg.Name).Set(boolFloat(up))
		if err == nil {
			reachable[tcfg.Name] = t
		}
		for _, c := range cfg.Clusters {
			v := setsView{}
			switch {
			case terr != nil:
				v.Error = terr.Error()
			case err == nil:
				v = a.countSets(ctx, t, trust, c.Name)
			default:
				v.Error = err.Error()
			}
			sets[c.Name][tcfg.Name] = v
		}
	}
	a.health.mu.Lock()
	a.health.sets, a.health.checked = sets, true
	seen := maps.Clone(a.health.manifests)
	a.health.mu.Unlock()
	if terr != nil {
		return
	}
	a.readNewestManifests(ctx, trust, reachable, sets, seen)
	if tcfg, err := fromconfig.PickTarget(cfg, cfg.Drill.Target); err == nil && reachable[tcfg.Name] != nil {
		a.readDrills(ctx, cfg, trust, reachable[tcfg.Name])
	}
}

// readDrills exports the newest successful drill of each cluster stored
// on the drill target, so the figures survive a restart and reach a
// standby.
func (a *Agent) readDrills(ctx context.Context, cfg *config.Config, trust *manifest.Trust, t storage.Target) {
	for _, c := range cfg.Clusters {
		hist, err := drill.History(ctx, t, trust, c.Name)
		if err != nil {
			continue
		}
		if i := slices.IndexFunc(hist, func(s drill.Summary) bool { return s.Result != drill.Fail }); i >= 0 {
			a.recordDrill(c.Name, hist[i])
		}
		// Most drills restore a set as it is: the replay time is the
		// newest that replayed a log.
		if i := slices.IndexFunc(hist, func(s drill.Summary) bool { return s.Result != drill.Fail && s.Replay != nil }); i >= 0 {
			a.m.drillReplay.WithLabelValues(c.Name).Set(hist[i].Replay.Seconds)
		}
	}
}

// countSets exports one cluster's trusted sets on one target, and the
// window they and their logs make. Only a set whose manifest a trusted
// key signed counts, so a planted set far in the future cannot keep the
// backup-age alert quiet. A manifest verified once is remembered by key,
// so a check reads only new sets.
func (a *Agent) countSets(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string) setsView {
	v, all := a.trustedSets(ctx, t, trust, cluster)
	if v.Error != "" {
		return v
	}
	w, err := catalog.ReadWindow(ctx, t, trust, cluster, catalog.WindowOptions{Sets: all, Cache: &a.health.chains})
	switch {
	case errors.Is(err, catalog.ErrNoBackup):
		a.m.forgetWindow(cluster, t.Name())
	case err != nil:
		// The last figures stand: the target's health says it is down.
		v.WindowError = err.Error()
	default:
		v.Window = w
		a.m.recordWindow(w)
	}
	return v
}

// trustedSets counts the trusted complete sets of cluster on t, without
// the window: what a catch-up needs, at once.
func (a *Agent) trustedSets(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string) (setsView, []catalog.Set) {
	all, err := catalog.Sets(ctx, t, cluster)
	if err != nil {
		return setsView{Error: err.Error()}, nil
	}
	return a.countTrusted(ctx, t, trust, cluster, all), all
}

// countTrusted counts the trusted complete sets among all.
func (a *Agent) countTrusted(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string, all []catalog.Set) setsView {
	var v setsView
	var oldest, newest time.Time
	for _, s := range all {
		if !s.Complete || !a.trusted(ctx, t, trust, s) {
			continue
		}
		taken, err := manifest.IDTime(s.ID)
		if err != nil {
			continue
		}
		v.Backups++
		if oldest.IsZero() || taken.Before(oldest) {
			oldest, v.Oldest = taken, s.ID
		}
		if taken.After(newest) {
			newest, v.Newest = taken, s.ID
		}
	}
	v.Taken = newest
	a.m.backups.WithLabelValues(cluster, t.Name()).Set(float64(v.Backups))
	if v.Backups > 0 {
		a.m.oldest.WithLabelValues(cluster, t.Name()).Set(float64(oldest.Unix()))
		a.m.newest.WithLabelValues(cluster, t.Name()).Set(float64(newest.Unix()))
		a.m.lastSuccess.WithLabelValues(cluster, t.Name()).Set(float64(newest.Unix()))
	}
	return v
}

// readNewestManifests loads the newest manifest of each cluster when the
// metrics do not show it yet: after a restart, or a backup by another
// replica.
func (a *Agent) readNewestManifests(ctx context.Context, trust *manifest.Trust, reachable map[string]storage.Target, sets map[string]map[string]setsView, seen map[string]string) {
	for cluster, byTarget := range sets {
		var newest setsView
		var from string
		for name, v := range byTarget {
			if v.Newest > newest.Newest {
				newest, from = v, name
			}
		}
		t := reachable[from]
		if newest.Newest <= seen[cluster] || t == nil {
			continue
		}
		m, _, err := catalog.LoadManifest(ctx, t, trust, cluster, newest.Newest)
		if err != nil {
			a.log.Warn("newest manifest unreadable", "cluster", cluster, "target", from, "backup", newest.Newest, "err", err)
			continue
		}
		a.recordManifest(m)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// maxVerified bounds the memory of verified sets.
const maxVerified = 10000

// trusted reports whether a set's manifest verifies, from memory when it
// did before under the same key and trusted keys.
func (a *Agent) trusted(ctx context.Context, t storage.Target, trust *manifest.Trust, s catalog.Set) bool {
	key := strings.Join(append([]string{t.Name(), s.Cluster, s.ID}, trust.Fingerprints()...), "/")
	a.verifiedMu.Lock()
	ok := a.verified[key]
	a.verifiedMu.Unlock()
	if ok {
		return true
	}
	_, _, err := catalog.LoadManifest(ctx, t, trust, s.Cluster, s.ID)
	if err != nil {
		if catalog.IsForeign(err) {
			a.log.Warn("foreign set on target: not counted", "cluster", s.Cluster, "target", t.Name(), "backup", s.ID, "err", err)
		}
		return false
	}
	a.verifiedMu.Lock()
	if a.verified == nil || len(a.verified) > maxVerified {
		a.verified = map[string]bool{} // pruned sets would pile up
	}
	a.verified[key] = true
	a.verifiedMu.Unlock()
	return true
}
