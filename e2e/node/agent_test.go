package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestAgentOnNode installs the agent's Deployment on a real node, exactly
// as deploy/README.md says, and puts it through what upgrades and
// incidents do: the leader's pod deleted, the kubelet restarted in the
// middle of a backup, the API server away for a minute, the etcd member
// the snapshot streams from killed, the S3 endpoint gone for longer than
// a schedule period, a backup falling due during a handover, a rolling
// update while a backup runs, and the uninstall. Backups are listed and
// verified from a host outside the cluster; every scheduled minute gets
// at most one set, and each incident ends with every set verifying and
// the metrics telling the truth.
func TestAgentOnNode(t *testing.T) {
	w := newNodeWorld(t)
	// Two more etcd members make the three of a stacked HA control plane;
	// the agent streams its snapshot from a follower.
	peers := []*testenv.EtcdPeer{
		w.node.AddEtcdMember(t, w.net, "etcd2"),
		w.node.AddEtcdMember(t, w.net, "etcd3"),
	}
	// Enough data that a backup lasts long enough to be caught running.
	fillNodeEtcd(t, w.node, 32<<20)

	t.Run("install", func(t *testing.T) {
		w.install(t, peers)
		pods := w.waitPodsReady(t)
		w.leader(t, "")
		leaders := 0
		for _, p := range pods {
			if w.metric(p.IP, "kdr_leader") == 1 {
				leaders++
			}
			if p.Image != "ghcr.io/kdr-io/kdr:"+w.tag {
				t.Errorf("pod %s runs %s, want the release %s", p, p.Image, w.tag)
			}
		}
		if leaders != 1 {
			t.Fatalf("%d pods say they lead, want 1", leaders)
		}
	})

	t.Run("scheduled backups verified from outside", func(t *testing.T) {
		first := w.waitSetAfter(t, time.Time{})
		w.waitSetAfter(t, first.Created)
		w.verifyAll(t)
	})

	t.Run("metrics through the Service", func(t *testing.T) {
		ip := w.node.Kubectl(t, "-n", "kdr-system", "get", "service", "kdr", "-o", "jsonpath={.spec.clusterIP}")
		series := fmt.Sprintf(`kdr_backups{cluster=%q,target="s3"}`, cluster)
		testenv.Eventually(t, time.Minute, "the Service's /metrics counting sets", func() bool {
			return w.metric(ip, series) >= 1 && w.metric(ip, "kdr_leader") >= 0
		})
	})

	t.Run("ConfigMap edit picked up", func(t *testing.T) {
		cfg := filepath.Join(w.dir, "my-kdr", "kdr.yaml")
		edited := strings.Replace(string(testenv.ReadFile(t, cfg)), "prune: 0 3 * * *", "prune: 0 2 * * *", 1)
		if edited == string(testenv.ReadFile(t, cfg)) {
			t.Fatalf("no prune schedule to edit in %s", cfg)
		}
		testenv.WriteFile(t, cfg, []byte(edited), 0o644)
		w.sh(t, "kubectl apply -k my-kdr")
		testenv.Eventually(t, nodeWait, "both pods running the edited prune schedule", func() bool {
			pods, err := w.tryPods(t.Context())
			if err != nil {
				return false
			}
			for _, p := range pods {
				if w.status(p.IP).Jobs["prune"].Schedule != "0 2 * * *" {
					return false
				}
			}
			return true
		})
	})

	t.Run("leader pod deleted", func(t *testing.T) {
		old := w.leader(t, "")
		deleted := time.Now()
		w.node.Kubectl(t, "-n", "kdr-system", "delete", "pod", old.Name, "--wait=false")
		w.leader(t, old.Name)
		w.waitSetAfter(t, deleted)
		w.waitPodsReady(t)
	})

	t.Run("kubelet restarted during a backup", func(t *testing.T) {
		lead := w.leader(t, "")
		w.waitBackupRunning(t, lead.IP)
		w.node.StopProcess("kubelet")
		time.Sleep(3 * time.Second)
		w.node.StartProcess("kubelet")
		testenv.Eventually(t, nodeWait, "the backup that ran through the restart finished", func() bool {
			st := w.status(lead.IP).Jobs["backup"]
			return !st.Running && st.Last.OK
		})
		for _, p := range w.waitPodsReady(t) {
			if p.Restarts != 0 {
				t.Errorf("pod %s restarted %d times across the kubelet's restart", p, p.Restarts)
			}
		}
	})

	t.Run("API server away for a minute", func(t *testing.T) {
		w.leader(t, "")
		pods := w.pods(t)
		manifest := w.node.Path("/etc/kubernetes/manifests/kube-apiserver.yaml")
		aside := w.node.Path("/etc/kubernetes/kube-apiserver.yaml.away")
		if err := os.Rename(manifest, aside); err != nil {
			t.Fatal(err)
		}
		comeBack := sync.OnceValue(func() error { return os.Rename(aside, manifest) })
		t.Cleanup(func() { comeBack() }) // even when the test fails first
		away := time.Now()
		// The leader cannot renew its Lease: it stops leading within the
		// renew deadline, and no replica backs up while none leads.
		testenv.Eventually(t, nodeWait, "no replica leading while the API server is away", func() bool {
			for _, p := range pods {
				if w.metric(p.IP, "kdr_leader") != 0 {
					return false
				}
			}
			return true
		})
		stopped := time.Now()
		for time.Since(away) < time.Minute {
			time.Sleep(time.Second)
		}
		before := len(w.sets(t))
		if err := comeBack(); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		for _, s := range w.sets(t) {
			if s.Created.After(stopped) && s.Created.Before(back) {
				t.Errorf("set %s was taken at %s while no replica led (%s to %s)", s.ID, s.Created.Format(time.TimeOnly),
					stopped.Format(time.TimeOnly), back.Format(time.TimeOnly))
			}
		}
		// The tick missed while nobody led is run once by the new leader.
		newLead := w.leader(t, "")
		leading := time.Now()
		w.waitSetAfter(t, back)
		if len(w.sets(t)) <= before {
			t.Errorf("no set after the API server came back")
		}
		// The new leader runs the missed backup at once, unless the next
		// tick came soon after it took the Lease and ran it first. Time
		// is counted from the Lease, not from the manifest's return: the
		// API server's start and the old Lease's expiry take a while on
		// a loaded host.
		if got := w.metric(newLead.IP, "kdr_backup_catchup_runs_total"); got < 1 {
			// A holder that takes the Lease back keeps its old
			// acquireTime (client-go's leader election does so): then
			// the time the test saw it lead again, which is no earlier.
			led := w.leaseAcquired(t)
			if !led.After(back) {
				led = leading
			}
			if next := led.Truncate(time.Minute).Add(time.Minute); next.Sub(led) > 20*time.Second {
				log, _ := w.node.KubectlE(t.Context(), "-n", "kdr-system", "logs", newLead.Name, "--tail", "30")
				t.Errorf("leader %s ran no catch-up, and the next tick (%s) came %s after it took the Lease (%s); its log:\n%s", newLead,
					next.Format(time.TimeOnly), next.Sub(led).Round(time.Second), led.Format(time.TimeOnly), log)
			}
		}
	})

	t.Run("etcd member streamed from killed", func(t *testing.T) {
		// The snapshot streams from a follower: with the node's member
		// leading, that is a peer on a host of its own, which can die.
		w.etcdLeaderOnNode(t)
		lead := w.leader(t, "")
		w.waitBackupRunning(t, lead.IP)
		endpoint := w.streamedFrom(t, lead)
		var victim *testenv.EtcdPeer
		for _, p := range peers {
			if p.ClientURL() == endpoint {
				victim = p
			}
		}
		if victim == nil {
			t.Fatalf("the snapshot streams from %s, not from a follower on its own host", endpoint)
		}
		killed := time.Now()
		victim.Kubelet.Stop()
		victim.Host.Remove(t)
		w.waitSetAfter(t, killed)
		if got := w.streamedFrom(t, lead); got == endpoint {
			t.Errorf("the backup after the kill still names %s", got)
		}
	})

	t.Run("S3 gone longer than a period", func(t *testing.T) {
		lead := w.leader(t, "")
		failures := fmt.Sprintf(`kdr_backup_failures_total{cluster=%q,reason="target",`, cluster)
		before := w.metricSum(lead.IP, failures)
		w.minio.Stop()
		t.Cleanup(w.minio.Start) // even when the test fails first
		var seen string
		defer func() {
			if t.Failed() {
				t.Logf("last seen on %s: %s", lead, seen)
			}
		}()
		testenv.Eventually(t, nodeWait, "the target down in the metrics and a failed backup counted", func() bool {
			up, failed := w.metric(lead.IP, `kdr_target_up{target="s3"}`), w.metricSum(lead.IP, failures)
			seen = fmt.Sprintf("kdr_target_up %v, target failures %v (before %v)", up, failed, before)
			return up == 0 && failed > before
		})
		if code, _, _ := w.get(lead.IP, "/readyz"); code == 200 {
			t.Errorf("the leader is ready while its only target is gone")
		}
		time.Sleep(70 * time.Second)
		w.minio.Start()
		back := time.Now()
		w.waitSetAfter(t, back)
		w.metricsTellTheTruth(t)
	})

	t.Run("backup due during a handover", func(t *testing.T) {
		old := w.leader(t, "")
		// Delete the leader a moment before the minute, so the tick falls
		// while the Lease moves.
		next := time.Now().Truncate(time.Minute).Add(time.Minute)
		if time.Until(next) < 5*time.Second {
			next = next.Add(time.Minute)
		}
		time.Sleep(time.Until(next.Add(-2 * time.Second)))
		w.node.Kubectl(t, "-n", "kdr-system", "delete", "pod", old.Name, "--wait=false")
		w.leader(t, old.Name)
		w.waitSetAfter(t, next)
		if ids := setsIn(w.sets(t), next); len(ids) != 1 {
			t.Errorf("the backup due at %s during the handover ran %d times: %v", next.Format(time.TimeOnly), len(ids), ids)
		}
		w.waitPodsReady(t)
	})

	t.Run("rolling update during a backup", func(t *testing.T) {
		lead := w.leader(t, "")
		w.waitBackupRunning(t, lead.IP)
		upgrade := w.block(t, "Upgrade", "sh", 0)
		if !strings.Contains(upgrade, "NEW="+upgradeTag) {
			t.Fatalf("the README's upgrade no longer names %s:\n%s", upgradeTag, upgrade)
		}
		started := time.Now()
		w.sh(t, upgrade)
		for _, p := range w.waitPodsReady(t) {
			if p.Image != "ghcr.io/kdr-io/kdr:"+upgradeTag {
				t.Errorf("pod %s runs %s after the upgrade", p, p.Image)
			}
		}
		w.leader(t, "")
		w.waitSetAfter(t, started.Truncate(time.Minute).Add(time.Minute))
		if ids := setsIn(w.sets(t), started.Truncate(time.Minute)); len(ids) != 1 {
			t.Errorf("the backup of %s, running when the update began, gave %d sets: %v", started.Truncate(time.Minute).Format(time.TimeOnly), len(ids), ids)
		}
	})

	t.Run("memory under the limit", func(t *testing.T) {
		for _, p := range w.pods(t) {
			path := filepath.Join("/sys/fs/cgroup/memory", w.node.CgroupRoot, "kubepods", "burstable", "pod"+p.UID, "memory.max_usage_in_bytes")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("pod %s memory: %v", p, err)
			}
			peak, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			t.Logf("pod %s peak memory %d MiB", p, peak>>20)
			if peak <= 0 || peak >= 256<<20 {
				t.Errorf("pod %s peak memory %d bytes, want under the 256 MiB limit", p, peak)
			}
		}
	})

	t.Run("every set verifies, none twice", func(t *testing.T) {
		sets := w.sets(t)
		neverTwice(t, sets)
		w.verifyAll(t)
		w.metricsTellTheTruth(t)
		if out, err := w.kdrOn(t, "list"); err != nil || strings.Contains(out, "incomplete") {
			t.Errorf("kdr list after the incidents: %v\n%s", err, out)
		}
	})

	t.Run("uninstall keeps the backups", func(t *testing.T) {
		before := w.sets(t)
		w.sh(t, w.block(t, "Uninstall", "sh", 0))
		if _, err := w.node.KubectlE(t.Context(), "get", "namespace", "kdr-system"); err == nil {
			testenv.Eventually(t, nodeWait, "namespace kdr-system gone", func() bool {
				_, err := w.node.KubectlE(t.Context(), "get", "namespace", "kdr-system")
				return err != nil
			})
		}
		if after := w.sets(t); len(after) < len(before) {
			t.Errorf("%d sets before the uninstall, %d after", len(before), len(after))
		}
		w.verifyAll(t)
	})
}

// etcdLeaderOnNode moves etcd's leadership to the node's member unless it
// is there.
func (w *nodeWorld) etcdLeaderOnNode(t *testing.T) {
	t.Helper()
	out, err := w.node.Etcdctl(t.Context(), "endpoint", "status", "--cluster", "-w", "json")
	if err != nil {
		t.Fatal(err)
	}
	var status []struct {
		Endpoint string
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
			Leader uint64 `json:"leader"`
		}
	}
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		t.Fatalf("etcdctl endpoint status: %v\n%s", err, out)
	}
	var own, leader uint64
	var leaderURL string
	for _, s := range status {
		if s.Endpoint == w.node.ClientURL() {
			own = s.Status.Header.MemberID
		}
		if s.Status.Header.MemberID == s.Status.Leader {
			leader, leaderURL = s.Status.Leader, s.Endpoint
		}
	}
	if own == 0 || leader == 0 {
		t.Fatalf("no leader or no member of the node in:\n%s", out)
	}
	if own != leader {
		if _, err := w.node.EtcdctlAt(t.Context(), leaderURL, "move-leader", strconv.FormatUint(own, 16)); err != nil {
			t.Fatal(err)
		}
	}
}

// streamedFrom is the endpoint the leader's last backup streamed its
// snapshot from, from its log.
func (w *nodeWorld) streamedFrom(t *testing.T, lead pod) string {
	t.Helper()
	var endpoint string
	testenv.Eventually(t, nodeWait, "the leader's log naming the member it streams from", func() bool {
		out, err := w.node.KubectlE(t.Context(), "-n", "kdr-system", "logs", lead.Name)
		if err != nil {
			return false
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `"msg":"streaming etcd snapshot"`) {
				if _, rest, ok := strings.Cut(line, `"endpoint":"`); ok {
					endpoint, _, _ = strings.Cut(rest, `"`)
				}
			}
		}
		return endpoint != ""
	})
	return endpoint
}

// fillNodeEtcd writes filler into the node's etcd, from the test process
// through the node's network namespace, under a prefix of its own: data
// under /registry would be objects the API server has to decode.
func fillNodeEtcd(t *testing.T, n *testenv.Node, bytes int64) {
	t.Helper()
	pem := func(p string) []byte { return testenv.ReadFile(t, n.Path(p)) }
	cert, err := tls.X509KeyPair(pem("/etc/kubernetes/pki/apiserver-etcd-client.crt"), pem("/etc/kubernetes/pki/apiserver-etcd-client.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem("/etc/kubernetes/pki/etcd/ca.crt"))
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{net.JoinHostPort(n.IP, "2379")},
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return n.Host.DialContext(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), nodeWait)
	defer cancel()
	// Random values, so that compression does not make the snapshot
	// small again.
	value := make([]byte, 64<<10)
	for i := int64(0); i*int64(len(value)) < bytes; i++ {
		rand.Read(value)
		if _, err := cli.Put(ctx, fmt.Sprintf("/kdr-e2e-filler/%06d", i), string(value)); err != nil {
			t.Fatalf("fill the node's etcd: %v", err)
		}
	}
}
