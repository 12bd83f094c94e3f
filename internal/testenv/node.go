package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
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
)

const (
	// nodeStartLimit bounds the whole start of a node: containerd, image
	// imports, kubeadm init and the node turning Ready. About 40 s on an
	// idle 2-core machine.
	nodeStartLimit = 5 * time.Minute
	// nodeStopLimit bounds the wait for a node process to exit after
	// SIGTERM, before SIGKILL.
	nodeStopLimit = 20 * time.Second
	// nodeKillLimit bounds the wait for the processes of the node's
	// cgroups to be gone after SIGKILL.
	nodeKillLimit = 20 * time.Second
	// nodePodCIDR is the pods' range: one /24 of the cluster's
	// podSubnet, the node's own, handed out by the bridge CNI.
	nodePodCIDR     = "10.244.0.0/24"
	nodePodSubnet   = "10.244.0.0/16"
	nodeServiceCIDR = "10.96.0.0/12"
	// nodeCRISocket is containerd's socket as the node sees it.
	nodeCRISocket = "/run/containerd/containerd.sock"
	// nodeKubeletFlags is where kubeadm writes the kubelet's flags, as
	// its systemd drop-in reads them.
	nodeKubeletFlags = "/var/lib/kubelet/kubeadm-flags.env"
	// nodeKubeletConfig is the kubelet's config as kubeadm writes it.
	nodeKubeletConfig = "/var/lib/kubelet/config.yaml"
	// NodeAdminKubeconfig is kubeadm's admin kubeconfig on the node.
	NodeAdminKubeconfig = "/etc/kubernetes/admin.conf"
)

// NodePrerequisites are the Debian packages a Node needs, by the file each
// provides: a missing one fails the test with the install command (`make
// debian-tools` installs them all).
var NodePrerequisites = map[string]string{
	"containerd":          "containerd",
	"ctr":                 "containerd",
	"runc":                "runc",
	"iptables":            "iptables",
	"conntrack":           "conntrack",
	"/usr/lib/cni/bridge": "containernetworking-plugins",
}

// Node is a real Kubernetes control-plane node: Debian's containerd with
// runc, a kubelet with the cgroupfs driver, kube-proxy in iptables mode, a
// bridge CNI, and a control plane made by `kubeadm init` whose etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler run as static
// pods in containers, from images built here from ./bin (no registry).
//
// It runs where it harms nothing on the machine:
//   - in a Host of a Network: its own network namespace, so every
//     iptables rule the kubelet, kube-proxy and the CNI write, every link
//     and every port is the namespace's and goes with it;
//   - in a mount namespace of its own, where /etc and /var are overlays
//     whose changes land in the test's directory and /run is a tmpfs: the
//     node sees the usual paths (/etc/kubernetes, /var/lib/kubelet,
//     /var/lib/etcd) and every mount it makes (container root
//     filesystems, volumes, pod network namespaces) vanishes with it;
//   - under a cgroup root of its own (kubelet's cgroupRoot), so that its
//     pods can be found, killed and removed;
//   - with the kernel settings the kubelet insists on (vm.overcommit_memory,
//     kernel.panic, kernel.panic_on_oops) bound over /proc/sys in its
//     mount namespace from private files, so the machine's stay as they
//     are.
//
// Before and after, GoodNeighbour checks that nothing was left behind.
type Node struct {
	t testing.TB
	// Name is the Kubernetes node name.
	Name string
	// Host is the network host the node is.
	Host *Host
	// IP is the node's address, where etcd (2379) and kube-apiserver
	// (6443) listen.
	IP string
	// CgroupRoot is the kubelet's cgroupRoot, a directory of that name in
	// every cgroup hierarchy.
	CgroupRoot string

	dir    string    // the test's side: overlay upper dirs, logs, configs
	pause  string    // the pause image's name, kubeadm's
	holder *exec.Cmd // holds the mount namespace
	pid    int       // the holder's pid: nsenter's target

	// before is the machine's footprint before the node started;
	// netIno and mntIno identify the node's namespaces. A namespace's
	// inode number is reused once the namespace is gone, so mntRef holds
	// the mount namespace until the leftover check is done, or another
	// process's new namespace could be taken for the node's.
	// (/run/netns holds the network namespace.)
	before         footprint
	netIno, mntIno uint64
	mntRef         *os.File

	mu    sync.Mutex
	procs map[string]*nodeProc
	// members are the etcd cluster's name=peerURL, once AddEtcdMember
	// grew it.
	members []string
}

// nodeProc is one process of the node run by the harness: containerd, the
// kubelet, kube-proxy.
type nodeProc struct {
	name   string
	argv   []string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// NodeOptions shape a Node.
type NodeOptions struct {
	// Name is the node's name (default "cp1").
	Name string
	// Images are OCI archives to import into containerd before the
	// kubelet starts, as an air-gapped node is given its images.
	Images []string
}

// StartNode makes a Node on network n and waits until it is Ready with
// its control plane up. The test fails, never skips, when a prerequisite
// is missing.
func StartNode(t testing.TB, n *Network, o NodeOptions) *Node {
	t.Helper()
	requireNodePrerequisites(t)
	if o.Name == "" {
		o.Name = "cp1"
	}
	bins := map[string]string{}
	for _, b := range []string{"kubelet", "kubeadm", "kubectl", "kube-proxy", "kube-apiserver",
		"kube-controller-manager", "kube-scheduler", "etcd", "pause"} {
		bins[b] = Binary(t, b)
	}
	h := n.AddHost(t, o.Name)
	// A default route, as every real node has: a Service's address is
	// routed before kube-proxy's rules rewrite it, and without a route the
	// connect fails at once. Its gateway is an address of the network that
	// no host has; nothing is sent there but what no rule rewrites.
	ipMust(t, "-n", h.NS, "route", "add", "default", "via", n.VIP(t, 1))
	node := &Node{
		t:          t,
		Name:       o.Name,
		Host:       h,
		IP:         h.IP,
		CgroupRoot: "kdr-node-" + n.ID + "-" + o.Name,
		dir:        t.TempDir(),
		procs:      map[string]*nodeProc{},
	}
	t.Cleanup(node.stop)
	ctx, cancel := context.WithTimeout(context.Background(), nodeStartLimit)
	defer cancel()
	if err := node.start(ctx, bins, o); err != nil {
		t.Fatalf("node %s: %v\n%s", o.Name, err, node.logTails())
	}
	return node
}

func requireNodePrerequisites(t testing.TB) {
	t.Helper()
	var missing []string
	for file, pkg := range NodePrerequisites {
		var err error
		if filepath.IsAbs(file) {
			_, err = os.Stat(file)
		} else {
			_, err = exec.LookPath(file)
		}
		if err != nil && !slices.Contains(missing, pkg) {
			missing = append(missing, pkg)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Fatalf("the test node needs Debian packages: apt-get install %s (or make debian-tools)", strings.Join(missing, " "))
	}
	requireNetAdmin(t)
}

func (n *Node) start(ctx context.Context, bins map[string]string, o NodeOptions) error {
	var err error
	if n.before, err = machineFootprint(ctx); err != nil {
		return err
	}
	if n.netIno, err = nsInode("/run/netns/" + n.Host.NS); err != nil {
		return err
	}
	images, err := n.controlPlaneImages(ctx, bins["kubeadm"])
	if err != nil {
		return err
	}
	if err := makeCgroupRoot(n.CgroupRoot); err != nil {
		return err
	}
	if err := n.startHolder(); err != nil {
		return err
	}
	if err := n.writeConfigs(); err != nil {
		return err
	}
	if err := n.startProc("containerd", "containerd", "--config", "/etc/containerd/config.toml"); err != nil {
		return err
	}
	if err := n.waitContainerd(ctx); err != nil {
		return err
	}
	for _, img := range append(images, o.Images...) {
		if err := n.importImage(ctx, img); err != nil {
			return err
		}
	}
	if err := n.kubeadmInit(ctx, bins["kubeadm"]); err != nil {
		return err
	}
	if err := n.startProc("kube-proxy", bins["kube-proxy"], "--config", "/etc/kubernetes/kube-proxy.yaml"); err != nil {
		return err
	}
	if _, err := n.kubectl(ctx, "wait", "--for=condition=Ready", "--timeout=3m", "node/"+n.Name); err != nil {
		return err
	}
	return nil
}

// Path is where the test process finds path p of the node's filesystem:
// through the holder's root, which shows the node's mounts.
func (n *Node) Path(p string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", n.pid), p)
}

// startHolder starts the process that holds the node's mount namespace:
// it joins the host's network namespace, makes a private mount namespace
// with the overlays, the tmpfs and the private kernel settings, and
// sleeps. Every node process enters its namespaces with nsenter. (`ip
// netns exec` would remount /sys for the namespace and lose the cgroup
// hierarchies mounted under it, which the kubelet needs.)
func (n *Node) startHolder() error {
	for _, d := range []string{"etc.upper", "etc.work", "var.upper", "var.work", "containerd", "sysctl", "logs"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return err
		}
	}
	sysctls := map[string]string{
		// The kubelet's defaults (pkg/kubelet/cm/container_manager_linux.go):
		// it checks, and writes when they differ.
		"vm/overcommit_memory":      "1",
		"kernel/panic":              "10",
		"kernel/panic_on_oops":      "1",
		"kernel/keys/root_maxkeys":  "1000000",
		"kernel/keys/root_maxbytes": "25000000",
	}
	var script strings.Builder
	d := n.dir
	fmt.Fprintf(&script, "set -e\n")
	fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=/etc,upperdir=%s/etc.upper,workdir=%s/etc.work /etc\n", d, d)
	fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=/var,upperdir=%s/var.upper,workdir=%s/var.work /var\n", d, d)
	// containerd's overlay snapshots cannot have their upper dirs on an
	// overlay: its root is a plain directory of the test's.
	fmt.Fprintf(&script, "mkdir -p /var/lib/containerd && mount --bind %s/containerd /var/lib/containerd\n", d)
	fmt.Fprintf(&script, "mount -t tmpfs -o mode=0755 tmpfs /run\n")
	for _, k := range slices.Sorted(maps.Keys(sysctls)) {
		f := filepath.Join(d, "sysctl", strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(sysctls[k]+"\n"), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&script, "[ ! -e /proc/sys/%s ] || mount --bind %s /proc/sys/%s\n", k, f, k)
	}
	fmt.Fprintf(&script, "echo ready\nexec sleep infinity\n")
	cmd := exec.Command("nsenter", "--net=/run/netns/"+n.Host.NS, "--",
		"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the namespace holder: %w", err)
	}
	n.holder, n.pid = cmd, cmd.Process.Pid
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("set up the node's mounts: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if n.mntRef, err = os.Open(fmt.Sprintf("/proc/%d/ns/mnt", n.pid)); err != nil {
		return err
	}
	n.mntIno, err = nsInode(n.mntRef.Name())
	return err
}

// WriteFile writes a file of the node's filesystem, making its directory.
func (n *Node) WriteFile(p string, data []byte, mode fs.FileMode) error {
	dst := n.Path(p)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

// writeConfigs writes containerd's and the CNI's configuration.
func (n *Node) writeConfigs() error {
	files := map[string]string{
		"/etc/containerd/config.toml":         fmt.Sprintf(containerdConfig, nodeCRISocket, n.pause),
		"/etc/cni/net.d/10-kdr-node.conflist": fmt.Sprintf(cniConfig, nodePodCIDR),
	}
	for p, s := range files {
		if err := n.WriteFile(p, []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// containerdConfig: containerd 1.6's CRI as kubeadm expects it, with the
// settings this kind of machine needs: root lacks CAP_SYS_RESOURCE, so an
// oom_score_adj below the runtime's own is refused
// (restrict_oom_score_adj); pod network namespaces are mounted under the
// state dir, inside the node's /run, rather than the machine's /var/run/netns.
const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`

// cniConfig is a bridge with the node as the pods' gateway, masquerading
// what leaves the node, as the CNI's own examples set it up.
const cniConfig = `{
  "cniVersion": "0.4.0",
  "name": "kdr-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// startProc starts one node process in the node's namespaces, its output
// appended to logs/<name>.log.
func (n *Node) startProc(name string, argv ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.procs[name]; ok && p.cmd != nil {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("%s is running already", name)
		}
	}
	logPath := filepath.Join(n.dir, "logs", name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "--- %s starting %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command("nsenter", append([]string{"--target", strconv.Itoa(n.pid), "--mount", "--net", "--"}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &nodeProc{name: name, argv: argv, log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	n.procs[name] = p
	return nil
}

// StopProcess stops a node process (containerd, kubelet or kube-proxy)
// with SIGTERM, then SIGKILL; its containers go on running, as when a
// service is stopped on a real node.
func (n *Node) StopProcess(name string) {
	n.t.Helper()
	n.mu.Lock()
	p := n.procs[name]
	n.mu.Unlock()
	if p == nil {
		n.t.Fatalf("node %s: no process %s", n.Name, name)
	}
	p.stop()
}

func (p *nodeProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(nodeStopLimit):
		p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(nodeKillLimit):
			// stop's own check reports it.
		}
	}
}

// StartProcess starts a stopped node process again with its last command
// line.
func (n *Node) StartProcess(name string) {
	n.t.Helper()
	n.mu.Lock()
	p := n.procs[name]
	n.mu.Unlock()
	if p == nil {
		n.t.Fatalf("node %s: no process %s", n.Name, name)
	}
	if err := n.startProc(name, p.argv...); err != nil {
		n.t.Fatalf("node %s: %v", n.Name, err)
	}
}

// Command returns a command run inside the node, in its network and mount
// namespaces, as a shell on the node would run it.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(n.pid), "--mount", "--net", "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Kubectl runs kubectl on the node as kubeadm's admin, bounded by
// kubeCommandLimit, and fails the test on error.
func (n *Node) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), kubeCommandLimit)
	defer cancel()
	out, err := n.kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// KubectlE is Kubectl returning the error, for polling.
func (n *Node) KubectlE(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, kubeCommandLimit)
	defer cancel()
	return n.kubectl(ctx, args...)
}

func (n *Node) kubectl(ctx context.Context, args ...string) (string, error) {
	kubectl, ok := lookBinary("kubectl")
	if !ok {
		return "", errors.New("kubectl not found: run `make tools`")
	}
	return n.run(ctx, nil, kubectl, append([]string{"--kubeconfig", NodeAdminKubeconfig}, args...)...)
}

// run runs a command on the node and returns its trimmed output; an error
// carries the output.
func (n *Node) run(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := n.Command(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// waitContainerd waits until containerd answers on its socket.
func (n *Node) waitContainerd(ctx context.Context) error {
	var err error
	for {
		if _, err = n.run(ctx, nil, "ctr", "--address", nodeCRISocket, "version"); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd did not answer: %w", err)
		case <-n.procs["containerd"].exited:
			return fmt.Errorf("containerd exited")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (n *Node) importImage(ctx context.Context, archive string) error {
	_, err := n.run(ctx, nil, "ctr", "--address", nodeCRISocket, "--namespace", "k8s.io", "images", "import", archive)
	return err
}

// logTails is the end of every node process's log, for a failure message.
func (n *Node) logTails() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(n.procs)) {
		fmt.Fprintf(&b, "--- %s (tail) ---\n%s\n", name, tail(n.procs[name].log))
	}
	return b.String()
}

// stop tears the node down: the kubelet first, so it restarts nothing,
// then every process of its cgroups (the pods' containers, which have
// network namespaces of their own), then every process in its network
// namespace (containerd, its shims, the holder), and the cgroups. The
// mount namespace goes with its last process. The Host's own cleanup then
// deletes the network namespace.
func (n *Node) stop() {
	n.mu.Lock()
	procs := slices.Collect(maps.Values(n.procs))
	n.mu.Unlock()
	for _, p := range procs {
		if p.name == "kubelet" {
			p.stop()
		}
	}
	var errs []error
	if err := killCgroupRoot(n.CgroupRoot); err != nil {
		errs = append(errs, err)
	}
	if err := killNetns(n.Host.NS); err != nil {
		errs = append(errs, err)
	}
	// Everything was killed: a process still there after the kill limit
	// is reported, not waited for until the test binary's own timeout.
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-time.After(nodeKillLimit):
			errs = append(errs, fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid))
		}
	}
	if n.holder != nil {
		n.holder.Process.Kill()
		holderDone := make(chan struct{})
		go func() { n.holder.Wait(); close(holderDone) }()
		select {
		case <-holderDone:
		case <-time.After(nodeKillLimit):
			errs = append(errs, fmt.Errorf("the namespace holder (pid %d) did not exit after SIGKILL", n.pid))
		}
	}
	if err := removeCgroupRoot(n.CgroupRoot); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		n.t.Errorf("node %s cleanup: %v", n.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), kubeCommandLimit)
	defer cancel()
	if left := n.leftBehind(ctx); len(left) > 0 {
		n.t.Errorf("node %s left behind:\n%s", n.Name, strings.Join(left, "\n"))
	}
	if n.mntRef != nil {
		// The mount namespace, and the overlays on the test's directory,
		// go now.
		n.mntRef.Close()
	}
}
