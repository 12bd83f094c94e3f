package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// agentBench runs kdr agent on a small cluster with a backup every minute
// and reports what it costs while it mostly waits: CPU time over the
// window, peak RSS, and how long a scrape of /metrics takes.
func (b *bench) agentBench(window time.Duration) error {
	fmt.Printf("\n== kdr agent, %s with a backup every minute\n", window)
	etcd, endpoint, dbSize, err := b.etcd(64 << 20)
	if err != nil {
		return err
	}
	defer etcd.stop()
	dir := filepath.Join(b.work, "agent")
	usb := filepath.Join(dir, "usb")
	if err := os.MkdirAll(usb, 0o755); err != nil {
		return err
	}
	_, recipient, err := b.newKey(dir)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	cfg := filepath.Join(dir, "kdr.yaml")
	if err := writeBenchConfig(cfg, endpoint, recipient, fmt.Sprintf(`  - name: usb
    local: {path: %s}
retention: {keepLast: 3}
schedule: {backup: "* * * * *", prune: "@every 24h"}
agent: {listen: %q, leaderElection: {enabled: false}}
`, usb, addr)); err != nil {
		return err
	}
	p, err := start(filepath.Join(dir, "agent.log"), nil, b.kdr, "--config", cfg, "agent")
	if err != nil {
		return err
	}
	defer p.stop()
	client := &http.Client{Timeout: 5 * time.Second}
	get := func() error {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); get() != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("kdr agent did not serve /metrics within 30s (log in %s)", dir)
		}
	}
	pid := p.cmd.Process.Pid
	cpu0, err := cpuTime(pid)
	if err != nil {
		return err
	}
	time.Sleep(window)
	cpu1, err := cpuTime(pid)
	if err != nil {
		return err
	}
	var scrapes []time.Duration
	for range 200 {
		start := time.Now()
		if err := get(); err != nil {
			return err
		}
		scrapes = append(scrapes, time.Since(start))
	}
	slices.Sort(scrapes)
	hwm, err := statusKiB(pid, "VmHWM")
	if err != nil {
		return err
	}
	sets, _ := filepath.Glob(filepath.Join(usb, "bench", "*", "manifest.json"))
	fmt.Printf("etcd db size: %d MiB; backups taken in the window: %d\n", dbSize>>20, len(sets))
	fmt.Printf("CPU time over %s: %.2fs (%.2f%% of one core)\n", window, (cpu1 - cpu0).Seconds(), 100*(cpu1-cpu0).Seconds()/window.Seconds())
	fmt.Printf("peak RSS: %d MiB\n", hwm>>10)
	fmt.Printf("GET /metrics, 200 scrapes: median %s, p99 %s, max %s\n",
		scrapes[len(scrapes)/2].Round(10*time.Microsecond), scrapes[len(scrapes)*99/100].Round(10*time.Microsecond), scrapes[len(scrapes)-1].Round(10*time.Microsecond))
	return nil
}

// cpuTime is a process's user and system time from /proc.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it do not.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// statusKiB reads a kB field of /proc/PID/status.
func statusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
