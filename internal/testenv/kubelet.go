package testenv

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// kubeletPollInterval is how often the manifests directory is read.
	// The real kubelet polls its static pod path every 20 s and also
	// watches it; a short poll keeps restore tests quick.
	kubeletPollInterval = 200 * time.Millisecond
	// kubeletBackoffStart and kubeletBackoffMax bound the delay before a
	// crashed pod is started again, doubling in between, as the kubelet's
	// CrashLoopBackOff does (its cap is 5 minutes, too long for a test).
	kubeletBackoffStart = 500 * time.Millisecond
	kubeletBackoffMax   = 10 * time.Second
	// kubeletStableRun is how long a process must run before its backoff
	// starts from the beginning again.
	kubeletStableRun = 10 * time.Second
)

// Kubelet does what a kubelet does with static pods, for a host whose
// paths are under Root: it watches Root/etc/kubernetes/manifests, runs a
// process for each manifest there (with StaticPodCommand, so ports and
// host paths are rewritten exactly as RunKubeHost does), stops it when its
// manifest goes away, restarts it when the manifest changes, and restarts
// it with a growing delay when it crashes. A restore that moves manifests
// aside and back in, as on a real host, drives it.
//
// A pod is named by its manifest's file name without the extension
// (etcd.yaml runs as "etcd"). A pod whose command has no binary here (kubeadm
// also writes kube-controller-manager and kube-scheduler manifests, which
// `make tools` does not build) is never run; its log says so.
type Kubelet struct {
	t testing.TB
	// Root is the host's filesystem root.
	Root string
	// Ports are where the pods listen: every zero port given to
	// StartKubelet was picked free. A restore plan for this host must use
	// the same ports so that its URLs and the pods' agree.
	Ports KubePorts
	// APIServerURL is https://127.0.0.1:<Ports.APIServer>, or the host's
	// address for a StartHostKubelet kubelet.
	APIServerURL string

	// host, when set, is the Network host the pods run in: see
	// StartHostKubelet.
	host      *Host
	manifests string
	logDir    string
	cancel    context.CancelFunc
	loopDone  chan struct{}
	stopOnce  sync.Once
	// stops counts the goroutines stopping pods.
	stops sync.WaitGroup

	mu sync.Mutex
	// pods are the pods whose manifests are in the directory.
	pods map[string]*kubeletPod
	// stopping are pods whose manifest changed or went away and whose
	// process is being stopped: a new process of the same pod waits for
	// it, as it would need the same ports and data.
	stopping map[string]*kubeletPod
	starts   map[string]int
}

// kubeletPod is one static pod, from one version of its manifest, and its
// latest process.
type kubeletPod struct {
	name     string
	manifest string
	sum      [sha256.Size]byte
	logPath  string

	// cmd and exited belong to the latest start; exited is closed when
	// that process ends.
	cmd    *exec.Cmd
	exited chan struct{}
	// unrunnable is set when the pod's binary is missing: it is not tried
	// again until its manifest changes.
	unrunnable bool

	startedAt time.Time
	backoff   time.Duration
	// retryAt is when a crashed process is started again; zero while it runs.
	retryAt time.Time
}

// alive reports whether the pod's latest process has not exited.
func (p *kubeletPod) alive() bool { return p.cmd != nil && !closed(p.exited) }

// StartKubelet starts a kubelet for the host under root. Zero ports are
// picked free. It runs until the test ends, then stops every pod.
func StartKubelet(t testing.TB, root string, ports KubePorts) *Kubelet {
	t.Helper()
	return startKubelet(t, root, ports, nil)
}

// StartHostKubelet starts a kubelet for host h, whose filesystem is under
// root. Unlike StartKubelet it rewrites no address or port: every pod runs
// inside h's network namespace and listens where its manifest says (h's
// address and 127.0.0.1), as on a real machine, so that members of a
// multi-host control plane reach one another at the addresses kubeadm and
// a restore wrote. Only host paths are mapped under root, through the
// pod's hostPath volumes. Ports are kubeadm's defaults and APIServerURL is
// https://<h.IP>:6443, both for information: they are reachable only from
// inside the Network, so Kubeconfig and Kubectl do not apply.
func StartHostKubelet(t testing.TB, root string, h *Host) *Kubelet {
	t.Helper()
	return startKubelet(t, root, KubePorts{EtcdClient: kubeadmEtcdClientPort, EtcdPeer: kubeadmEtcdPeerPort,
		EtcdMetrics: kubeadmEtcdMetricsPort, APIServer: kubeadmAPIServerPort}, h)
}

func startKubelet(t testing.TB, root string, ports KubePorts, h *Host) *Kubelet {
	t.Helper()
	root, err := filepath.Abs(root)
	if err != nil {
		t.Fatalf("kubelet root: %v", err)
	}
	for _, p := range []*int{&ports.EtcdClient, &ports.EtcdPeer, &ports.EtcdMetrics, &ports.APIServer} {
		if *p == 0 {
			*p = FreePort(t)
		}
	}
	apiServer := fmt.Sprintf("https://127.0.0.1:%d", ports.APIServer)
	if h != nil {
		apiServer = "https://" + hostPort(h.IP, ports.APIServer)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Kubelet{
		t: t, Root: root, Ports: ports, host: h,
		APIServerURL: apiServer,
		manifests:    hostPath(root, KubeManifestsDir),
		logDir:       t.TempDir(),
		cancel:       cancel,
		loopDone:     make(chan struct{}),
		pods:         map[string]*kubeletPod{},
		stopping:     map[string]*kubeletPod{},
		starts:       map[string]int{},
	}
	t.Cleanup(func() {
		k.Stop()
		if t.Failed() {
			k.logTails()
		}
	})
	go k.loop(ctx)
	return k
}

// Stop ends the polling and stops every pod, as a host shutting down
// would. It is safe to call more than once; the test's cleanup calls it.
func (k *Kubelet) Stop() {
	k.stopOnce.Do(func() {
		k.cancel()
		<-k.loopDone
		k.stops.Wait()
		k.mu.Lock()
		var pods []*kubeletPod
		for name, p := range k.pods {
			pods = append(pods, p)
			delete(k.pods, name)
			k.stopping[name] = p
		}
		k.mu.Unlock()
		k.stopPods(pods)
	})
}

// Running reports whether the named pod has a process that has not
// exited, including one being stopped.
func (k *Kubelet) Running(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range []*kubeletPod{k.pods[name], k.stopping[name]} {
		if p != nil && p.alive() {
			return true
		}
	}
	return false
}

// Starts returns how many times the named pod's process was started, over
// every version of its manifest.
func (k *Kubelet) Starts(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.starts[name]
}

// Pid returns the process ID of the named pod's process for its current
// manifest, or 0 when it has none running.
func (k *Kubelet) Pid(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.pods[name]; p != nil && p.alive() {
		return p.cmd.Process.Pid
	}
	return 0
}

// Logs returns everything the named pod wrote, over all its starts, with a
// line before each start and after each exit; "" for a pod never seen.
func (k *Kubelet) Logs(name string) string {
	b, err := os.ReadFile(k.logPath(name))
	if err != nil {
		return ""
	}
	return string(b)
}

func (k *Kubelet) logPath(name string) string {
	return filepath.Join(k.logDir, name+".log")
}

// Kubeconfig returns a copy of Root/etc/kubernetes/<name> whose server is
// APIServerURL, as KubeHost.Kubeconfig does for a host it runs itself.
func (k *Kubelet) Kubeconfig(t testing.TB, name string) string {
	t.Helper()
	return k.hostView(t).Kubeconfig(t, name)
}

// Kubectl runs real kubectl with the given kubeconfig and returns its
// standard output; a failure fails the test with kubectl's standard error.
func (k *Kubelet) Kubectl(t testing.TB, kubeconfig string, args ...string) string {
	t.Helper()
	h := k.hostView(t)
	h.KubeconfigPath = kubeconfig
	return h.Kubectl(t, args...)
}

// hostView is a KubeHost over the same root and ports whose processes are
// this kubelet's: only its kubeconfig and kubectl helpers are used.
func (k *Kubelet) hostView(t testing.TB) *KubeHost {
	return &KubeHost{t: t, Root: k.Root, Ports: k.Ports, APIServerURL: k.APIServerURL, dir: k.logDir}
}

func closed(ch chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (k *Kubelet) loop(ctx context.Context) {
	defer close(k.loopDone)
	tick := time.NewTicker(kubeletPollInterval)
	defer tick.Stop()
	for {
		k.sync()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sync makes the running pods match the manifests directory once. Pods
// whose manifest changed or went away are stopped in the background, so
// that a slow one does not hold up the others, as in the kubelet.
func (k *Kubelet) sync() {
	want := k.readManifests()

	k.mu.Lock()
	defer k.mu.Unlock()
	var stale []*kubeletPod
	for name, p := range k.pods {
		if m, ok := want[name]; !ok || m != (manifestFile{p.manifest, p.sum}) {
			stale = append(stale, p)
			delete(k.pods, name)
			k.stopping[name] = p
		}
	}
	if len(stale) > 0 {
		k.stops.Go(func() { k.stopPods(stale) })
	}
	now := time.Now()
	for name, m := range want {
		if k.stopping[name] != nil {
			continue // its old process still has the ports and data
		}
		p := k.pods[name]
		switch {
		case p == nil:
			p = &kubeletPod{name: name, manifest: m.path, sum: m.sum, logPath: k.logPath(name), backoff: kubeletBackoffStart}
			k.pods[name] = p
		case p.unrunnable:
			continue
		case p.alive():
			if now.Sub(p.startedAt) > kubeletStableRun {
				p.backoff = kubeletBackoffStart
			}
			continue
		case p.cmd != nil && p.retryAt.IsZero():
			// It crashed: wait before starting it again.
			p.retryAt = now.Add(p.backoff)
			k.logf(p, "exited (%s); starting again in %s", p.cmd.ProcessState, p.backoff)
			p.backoff = min(2*p.backoff, kubeletBackoffMax)
			continue
		case now.Before(p.retryAt):
			continue
		}
		k.start(p)
	}
}

type manifestFile struct {
	path string
	sum  [sha256.Size]byte
}

// readManifests lists the static pod manifests as the kubelet does: every
// regular file of the directory except hidden ones, which is also what
// keeps a tool's temporary file (written, then renamed into place) from
// being run half-written.
func (k *Kubelet) readManifests() map[string]manifestFile {
	out := map[string]manifestFile{}
	entries, err := os.ReadDir(k.manifests)
	if err != nil {
		return out
	}
	for _, de := range entries {
		if !de.Type().IsRegular() || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		path := filepath.Join(k.manifests, de.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue // gone since the listing: the next poll sees it so
		}
		name := strings.TrimSuffix(de.Name(), filepath.Ext(de.Name()))
		out[name] = manifestFile{path: path, sum: sha256.Sum256(b)}
	}
	return out
}

// start runs the pod's command; k.mu is held. A manifest that cannot be
// run is logged and counts as a crash, except a missing binary, which no
// retry would cure.
func (k *Kubelet) start(p *kubeletPod) {
	p.retryAt = time.Time{}
	var args []string
	var err error
	if k.host != nil {
		args, err = hostPodCommand(k.Root, p.manifest)
	} else {
		args, err = StaticPodCommand(k.Root, p.manifest, k.Ports)
	}
	if err != nil {
		k.logf(p, "cannot run: %v", err)
		p.failed()
		return
	}
	bin, ok := lookBinary(filepath.Base(args[0]))
	if !ok {
		k.logf(p, "not run: no %s binary (looked in $KDR_BIN_DIR, the module's bin directory and PATH)", filepath.Base(args[0]))
		p.unrunnable = true
		return
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		k.t.Errorf("kubelet: %s log: %v", p.name, err)
		p.unrunnable = true
		return
	}
	fmt.Fprintf(logf, "--- kubelet %s: start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(bin, args[1:]...)
	if k.host != nil {
		// Host.Command execs the binary in place, so cmd's process is
		// the pod's and the signals of stopPods reach it; the kubelet
		// stops it itself, so no context kills it.
		cmd = k.host.Command(context.Background(), bin, args[1:]...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary that dies must not leave control-plane processes
	// holding ports and data dirs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	k.starts[p.name]++
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logf, "--- kubelet: start failed: %v\n", err)
		logf.Close()
		p.failed()
		return
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.startedAt = cmd, exited, time.Now()
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
}

// failed schedules another start of a pod that could not be started.
func (p *kubeletPod) failed() {
	p.cmd, p.exited = nil, nil
	p.retryAt = time.Now().Add(p.backoff)
	p.backoff = min(2*p.backoff, kubeletBackoffMax)
}

// stopPods ends the pods' processes one after another, each with SIGTERM
// and then SIGKILL if it has not exited within kubeStopLimit, and then
// forgets them. etcd goes last and the others latest started first, the
// reverse of how a control plane comes up: a kube-apiserver whose etcd is
// gone spends its whole grace period retrying it before it exits.
func (k *Kubelet) stopPods(pods []*kubeletPod) {
	pods = slices.Clone(pods)
	slices.SortFunc(pods, func(a, b *kubeletPod) int {
		if c := cmp.Compare(btoi(a.name == "etcd"), btoi(b.name == "etcd")); c != 0 {
			return c
		}
		return b.startedAt.Compare(a.startedAt)
	})
	for _, p := range pods {
		k.mu.Lock()
		cmd, exited, alive := p.cmd, p.exited, p.alive()
		k.mu.Unlock()
		if alive {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(kubeStopLimit):
				cmd.Process.Kill()
				<-exited
			}
		}
		k.mu.Lock()
		if alive {
			k.logf(p, "stopped (%s)", cmd.ProcessState)
		}
		if k.stopping[p.name] == p {
			delete(k.stopping, p.name)
		}
		k.mu.Unlock()
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// logf adds a kubelet line to a pod's log.
func (k *Kubelet) logf(p *kubeletPod, format string, args ...any) {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "--- kubelet %s: %s\n", time.Now().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}

// logTails shows the end of every pod's log in a failed test's output.
func (k *Kubelet) logTails() {
	entries, err := os.ReadDir(k.logDir)
	if err != nil {
		return
	}
	for _, de := range entries {
		if name, ok := strings.CutSuffix(de.Name(), ".log"); ok {
			k.t.Logf("kubelet pod %s log (tail):\n%s", name, tail(filepath.Join(k.logDir, de.Name())))
		}
	}
}

// WaitRunning waits up to limit for the named pod to have a running
// process, and returns an error with its log's tail if it does not.
func (k *Kubelet) WaitRunning(name string, limit time.Duration) error {
	return k.waitPod(name, limit, true)
}

// WaitStopped waits up to limit for the named pod to have no running
// process.
func (k *Kubelet) WaitStopped(name string, limit time.Duration) error {
	return k.waitPod(name, limit, false)
}

func (k *Kubelet) waitPod(name string, limit time.Duration, running bool) error {
	deadline := time.Now().Add(limit)
	for k.Running(name) != running {
		if time.Now().After(deadline) {
			state := "not running"
			if !running {
				state = "still running"
			}
			return fmt.Errorf("kubelet pod %s %s after %s:\n%s", name, state, limit, tail(k.logPath(name)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
