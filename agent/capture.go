package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/capture"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
)

// Pauses of the capture loop.
const (
	// lostPause follows a head another writer took: the other writer is
	// storing the chain's end, which the next run continues.
	lostPause = time.Second
	// retryPause grows from this after failures, up to maxRetryPause.
	retryPause    = 5 * time.Second
	maxRetryPause = 5 * time.Minute
)

// captureLoop keeps one capture per cluster running while this agent
// leads and the config has the capture on. A lost lease cancels the work
// context and with it the captures; a reload restarts them with the new
// config.
func (a *Agent) captureLoop(ctx context.Context) {
	type running struct {
		cfg    *config.Config
		cancel context.CancelFunc
		done   chan struct{}
	}
	runs := map[string]*running{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		a.mu.Lock()
		work, cfg, stopping := a.work, a.cfg, a.stopping
		a.mu.Unlock()
		for name, r := range runs {
			select {
			case <-r.done:
				delete(runs, name)
				continue
			default:
			}
			if r.cfg != cfg || stopping || !cfg.Agent.Capture.On() {
				r.cancel()
			}
		}
		if a.leader.Load() && !stopping && cfg.Agent.Capture.On() {
			for _, c := range cfg.Clusters {
				if runs[c.Name] != nil {
					continue
				}
				cctx, cancel := context.WithCancel(work)
				r := &running{cfg: cfg, cancel: cancel, done: make(chan struct{})}
				runs[c.Name] = r
				go func() {
					defer close(r.done)
					a.captureCluster(cctx, cfg, c)
				}()
			}
		}
		select {
		case <-ctx.Done():
			for _, r := range runs {
				r.cancel()
				<-r.done
			}
			return
		case <-tick.C:
		}
	}
}

// captureCluster runs one cluster's capture until ctx ends.
func (a *Agent) captureCluster(ctx context.Context, cfg *config.Config, c config.Cluster) {
	log := a.log.With("cluster", c.Name)
	ends := &targetEnds{}
	cp, err := a.newCapture(ctx, cfg, c, ends)
	if err != nil {
		log.Error("no capture of the log", "err", err)
		a.m.captureFailures.WithLabelValues(c.Name, "", reasonConfig).Inc()
		return
	}
	a.setCapture(c.Name, cp)
	defer a.setCapture(c.Name, nil)
	targets := make([]string, len(cfg.Targets))
	for i, t := range cfg.Targets {
		targets[i] = t.Name
	}
	stopGauges := a.captureGauges(c.Name, cp, targets, ends)
	defer stopGauges()
	pause := retryPause
	durable := cp.Status().Durable
	for ctx.Err() == nil {
		err := cp.Run(ctx)
		if d := cp.Status().Durable; d > durable {
			// It got somewhere since the last failure: that one is over,
			// and a new one waits the shortest pause again.
			durable, pause = d, retryPause
		}
		wait := time.Duration(0)
		switch {
		case err == nil:
			pause = retryPause
		case errors.Is(err, manifest.ErrLost):
			log.Warn("another writer holds the log's end: continuing after it", "err", err)
			wait = lostPause
		case errors.Is(err, capture.ErrNoBase):
			log.Info("the log waits for a full set", "err", err)
			wait, pause = pause, min(2*pause, maxRetryPause)
		case errors.Is(err, capture.ErrNeedFullSet):
			log.Warn("the log cannot go on: a full backup starts a new chain", "err", err)
			a.fullSetNow(c.Name, err.Error())
			wait, pause = pause, min(2*pause, maxRetryPause)
		default:
			log.Error("capture stopped", "err", err)
			a.m.captureFailures.WithLabelValues(c.Name, "", reasonEtcd).Inc()
			wait, pause = pause, min(2*pause, maxRetryPause)
		}
		cp.Pause(ctx, wait)
	}
}

func (a *Agent) newCapture(ctx context.Context, cfg *config.Config, c config.Cluster, ends *targetEnds) (*capture.Capture, error) {
	env, err := action.Load(ctx, cfg, a.o.ConfigPath, "", a.log)
	if err != nil {
		return nil, err
	}
	rs, err := fromconfig.Recipients(cfg)
	if err != nil {
		return nil, err
	}
	signer, err := env.Signer()
	if err != nil {
		return nil, err
	}
	so, err := fromconfig.Backup(c, rs, signer, env.Trust, env.Targets)
	if err != nil {
		return nil, err
	}
	cc := cfg.Agent.Capture
	return capture.New(capture.Options{
		Cluster: c.Name, Etcd: so.Etcd, Targets: env.Targets, Recipients: rs, Signer: signer, Trust: env.Trust,
		Writer: a.o.Identity, KdrVersion: so.KdrVersion,
		Period: cc.SegmentPeriod, MaxBytes: cc.SegmentMiB << 20, HashEvery: cc.HashEvery,
		NeedFullSet: func(reason string) { a.fullSetNow(c.Name, reason) },
		Stored: func(target string, h *manifest.SegmentHead, n int64) {
			a.m.segments.WithLabelValues(c.Name, target).Inc()
			a.m.segmentBytes.WithLabelValues(c.Name, target).Add(float64(n))
			ends.stored(target, h)
		},
		Failed: func(target string, err error) {
			reason := reasonTarget
			if errors.Is(err, manifest.ErrLost) {
				reason = reasonLost
			}
			a.m.captureFailures.WithLabelValues(c.Name, target, reason).Inc()
		},
		Logger: a.log,
	})
}

// fullSetNow answers a log that cannot go on with a full backup, which
// starts a new chain; a backup already running is that answer.
func (a *Agent) fullSetNow(cluster, reason string) {
	a.m.fullSetRequests.WithLabelValues(cluster).Inc()
	a.log.Warn("full backup now: the log needs a new chain", "cluster", cluster, "reason", reason)
	go a.trigger(a.jobs["backup"], nil)
}

// setCapture records the running capture of a cluster, which a backup
// tells of its new set.
func (a *Agent) setCapture(cluster string, cp *capture.Capture) {
	a.capMu.Lock()
	defer a.capMu.Unlock()
	if cp == nil {
		delete(a.captures, cluster)
		return
	}
	a.captures[cluster] = cp
}

// newSet tells a cluster's capture that a backup stored a new full set:
// its chain ends and the next one continues the new set.
func (a *Agent) newSet(cluster string) {
	a.capMu.Lock()
	cp := a.captures[cluster]
	a.capMu.Unlock()
	if cp != nil {
		cp.NewSet()
	}
}

// captureStatus is what /status shows of the captures.
func (a *Agent) captureStatus() map[string]capture.Status {
	a.capMu.Lock()
	defer a.capMu.Unlock()
	out := map[string]capture.Status{}
	for name, cp := range a.captures {
		out[name] = cp.Status()
	}
	return out
}

// captureGauges keeps a cluster's capture gauges current until stopped,
// the lag per configured target. Stopped, it drops the lag: a replica
// that no longer captures must not keep alerting on its last figures.
func (a *Agent) captureGauges(cluster string, cp *capture.Capture, targets []string, ends *targetEnds) (stop func()) {
	done := make(chan struct{})
	update := func() {
		st := cp.Status()
		a.m.captureDurable.WithLabelValues(cluster).Set(float64(st.Durable))
		now := time.Now()
		for _, t := range targets {
			wait, revs := ends.lag(t, st, now)
			a.m.captureLag.WithLabelValues(cluster, t).Set(wait.Seconds())
			a.m.captureLagRevisions.WithLabelValues(cluster, t).Set(float64(revs))
		}
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				update()
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		a.m.captureLag.DeletePartialMatch(prometheus.Labels{"cluster": cluster})
		a.m.captureLagRevisions.DeletePartialMatch(prometheus.Labels{"cluster": cluster})
	}
}

// targetEnds follows where the log stands on each target: the last
// revision a segment stored there holds, and when it was received.
type targetEnds struct {
	mu sync.Mutex
	// base is the set of the chain the ends were last set from.
	base string
	ends map[string]logEnd
}

type logEnd struct {
	rev  int64
	seen time.Time
}

// stored records a segment stored on target.
func (e *targetEnds) stored(target string, h *manifest.SegmentHead) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ends == nil {
		e.ends = map[string]logEnd{}
	}
	if h.Last > e.ends[target].rev {
		e.ends[target] = logEnd{h.Last, h.SeenLast}
	}
}

// lag says how far target is behind what the capture received: the
// revisions not stored there, and how long the oldest of them has
// waited. A new chain's targets hold at least its durable end; a target
// outside the chain stays where it was (or, never seen, where the chain
// was when first asked) and falls behind, as it does.
func (e *targetEnds) lag(target string, st capture.Status, now time.Time) (time.Duration, int64) {
	if st.Base == "" {
		return 0, 0 // no chain yet: nothing received
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ends == nil {
		e.ends = map[string]logEnd{}
	}
	if st.Base != e.base {
		e.base = st.Base
		for _, t := range st.Targets {
			// A target already further holds more: the chain before.
			if e.ends[t].rev < st.Durable {
				e.ends[t] = logEnd{st.Durable, st.DurableSeen}
			}
		}
	}
	end, ok := e.ends[target]
	if !ok {
		end = logEnd{st.Durable, now}
		e.ends[target] = end
	}
	revs := max(st.Received-end.rev, 0)
	if revs == 0 {
		return 0, 0
	}
	// The capture knows when the oldest revision not durable everywhere
	// came. For a target ahead of the others, the end of its last segment
	// bounds the wait: the revision after it came later.
	since := end.seen
	if end.rev == st.Durable && !st.OldestPending.IsZero() || since.IsZero() {
		since = st.OldestPending
	}
	if since.IsZero() {
		return 0, revs
	}
	return max(now.Sub(since), 0), revs
}
