package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
)

// Defaults.
const (
	DefaultPeriod    = 10 * time.Second
	DefaultMaxBytes  = 4 << 20
	DefaultHashEvery = 5 * time.Minute
)

var (
	// ErrNeedFullSet means the log cannot continue the newest full set:
	// there is none, the watch fell behind compaction, the targets' chains
	// disagree, or a chain is broken. A new full set starts a new chain.
	ErrNeedFullSet = errors.New("the captured log needs a new full set")
	// ErrNoBase means no target holds a full set to continue, or none
	// answers: the capture waits for the schedule's first set, or for the
	// targets.
	ErrNoBase = errors.New("no full set to continue")
	// errRewatch ends one watch so the next starts at the durable end.
	errRewatch = errors.New("watch again from the durable end")
)

// Options are everything one cluster's capture needs.
type Options struct {
	Cluster    string
	Etcd       snapshot.EtcdOptions
	Targets    []storage.Target
	Recipients []crypto.Recipient
	Signer     *manifest.Signer
	Trust      *manifest.Trust
	// Writer names this agent in the heads it writes.
	Writer     string
	KdrVersion string
	// Period closes a segment this long after its first revision was
	// seen (default DefaultPeriod).
	Period time.Duration
	// MaxBytes closes a segment once its plaintext reaches this size
	// (default DefaultMaxBytes); the capture holds at most two segments.
	MaxBytes int
	// HashEvery is how often a segment end carries etcd's HashKV, which
	// scans the member's database (default DefaultHashEvery; negative:
	// never).
	HashEvery time.Duration
	// NeedFullSet, if set, is told once per full set why its log cannot
	// go on everywhere (a target missed a segment), while the capture
	// goes on where it can: the agent answers with a full backup.
	NeedFullSet func(reason string)
	// Stored, if set, is told of every segment stored on a target, and
	// Failed of every segment a target failed to store.
	Stored func(target string, h *manifest.SegmentHead, bytes int64)
	Failed func(target string, err error)
	Logger *slog.Logger
	Now    func() time.Time
}

// Capture ships one cluster's revisions to its targets while Run runs.
// A Capture is used by one goroutine at a time; Status and NewSet may be
// called from any.
type Capture struct {
	o      Options
	log    *slog.Logger
	newSet chan struct{}

	mu     sync.Mutex
	status Status
	// requested remembers the full set a new one was asked after.
	requested string
}

// Status is what the capture has done, for metrics and /status.
type Status struct {
	// Base is the full set the chain continues.
	Base string `json:"base,omitempty"`
	// Targets are those the chain is written to.
	Targets []string `json:"targets,omitempty"`
	// Durable is the last revision stored on every target of the chain,
	// and DurableSeen when the capture received it.
	Durable     int64     `json:"durable,omitempty"`
	DurableSeen time.Time `json:"durableSeen,omitzero"`
	// Received is the newest revision the watch delivered.
	Received int64 `json:"received,omitempty"`
	// OldestPending is when the oldest revision not yet durable was
	// received; zero when every received revision is durable.
	OldestPending time.Time `json:"oldestPending,omitzero"`
	// CaughtUp is the last time etcd confirmed the watch had everything.
	CaughtUp time.Time `json:"caughtUp,omitzero"`
	// Error is why the capture last stopped.
	Error string `json:"error,omitempty"`
}

// New checks the options and fills the defaults.
func New(o Options) (*Capture, error) {
	switch {
	case !manifest.ValidCluster(o.Cluster):
		return nil, fmt.Errorf("capture: cluster name %q cannot name objects", o.Cluster)
	case len(o.Targets) == 0:
		return nil, errors.New("capture: no targets")
	case len(o.Recipients) == 0:
		return nil, errors.New("capture: no recipients: the log is always encrypted")
	case o.Signer == nil || o.Trust == nil:
		return nil, errors.New("capture: no signing key: readers trust only signed segments")
	}
	if o.Period <= 0 {
		o.Period = DefaultPeriod
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	o.MaxBytes = min(o.MaxBytes, manifest.MaxSegmentPlain/2)
	if o.HashEvery == 0 {
		o.HashEvery = DefaultHashEvery
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Capture{o: o, log: o.Logger.With("cluster", o.Cluster), newSet: make(chan struct{}, 1)}, nil
}

// Status returns a copy of the capture's status.
func (c *Capture) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Targets = append([]string(nil), s.Targets...)
	return s
}

func (c *Capture) update(fn func(*Status)) {
	c.mu.Lock()
	fn(&c.status)
	c.mu.Unlock()
}

// NewSet tells a running capture that a new full set is stored: it ends
// the current chain with what it holds, and Run returns so that the next
// Run continues the new set.
func (c *Capture) NewSet() {
	select {
	case c.newSet <- struct{}{}:
	default:
	}
}

// Pause waits d, or less when a new full set is announced meanwhile: a
// capture that needed one goes on as soon as it is stored.
func (c *Capture) Pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-c.newSet:
	}
}

// chain is where the log goes on: the full set, the targets that hold
// its chain to the same end, and that end.
type chain struct {
	base    *manifest.Manifest
	baseSum string
	targets []storage.Target
	next    int64
	prev    *manifest.SegmentLink
	// hashed is when a segment last carried HashKV.
	hashed time.Time
	// pending is a sealed segment no target stored, to store again as it
	// is; retry is the pause before the next attempt.
	pending *sealed
	retry   time.Duration
}

// Run continues the log of the newest full set until ctx ends (nil), a
// new set is announced (nil), another writer takes the chain (an error
// wrapping manifest.ErrLost), or the chain cannot go on (an error
// wrapping ErrNeedFullSet). The caller runs it again.
func (c *Capture) Run(ctx context.Context) error {
	err := c.run(ctx)
	if err != nil && ctx.Err() == nil {
		c.update(func(s *Status) { s.Error = err.Error() })
	}
	return err
}

func (c *Capture) run(ctx context.Context) error {
	// A set announced before this run began is already the newest.
	select {
	case <-c.newSet:
	default:
	}
	ch, err := c.open(ctx)
	if err != nil {
		return err
	}
	names := make([]string, len(ch.targets))
	for i, t := range ch.targets {
		names[i] = t.Name()
	}
	c.update(func(s *Status) {
		*s = Status{Base: ch.base.ID, Targets: names, Durable: ch.next - 1, DurableSeen: s.DurableSeen}
	})
	c.log.Info("capturing the log", "base", ch.base.ID, "from", ch.next, "targets", names)
	cli, err := c.o.Etcd.Connect()
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		err := c.follow(ctx, cli, ch)
		if !errors.Is(err, errRewatch) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// open finds the newest full set and where its chain ends on each
// target.
func (c *Capture) open(ctx context.Context) (*chain, error) {
	type found struct {
		t   storage.Target
		m   *manifest.Manifest
		sum string
		err error
	}
	var fs []found
	var base *found
	for _, t := range c.o.Targets {
		m, sum, err := catalog.Latest(ctx, t, c.o.Trust, c.o.Cluster)
		fs = append(fs, found{t, m, sum, err})
		if err == nil && (base == nil || m.ID > base.m.ID) {
			base = &fs[len(fs)-1]
		}
	}
	if base == nil {
		// No set yet, or no target answers: the schedule takes the first
		// set, and a target's outage is waited out, not answered with a
		// backup that would fail the same way.
		why := make([]string, len(fs))
		for i, f := range fs {
			why[i] = f.err.Error()
		}
		return nil, fmt.Errorf("%w of %s: %s", ErrNoBase, c.o.Cluster, strings.Join(why, "; "))
	}
	ch := &chain{base: base.m, baseSum: base.sum}
	var ends []*catalog.Chain
	// absent are targets that do not answer or lack the newest set: a
	// full set now would miss them too, so the log goes on without them
	// until the next set reaches them. missed are targets that hold the
	// set but missed segments of its log: a full set now mends them.
	var absent, missed []string
	for _, f := range fs {
		if f.err != nil || f.m.ID != base.m.ID || f.sum != base.sum {
			why := "its newest set is not " + base.m.ID
			if f.err != nil {
				why = f.err.Error()
			}
			absent = append(absent, fmt.Sprintf("target %s: %s", f.t.Name(), why))
			continue
		}
		cc, err := catalog.ReadChain(ctx, f.t, c.o.Trust, base.m, base.sum)
		if err != nil {
			absent = append(absent, fmt.Sprintf("target %s: %v", f.t.Name(), err))
			continue
		}
		if cc.Broken != nil {
			return nil, fmt.Errorf("%w: %w", ErrNeedFullSet, cc.Broken)
		}
		if cc.Claimed != nil {
			if age := c.o.Now().Sub(cc.Claimed.Modified); age > c.grace() {
				return nil, fmt.Errorf("%w: %s on target %s holds a signature without its head since %s", ErrNeedFullSet,
					cc.Claimed.Key, f.t.Name(), cc.Claimed.Modified.UTC().Format(time.RFC3339))
			}
			return nil, fmt.Errorf("%w: %s on target %s is being written", manifest.ErrLost, cc.Claimed.Key, f.t.Name())
		}
		ch.targets = append(ch.targets, f.t)
		ends = append(ends, cc)
	}
	if len(ends) == 0 {
		return nil, fmt.Errorf("%w of %s: no target can continue the log of %s: %s", ErrNoBase, c.o.Cluster, base.m.ID, strings.Join(absent, "; "))
	}
	// Writers store a segment on one target first and then on the rest,
	// so a target may trail the one that reaches furthest by what is
	// being written now; one that trails for longer missed segments.
	lead := 0
	for i, e := range ends {
		if e.End() > ends[lead].End() {
			lead = i
		}
	}
	end := ends[lead]
	targets := []storage.Target{ch.targets[lead]}
	for i, e := range ends {
		if i == lead {
			continue
		}
		if e.End() == end.End() {
			targets = append(targets, ch.targets[i])
			continue
		}
		n := len(e.Segments)
		if n >= len(end.Segments) || n > 0 && e.Segments[n-1].Sum != end.Segments[n-1].Sum {
			return nil, fmt.Errorf("%w: the log of %s differs between target %s (to %d) and target %s (to %d)", ErrNeedFullSet,
				base.m.ID, ch.targets[lead].Name(), end.End(), ch.targets[i].Name(), e.End())
		}
		next := end.Segments[n]
		if c.o.Now().Sub(next.Stored) < c.grace() {
			return nil, fmt.Errorf("%w: segment %d..%d is being written to target %s", manifest.ErrLost,
				next.Head.First, next.Head.Last, ch.targets[i].Name())
		}
		missed = append(missed, fmt.Sprintf("target %s: its log ends at %d, before segment %d..%d", ch.targets[i].Name(),
			e.End(), next.Head.First, next.Head.Last))
	}
	ch.targets = targets
	if len(absent) > 0 {
		c.log.Warn("the log goes on without some targets until a full set reaches them", "base", base.m.ID, "targets", absent)
	}
	if len(missed) > 0 {
		c.need(base.m.ID, fmt.Sprintf("the log of %s misses segments on some targets: %s", base.m.ID, strings.Join(missed, "; ")))
	}
	ch.next = end.End() + 1
	if last := end.Last(); last != nil {
		ch.prev = last.Head.Link(last.Sum)
	}
	return ch, nil
}

// grace is how long another writer may take to store a segment it has
// begun to store before the capture counts it as never coming.
func (c *Capture) grace() time.Duration { return 3*c.o.Period + time.Minute }

// need tells the caller, once per full set, that a new one is needed.
func (c *Capture) need(base, reason string) {
	c.mu.Lock()
	first := c.requested != base
	c.requested = base
	c.mu.Unlock()
	c.log.Warn("the log needs a new full set", "base", base, "reason", reason)
	if first && c.o.NeedFullSet != nil {
		c.o.NeedFullSet(reason)
	}
}

// watchAll watches every key from rev, failing rather than stalling on
// a member cut off from its cluster's leader.
func watchAll(ctx context.Context, cli *clientv3.Client, rev int64) clientv3.WatchChan {
	return cli.Watch(clientv3.WithRequireLeader(ctx), "", clientv3.WithPrefix(), clientv3.WithRev(rev),
		clientv3.WithProgressNotify())
}
