package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/kdr-io/kdr/capture"
	"github.com/kdr-io/kdr/config"
)

// Options configure an agent beyond its config file.
type Options struct {
	ConfigPath string
	Log        *slog.Logger
	// Node is this host's name in the inventory, recorded as the source
	// of the state files (default: hostname).
	Node string
	// Root is where state paths are resolved (default "/").
	Root string
	// Identity names this replica in the Lease (default hostname and pid).
	Identity string
}

// Agent runs scheduled jobs and serves their state over HTTP.
type Agent struct {
	o   Options
	log *slog.Logger
	m   *metrics
	ln  net.Listener
	srv *http.Server

	mu     sync.Mutex
	cfg    *config.Config
	loaded time.Time
	// cfgSum is the sha256 of the config file last loaded or refused: a
	// mounted ConfigMap changes without a SIGHUP, so the checks compare it.
	cfgSum string
	sched  *cron.Cron
	jobs   map[string]*job

	// running counts jobs in flight; stopping refuses new ones once
	// shutdown has begun, so the count only goes down.
	running  sync.WaitGroup
	stopping bool
	stop     chan struct{} // closed when shutdown begins
	// work is cancelled when runs must stop at once: the grace after
	// SIGTERM is over, or the lease was lost.
	work       context.Context
	cancelWork context.CancelFunc

	// verified remembers the sets whose manifest verified, by target,
	// cluster, ID and trusted keys, so each check reads only new ones.
	verifiedMu sync.Mutex
	verified   map[string]bool

	leader      atomic.Bool
	leaderKnown atomic.Bool
	leaderID    atomic.Value // string
	election    atomic.Bool

	health health

	// captures are the running captures of the log, by cluster.
	capMu    sync.Mutex
	captures map[string]*capture.Capture
}

// job is one kind of scheduled work.
type job struct {
	name    string
	run     func(ctx context.Context, cfg *config.Config) error
	entry   cron.EntryID
	running atomic.Bool
	last    runRecord
	skipped int
}

// runRecord is what the status page says of a job's last run.
type runRecord struct {
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"`
}

// New loads the config and opens the listening socket; Run starts the work.
func New(o Options) (*Agent, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Identity == "" {
		host, _ := os.Hostname()
		o.Identity = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	cfg, err := config.Load(o.ConfigPath)
	if err != nil {
		return nil, err
	}
	a := &Agent{o: o, log: o.Log, m: newMetrics(), cfg: cfg, loaded: time.Now(), stop: make(chan struct{}),
		captures: map[string]*capture.Capture{}}
	a.leaderID.Store("")
	a.work, a.cancelWork = context.WithCancel(context.Background())
	a.jobs = map[string]*job{
		"backup": {name: "backup", run: a.backup},
		"prune":  {name: "prune", run: a.prune},
		"drill":  {name: "drill", run: a.drill},
		"pack":   {name: "pack", run: a.pack},
	}
	a.m.reloadOK.Set(1)
	a.m.zero(cfg)
	a.cfgSum = fileSum(o.ConfigPath)
	a.ln, err = net.Listen("tcp", cfg.Agent.Listen)
	if err != nil {
		return nil, fmt.Errorf("agent.listen %s: %w", cfg.Agent.Listen, err)
	}
	return a, nil
}

// Addr is the address the HTTP endpoints listen on.
func (a *Agent) Addr() string { return a.ln.Addr().String() }

// Run serves, campaigns for the lease and runs the schedules until ctx is
// cancelled. Then no new run starts; a run in flight gets the config's
// shutdown grace to finish and is cancelled after it, which aborts its
// uploads: a backup cut short leaves no manifest, so no half set is seen.
func (a *Agent) Run(ctx context.Context) error {
	a.srv = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- a.srv.Serve(a.ln) }()

	cfg := a.config()
	electCtx, stopElection := context.WithCancel(context.Background())
	electionDone := make(chan struct{})
	if err := a.startElection(electCtx, cfg.Agent.LeaderElection, electionDone); err != nil {
		stopElection()
		a.srv.Close()
		return err
	}

	checkCtx, stopChecks := context.WithCancel(ctx)
	checksDone := make(chan struct{})
	go func() {
		defer close(checksDone)
		a.checkLoop(checkCtx)
	}()
	captureDone := make(chan struct{})
	go func() {
		defer close(captureDone)
		a.captureLoop(checkCtx)
	}()

	a.mu.Lock()
	err := a.scheduleLocked(cfg)
	work := a.work
	a.mu.Unlock()
	if err == nil && a.leader.Load() {
		// A replica that led before the schedule existed (one running
		// alone, restarted after an outage) catches up here.
		go a.catchUp(work)
	}
	if err == nil {
		a.log.Info("agent running", "listen", a.Addr(), "identity", a.o.Identity, "election", a.election.Load(),
			"backup", cfg.Schedule.Backup, "prune", cfg.Schedule.Prune)
		select {
		case <-ctx.Done():
		case err = <-serveErr:
			err = fmt.Errorf("http: %w", err)
		}
	}

	a.shutdown(cfg.Agent.ShutdownGrace)
	stopChecks()
	<-checksDone
	<-captureDone
	// The lease is given up only after the work stopped, so a standby
	// cannot start a backup while this one still writes.
	stopElection()
	<-electionDone
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.srv.Shutdown(shutCtx)
	return err
}

// shutdown stops the schedule, waits up to grace for runs in flight, then
// cancels them and waits for them to return.
func (a *Agent) shutdown(grace time.Duration) {
	a.mu.Lock()
	a.stopping = true
	close(a.stop)
	if a.sched != nil {
		a.sched.Stop()
	}
	a.mu.Unlock()
	done := make(chan struct{})
	go func() {
		a.running.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	a.log.Warn("shutdown grace over: cancelling the runs in flight", "grace", grace)
	a.mu.Lock()
	a.cancelWork()
	a.mu.Unlock()
	<-done
}

// Reload reads the config file again. A config that fails to load or
// validate is refused, with its reason, and the running one stays.
func (a *Agent) Reload() error {
	sum := fileSum(a.o.ConfigPath)
	cfg, err := config.Load(a.o.ConfigPath)
	a.mu.Lock()
	a.cfgSum = sum
	a.mu.Unlock()
	if err != nil {
		a.m.reloadOK.Set(0)
		a.log.Error("config reload refused: keeping the running config", "err", err)
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.cfg
	if cfg.Agent.Listen != old.Agent.Listen || !reflect.DeepEqual(cfg.Agent.LeaderElection, old.Agent.LeaderElection) {
		a.log.Warn("agent.listen and agent.leaderElection take effect on restart")
	}
	if a.stopping {
		return errors.New("config reload: the agent is stopping")
	}
	if err := a.scheduleLocked(cfg); err != nil {
		a.m.reloadOK.Set(0)
		a.log.Error("config reload refused: keeping the running config", "err", err)
		return err
	}
	a.m.forget(old, cfg)
	a.cfg, a.loaded = cfg, time.Now()
	a.m.reloadOK.Set(1)
	a.m.zero(cfg)
	a.log.Info("config reloaded", "backup", cfg.Schedule.Backup, "prune", cfg.Schedule.Prune)
	return nil
}

func (a *Agent) config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// scheduleLocked replaces the schedule with cfg's. The new scheduler is
// built whole before the old one stops, so a bad expression changes
// nothing. Runs in flight go on: a job never overlaps itself across a
// reload either, as the running flag lives on the job.
func (a *Agent) scheduleLocked(cfg *config.Config) error {
	c := cron.New()
	for name, spec := range schedules(cfg) {
		j := a.jobs[name]
		id, err := c.AddFunc(spec, func() { a.trigger(j, nil) })
		if err != nil {
			return fmt.Errorf("schedule.%s %q: %w", name, spec, err)
		}
		j.entry = id
	}
	if a.sched != nil {
		a.sched.Stop()
	}
	a.sched = c
	c.Start()
	a.updateNextRunsLocked()
	return nil
}

func (a *Agent) updateNextRunsLocked() {
	for _, j := range a.jobs {
		if e := a.sched.Entry(j.entry); e.Valid() {
			a.m.nextRun.WithLabelValues(j.name).Set(float64(e.Next.Unix()))
		}
	}
}

// trigger runs a job from the schedule: not on a standby, not while the
// previous run of the same job goes on (that run is counted skipped), and
// after a random jitter so many agents do not hit one bucket at once.
// started, if set, is called as the run starts: what counts a run must
// not wait for its end, which comes after what it wrote can be seen.
func (a *Agent) trigger(j *job, started func()) {
	a.mu.Lock()
	if a.sched != nil {
		a.updateNextRunsLocked()
	}
	if a.stopping {
		a.mu.Unlock()
		return
	}
	if !a.leader.Load() {
		a.mu.Unlock()
		a.log.Debug("standby: not running", "job", j.name)
		return
	}
	if !j.running.CompareAndSwap(false, true) {
		j.skipped++
		a.mu.Unlock()
		a.m.jobSkipped.WithLabelValues(j.name).Inc()
		a.log.Warn("previous run still going: this one is skipped", "job", j.name)
		return
	}
	a.running.Add(1)
	ctx, cfg := a.work, a.cfg
	a.mu.Unlock()
	defer a.running.Done()
	defer j.running.Store(false)

	if jitter := cfg.Schedule.Jitter; jitter > 0 {
		select {
		case <-time.After(rand.N(jitter)):
		case <-ctx.Done():
			return
		case <-a.stop:
			return // shutting down: no new run starts
		}
	}
	if started != nil {
		started()
	}
	rec := runRecord{Started: time.Now()}
	err := j.run(ctx, cfg)
	rec.Finished, rec.OK = time.Now(), err == nil
	result := "success"
	if err != nil {
		rec.Error, result = err.Error(), "failure"
		a.log.Error("run failed", "job", j.name, "err", err)
	}
	a.m.jobRuns.WithLabelValues(j.name, result).Inc()
	a.mu.Lock()
	j.last = rec
	a.mu.Unlock()
}

// setLeader records a change of leadership. A replica that loses the
// lease stops its runs at once: another one may start its own.
func (a *Agent) setLeader(on bool) {
	a.leader.Store(on)
	if on {
		a.m.leader.Set(1)
		a.log.Info("leading: scheduled runs happen here")
		a.mu.Lock()
		ctx := a.work
		a.mu.Unlock()
		go a.catchUp(ctx)
		return
	}
	a.m.leader.Set(0)
	a.health.standby()
	a.mu.Lock()
	a.cancelWork()
	a.work, a.cancelWork = context.WithCancel(context.Background())
	a.mu.Unlock()
	a.log.Warn("not leading: runs in flight are cancelled, the schedule waits")
}

// reloadIfChanged reloads the config when the file changed since it was
// last read.
func (a *Agent) reloadIfChanged() {
	a.mu.Lock()
	old := a.cfgSum
	a.mu.Unlock()
	if sum := fileSum(a.o.ConfigPath); sum != "" && sum != old {
		a.log.Info("config file changed: reloading")
		a.Reload()
	}
}

func fileSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// schedules maps each job to its cron expression. Packing runs every
// agent.capture.packEvery while the capture is on.
func schedules(cfg *config.Config) map[string]string {
	s := map[string]string{"backup": cfg.Schedule.Backup, "prune": cfg.Schedule.Prune, "drill": cfg.Schedule.Drill}
	if cp := cfg.Agent.Capture; cp.On() {
		s["pack"] = "@every " + cp.PackEvery.String()
	}
	return s
}
