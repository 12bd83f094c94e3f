package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kdr-io/kdr/internal/ociimage"
	"github.com/kdr-io/kdr/internal/testenv"
)

const (
	// cluster names the one cluster of the agent's config (base/kdr.yaml's).
	cluster = "prod"
	// bucket is the S3 target's bucket.
	bucket = "kdr"
	// kdrTimeout bounds one run of kdr on the operator's host.
	kdrTimeout = 3 * time.Minute
	// nodeBackupSchedule is the agent's backup schedule on the node: on
	// the minute, so that every scheduled time is known in advance and a
	// test can ask whether each got exactly one set.
	nodeBackupSchedule = "* * * * *"
	// nodeWait bounds each wait on the node: a rollout, a Lease handover,
	// a scheduled backup (up to a minute away, then its run).
	nodeWait = 4 * time.Minute
	// upgradeTag is the release the README's upgrade block names.
	upgradeTag = "v0.1.1"
)

// nodeWorld is the agent's Deployment on a real node, installed as
// deploy/README.md says, with MinIO on a host of the same network and an
// operator's host that reads the backups from outside the cluster.
type nodeWorld struct {
	net      *testenv.Network
	node     *testenv.Node
	minio    *testenv.MinIO
	operator *testenv.Host
	// dir is the install directory of the README: kdr/deploy, my-kdr,
	// the keys. /tmp is the same for the node and the test.
	dir string
	// opCfg is the operator's config: the agent's, with credentials of
	// its own, on the operator's host.
	opCfg    string
	identity string
	// readme are the README's blocks by section.
	readme map[string][]readmeBlock
	// tag is the release the install uses (VERSION).
	tag string
	// kdr is the binary the image holds, which the operator runs too.
	kdr string
}

// readmeBlock is one fenced code block of deploy/README.md.
type readmeBlock struct {
	lang, text string
}

func newNodeWorld(t *testing.T) *nodeWorld {
	t.Helper()
	// The package's directory is e2e/node.
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	tag := strings.TrimSpace(string(testenv.ReadFile(t, filepath.Join(root, "VERSION"))))
	image := filepath.Join(root, "bin", "kdr-image.tar")
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("the agent's image: %v: run `make image`", err)
	}
	upgrade := upgradeImage(t, testenv.Binary(t, "kdr"))
	w := &nodeWorld{net: testenv.NewNetwork(t), dir: t.TempDir(), tag: tag, kdr: testenv.Binary(t, "kdr")}
	w.readme = readmeBlocks(t, filepath.Join(root, "deploy", "README.md"))
	w.minio = testenv.StartMinIO(t, testenv.MinIOOptions{Host: w.net.AddHost(t, "s3")})
	w.minio.CreateBucket(t, bucket, false)
	w.operator = w.net.AddHost(t, "operator")
	w.node = testenv.StartNode(t, w.net, testenv.NodeOptions{Name: "cp1", Images: []string{image, upgrade}})
	testenv.Mkdir(t, filepath.Join(w.dir, "kdr"), 0o755)
	if out, err := exec.Command("cp", "-R", filepath.Join(root, "deploy"), filepath.Join(w.dir, "kdr", "deploy")).CombinedOutput(); err != nil {
		t.Fatalf("copy deploy/: %v: %s", err, out)
	}
	return w
}

// upgradeImage is the image of the README's upgrade: the release's files,
// entrypoint and version label, tagged upgradeTag.
func upgradeImage(t *testing.T, kdr string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "kdr-upgrade.tar")
	_, err := ociimage.WriteFile(t.Context(), out, ociimage.Image{
		Name: "ghcr.io/kdr-io/kdr:" + upgradeTag,
		Files: []ociimage.File{
			{Path: "/usr/local/bin/kdr", Mode: 0o755, Source: kdr},
			{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Source: "/etc/ssl/certs/ca-certificates.crt"},
		},
		Entrypoint: []string{"kdr"},
		Labels:     map[string]string{"org.opencontainers.image.version": upgradeTag},
	})
	if err != nil {
		t.Fatalf("upgrade image: %v", err)
	}
	return out
}

// readmeBlocks reads the fenced code blocks of a Markdown file by the
// "## " section they are in.
func readmeBlocks(t *testing.T, path string) map[string][]readmeBlock {
	t.Helper()
	blocks := map[string][]readmeBlock{}
	var section string
	var cur *readmeBlock
	var indent string
	sc := bufio.NewScanner(strings.NewReader(string(testenv.ReadFile(t, path))))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			indent = line[:len(line)-len(strings.TrimLeft(line, " "))]
			cur = &readmeBlock{lang: strings.TrimPrefix(trimmed, "```")}
		case cur != nil && trimmed == "```":
			blocks[section] = append(blocks[section], *cur)
			cur = nil
		case cur != nil:
			cur.text += strings.TrimPrefix(line, indent) + "\n"
		}
	}
	return blocks
}

// block returns the i-th block of language lang in section, or fails.
func (w *nodeWorld) block(t *testing.T, section, lang string, i int) string {
	t.Helper()
	var of []string
	for _, b := range w.readme[section] {
		if b.lang == lang {
			of = append(of, b.text)
		}
	}
	if i >= len(of) {
		t.Fatalf("deploy/README.md section %q has %d %s blocks, want at least %d", section, len(of), lang, i+1)
	}
	return of[i]
}

// sh runs a README block in the install directory on the node, as an
// operator with kdr and kubectl on PATH and kubeadm's admin kubeconfig.
func (w *nodeWorld) sh(t *testing.T, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), nodeWait+time.Minute)
	defer cancel()
	cmd := w.node.Command(ctx, "sh", "-euc", "cd "+w.dir+"\n"+script)
	cmd.Env = []string{
		"PATH=" + filepath.Dir(w.kdr) + ":" + filepath.Dir(testenv.Binary(t, "kubectl")) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"KUBECONFIG=" + testenv.NodeAdminKubeconfig,
		"HOME=" + w.dir,
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README block failed: %v\n--- block ---\n%s--- output ---\n%s", err, script, out)
	}
	return string(out)
}

var (
	ageRecipient = regexp.MustCompile(`age1[0-9a-z]+`)
	sshPublicKey = regexp.MustCompile(`ssh-ed25519 [A-Za-z0-9+/=]+`)
)

// install runs the README's install as written: keys, the overlay with
// the operator's edit of the config, the Secrets, the apply.
func (w *nodeWorld) install(t *testing.T, peers []*testenv.EtcdPeer) {
	t.Helper()
	keys := w.sh(t, w.block(t, "Install", "sh", 0))
	recipient, public := ageRecipient.FindString(keys), sshPublicKey.FindString(keys)
	if recipient == "" || public == "" {
		t.Fatalf("kdr keys generate printed no recipient or public key:\n%s", keys)
	}
	w.identity = filepath.Join(w.dir, "operator.key")
	overlay := filepath.Join(w.dir, "my-kdr")
	testenv.Mkdir(t, overlay, 0o755)
	testenv.WriteFile(t, filepath.Join(overlay, "kustomization.yaml"), []byte(w.block(t, "Install", "yaml", 0)), 0o644)
	cfg := w.agentConfig(t, recipient, public, peers)
	testenv.WriteFile(t, filepath.Join(overlay, "kdr.yaml"), cfg, 0o644)
	testenv.WriteFile(t, filepath.Join(w.dir, "access-key"), []byte(w.minio.AccessKey()+"\n"), 0o600)
	testenv.WriteFile(t, filepath.Join(w.dir, "secret-key"), []byte(w.minio.SecretKey()+"\n"), 0o600)
	w.sh(t, w.block(t, "Install", "sh", 1))
	for _, f := range []string{"access-key", "secret-key", "signing.key"} {
		if _, err := os.Stat(filepath.Join(w.dir, f)); err == nil {
			t.Errorf("%s is still on disk after the README's shred", f)
		}
	}
	w.sh(t, w.block(t, "Install", "sh", 2))

	// The operator reads the same targets with credentials of its own.
	// (Not the subtest's TempDir: the operator outlives the install.)
	opDir := filepath.Join(w.dir, "operator")
	testenv.Mkdir(t, opDir, 0o700)
	testenv.WriteFile(t, filepath.Join(opDir, "access-key"), []byte(w.minio.AccessKey()), 0o600)
	testenv.WriteFile(t, filepath.Join(opDir, "secret-key"), []byte(w.minio.SecretKey()), 0o600)
	op := strings.NewReplacer("/etc/kdr-s3/", opDir+"/").Replace(string(cfg))
	w.opCfg = filepath.Join(opDir, "kdr.yaml")
	testenv.WriteFile(t, w.opCfg, []byte(op), 0o600)
}

// agentConfig is base/kdr.yaml with the operator's edits: this cluster's
// endpoints, inventory and target, the keys just made, a backup every
// minute, and checks every few seconds so the metrics follow quickly.
func (w *nodeWorld) agentConfig(t *testing.T, recipient, public string, peers []*testenv.EtcdPeer) []byte {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(testenv.ReadFile(t, filepath.Join(w.dir, "kdr", "deploy", "base", "kdr.yaml")), &doc); err != nil {
		t.Fatal(err)
	}
	ip := w.node.IP
	c := doc["clusters"].([]any)[0].(map[string]any)
	endpoints := []string{w.node.ClientURL()}
	hosts := []map[string]any{{"name": w.node.Name, "ip": ip, "roles": []string{"control-plane", "etcd"}}}
	for _, p := range peers {
		endpoints = append(endpoints, p.ClientURL())
		hosts = append(hosts, map[string]any{"name": p.Name, "ip": p.Host.IP, "roles": []string{"etcd"}})
	}
	c["etcd"].(map[string]any)["endpoints"] = endpoints
	inv := c["inventory"].(map[string]any)
	inv["apiEndpoint"] = "https://" + net.JoinHostPort(ip, "6443")
	inv["hosts"] = hosts
	doc["encryption"] = map[string]any{"recipients": []string{recipient}}
	doc["signing"].(map[string]any)["trustedKeys"] = []string{public}
	s3 := doc["targets"].([]any)[0].(map[string]any)["s3"].(map[string]any)
	s3["endpoint"] = w.minio.Endpoint()
	s3["insecure"] = true
	sched := doc["schedule"].(map[string]any)
	sched["backup"], sched["jitter"] = nodeBackupSchedule, "0s"
	doc["agent"].(map[string]any)["checkInterval"] = "5s"
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kdrOn runs kdr on the operator's host, outside the cluster, and returns
// its stdout; a failure carries its stderr and exit status.
func (w *nodeWorld) kdrOn(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), kdrTimeout)
	defer cancel()
	args = append([]string{"--config", w.opCfg}, args...)
	cmd := w.operator.Command(ctx, w.kdr, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kdr %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// nodeSet is one set as `kdr list -o json` shows it.
type nodeSet struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// sets lists the complete sets from outside the cluster.
func (w *nodeWorld) sets(t *testing.T) []nodeSet {
	t.Helper()
	out, err := w.kdrOn(t, "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var sets []nodeSet
	if err := json.Unmarshal([]byte(out), &sets); err != nil {
		t.Fatalf("kdr list -o json: %v\n%s", err, out)
	}
	slices.SortFunc(sets, func(a, b nodeSet) int { return a.Created.Compare(b.Created) })
	return sets
}

// waitSetAfter waits for a set taken after since and returns it.
func (w *nodeWorld) waitSetAfter(t *testing.T, since time.Time) nodeSet {
	t.Helper()
	var got nodeSet
	testenv.Eventually(t, nodeWait, "a set taken after "+since.Format(time.TimeOnly), func() bool {
		for _, s := range w.sets(t) {
			if s.Created.After(since) {
				got = s
				return true
			}
		}
		return false
	})
	return got
}

// verifyAll verifies every listed set with the operator's identity.
func (w *nodeWorld) verifyAll(t *testing.T) {
	t.Helper()
	for _, s := range w.sets(t) {
		if _, err := w.kdrOn(t, "verify", "--identity", w.identity, s.ID); err != nil {
			t.Errorf("set %s does not verify: %v", s.ID, err)
		}
	}
}

// pod is one kdr pod as the API server shows it.
type pod struct {
	Name, IP, Image string
	Ready           bool
	Restarts        int
	UID             string
}

// pods lists the kdr pods that are not being deleted, or fails the test.
func (w *nodeWorld) pods(t *testing.T) []pod {
	t.Helper()
	pods, err := w.tryPods(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return pods
}

// tryPods is pods for polling: while the API server restarts, the caller
// asks again.
func (w *nodeWorld) tryPods(ctx context.Context) ([]pod, error) {
	out, err := w.node.KubectlE(ctx, "-n", "kdr-system", "get", "pods", "-l", "app.kubernetes.io/name=kdr", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				UID               string  `json:"uid"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Spec struct {
				Containers []struct {
					Image string `json:"image"`
				} `json:"containers"`
			} `json:"spec"`
			Status struct {
				PodIP      string `json:"podIP"`
				Conditions []struct {
					Type   string `json:"type"`
					Status string `json:"status"`
				} `json:"conditions"`
				ContainerStatuses []struct {
					RestartCount int `json:"restartCount"`
				} `json:"containerStatuses"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("kdr pods: %w", err)
	}
	var pods []pod
	for _, it := range list.Items {
		if it.Metadata.DeletionTimestamp != nil {
			continue
		}
		p := pod{Name: it.Metadata.Name, IP: it.Status.PodIP, UID: it.Metadata.UID}
		if len(it.Spec.Containers) > 0 {
			p.Image = it.Spec.Containers[0].Image
		}
		for _, c := range it.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				p.Ready = true
			}
		}
		for _, c := range it.Status.ContainerStatuses {
			p.Restarts += c.RestartCount
		}
		pods = append(pods, p)
	}
	return pods, nil
}

// waitPodsReady waits for two Ready pods and returns them.
func (w *nodeWorld) waitPodsReady(t *testing.T) []pod {
	t.Helper()
	var pods []pod
	testenv.Eventually(t, nodeWait, "two ready kdr pods", func() bool {
		pods, _ = w.tryPods(t.Context())
		return len(pods) == 2 && pods[0].Ready && pods[1].Ready
	})
	return pods
}

// leaseHolder is the pod holding the agent's Lease; the agent's identity
// is its host name, the pod's name, and its pid.
func (w *nodeWorld) leaseHolder(t *testing.T) string {
	t.Helper()
	out, err := w.node.KubectlE(t.Context(), "-n", "kdr-system", "get", "lease", "kdr", "-o", "jsonpath={.spec.holderIdentity}")
	if err != nil {
		return ""
	}
	if i := strings.LastIndex(out, "-"); i > 0 {
		return out[:i]
	}
	return out
}

// leaseAcquired is when the Lease's holder took it.
func (w *nodeWorld) leaseAcquired(t *testing.T) time.Time {
	t.Helper()
	out := w.node.Kubectl(t, "-n", "kdr-system", "get", "lease", "kdr", "-o", "jsonpath={.spec.acquireTime}")
	at, err := time.Parse(time.RFC3339Nano, out)
	if err != nil {
		t.Fatalf("the Lease's acquireTime %q: %v", out, err)
	}
	return at
}

// get fetches a path of a pod's HTTP endpoints from the node, as the
// kubelet's probes and Prometheus do.
func (w *nodeWorld) get(addr, path string) (int, string, error) {
	// No keep-alive: a poll every few milliseconds must not pile up idle
	// connections in the pods (and in their memory figure).
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: w.node.Host.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + net.JoinHostPort(addr, "9090") + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metric is one series' value on addr's /metrics, or -1 when absent or
// unreachable.
func (w *nodeWorld) metric(addr, series string) float64 {
	_, body, err := w.get(addr, "/metrics")
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			if v, err := strconv.ParseFloat(value, 64); err == nil {
				return v
			}
		}
	}
	return -1
}

// metricSum adds up the series on addr's /metrics whose text starts
// with prefix (a name and some of its labels); -1 when unreachable.
func (w *nodeWorld) metricSum(addr, prefix string) float64 {
	_, body, err := w.get(addr, "/metrics")
	if err != nil {
		return -1
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		series, value, ok := strings.Cut(line, " ")
		if ok && strings.HasPrefix(series, prefix) {
			if v, err := strconv.ParseFloat(value, 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// agentStatus is what the tests read of a pod's /status.
type agentStatus struct {
	Jobs map[string]struct {
		Schedule string `json:"schedule"`
		Running  bool   `json:"running"`
		Last     struct {
			OK bool `json:"ok"`
		} `json:"last"`
	} `json:"jobs"`
}

// status is a pod's /status.
func (w *nodeWorld) status(addr string) agentStatus {
	var st agentStatus
	if _, body, err := w.get(addr, "/status"); err == nil {
		json.Unmarshal([]byte(body), &st)
	}
	return st
}

// leader waits for the Lease holder to be one of the ready pods and
// returns it.
func (w *nodeWorld) leader(t *testing.T, not string) pod {
	t.Helper()
	var lead pod
	testenv.Eventually(t, nodeWait, "a leader among the ready pods", func() bool {
		holder := w.leaseHolder(t)
		pods, _ := w.tryPods(t.Context())
		for _, p := range pods {
			if p.Name == holder && p.Name != not && p.Ready && w.metric(p.IP, "kdr_leader") == 1 {
				lead = p
				return true
			}
		}
		return false
	})
	return lead
}

// waitBackupRunning waits until addr's backup job is running.
func (w *nodeWorld) waitBackupRunning(t *testing.T, addr string) {
	t.Helper()
	testenv.Eventually(t, nodeWait, "a backup running on "+addr, func() bool {
		return w.status(addr).Jobs["backup"].Running
	})
}

// minuteOf is the schedule time a set belongs to: the minute it was
// taken in.
func minuteOf(s nodeSet) time.Time { return s.Created.Truncate(time.Minute) }

// setsIn returns the sets whose schedule time is minute.
func setsIn(sets []nodeSet, minute time.Time) []string {
	var ids []string
	for _, s := range sets {
		if minuteOf(s).Equal(minute) {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// neverTwice fails when any scheduled minute got two sets.
func neverTwice(t *testing.T, sets []nodeSet) {
	t.Helper()
	seen := map[time.Time]string{}
	for _, s := range sets {
		m := minuteOf(s)
		if other, ok := seen[m]; ok {
			t.Errorf("the backup of %s ran twice: sets %s and %s", m.Format(time.TimeOnly), other, s.ID)
		}
		seen[m] = s.ID
	}
}

func (p pod) String() string { return fmt.Sprintf("%s (%s)", p.Name, p.IP) }

// metricsTellTheTruth checks the figures the alerts read against what the
// operator lists from outside: the leader's newest-backup time and count
// are the target's, the target is up, and exactly one replica leads.
func (w *nodeWorld) metricsTellTheTruth(t *testing.T) {
	t.Helper()
	lastSuccess := fmt.Sprintf(`kdr_backup_last_success_timestamp_seconds{cluster=%q,target="s3"}`, cluster)
	backups := fmt.Sprintf(`kdr_backups{cluster=%q,target="s3"}`, cluster)
	var got string
	testenv.Eventually(t, nodeWait, "the metrics agreeing with the target", func() bool {
		pods, err := w.tryPods(t.Context())
		if err != nil || len(pods) == 0 {
			return false
		}
		sets := w.sets(t)
		if len(sets) == 0 {
			return false
		}
		newest := sets[len(sets)-1].Created.Unix()
		leaders := 0
		for _, p := range pods {
			if w.metric(p.IP, "kdr_leader") == 1 {
				leaders++
			}
			last, count, up := w.metric(p.IP, lastSuccess), w.metric(p.IP, backups), w.metric(p.IP, `kdr_target_up{target="s3"}`)
			got = fmt.Sprintf("pod %s: last success %.0f (newest set %d), %.0f backups (%d listed), target up %.0f",
				p, last, newest, count, len(sets), up)
			if d := int64(last) - newest; d < -1 || d > 1 || int(count) != len(sets) || up != 1 {
				return false
			}
		}
		got += fmt.Sprintf("; %d leaders", leaders)
		return leaders == 1
	})
	t.Log(got)
}
