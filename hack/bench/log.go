package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/internal/version"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/replay"
	"github.com/kdr-io/kdr/restore"
	"github.com/kdr-io/kdr/storage"
)

// logOptions size the captured-log bench.
type logOptions struct {
	// Duration is how long the steady load runs (-log-duration).
	Duration time.Duration
	// Rate is the writes per second asked of the writer (-log-rate).
	Rate int
	// Keys is the working set the writes overwrite (-log-keys).
	Keys int
	// CompactEvery and CompactKeep: the source is compacted this often,
	// to this many revisions before its newest, as kube-apiserver does.
	CompactEvery time.Duration
	CompactKeep  int64
	// Replay is how much of the same load, after a full set, the replay
	// part synthesizes and replays (-log-replay, default 1h), at
	// ReplayRate revisions a second (-log-replay-rate, default 500: the
	// issue's figure, 1.8 M revisions an hour).
	Replay     time.Duration
	ReplayRate int
}

// Constants of the load and of the capture it feeds.
const (
	logWorkers      = 32 // writers at once, each owning its share of the keys
	logDeleteEvery  = 20 // one write in 20 deletes a key (the next put recreates it)
	logValueSize    = 1000
	logPoll         = 100 * time.Millisecond
	logDrain        = 2 * time.Minute // the most the log may trail the last write
	logSegmentBytes = 4 << 20         // agent.capture.segmentMiB, as configured
	logCluster      = "bench"
)

// logBench measures the captured log (package capture, run by the agent)
// under a steady write load: the RPO it gives, the agent's memory, what
// the log stores beside minute-by-minute full sets, and how fast a replay
// brings a full set forward by one hour of the same load.
func (b *bench) logBench(o logOptions) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("\n== captured log: `go run ./hack/bench %s`\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("kdr agent (capture on: segmentPeriod 10s, segmentMiB 4, hashEvery 5m) to MinIO and a local directory; "+
		"%d writes/s asked of %d writers for %s over %d keys of ~1 KiB (1 in %d a delete), source compacted every %s to its newest %d revisions\n",
		o.Rate, logWorkers, o.Duration, o.Keys, logDeleteEvery, o.CompactEvery, o.CompactKeep)
	dir := filepath.Join(b.work, "log")
	usb, scratch := filepath.Join(dir, "usb"), filepath.Join(dir, "scratch")
	for _, d := range []string{usb, scratch, filepath.Join(dir, "scratch-config")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	defer os.RemoveAll(dir)

	etcd, endpoint, err := b.freshEtcd(filepath.Join(dir, "etcd"))
	if err != nil {
		return err
	}
	defer etcd.stop()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 30 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := fillWorkingSet(ctx, cli, o.Keys); err != nil {
		return err
	}

	keyFile, recipient, err := b.newKey(dir)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	cfg := filepath.Join(dir, "kdr.yaml")
	if err := writeBenchConfig(cfg, endpoint, recipient, fmt.Sprintf(`  - name: s3
    s3: {endpoint: %q, bucket: %s, prefix: kdr-log, accessKey: %s, secretKey: %s, insecure: true, pathStyle: true}
  - name: usb
    local: {path: %s}
retention: {keepLast: 3}
schedule: {backup: "@every 24h", prune: "@every 24h"}
agent:
  listen: %q
  leaderElection: {enabled: false}
  capture: {enabled: true, segmentPeriod: 10s, segmentMiB: %d, hashEvery: 5m}
`, b.s3, bucket, accessKey, secretKey, usb, addr, logSegmentBytes>>20)); err != nil {
		return err
	}
	// The chain continues a full set: one now, before the agent starts, so
	// that the agent's schedule (every 24h) takes none during the load.
	if err := runQuiet(b.kdr, "--config", cfg, "--log-level", "warn", "backup"); err != nil {
		return err
	}
	agent, err := start(filepath.Join(dir, "agent.log"), nil, b.kdr, "--config", cfg, "--log-level", "warn", "agent")
	if err != nil {
		return err
	}
	defer agent.stop()
	status := &logStatus{url: "http://" + addr + "/status", client: &http.Client{Timeout: 2 * time.Second}}
	if err := status.waitCapturing(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("%w (agent log: %s)", err, tail(filepath.Join(dir, "agent.log")))
	}

	// The load, with the agent's /status polled beside it.
	pids := map[string]int{"etcd": etcd.cmd.Process.Pid, "MinIO": b.minio.cmd.Process.Pid, "agent": agent.cmd.Process.Pid}
	cpu0 := cpuTimes(pids)
	bench0 := selfCPU()
	load0 := loadAvg()
	w, err := newLogWriter(cli, o)
	if err != nil {
		return err
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan error, 1)
	go func() { polled <- status.poll(pollCtx, w.t0) }()
	werr := w.run(ctx)
	loadWall := time.Since(w.t0)
	cpu1 := cpuTimes(pids)
	bench1 := selfCPU()
	if werr != nil {
		stopPoll()
		<-polled
		return werr
	}
	last := w.lastRev.Load()
	drainStart := time.Now()
	reached := status.waitDurable(ctx, last, logDrain)
	drained := time.Since(drainStart)
	stopPoll()
	if err := <-polled; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	hwm, err := statusKiB(agent.cmd.Process.Pid, "VmHWM")
	if err != nil {
		return err
	}
	steadyFor := o.Duration - 10*time.Second
	lat, steady, missing := w.latencies(status.transitions(), int64(steadyFor))

	// Cross-check: each target's chain, read as a restore reads it.
	chains, err := readChains(ctx, cfg, last)
	if err != nil {
		return err
	}
	logBytes, logObjects, err := sizeUnder(usb, func(p string) bool {
		rel, _ := filepath.Rel(usb, p)
		return strings.Contains(rel, "/log/")
	})
	if err != nil {
		return err
	}
	agent.stop()

	// One full set of the cluster as it is at the end, to a scratch
	// directory: what each minute's full backup would store.
	scfg := filepath.Join(dir, "scratch-config", "kdr.yaml")
	if err := writeBenchConfig(scfg, endpoint, recipient, fmt.Sprintf("  - name: scratch\n    local: {path: %s}\n", scratch)); err != nil {
		return err
	}
	if err := runQuiet(b.kdr, "--config", scfg, "--log-level", "warn", "backup"); err != nil {
		return err
	}
	setBytes, _, err := sizeUnder(filepath.Join(scratch, logCluster), func(string) bool { return true })
	if err != nil {
		return err
	}
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		return err
	}

	// The load's figures.
	achieved := float64(w.acked.Load()) / o.Duration.Seconds()
	// Kept up: 99% of the asked writes made. A stall of the machine
	// longer than the pacer's second of backlog drops writes, counted.
	keptUp := achieved >= 0.99*float64(o.Rate)
	fmt.Printf("\nload average (1 min) before / after the load: %s / %s\n", load0, loadAvg())
	fmt.Printf("load: %d writes acknowledged in %s (%.1f/s; asked %d/s), %d not made (the writer over 1s behind): kept up (99%% made): %s; %d compaction(s); etcd db %d MiB at the end\n",
		w.acked.Load(), o.Duration, achieved, o.Rate, w.dropped.Load(), yesNo(keptUp), w.compactions.Load(), st.DbSize>>20)
	fmt.Printf("writes per second: %s\n", w.slowSeconds())
	fmt.Printf("CPU over the load (of one core): etcd %s, MinIO %s, agent %s, writer (the bench) %s; %d cores\n",
		pct(cpu1["etcd"]-cpu0["etcd"], loadWall), pct(cpu1["MinIO"]-cpu0["MinIO"], loadWall),
		pct(cpu1["agent"]-cpu0["agent"], loadWall), pct(bench1-bench0, loadWall), runtime.NumCPU())
	fmt.Printf("durability: the agent's /status log.%s.durable (the capture's own count of revisions stored on every target), polled every %s; "+
		"a write's RPO is from its acknowledgement to the first poll showing its revision durable (so up to %s late)\n",
		logCluster, logPoll, logPoll)
	fmt.Printf("the log reached the last write (revision %d) %s after the load ended: %s; revisions written but never durable: %d\n",
		last, drained.Round(100*time.Millisecond), yesNo(reached), missing)
	if len(steady) > 0 {
		fmt.Printf("RPO of the writes acknowledged in the first %s (not the load's last segment period, which waits out its 10s): p50 %s, p99 %s, max %s\n",
			steadyFor, time.Duration(quantile(steady, 0.5)).Round(10*time.Millisecond), time.Duration(quantile(steady, 0.99)).Round(10*time.Millisecond),
			time.Duration(steady[len(steady)-1]).Round(10*time.Millisecond))
	}
	fmt.Println("chains on the targets (heads listed and verified with catalog.ReadChain):")
	chainsOK := true
	for _, c := range chains {
		fmt.Printf("  %s\n", c.line)
		chainsOK = chainsOK && c.ok
	}

	// Storage per hour: the log on one target, extrapolated from the load,
	// beside a full set every minute.
	logPerHour := float64(logBytes) * float64(time.Hour) / float64(o.Duration)
	fullPerHour := float64(setBytes) * 60
	fmt.Printf("log on the local target: %d objects (head, signature, body), %.1f MiB for %s of load; one full set of the cluster at the end: %.1f MiB\n",
		logObjects, mib(logBytes), o.Duration, mib(setBytes))
	fmt.Printf("at this rate the log stores a tenth of 1-minute full sets for a cluster whose full set is %.0f MiB or more\n", logPerHour/6/(1<<20))

	// Replay: one hour of the same load after that full set.
	rps, err := b.replayBench(ctx, cli, o, scfg, keyFile, filepath.Join(dir, "replay"))
	if err != nil {
		return err
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "what\tmeasured\ttarget\tmet\t\n")
	q := func(f float64) time.Duration { return time.Duration(f).Round(10 * time.Millisecond) }
	if len(lat) > 0 {
		fmt.Fprintf(tw, "RPO: write acknowledged -> durable on both targets, p50 / p99 / max\t%s / %s / %s\tp99 <= 15s\t%s\t\n",
			q(quantile(lat, 0.50)), q(quantile(lat, 0.99)), q(float64(lat[len(lat)-1])),
			yesNo(reached && chainsOK && missing == 0 && quantile(lat, 0.99) <= float64(15*time.Second)))
	}
	fmt.Fprintf(tw, "write rate sustained beside etcd and MinIO\t%.0f/s (asked %d/s, kept up: %s)\t>= 500/s\t%s\t\n",
		achieved, o.Rate, yesNo(keptUp), yesNo(keptUp && o.Rate >= 500))
	fmt.Fprintf(tw, "agent peak RSS (VmHWM)\t%d MiB\t<= 128 MiB\t%s\t\n", hwm>>10, yesNo(hwm>>10 <= 128))
	ratio := logPerHour / fullPerHour
	fmt.Fprintf(tw, "storage per hour on one target: log / 1-minute full sets\t%.0f MiB / %.0f MiB (60 x %.1f MiB) = %.3f\t<= 0.1\t%s\t\n",
		logPerHour/(1<<20), fullPerHour/(1<<20), mib(setBytes), ratio, yesNo(ratio <= 0.1))
	for _, rp := range rps {
		fmt.Fprintf(tw, "replay: %s\t%.0f revisions/s (%d in %s)\t>= 50000/s\t%s\t\n",
			rp.how, rp.perSecond(), rp.revisions, rp.took.Round(10*time.Millisecond), yesNo(rp.perSecond() >= 50000))
	}
	return tw.Flush()
}

// freshEtcd starts a single-member etcd on an empty data dir.
func (b *bench) freshEtcd(dataDir string) (*process, string, error) {
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort())
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort())
	p, err := start(dataDir+".log", nil, filepath.Join(b.bin, "etcd"),
		"--name", "bench", "--data-dir", dataDir, "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench="+peer,
		"--quota-backend-bytes", fmt.Sprint(int64(8)<<30), "--log-level", "warn")
	return p, client, err
}

// logKey is the key of working-set entry k, Kubernetes-shaped.
func logKey(k int) string { return fmt.Sprintf("/registry/configmaps/bench-%02d/cm-%06d", k%50, k) }

const logKeyPrefix = "/registry/configmaps/bench-"

func logKeyIndex(key []byte) (int, bool) {
	i := bytes.LastIndex(key, []byte("/cm-"))
	if !bytes.HasPrefix(key, []byte(logKeyPrefix)) || i < 0 {
		return 0, false
	}
	k, err := strconv.Atoi(string(key[i+4:]))
	return k, err == nil
}

// logValue renders a ~1 KiB object shaped like kube-apiserver's storage
// (internal/kubedata's objects): repeated field names compress, the uid
// and the data's hex do not.
func logValue(dst []byte, rng *rand.Rand, k int) []byte {
	dst = fmt.Appendf(dst[:0], `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-%06d","namespace":"bench-%02d",`+
		`"uid":"%08x-%04x-%04x-%04x-%012x","resourceVersion":"%d","creationTimestamp":"2026-01-%02dT%02d:%02d:00Z",`+
		`"labels":{"app.kubernetes.io/name":"cm-%06d","app.kubernetes.io/part-of":"shop"},"managedFields":[{"manager":`+
		`"kube-controller-manager","operation":"Update","apiVersion":"v1","fieldsType":"FieldsV1"}]},"data":{`,
		k, k%50, rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint64()&0xffffffffffff,
		rng.IntN(1<<30), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), k)
	for i := 0; len(dst) < logValueSize; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = fmt.Appendf(dst, `"key-%d":"value-%d-%x setting=%d enabled=true"`, i, i, rng.Uint32(), rng.IntN(100))
	}
	return append(dst, "}}"...)
}

// fillWorkingSet writes every key of the working set once.
func fillWorkingSet(ctx context.Context, cli *clientv3.Client, keys int) error {
	rng := rand.New(rand.NewPCG(1, 2))
	var ops []clientv3.Op
	var v []byte
	for k := range keys {
		v = logValue(v, rng, k)
		ops = append(ops, clientv3.OpPut(logKey(k), string(v)))
		if len(ops) == 100 || k == keys-1 {
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return fmt.Errorf("fill the working set: %w", err)
			}
			ops = ops[:0]
		}
	}
	return nil
}

// logWriter is the steady load: a pacer hands out one token per write
// at the asked rate, with a second of backlog; writers take them, each
// owning the keys k with k % logWorkers == its number, so it knows which
// of them exist and deletes only those. Every write is one revision; its
// acknowledgement time is kept in a flat array indexed by its revision
// after the first.
type logWriter struct {
	cli  *clientv3.Client
	o    logOptions
	t0   time.Time
	from int64 // the first revision of the load
	// ack[r-from] is when revision r was acknowledged, nanoseconds after
	// t0 plus one (0: no write of the load made r).
	ack []int64
	// perSecond[s] counts the writes acknowledged in second s of the load.
	perSecond      []atomic.Int32
	lastRev        atomic.Int64
	acked, dropped atomic.Int64
	compactions    atomic.Int64
}

func newLogWriter(cli *clientv3.Client, o logOptions) (*logWriter, error) {
	resp, err := cli.Get(context.Background(), "health-of-the-bench")
	if err != nil {
		return nil, err
	}
	n := int64(o.Rate)*int64(o.Duration/time.Second+2) + 1024
	return &logWriter{cli: cli, o: o, t0: time.Now(), from: resp.Header.Revision + 1, ack: make([]int64, n),
		perSecond: make([]atomic.Int32, int(o.Duration/time.Second)+2)}, nil
}

func (w *logWriter) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tokens := make(chan struct{}, max(w.o.Rate, 1))
	errs := make(chan error, logWorkers+1)
	var wg sync.WaitGroup
	for i := range logWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.worker(ctx, i, tokens); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := w.compactor(ctx); err != nil {
			errs <- err
			cancel()
		}
	}()
	// The pacer.
	tick := time.NewTicker(5 * time.Millisecond)
	var sent int64
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case now := <-tick.C:
			el := min(now.Sub(w.t0), w.o.Duration)
			due := int64(el.Seconds() * float64(w.o.Rate))
			for ; sent < due; sent++ {
				select {
				case tokens <- struct{}{}:
				default:
					w.dropped.Add(1)
				}
			}
			done = el >= w.o.Duration
		}
	}
	tick.Stop()
	close(tokens)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// worker writes while tokens come and the load lasts: writes still
// queued when the load ends are not made.
func (w *logWriter) worker(ctx context.Context, id int, tokens <-chan struct{}) error {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	var mine []int
	for k := id; k < w.o.Keys; k += logWorkers {
		mine = append(mine, k)
	}
	gone := make([]bool, len(mine))
	var v []byte
	end := w.t0.Add(w.o.Duration)
	for range tokens {
		if time.Now().After(end) {
			continue
		}
		i := rng.IntN(len(mine))
		var rev int64
		if !gone[i] && rng.IntN(logDeleteEvery) == 0 {
			resp, err := w.cli.Delete(ctx, logKey(mine[i]))
			if err != nil {
				return fmt.Errorf("delete: %w", err)
			}
			if resp.Deleted != 1 {
				return fmt.Errorf("delete %s deleted %d keys", logKey(mine[i]), resp.Deleted)
			}
			gone[i], rev = true, resp.Header.Revision
		} else {
			v = logValue(v, rng, mine[i])
			resp, err := w.cli.Put(ctx, logKey(mine[i]), string(v))
			if err != nil {
				return fmt.Errorf("put: %w", err)
			}
			gone[i], rev = false, resp.Header.Revision
		}
		at := int64(time.Since(w.t0)) + 1
		if off := rev - w.from; off >= 0 && off < int64(len(w.ack)) {
			atomic.StoreInt64(&w.ack[off], at)
		}
		w.acked.Add(1)
		w.perSecond[min(int((at-1)/int64(time.Second)), len(w.perSecond)-1)].Add(1)
		for {
			l := w.lastRev.Load()
			if rev <= l || w.lastRev.CompareAndSwap(l, rev) {
				break
			}
		}
	}
	return nil
}

// compactor compacts the source as kube-apiserver does, every
// CompactEvery, the first halfway through one so that a window of
// CompactEvery holds one compaction, keeping the newest CompactKeep
// revisions.
func (w *logWriter) compactor(ctx context.Context) error {
	next := w.o.CompactEvery / 2
	for {
		wait := time.Until(w.t0.Add(next))
		if next > w.o.Duration {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		resp, err := w.cli.Get(ctx, "health-of-the-bench")
		if err != nil {
			return err
		}
		if rev := resp.Header.Revision - w.o.CompactKeep; rev > 0 {
			if _, err := w.cli.Compact(ctx, rev); err != nil {
				return fmt.Errorf("compact to %d: %w", rev, err)
			}
			w.compactions.Add(1)
		}
		next += w.o.CompactEvery
	}
}

// slowSeconds says in how many whole seconds of the load fewer than 95%
// of the asked writes were acknowledged, and which was the slowest.
func (w *logWriter) slowSeconds() string {
	slow, worst, at := 0, int32(w.o.Rate), 0
	for s := range int(w.o.Duration / time.Second) {
		n := w.perSecond[s].Load()
		if float64(n) < 0.95*float64(w.o.Rate) {
			slow++
		}
		if n < worst {
			worst, at = n, s
		}
	}
	return fmt.Sprintf("%d second(s) below 95%% of the asked rate; the slowest, second %d, %d writes", slow, at, worst)
}

// latencies turns the acknowledgement times in place into the sorted
// times from acknowledgement to durability, and counts the writes never
// durable. steady is the same for the writes acknowledged before
// steadyEnd (nanoseconds after t0) alone: the load's end, when the last
// segment waits out its period, left out.
func (w *logWriter) latencies(ts []durableAt, steadyEnd int64) (all, steady []int64, missing int) {
	n, ns := 0, 0
	done := w.from - 1
	for _, t := range ts {
		for r := done + 1; r <= t.rev; r++ {
			off := r - w.from
			if off < 0 || off >= int64(len(w.ack)) || w.ack[off] == 0 {
				continue
			}
			at := w.ack[off] - 1
			// Revisions are acknowledged nearly in order: those before
			// steadyEnd come first, and stay in front until sorted.
			if at < steadyEnd && ns == n {
				ns++
			}
			w.ack[n] = max(t.at-at, 0)
			n++
		}
		done = max(done, t.rev)
	}
	for r := max(done+1, w.from); r <= w.lastRev.Load(); r++ {
		if off := r - w.from; off < int64(len(w.ack)) && w.ack[off] != 0 {
			missing++
		}
	}
	steady = slices.Clone(w.ack[:ns])
	slices.Sort(steady)
	all = w.ack[:n]
	slices.Sort(all)
	return all, steady, missing
}

func quantile(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(int(q*float64(len(sorted))), len(sorted)-1)])
}

// durableAt is a poll that saw the durable revision advance.
type durableAt struct {
	rev int64
	at  int64 // nanoseconds after the load began
}

// logStatus reads the agent's /status.
type logStatus struct {
	url    string
	client *http.Client
	mu     sync.Mutex
	ts     []durableAt
	last   int64
	bases  map[string]bool
}

type captureStatus struct {
	Base     string `json:"base"`
	Durable  int64  `json:"durable"`
	Received int64  `json:"received"`
	Error    string `json:"error"`
}

func (s *logStatus) get(ctx context.Context) (captureStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return captureStatus{}, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return captureStatus{}, err
	}
	defer resp.Body.Close()
	var st struct {
		Log map[string]captureStatus `json:"log"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return captureStatus{}, err
	}
	return st.Log[logCluster], nil
}

func (s *logStatus) waitCapturing(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := s.get(ctx)
		if err == nil && st.Base != "" && st.Durable > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent's capture did not start within %s (status %+v, %v)", limit, st, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// poll records, every logPoll until ctx ends, each advance of durable.
func (s *logStatus) poll(ctx context.Context, t0 time.Time) error {
	tick := time.NewTicker(logPoll)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		st, err := s.get(ctx)
		at := int64(time.Since(t0))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if failures++; failures > 50 {
				return fmt.Errorf("agent /status: %w", err)
			}
			continue
		}
		failures = 0
		s.mu.Lock()
		if s.bases == nil {
			s.bases = map[string]bool{}
		}
		s.bases[st.Base] = true
		if st.Durable > s.last {
			s.last = st.Durable
			s.ts = append(s.ts, durableAt{rev: st.Durable, at: at})
		}
		s.mu.Unlock()
	}
}

func (s *logStatus) durable() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *logStatus) transitions() []durableAt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ts)
}

// waitDurable waits for the poller to see rev durable.
func (s *logStatus) waitDurable(ctx context.Context, rev int64, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for s.durable() < rev {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(logPoll / 2)
	}
	return true
}

// chainLine is one target's chain, checked.
type chainLine struct {
	line string
	ok   bool
}

// readChains reads the newest full set's chain on every target of cfg.
func readChains(ctx context.Context, path string, last int64) ([]chainLine, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	env, err := action.Load(ctx, cfg, path, "", nil)
	if err != nil {
		return nil, err
	}
	var out []chainLine
	for _, t := range env.Targets {
		m, sum, err := catalog.Latest(ctx, t, env.Trust, logCluster)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name(), err)
		}
		c, err := catalog.ReadChain(ctx, t, env.Trust, m, sum)
		if err != nil {
			return nil, err
		}
		ok := c.End() >= last && c.Broken == nil
		line := fmt.Sprintf("%-4s set %s (revision %d): %d segments, revisions %d..%d; reaches the last write %d: %s",
			t.Name(), m.ID, m.Etcd.Revision, len(c.Segments), m.Etcd.Revision+1, c.End(), last, yesNo(ok))
		if c.Broken != nil {
			line += "; broken: " + c.Broken.Error()
		}
		out = append(out, chainLine{line: line, ok: ok})
	}
	return out, nil
}

// sizeUnder sums the sizes of the files under root whose path keep accepts.
func sizeUnder(root string, keep func(string) bool) (total int64, files int, err error) {
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !keep(p) {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += fi.Size()
		files++
		return nil
	})
	return total, files, err
}

// replayResult is how fast a replay went.
type replayResult struct {
	how       string
	revisions int64
	took      time.Duration
}

func (r replayResult) perSecond() float64 { return float64(r.revisions) / max(r.took.Seconds(), 1e-9) }

// replayBench synthesizes the log of one hour (o.Replay) of the load
// after the full set on the scratch target, signed and encrypted as the
// capture writes it, and replays it: with replay.Replay in this process
// onto the set's snapshot, then with `kdr drill --revision` when the CLI
// has it.
func (b *bench) replayBench(ctx context.Context, cli *clientv3.Client, o logOptions, scfg, keyFile, dir string) ([]replayResult, error) {
	rate := o.ReplayRate
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg, err := config.Load(scfg)
	if err != nil {
		return nil, err
	}
	env, err := action.Load(ctx, cfg, scfg, "", nil)
	if err != nil {
		return nil, err
	}
	t := env.Targets[0]
	m, sum, err := catalog.Latest(ctx, t, env.Trust, logCluster)
	if err != nil {
		return nil, err
	}
	// The keys' create revisions and versions at the set's revision, which
	// the synthesized puts must continue.
	keys, err := cli.Get(ctx, logKeyPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	if keys.Header.Revision != m.Etcd.Revision {
		return nil, fmt.Errorf("etcd is at revision %d, the full set at %d: something wrote in between", keys.Header.Revision, m.Etcd.Revision)
	}
	state := &keyState{created: make([]int64, o.Keys), version: make([]int64, o.Keys)}
	for _, kv := range keys.Kvs {
		if k, ok := logKeyIndex(kv.Key); ok && k < o.Keys {
			state.created[k], state.version[k] = kv.CreateRevision, kv.Version
		}
	}
	// The snapshot the in-process replay starts from: etcd's own, at the
	// set's revision, as restore's decrypt leaves it.
	snap := filepath.Join(dir, "snapshot.db")
	if err := saveSnapshot(ctx, cli, snap); err != nil {
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
	n := int64(rate) * int64(o.Replay/time.Second)
	fmt.Printf("replay: synthesizing %s of the load after set %s (revision %d): %d revisions at %d/s...\n", o.Replay, m.ID, m.Etcd.Revision, n, rate)
	synthStart := time.Now()
	segs, stored, err := synthesizeChain(ctx, t, m, sum, rs, signer, state, n, rate)
	if err != nil {
		return nil, err
	}
	fmt.Printf("replay: %d segments, %.1f MiB stored, in %s\n", segs, mib(stored), time.Since(synthStart).Round(100*time.Millisecond))
	target := m.Etcd.Revision + n

	ids, err := crypto.LoadIdentities(keyFile, nil)
	if err != nil {
		return nil, err
	}
	readStart := time.Now()
	chain, err := catalog.ReadChain(ctx, t, env.Trust, m, sum)
	if err != nil {
		return nil, err
	}
	covering, err := chain.Covering(target)
	if err != nil {
		return nil, err
	}
	fmt.Printf("replay: chain of %d segment heads read and verified in %s\n", len(covering), time.Since(readStart).Round(10*time.Millisecond))
	readStart = time.Now()
	for _, seg := range covering {
		if _, err := catalog.ReadSegment(ctx, t, seg, ids, nil); err != nil {
			return nil, err
		}
	}
	read := time.Since(readStart)
	fmt.Printf("replay: reading the bodies alone (read, check, decrypt, decode): %s, %.0f revisions/s\n", read.Round(10*time.Millisecond), float64(n)/read.Seconds())
	if err := restore.PrepareSnapshotDB(snap); err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := replay.Replay(ctx, replay.Options{DB: snap, Revision: target, Proof: chain.Proof(target),
		Source: replay.Segments(t, covering, ids)})
	took := time.Since(start)
	if err != nil {
		return nil, err
	}
	if res.Applied != n {
		return nil, fmt.Errorf("replay applied %d revisions, not %d", res.Applied, n)
	}
	fi, err := os.Stat(snap)
	if err != nil {
		return nil, err
	}
	fmt.Printf("replay: replay.Replay in this process: %d revisions applied (%d..%d) in %s, database %d MiB after\n",
		res.Applied, res.Base+1, res.Revision, took.Round(10*time.Millisecond), fi.Size()>>20)
	out := []replayResult{{how: fmt.Sprintf("%s at %d/s after a full set, replay.Replay in process (read, decrypt, decode, apply)", o.Replay, rate),
		revisions: res.Applied, took: took}}
	if err := os.Remove(snap); err != nil {
		return nil, err
	}
	help, _ := exec.Command(b.kdr, "drill", "--help").CombinedOutput()
	if !bytes.Contains(help, []byte("--revision")) {
		fmt.Println("replay: `kdr drill --revision` is not in this build: no drill")
		return out, nil
	}
	d, err := b.drillReplay(ctx, o, scfg, keyFile, dir, target, n)
	if err != nil {
		return nil, err
	}
	return append(out, d), nil
}

// drillReplay drills the scratch target to the chain's end and takes
// the replay's time from the drill's report.
func (b *bench) drillReplay(ctx context.Context, o logOptions, scfg, keyFile, dir string, target, n int64) (replayResult, error) {
	start := time.Now()
	cmd := exec.CommandContext(ctx, b.kdr, "--config", scfg, "--log-level", "warn", "drill", "--target", "scratch",
		"--identity", keyFile, "--revision", fmt.Sprint(target), "--no-store", "-o", "json", "--sandbox", dir)
	out, err := cmd.Output()
	wall := time.Since(start)
	var rss int64
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss
		}
	}
	// The bench captures no PKI: the drill's PKI checks fail and it exits 1.
	if exit, ok := err.(*exec.ExitError); err != nil && (!ok || exit.ExitCode() != 1) {
		return replayResult{}, fmt.Errorf("kdr drill --revision: %w: %s", err, out)
	}
	var rep struct {
		Checks []struct {
			ID     string `json:"id"`
			Grade  string `json:"grade"`
			Reason string `json:"reason"`
		} `json:"checks"`
		RTOSeconds float64 `json:"rtoSeconds"`
		Replay     *struct {
			Applied  int64   `json:"applied"`
			Segments int     `json:"segments"`
			Seconds  float64 `json:"seconds"`
		} `json:"replay"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return replayResult{}, fmt.Errorf("kdr drill report: %w: %s", err, out)
	}
	for _, c := range rep.Checks {
		// The synthesized log records no HashKV: the replay check warns.
		if (strings.HasPrefix(c.ID, "etcd-") || strings.HasPrefix(c.ID, "replay")) && c.Grade == "fail" {
			return replayResult{}, fmt.Errorf("kdr drill --revision: check %s failed: %s", c.ID, c.Reason)
		}
	}
	if rep.Replay == nil || rep.Replay.Applied != n {
		return replayResult{}, fmt.Errorf("kdr drill --revision %d did not replay %d revisions: %s", target, n, out)
	}
	limit := "kdr's default, 96 MiB"
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		limit = v
	}
	fmt.Printf("replay: kdr drill --revision %d: %.1fs in all (RTO %.1fs), peak RSS %d MiB, GOMEMLIMIT %s; its replay applied %d revisions from %d segments in %.2fs\n",
		target, wall.Seconds(), rep.RTOSeconds, rss>>10, limit, rep.Replay.Applied, rep.Replay.Segments, rep.Replay.Seconds)
	return replayResult{how: fmt.Sprintf("%s at %d/s after a full set (kdr drill --revision: its replay step)", o.Replay, o.ReplayRate),
		revisions: rep.Replay.Applied, took: time.Duration(rep.Replay.Seconds * float64(time.Second))}, nil
}

// keyState is what the source holds of each working-set key: its create
// revision (0: absent) and version.
type keyState struct {
	created, version []int64
}

// synthesizeChain stores n revisions of the load after base on t as
// the capture would: segments closed at logSegmentBytes of plaintext,
// bodies compressed and encrypted, heads signed and linked. It holds one
// segment at a time.
func synthesizeChain(ctx context.Context, t storage.Target, base *manifest.Manifest, baseSum string, rs []crypto.Recipient,
	signer *manifest.Signer, state *keyState, n int64, rate int) (segments int, stored int64, err error) {
	rng := rand.New(rand.NewPCG(3, 4))
	seen0 := time.Now().Add(-time.Duration(n) * time.Second / time.Duration(rate))
	var prev *manifest.SegmentLink
	var fps []string
	for _, r := range rs {
		fps = append(fps, r.Fingerprint)
	}
	enc := &manifest.LogEncoder{}
	var v []byte
	seal := func() error {
		first, last, seenFirst, seenLast := enc.Range()
		var body bytes.Buffer
		w, err := manifest.NewObjectWriter(&body, rs, manifest.WriteOptions{Name: manifest.SegmentBodyName(first, last), Kind: manifest.KindLog})
		if err != nil {
			return err
		}
		if _, err := enc.WriteTo(w); err != nil {
			w.Abort()
			return err
		}
		h := &manifest.SegmentHead{FormatVersion: manifest.FormatVersion, KdrVersion: version.Version, Cluster: base.Cluster,
			Base: manifest.Link{ID: base.ID, SHA256: baseSum}, First: first, Last: last, Prev: prev,
			SeenFirst: seenFirst, SeenLast: seenLast, Writer: "bench", Recipients: fps}
		if h.Body, err = w.Close(); err != nil {
			return err
		}
		raw, err := h.Marshal()
		if err != nil {
			return err
		}
		if err := t.Put(ctx, manifest.SegmentBodyKey(base.Cluster, base.ID, first, last), bytes.NewReader(body.Bytes()),
			storage.PutOptions{IfAbsent: true, ContentType: "application/octet-stream"}); err != nil {
			return err
		}
		if err := manifest.PutSegmentHead(ctx, t, manifest.SegmentHeadKey(base.Cluster, base.ID, first), raw, signer); err != nil {
			return err
		}
		prev = h.Link(manifest.Sum(raw))
		segments++
		stored += int64(body.Len() + len(raw))
		enc = &manifest.LogEncoder{}
		return ctx.Err()
	}
	keys := len(state.created)
	for i := range n {
		rev := base.Etcd.Revision + 1 + i
		k := rng.IntN(keys)
		ev := manifest.LogEvent{Key: []byte(logKey(k))}
		if state.created[k] != 0 && rng.IntN(logDeleteEvery) == 0 {
			ev.Delete = true
			state.created[k], state.version[k] = 0, 0
		} else {
			if state.created[k] == 0 {
				state.created[k] = rev
			}
			state.version[k]++
			v = logValue(v, rng, k)
			ev.Value, ev.CreateRevision, ev.Version = v, state.created[k], state.version[k]
		}
		seen := seen0.Add(time.Duration(i) * time.Second / time.Duration(rate))
		if err := enc.AddRevision(manifest.LogRevision{Revision: rev, Seen: seen, Events: []manifest.LogEvent{ev}}); err != nil {
			return 0, 0, err
		}
		if enc.Size() >= logSegmentBytes || i == n-1 {
			if err := seal(); err != nil {
				return 0, 0, err
			}
		}
	}
	return segments, stored, nil
}

// saveSnapshot writes etcd's snapshot with its trailing sha256 checked.
func saveSnapshot(ctx context.Context, cli *clientv3.Client, path string) error {
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, rc)
	if err != nil {
		f.Close()
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if n%512 != sha256.Size {
		return fmt.Errorf("snapshot of %d bytes has no trailing sha256", n)
	}
	return nil
}

// cpuTimes reads the CPU time of each named process.
func cpuTimes(pids map[string]int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range pids {
		out[name], _ = cpuTime(pid)
	}
	return out
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func pct(cpu, wall time.Duration) string {
	return fmt.Sprintf("%.0f%%", 100*cpu.Seconds()/wall.Seconds())
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// loadAvg is the machine's 1-minute load average.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// tail is the end of a log file, for an error.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	return string(b[max(len(b)-2000, 0):])
}
