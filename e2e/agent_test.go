package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/kubedata"
	"github.com/kdr-io/kdr/internal/testenv"
)

// agentProc is a `kdr agent` process and its HTTP address.
type agentProc struct {
	cmd    *exec.Cmd
	addr   string
	log    *syncBuffer
	exited chan error
}

// startAgent runs `kdr agent` on the world's host; it is killed when the
// test ends.
func startAgent(t *testing.T, env []string, cfg, root, node, addr string) *agentProc {
	t.Helper()
	p := &agentProc{addr: addr, log: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(kdrBin, "--config", cfg, "--log-format", "json", "agent", "--root", root, "--node", node)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("agent %s log:\n%s", node, p.log)
		}
	})
	return p
}

// get fetches a path of the agent's HTTP endpoints.
func (p *agentProc) get(path string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of one series on /metrics, or -1 when absent.
// series is the name with its labels as Prometheus prints them, sorted.
func (p *agentProc) metric(series string) float64 {
	_, body := p.get("/metrics")
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(value, 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func (p *agentProc) status(t *testing.T) agentStatus {
	t.Helper()
	_, body := p.get("/status")
	var st agentStatus
	json.Unmarshal([]byte(body), &st)
	return st
}

type agentStatus struct {
	Leader bool `json:"leader"`
	Ready  bool `json:"ready"`
	Jobs   map[string]struct {
		Running bool `json:"running"`
		Last    struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"last"`
	} `json:"jobs"`
}

func agentConfig(addr, extra string) string {
	return fmt.Sprintf(`schedule: {backup: "@every 2s", prune: "@every 1h"}
agent:
  listen: %q
  checkInterval: 1s
  shutdownGrace: 1ms
%s`, addr, extra)
}

// TestAgent runs the agent against real etcd and MinIO on a 2-second
// schedule: backups appear in /metrics with a runbook beside each set;
// MinIO stopped shows as failures and an unready agent, and its return
// clears both; a bad config on SIGHUP is refused while the agent goes on;
// SIGTERM in the middle of a backup leaves no half set.
func TestAgent(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1, s3: true})
	// Enough data that a backup lasts long enough to be cut short.
	if _, err := kubedata.Fill(context.Background(), w.etcd.Client(), kubedata.Options{Bytes: 48 << 20, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	spec := w.spec()
	spec.extra = agentConfig(addr, "")
	cfg := writeConfig(t, spec)
	a := startAgent(t, w.env(), cfg, w.host.root, "cp1", addr)

	s3 := fmt.Sprintf(`kdr_backups{cluster=%q,target="s3"}`, cluster)
	usb := fmt.Sprintf(`kdr_backups{cluster=%q,target="usb"}`, cluster)
	testenv.Eventually(t, time.Minute, "two backups on both targets", func() bool {
		return a.metric(s3) >= 2 && a.metric(usb) >= 2
	})
	if code, body := a.get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d %s while every target works", code, body)
	}
	if code, _ := a.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d", code)
	}
	for _, series := range []string{
		fmt.Sprintf(`kdr_backup_last_success_timestamp_seconds{cluster=%q,target="s3"}`, cluster),
		fmt.Sprintf(`kdr_etcd_revision{cluster=%q}`, cluster),
		fmt.Sprintf(`kdr_etcd_db_size_bytes{cluster=%q}`, cluster),
		fmt.Sprintf(`kdr_backup_bytes_written_total{cluster=%q,target="usb"}`, cluster),
		fmt.Sprintf(`kdr_certificate_expiry_timestamp_seconds{cluster=%q,path="/etc/kubernetes/pki/ca.crt"}`, cluster),
		`kdr_job_runs_total{job="backup",result="success"}`,
		`kdr_target_up{target="s3"}`,
		`kdr_leader`,
	} {
		if v := a.metric(series); v <= 0 {
			t.Errorf("%s = %v, want > 0", series, v)
		}
	}
	checkRunbooks(t, w)
	if t.Failed() {
		_, body := a.get("/metrics")
		t.Fatalf("metrics:\n%s", body)
	}

	w.minio.Stop()
	testenv.Eventually(t, time.Minute, "the stopped MinIO counted as failures and the agent unready", func() bool {
		code, _ := a.get("/readyz")
		return code == http.StatusServiceUnavailable &&
			a.metric(fmt.Sprintf(`kdr_backup_failures_total{cluster=%q,reason="target",target="s3"}`, cluster)) >= 1 &&
			a.metric(`kdr_target_up{target="s3"}`) == 0
	})
	before := a.metric(s3)
	w.minio.Start()
	testenv.Eventually(t, time.Minute, "MinIO back: ready, up, and backing up to it again", func() bool {
		code, _ := a.get("/readyz")
		return code == http.StatusOK && a.metric(`kdr_target_up{target="s3"}`) == 1 && a.metric(s3) > before
	})

	good := testenv.ReadFile(t, cfg)
	testenv.WriteFile(t, cfg, append(bytes.Clone(good), []byte("bogus: 1\n")...), 0o600)
	a.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 10*time.Second, "a bad config refused on SIGHUP", func() bool {
		return a.metric("kdr_config_last_reload_successful") == 0
	})
	if code, _ := a.get("/healthz"); code != http.StatusOK {
		t.Fatal("the agent stopped serving after a refused reload")
	}
	if !strings.Contains(a.log.String(), "bogus") {
		t.Error("the refused reload's log does not name the bad key")
	}
	testenv.WriteFile(t, cfg, good, 0o600)
	a.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 10*time.Second, "the good config taken on SIGHUP", func() bool {
		return a.metric("kdr_config_last_reload_successful") == 1
	})

	// SIGTERM while a backup runs, with a grace of 1ms: it is cancelled.
	testenv.Eventually(t, time.Minute, "a backup in flight", func() bool { return a.status(t).Jobs["backup"].Running })
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.exited:
		a.exited <- err
		if err != nil {
			t.Fatalf("agent after SIGTERM: %v\n%s", err, a.log)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent still running 30s after SIGTERM")
	}
	if !strings.Contains(a.log.String(), "cancelling the runs in flight") {
		t.Fatalf("SIGTERM did not find the backup in flight\n%s", a.log)
	}
	noHalfSets(t, w, cfg)
}

// checkRunbooks finds the Markdown and PDF runbook beside the newest set
// on the local target, naming the set, with no key in them.
func checkRunbooks(t *testing.T, w *world) {
	t.Helper()
	sets, err := filepath.Glob(filepath.Join(w.usb, cluster, "*", "manifest.json"))
	if err != nil || len(sets) == 0 {
		t.Fatalf("no sets on the local target (%v)", err)
	}
	newest := filepath.Dir(sets[len(sets)-1])
	id := filepath.Base(newest)
	// The runbook is stored just after the manifest; give it a moment.
	testenv.Eventually(t, 10*time.Second, "the runbook beside "+id, func() bool {
		_, err := os.Stat(filepath.Join(newest, "runbook.pdf"))
		return err == nil
	})
	md := testenv.ReadFile(t, filepath.Join(newest, "runbook.md"))
	mustContain(t, "runbook.md", string(md), id, "restore-etcd", "etcdutl")
	pdf := filepath.Join(newest, "runbook.pdf")
	mustContain(t, "runbook.pdf", string(tool(t, "pdftotext", pdf, "-")), id, "restore-etcd")
	for _, f := range []string{"runbook.md", "runbook.pdf"} {
		if bytes.Contains(testenv.ReadFile(t, filepath.Join(newest, f)), []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a private key", f)
		}
		// Signed like the set, so a printed copy can be checked.
		if _, err := os.Stat(filepath.Join(newest, f+".sig")); err != nil {
			t.Errorf("%s is not signed: %v", f, err)
		}
	}
}

// noHalfSets checks that every set listed is whole on every target that
// lists it.
func noHalfSets(t *testing.T, w *world, cfg string) {
	t.Helper()
	incomplete := 0
	keys := w.s3Keys(t)
	for _, key := range keys {
		if strings.HasSuffix(key, "/"+"state.tar.zst.age") {
			manifest := strings.TrimSuffix(key, "state.tar.zst.age") + "manifest.json"
			if !slices.Contains(keys, manifest) {
				incomplete++
			}
		}
	}
	t.Logf("sets without a manifest after SIGTERM (cut short, invisible): %d", incomplete)
	// A set taken while MinIO was down is on the local target only.
	for _, e := range w.list(t, cfg) {
		for _, target := range e.Targets {
			r := w.kdr(t, cfg, "verify", "--identity", w.identity, "--target", target, e.ID)
			if r.code != 0 {
				t.Errorf("set %s listed on %s but not whole there:\n%s", e.ID, target, r)
			}
		}
	}
}

// syncBuffer is a log buffer the process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAgentLeaderElection runs two agents against a real kube-apiserver
// (made by kubeadm) and one etcd: only the lease holder backs up, and when
// it is killed the other takes the lease and the backups go on from it.
func TestAgentLeaderElection(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	k := testenv.StartKubeadmHost(t, testenv.KubeOptions{})
	k.Kubectl(t, "create", "namespace", "kdr-system")
	kubeconfig := k.Kubeconfig(t, "super-admin.conf")
	agents := map[string]*agentProc{}
	for _, node := range []string{"cp1", "cp2"} {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		spec := w.spec()
		spec.extra = agentConfig(addr, leaderElection(kubeconfig))
		spec.extra = strings.Replace(spec.extra, `"@every 2s"`, `"@every 1s"`, 1)
		agents[node] = startAgent(t, nil, writeConfig(t, spec), w.host.root, node, addr)
	}
	leader, standby := waitLeader(t, agents)
	backups := fmt.Sprintf(`kdr_backups{cluster=%q,target="usb"}`, cluster)
	testenv.Eventually(t, time.Minute, "three backups", func() bool { return agents[leader].metric(backups) >= 3 })
	st := agents[standby].status(t)
	if st.Leader || agents[standby].metric("kdr_leader") != 0 || agents[leader].metric("kdr_leader") != 1 {
		t.Fatalf("both agents lead, or the metric says otherwise (standby status %+v)", st)
	}
	if code, body := agents[standby].get("/readyz"); code != http.StatusOK {
		t.Fatalf("the standby is not ready: %d %s", code, body)
	}
	if n := agents[standby].metric(`kdr_job_runs_total{job="backup",result="success"}`); n > 0 {
		t.Fatalf("the standby ran %v backups", n)
	}
	checkNodes(t, w, map[string]bool{leader: true})

	// Killed, the leader cannot give the lease back: the standby waits for
	// it to expire.
	killed := time.Now()
	agents[leader].cmd.Process.Kill()
	testenv.Eventually(t, time.Minute, "the standby takes over", func() bool { return agents[standby].status(t).Leader })
	t.Logf("the standby led %s after the leader was killed (lease duration 4s)", time.Since(killed).Round(100*time.Millisecond))
	testenv.Eventually(t, time.Minute, "backups by the new leader", func() bool {
		return agents[standby].metric(`kdr_job_runs_total{job="backup",result="success"}`) >= 2
	})
	checkNodes(t, w, map[string]bool{leader: true, standby: true})
}

// waitLeader waits for one of two agents to lead and names both.
func waitLeader(t *testing.T, agents map[string]*agentProc) (leader, standby string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, "one agent leads", func() bool {
		for node, a := range agents {
			if a.status(t).Leader {
				leader = node
			}
		}
		return leader != ""
	})
	for node := range agents {
		if node != leader {
			standby = node
		}
	}
	return leader, standby
}

// leaderElection is the agent config of a test's Lease on kubeconfig's
// API server: short enough that a handover takes seconds.
func leaderElection(kubeconfig string) string {
	return fmt.Sprintf(`  leaderElection:
    enabled: true
    kubeconfig: %q
    namespace: kdr-system
    name: kdr
    leaseDuration: 4s
    renewDeadline: 3s
    retryPeriod: 500ms
`, kubeconfig)
}

// checkNodes reads every manifest on the local target and fails when a
// set was taken by a node not in want.
func checkNodes(t *testing.T, w *world, want map[string]bool) {
	t.Helper()
	manifests, _ := filepath.Glob(filepath.Join(w.usb, cluster, "*", "manifest.json"))
	seen := map[string]int{}
	for _, m := range manifests {
		var doc struct {
			Node string `json:"node"`
		}
		if err := json.Unmarshal(testenv.ReadFile(t, m), &doc); err != nil {
			t.Fatal(err)
		}
		seen[doc.Node]++
		if !want[doc.Node] {
			t.Errorf("set %s was taken by %s, want only %v", filepath.Base(filepath.Dir(m)), doc.Node, want)
		}
	}
	t.Logf("sets per node: %v", seen)
}
