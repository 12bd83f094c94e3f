// Command bench compares kdr with the standard tools on the same generated
// etcd database, in one run, and prints wall times, ratios and kdr's peak
// RSS. `make bench` runs it; the figures go in the README.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/internal/kubedata"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/restore"
)

func main() {
	if err := run(); err != nil {
		fail(err)
	}
}

// run runs the parts asked for; everything it started is stopped and its
// temp dir removed before it returns, also on failure.
func run() error {
	sizes := flag.String("size-mib", "1024", "comma-separated database sizes in MiB")
	cache := flag.String("cache", "bin/bench-cache", "where generated etcd data dirs are kept between runs")
	reps := flag.Int("reps", 3, "runs of each measurement; the median is reported")
	only := flag.String("only", "", "run one part: backup, restore or drill (one untimed backup feeds them), agent, or log")
	agentWindow := flag.Duration("agent-window", time.Minute, "how long the agent is watched idling")
	kdr := flag.String("kdr", "", "the kdr binary measured (default bin/kdr): another build, to compare two in the same state of the machine")
	var lo logOptions
	flag.DurationVar(&lo.Duration, "log-duration", 5*time.Minute, "log: how long the steady write load runs")
	flag.IntVar(&lo.Rate, "log-rate", 500, "log: writes per second asked of the writer")
	flag.IntVar(&lo.Keys, "log-keys", 200000, "log: the working set of ~1 KiB keys the writes overwrite (200,000: a mid-sized cluster, whose full set the log is compared with)")
	flag.DurationVar(&lo.CompactEvery, "log-compact-every", 5*time.Minute, "log: how often the source is compacted")
	flag.Int64Var(&lo.CompactKeep, "log-compact-keep", 5000, "log: revisions a compaction keeps")
	flag.DurationVar(&lo.Replay, "log-replay", time.Hour, "log: how much load, after a full set, is replayed")
	flag.IntVar(&lo.ReplayRate, "log-replay-rate", 500, "log: the writes per second of the replayed load")
	flag.Parse()
	switch *only {
	case "", "backup", "restore", "drill", "agent", "log":
	default:
		return fmt.Errorf("-only %q: want backup, restore, drill, agent or log", *only)
	}
	if lo.Rate <= 0 || lo.Keys < logWorkers || lo.Duration < 10*time.Second || lo.CompactEvery <= 0 || lo.Replay < time.Second || lo.ReplayRate <= 0 {
		return fmt.Errorf("-log-rate, -log-keys (at least %d), -log-duration (at least 10s), -log-compact-every, -log-replay and -log-replay-rate must be positive", logWorkers)
	}
	b, err := newBench(*cache)
	if err != nil {
		return err
	}
	defer b.close()
	if *kdr != "" {
		if b.kdr, err = filepath.Abs(*kdr); err != nil {
			return err
		}
	}
	b.reps = *reps
	b.only = *only
	for _, s := range strings.Split(*sizes, ",") {
		if b.only == "agent" || b.only == "log" {
			break
		}
		mib, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-size-mib %q: %w", s, err)
		}
		if err := b.run(int64(mib) << 20); err != nil {
			return err
		}
	}
	if b.only == "" || b.only == "agent" {
		if err := b.agentBench(*agentWindow); err != nil {
			return err
		}
	}
	if b.only == "" || b.only == "log" {
		return b.logBench(lo)
	}
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

type bench struct {
	bin, work, cache string
	kdr              string // the binary measured
	minio            *process
	s3               string
	client           *minio.Client
	reps             int
	only             string
}

const (
	accessKey = "kdrbench"
	secretKey = "kdrbench-secret"
	bucket    = "bench"
)

func newBench(cache string) (*bench, error) {
	bin, err := filepath.Abs("bin")
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "kdr-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{bin: bin, work: work, cache: cache, kdr: filepath.Join(bin, "kdr")}
	port := freePort()
	b.s3 = fmt.Sprintf("127.0.0.1:%d", port)
	b.minio, err = start(filepath.Join(work, "minio.log"), []string{"MINIO_ROOT_USER=" + accessKey, "MINIO_ROOT_PASSWORD=" + secretKey},
		filepath.Join(bin, "minio"), "server", "--quiet", "--address", b.s3, "--console-address", fmt.Sprintf("127.0.0.1:%d", freePort()), filepath.Join(work, "minio-data"))
	if err != nil {
		return nil, err
	}
	b.client, err = minio.New(b.s3, &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, "")})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if err = b.client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("minio did not start: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return b, nil
}

func (b *bench) close() {
	b.minio.stop()
	os.RemoveAll(b.work)
}

type result struct {
	name   string
	wall   time.Duration
	cpu    time.Duration // user+sys of the measured process
	maxRSS int64         // KiB
}

// median runs f b.reps times and keeps the run with the median wall time:
// the machines this runs on are shared and noisy.
func (b *bench) median(f func() (result, error)) (result, error) {
	var rs []result
	for range max(b.reps, 1) {
		r, err := f()
		if err != nil {
			return result{}, err
		}
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].wall < rs[j].wall })
	return rs[len(rs)/2], nil
}

func (b *bench) run(size int64) error {
	fmt.Printf("\n== database of %d MiB (Kubernetes-like objects)\n", size>>20)
	etcd, endpoint, dbSize, err := b.etcd(size)
	if err != nil {
		return err
	}
	defer etcd.stop()
	fmt.Printf("etcd db size: %d MiB\n", dbSize>>20)
	dir := filepath.Join(b.work, fmt.Sprint(size>>20))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	keyFile, recipient, err := b.newKey(dir)
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "kdr.yaml")
	usb := filepath.Join(dir, "usb")
	if err := os.MkdirAll(usb, 0o755); err != nil {
		return err
	}
	if err := writeBenchConfig(cfg, endpoint, recipient, fmt.Sprintf(`  - name: s3
    s3: {endpoint: %q, bucket: %s, prefix: kdr, accessKey: %s, secretKey: %s, insecure: true, pathStyle: true}
  - name: usb
    local: {path: %s}
`, b.s3, bucket, accessKey, secretKey, usb)); err != nil {
		return err
	}
	switch b.only {
	case "restore":
		if err := runQuiet(b.kdr, "--config", cfg, "--log-level", "warn", "backup", "--target", "s3"); err != nil {
			return err
		}
		return b.restoreBench(dir, endpoint, cfg, keyFile)
	case "drill":
		if err := runQuiet(b.kdr, "--config", cfg, "--log-level", "warn", "backup", "--target", "s3"); err != nil {
			return err
		}
		return b.drillBench(dir, cfg, keyFile)
	}
	var results []result
	snap := filepath.Join(dir, "snap.db")

	// The floor: etcdctl writing the snapshot to local disk, nothing else.
	r, err := b.median(func() (result, error) {
		defer os.Remove(snap)
		return timed("etcdctl snapshot save (floor)", filepath.Join(b.bin, "etcdctl"), "--endpoints", endpoint, "snapshot", "save", snap)
	})
	if err != nil {
		return err
	}
	results = append(results, r)

	// The naive pipeline, one tool after another, as a shell script would.
	steps := [][]string{
		{filepath.Join(b.bin, "etcdctl"), "--endpoints", endpoint, "snapshot", "save", snap},
		{"zstd", "-q", "-f", snap, "-o", snap + ".zst"},
		{"age", "-r", recipient, "-o", snap + ".zst.age", snap + ".zst"},
	}
	r, err = b.median(func() (result, error) {
		defer func() {
			for _, f := range []string{snap, snap + ".zst", snap + ".zst.age"} {
				os.Remove(f)
			}
		}()
		naive := result{name: "etcdctl save + zstd + age + S3 upload (naive)"}
		for _, s := range steps {
			r, err := timed(s[0], s[0], s[1:]...)
			if err != nil {
				return result{}, err
			}
			naive.wall += r.wall
			naive.cpu += r.cpu
		}
		start := time.Now()
		if _, err := b.client.FPutObject(context.Background(), bucket, fmt.Sprintf("naive/%d.db.zst.age", size>>20), snap+".zst.age", minio.PutObjectOptions{}); err != nil {
			return result{}, fmt.Errorf("naive upload: %w", err)
		}
		naive.wall += time.Since(start)
		return naive, nil
	})
	if err != nil {
		return err
	}
	results = append(results, r)

	// One target at a time, then both at once as a user configures it:
	// the stream is encrypted once and written to both.
	for _, target := range []string{"s3", "usb", ""} {
		name, args := "kdr backup to "+target, []string{"--config", cfg, "--log-level", "warn", "backup"}
		if target == "" {
			name = "kdr backup to s3 and usb at once"
		} else {
			args = append(args, "--target", target)
		}
		r, err = b.median(func() (result, error) {
			return timed(name, b.kdr, args...)
		})
		if err != nil {
			return err
		}
		results = append(results, r)
	}

	printTable(b.reps, results)
	if b.only == "backup" {
		return nil
	}
	if err := b.restoreBench(dir, endpoint, cfg, keyFile); err != nil {
		return err
	}
	return b.drillBench(dir, cfg, keyFile)
}

func printTable(reps int, results []result) {
	floor := results[0].wall
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "what (median of %d)\twall\tx floor\tCPU\tpeak RSS\t\n", reps)
	for _, r := range results {
		rss := "-"
		if r.maxRSS > 0 {
			rss = fmt.Sprintf("%d MiB", r.maxRSS>>10)
		}
		fmt.Fprintf(tw, "%s\t%.2fs\t%.2f\t%.1fs\t%s\t\n", r.name, r.wall.Seconds(), float64(r.wall)/float64(floor), r.cpu.Seconds(), rss)
	}
	tw.Flush()
}

// restoreBench restores the newest backup to three members: one etcdutl
// restore (the floor), three in a row (the naive way), and kdr restoring
// each node in parallel, from fetching the set out of S3 to a data dir
// ready to start.
func (b *bench) restoreBench(dir, endpoint, cfg, keyFile string) error {
	fmt.Println("\nrestore to 3 members:")
	snap := filepath.Join(dir, "restore-snap.db")
	if err := runQuiet(filepath.Join(b.bin, "etcdctl"), "--endpoints", endpoint, "snapshot", "save", snap); err != nil {
		return err
	}
	defer os.Remove(snap)
	var peers, nodes []string
	for i := 1; i <= 3; i++ {
		peer := fmt.Sprintf("http://127.0.0.1:%d", freePort())
		peers = append(peers, fmt.Sprintf("m%d=%s", i, peer))
		nodes = append(nodes, fmt.Sprintf("m%d=127.0.0.1,%s,http://127.0.0.1:%d", i, peer, freePort()))
	}
	etcdutl := func(i int, dataDir string) (result, error) {
		defer os.RemoveAll(dataDir)
		return timed("etcdutl snapshot restore", filepath.Join(b.bin, "etcdutl"), "snapshot", "restore", snap, "--data-dir", dataDir,
			"--name", fmt.Sprintf("m%d", i), "--initial-cluster", strings.Join(peers, ","),
			"--initial-advertise-peer-urls", strings.SplitN(peers[i-1], "=", 2)[1], "--bump-revision", "1000000000", "--mark-compacted")
	}
	one, err := b.median(func() (result, error) { return etcdutl(1, filepath.Join(dir, "r1")) })
	if err != nil {
		return err
	}
	one.name = "etcdutl snapshot restore x1 (floor)"
	three, err := b.median(func() (result, error) {
		var sum result
		for i := 1; i <= 3; i++ {
			r, err := etcdutl(i, filepath.Join(dir, fmt.Sprintf("r%d", i)))
			if err != nil {
				return result{}, err
			}
			sum.wall += r.wall
			sum.cpu += r.cpu
		}
		return sum, nil
	})
	if err != nil {
		return err
	}
	three.name = "etcdutl snapshot restore x3 in a row (naive)"
	// applyAll runs kdr restore apply on three roots at once, as three
	// hosts would, each with extra arguments: the wall time of all three,
	// their CPU time summed, and the largest peak RSS of one.
	applyAll := func(roots []string, extra ...string) (result, error) {
		rs := make(chan result, len(roots))
		errs := make(chan error, len(roots))
		start := time.Now()
		for i, root := range roots {
			go func() {
				args := []string{"--config", cfg, "--log-level", "warn", "restore", "apply", "--target", "s3", "--topology", "systemd",
					"--node", fmt.Sprintf("m%d", i+1), "--root", root, "--identity", keyFile}
				for _, n := range nodes {
					args = append(args, "--node-ip", n)
				}
				r, err := timed("kdr restore apply", b.kdr, append(args, extra...)...)
				rs <- r
				errs <- err
			}()
		}
		var all result
		for range roots {
			r := <-rs
			if err := <-errs; err != nil {
				return result{}, err
			}
			all.cpu += r.cpu
			all.maxRSS = max(all.maxRSS, r.maxRSS)
		}
		all.wall = time.Since(start)
		return all, nil
	}
	roots := func(tag string) []string {
		return []string{filepath.Join(dir, tag+"1"), filepath.Join(dir, tag+"2"), filepath.Join(dir, tag+"3")}
	}
	kdr, err := b.median(func() (result, error) {
		rs := roots("whole")
		defer func() {
			for _, r := range rs {
				os.RemoveAll(r)
			}
		}()
		return applyAll(rs, "--until", restore.StepRestoreEtcd)
	})
	if err != nil {
		return err
	}
	// The restore-etcd step alone, the part comparable with etcdutl: the
	// set is fetched and decrypted first, untimed.
	step, err := b.median(func() (result, error) {
		rs := roots("step")
		defer func() {
			for _, r := range rs {
				os.RemoveAll(r)
			}
		}()
		if _, err := applyAll(rs, "--until", restore.StepRestoreFiles); err != nil {
			return result{}, err
		}
		r, err := applyAll(rs, "--until", restore.StepRestoreEtcd)
		r.name = "kdr restore-etcd step alone, 3 nodes at once"
		return r, err
	})
	if err != nil {
		return err
	}
	kdr.name = "kdr restore apply, 3 nodes at once (fetch+decrypt+restore)"
	printTable(b.reps, []result{one, three, step, kdr})
	return nil
}

// etcd starts a single-member etcd on a data dir generated once per size
// and cached, so repeated runs measure the same database.
func (b *bench) etcd(size int64) (*process, string, int64, error) {
	dataDir, err := filepath.Abs(filepath.Join(b.cache, fmt.Sprintf("etcd-%dMiB", size>>20)))
	if err != nil {
		return nil, "", 0, err
	}
	_, statErr := os.Stat(filepath.Join(dataDir, "complete"))
	fresh := statErr != nil
	if fresh {
		os.RemoveAll(dataDir)
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort())
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort())
	p, err := start(filepath.Join(b.work, "etcd.log"), nil, filepath.Join(b.bin, "etcd"),
		"--name", "bench", "--data-dir", dataDir, "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench="+peer,
		"--force-new-cluster", "--quota-backend-bytes", fmt.Sprint(3*size+(1<<30)), "--log-level", "warn")
	if err != nil {
		return nil, "", 0, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 30 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		p.stop()
		return nil, "", 0, err
	}
	defer cli.Close()
	ctx := context.Background()
	if fresh {
		fmt.Printf("generating %d MiB of Kubernetes-like objects (cached in %s)...\n", size>>20, dataDir)
		if _, err := kubedata.Fill(ctx, cli, kubedata.Options{Bytes: size, Namespaces: 50, Seed: 7}); err != nil {
			p.stop()
			return nil, "", 0, err
		}
		if err := os.WriteFile(filepath.Join(dataDir, "complete"), nil, 0o644); err != nil {
			p.stop()
			return nil, "", 0, err
		}
	}
	st, err := cli.Status(ctx, client)
	if err != nil {
		p.stop()
		return nil, "", 0, err
	}
	return p, client, st.DbSize, nil
}

func timed(name, cmd string, args ...string) (result, error) {
	c := exec.Command(cmd, args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	start := time.Now()
	if err := c.Run(); err != nil {
		return result{}, fmt.Errorf("%s: %w: %s", name, err, stderr.String())
	}
	r := result{name: name, wall: time.Since(start), cpu: c.ProcessState.UserTime() + c.ProcessState.SystemTime()}
	if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss
	}
	return r, nil
}

func runQuiet(cmd string, args ...string) error {
	out, err := exec.Command(cmd, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", cmd, err, out)
	}
	return nil
}

func recipientOf(keyFile string) (string, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if r, ok := strings.CutPrefix(line, "# public key: "); ok {
			return r, nil
		}
	}
	return "", fmt.Errorf("%s has no public key comment", keyFile)
}

// writeBenchConfig writes a config for the bench cluster, signing with a
// key made beside it, with the given
// targets (YAML list items) and anything else after them.
// newKey makes an age key pair with kdr in dir, replacing one left by
// an earlier run: the identity's file and the recipient.
func (b *bench) newKey(dir string) (keyFile, recipient string, err error) {
	keyFile = filepath.Join(dir, "key.txt")
	os.Remove(keyFile)
	if err := runQuiet(b.kdr, "keys", "generate", "--out", keyFile); err != nil {
		return "", "", err
	}
	recipient, err = recipientOf(keyFile)
	return keyFile, recipient, err
}

func writeBenchConfig(path, endpoint, recipient, targets string) error {
	priv, pub, err := manifest.GenerateSigningKey("bench")
	if err != nil {
		return err
	}
	keyFile := filepath.Join(filepath.Dir(path), "signing.key")
	if err := os.WriteFile(keyFile, priv, 0o600); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(fmt.Sprintf(`clusters:
  - name: bench
    etcd: {endpoints: [%s], insecure: true}
    state: []
encryption: {recipients: [%s]}
signing: {keyFile: %q, trustedKeys: [%q]}
targets:
%s`, endpoint, recipient, keyFile, pub, targets)), 0o600)
}
