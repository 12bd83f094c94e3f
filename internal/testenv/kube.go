package testenv

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Paths of a kubeadm host, as the host sees them. Under a KubeHost they are
// relative to its Root.
const (
	KubernetesDir    = "/etc/kubernetes"
	KubeManifestsDir = "/etc/kubernetes/manifests"
	KubePKIDir       = "/etc/kubernetes/pki"
	KubeEtcdDataDir  = "/var/lib/etcd"
	// kubeadmConfigPath is outside /etc/kubernetes so that state captured
	// from a test host holds only what kubeadm itself produced.
	kubeadmConfigPath = "/etc/kubeadm/config.yaml"
)

const (
	// kubeReadyLimit bounds the wait for a process to become ready; the
	// API server needs several seconds on a busy 2-core machine.
	kubeReadyLimit = 2 * time.Minute
	// kubeStopLimit bounds the wait for a graceful exit before SIGKILL.
	kubeStopLimit = 30 * time.Second
	// kubeCommandLimit bounds one kubeadm or kubectl run.
	kubeCommandLimit = 2 * time.Minute
)

// KubeOptions shape a kubeadm control-plane host.
type KubeOptions struct {
	// NodeName is nodeRegistration.name, which kubeadm also uses as the etcd
	// member name and in certificate SANs. Default "cp1".
	NodeName string
	// AdvertiseAddress is the node IP kubeadm writes into certificates and
	// manifests. kubeadm rejects loopback addresses, and nothing ever
	// connects to this one: all traffic goes to 127.0.0.1. Default
	// 192.0.2.10 (TEST-NET-1).
	AdvertiseAddress string
	// ClusterName is the cluster's name in the kubeconfigs (kubeadm's
	// default "kubernetes" when empty).
	ClusterName string
	// APIServerArgs are kube-apiserver flags that kubeadm adds to the
	// manifest it writes (ClusterConfiguration apiServer.extraArgs), so
	// that a test sees the manifest a real host with them would have.
	APIServerArgs []KubeArg
	// APIServerVolumes are hostPath volumes kubeadm adds to
	// kube-apiserver's pod (apiServer.extraVolumes), for the files its
	// extra flags name.
	APIServerVolumes []KubeVolume
	// Files are written under the root, each with mode 0600, before
	// kubeadm runs: host path to content. Configs that extra flags name
	// must exist before kube-apiserver starts, as on a real host.
	Files map[string][]byte
	// EtcdDataDir is kubeadm's etcd.local.dataDir, a host path (default
	// KubeEtcdDataDir).
	EtcdDataDir string
}

// KubeArg is one flag of kubeadm's extraArgs, as v1beta4 lists them.
type KubeArg struct {
	// Name is the flag without its leading "--".
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// KubeVolume is one hostPath volume of kubeadm's extraVolumes.
type KubeVolume struct {
	Name      string `yaml:"name"`
	HostPath  string `yaml:"hostPath"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly,omitempty"`
	// PathType is the volume's hostPath type; kubeadm's default,
	// DirectoryOrCreate, when empty.
	PathType string `yaml:"pathType,omitempty"`
}

// KubePorts are the loopback ports a host's processes listen on. A zero
// field is given a free port by RunKubeHost.
type KubePorts struct {
	EtcdClient  int
	EtcdPeer    int
	EtcdMetrics int
	APIServer   int
}

// EtcdTLSFiles are the files kube-apiserver's manifest uses to reach etcd:
// the etcd CA and the apiserver-etcd-client certificate and key.
type EtcdTLSFiles struct {
	CA   string
	Cert string
	Key  string
}

// KubeHost is a kubeadm control-plane host whose etcd and kube-apiserver
// run as real processes from its static pod manifests, on loopback ports,
// with every host path under Root.
type KubeHost struct {
	t testing.TB
	// Root is the host's filesystem root: Root/etc/kubernetes/pki,
	// Root/etc/kubernetes/manifests, Root/var/lib/etcd.
	Root  string
	Ports KubePorts
	// APIServerURL is https://127.0.0.1:<Ports.APIServer>.
	APIServerURL string
	// EtcdEndpoint is etcd's client URL on loopback.
	EtcdEndpoint string
	// EtcdTLS are the client credentials for EtcdEndpoint, from
	// kube-apiserver's manifest (paths under Root).
	EtcdTLS EtcdTLSFiles
	// KubeconfigPath is a copy of Root/etc/kubernetes/super-admin.conf whose
	// server is APIServerURL.
	KubeconfigPath string

	Etcd      *KubeProcess
	APIServer *KubeProcess

	// dir holds what is not part of the host: logs, loopback kubeconfigs,
	// kubectl's cache.
	dir string
}

// KubeProcess is one control-plane process run from a static pod manifest.
type KubeProcess struct {
	t testing.TB
	// Name is the static pod's command name: etcd or kube-apiserver.
	Name string
	// Manifest is the manifest it runs from; it is read again on every start.
	Manifest string
	// Args is the command line of the latest start.
	Args []string
	// LogPath collects the output of every start.
	LogPath string

	cmd    *exec.Cmd
	exited chan struct{}
}

// StartKubeadmHost makes a control-plane host with real kubeadm phases under
// a temporary root, runs its etcd and kube-apiserver, and stops them when the
// test ends. Like `kubeadm init`, it binds the kubeadm:cluster-admins group to
// cluster-admin so that admin.conf works as well as super-admin.conf.
func StartKubeadmHost(t testing.TB, o KubeOptions) *KubeHost {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	KubeadmInit(t, root, o)
	h := RunKubeHost(t, root, KubePorts{})
	h.Kubectl(t, "create", "clusterrolebinding", "kubeadm:cluster-admins",
		"--clusterrole=cluster-admin", "--group=kubeadm:cluster-admins")
	return h
}

// KubeadmInit writes a kubeadm configuration under root and runs the kubeadm
// init phases that make a control-plane host without a kubelet: certs,
// kubeconfigs, control-plane and etcd static pod manifests. kubeadm writes
// manifests only to /etc/kubernetes/manifests, so it runs chrooted into root
// (--rootfs); as a non-root user it gets the chroot from a user namespace.
func KubeadmInit(t testing.TB, root string, o KubeOptions) {
	t.Helper()
	if o.NodeName == "" {
		o.NodeName = "cp1"
	}
	if o.AdvertiseAddress == "" {
		o.AdvertiseAddress = "192.0.2.10"
	}
	root, err := filepath.Abs(root)
	if err != nil {
		t.Fatalf("kubeadm root: %v", err)
	}
	kubeadm := Binary(t, "kubeadm")
	version, err := kubeadmVersion(kubeadm)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := kubeadmConfig(o, version)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{kubeadmConfigPath: cfg}
	for p, b := range o.Files {
		if !filepath.IsAbs(p) {
			t.Fatalf("KubeOptions.Files: %q is not an absolute host path", p)
		}
		files[p] = b
	}
	for p, b := range files {
		dst := hostPath(root, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatalf("kubeadm host file: %v", err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatalf("kubeadm host file: %v", err)
		}
	}
	for _, phase := range [][]string{
		{"certs", "all"},
		{"kubeconfig", "all"},
		{"control-plane", "all"},
		{"etcd", "local"},
	} {
		args := append([]string{"init", "phase"}, phase...)
		args = append(args, "--config", kubeadmConfigPath, "--rootfs", root)
		if out, err := runKubeadm(kubeadm, args); err != nil {
			t.Fatalf("kubeadm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// kubeadmConfig is the configuration for one stacked-etcd control-plane
// node. The version is kubeadm's own so that it never looks one up online.
func kubeadmConfig(o KubeOptions, version string) ([]byte, error) {
	// apiServer is marshalled rather than formatted so that any flag value
	// a test gives (a path with spaces, a value with a colon) stays one
	// YAML string.
	apiServer, err := yaml.Marshal(map[string]any{"apiServer": struct {
		CertSANs     []string     `yaml:"certSANs,flow"`
		ExtraArgs    []KubeArg    `yaml:"extraArgs,omitempty"`
		ExtraVolumes []KubeVolume `yaml:"extraVolumes,omitempty"`
	}{[]string{"127.0.0.1", "localhost"}, o.APIServerArgs, o.APIServerVolumes}})
	if err != nil {
		return nil, fmt.Errorf("kubeadm config: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: %s
  bindPort: 6443
nodeRegistration:
  name: %s
  # Set so that kubeadm does not probe for a container runtime.
  criSocket: unix:///var/run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %s
certificatesDir: %s
%setcd:
  local:
    dataDir: %s
    serverCertSANs: [127.0.0.1, localhost]
    peerCertSANs: [127.0.0.1, localhost]
`, o.AdvertiseAddress, o.NodeName, version, KubePKIDir, apiServer, cmp.Or(o.EtcdDataDir, KubeEtcdDataDir))
	if o.ClusterName != "" {
		fmt.Fprintf(&b, "clusterName: %s\n", o.ClusterName)
	}
	return []byte(b.String()), nil
}

func kubeadmVersion(kubeadm string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubeCommandLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubeadm, "version", "-o", "short").Output()
	if err != nil {
		return "", fmt.Errorf("kubeadm version: %w", err)
	}
	v := strings.TrimSpace(string(out))
	if !strings.HasPrefix(v, "v1.") {
		return "", fmt.Errorf("kubeadm reports version %q: build it with the version stamped (make tools)", v)
	}
	return v, nil
}

// runKubeadm runs kubeadm with --rootfs. chroot needs CAP_SYS_CHROOT: root
// has it; anyone else gets it inside a new user namespace mapping them to
// root, and the files kubeadm writes are still theirs outside it.
func runKubeadm(kubeadm string, args []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubeCommandLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubeadm, args...)
	if uid, gid := os.Geteuid(), os.Getegid(); uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
		}
	}
	return cmd.CombinedOutput()
}

// RunKubeHost runs etcd and kube-apiserver from the static pod manifests
// under root, as a kubelet would, and waits until both are ready. root may
// be one that KubeadmInit made or one that a restore rebuilt. Zero ports are
// picked free. Both processes stop when the test ends.
func RunKubeHost(t testing.TB, root string, ports KubePorts) *KubeHost {
	t.Helper()
	root, err := filepath.Abs(root)
	if err != nil {
		t.Fatalf("kube host root: %v", err)
	}
	dir := t.TempDir()
	h := &KubeHost{t: t, Root: root, Ports: ports, dir: dir}
	h.Etcd = &KubeProcess{t: t, Name: "etcd",
		Manifest: h.Path(KubeManifestsDir + "/etcd.yaml"), LogPath: filepath.Join(dir, "etcd.log")}
	h.APIServer = &KubeProcess{t: t, Name: "kube-apiserver",
		Manifest: h.Path(KubeManifestsDir + "/kube-apiserver.yaml"), LogPath: filepath.Join(dir, "kube-apiserver.log")}
	t.Cleanup(h.Stop)

	// A port found free can be taken by another process before it is bound;
	// pick new ones then, but only those the caller left to us.
	pick := func(p *int, given int, again bool) {
		if given == 0 && (*p == 0 || again) {
			*p = FreePort(t)
		}
	}
	pick(&h.Ports.APIServer, ports.APIServer, false)
	for attempt := 1; ; attempt++ {
		again := attempt > 1
		pick(&h.Ports.EtcdClient, ports.EtcdClient, again)
		pick(&h.Ports.EtcdPeer, ports.EtcdPeer, again)
		pick(&h.Ports.EtcdMetrics, ports.EtcdMetrics, again)
		err := h.startEtcd()
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, errAddrInUse) {
			t.Fatal(err)
		}
	}
	for attempt := 1; ; attempt++ {
		pick(&h.Ports.APIServer, ports.APIServer, attempt > 1)
		err := h.startAPIServer()
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, errAddrInUse) {
			t.Fatal(err)
		}
	}
	return h
}

// Path returns where an absolute host path such as /etc/kubernetes/pki/ca.crt
// is under Root.
func (h *KubeHost) Path(p string) string { return hostPath(h.Root, p) }

// StartEtcd starts etcd again from its manifest under Root, on the host's
// ports, and waits until it is ready. The manifest is read again, so one
// that a restore rewrote (another data dir, say) is honoured.
func (h *KubeHost) StartEtcd() {
	h.t.Helper()
	if err := h.startEtcd(); err != nil {
		h.t.Fatal(err)
	}
}

// StartAPIServer starts kube-apiserver again from its manifest under Root,
// on the host's ports, and waits until /readyz answers ok.
func (h *KubeHost) StartAPIServer() {
	h.t.Helper()
	if err := h.startAPIServer(); err != nil {
		h.t.Fatal(err)
	}
}

// Stop stops kube-apiserver, then etcd, as a host shutting down would.
func (h *KubeHost) Stop() {
	h.APIServer.Stop()
	h.Etcd.Stop()
}

func (h *KubeHost) startEtcd() error {
	// etcd's readiness is checked with the credentials kube-apiserver uses,
	// which proves EtcdTLS works before anything else relies on it.
	apiArgs, err := StaticPodCommand(h.Root, h.APIServer.Manifest, h.Ports)
	if err != nil {
		return err
	}
	h.EtcdTLS = EtcdTLSFiles{
		CA:   flagValue(apiArgs, "--etcd-cafile"),
		Cert: flagValue(apiArgs, "--etcd-certfile"),
		Key:  flagValue(apiArgs, "--etcd-keyfile"),
	}
	args, err := StaticPodCommand(h.Root, h.Etcd.Manifest, h.Ports)
	if err != nil {
		return err
	}
	h.EtcdEndpoint = strings.Split(flagValue(args, "--advertise-client-urls"), ",")[0]
	if err := h.Etcd.start(args); err != nil {
		return err
	}
	client, err := tlsClient(h.EtcdTLS.CA, h.EtcdTLS.Cert, h.EtcdTLS.Key)
	if err != nil {
		return fmt.Errorf("etcd client credentials: %w", err)
	}
	return h.Etcd.waitReady(client, h.EtcdEndpoint+"/readyz")
}

func (h *KubeHost) startAPIServer() error {
	args, err := StaticPodCommand(h.Root, h.APIServer.Manifest, h.Ports)
	if err != nil {
		return err
	}
	h.APIServerURL = fmt.Sprintf("https://127.0.0.1:%d", h.Ports.APIServer)
	// A restore may have replaced super-admin.conf; copy it afresh.
	if h.KubeconfigPath, err = h.loopbackKubeconfig("super-admin.conf"); err != nil {
		return err
	}
	client, err := kubeconfigClient(h.KubeconfigPath)
	if err != nil {
		return err
	}
	if err := h.APIServer.start(args); err != nil {
		return err
	}
	return h.APIServer.waitReady(client, h.APIServerURL+"/readyz")
}

// Kubeconfig returns a copy of Root/etc/kubernetes/<name> (admin.conf,
// super-admin.conf, controller-manager.conf, ...) whose server is
// APIServerURL: the file as kubeadm or a restore wrote it, pointed at
// loopback.
func (h *KubeHost) Kubeconfig(t testing.TB, name string) string {
	t.Helper()
	p, err := h.loopbackKubeconfig(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *KubeHost) loopbackKubeconfig(name string) (string, error) {
	src := h.Path(KubernetesDir + "/" + name)
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return "", fmt.Errorf("kubeconfig %s: %w", src, err)
	}
	clusters, _ := cfg["clusters"].([]any)
	for _, c := range clusters {
		if m, ok := c.(map[string]any); ok {
			if cl, ok := m["cluster"].(map[string]any); ok {
				cl["server"] = h.APIServerURL
			}
		}
	}
	if len(clusters) == 0 {
		return "", fmt.Errorf("kubeconfig %s has no clusters", src)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("kubeconfig %s: %w", src, err)
	}
	dst := filepath.Join(h.dir, "loopback-"+name)
	if err := os.WriteFile(dst, out, 0o600); err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	return dst, nil
}

// Kubectl runs real kubectl with KubeconfigPath and returns its standard
// output; a failure fails the test with kubectl's standard error. A
// --kubeconfig in args overrides KubeconfigPath (the last one wins).
func (h *KubeHost) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), kubeCommandLimit)
	defer cancel()
	full := append([]string{"--kubeconfig", h.KubeconfigPath,
		"--cache-dir", filepath.Join(h.dir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, Binary(t, "kubectl"), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// errAddrInUse marks a process that exited because a port was taken.
var errAddrInUse = errors.New("address already in use")

func (p *KubeProcess) start(args []string) error {
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	if filepath.Base(args[0]) != p.Name {
		return fmt.Errorf("%s runs %q, not %s", p.Manifest, args[0], p.Name)
	}
	bin := Binary(p.t, p.Name)
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s log: %w", p.Name, err)
	}
	fmt.Fprintf(logf, "--- %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(bin, args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.Args = args
	p.cmd = cmd
	p.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return nil
}

// waitReady polls url until it answers 200. When the process exits or the
// wait runs out, it is stopped and the error carries its log's tail.
func (p *KubeProcess) waitReady(client *http.Client, url string) error {
	deadline := time.Now().Add(kubeReadyLimit)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		cancel()
		select {
		case <-p.exited:
			p.cmd = nil
			log := tail(p.LogPath)
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%s exited: %w\n%s", p.Name, errAddrInUse, log)
			}
			return fmt.Errorf("%s exited before it was ready:\n%s", p.Name, log)
		default:
		}
		if time.Now().After(deadline) {
			p.Stop()
			return fmt.Errorf("%s not ready at %s after %s: %s\n%s", p.Name, url, kubeReadyLimit, last, tail(p.LogPath))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Stop ends the process with SIGTERM, and SIGKILL if it has not exited
// within kubeStopLimit. Stopping a stopped process does nothing.
func (p *KubeProcess) Stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(kubeStopLimit):
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

// Running reports whether the process was started and has not exited.
func (p *KubeProcess) Running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// staticPod is the part of a static pod manifest a kubelet needs to run its
// first container as a host process.
type staticPod struct {
	Spec struct {
		Containers []struct {
			Command      []string `yaml:"command"`
			Args         []string `yaml:"args"`
			VolumeMounts []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
			} `yaml:"volumeMounts"`
		} `yaml:"containers"`
		Volumes []struct {
			Name     string `yaml:"name"`
			HostPath *struct {
				Path string `yaml:"path"`
			} `yaml:"hostPath"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

// StaticPodCommand returns the command line of the first container of the
// static pod manifest at manifest (a path on this machine), rewritten to run
// as a process here:
//
//   - a flag value under one of the container's hostPath volume mounts
//     becomes that host path under root, as the kubelet would mount it;
//   - etcd's client, peer and metrics URLs and kube-apiserver's secure port
//     move to 127.0.0.1 and the given ports, kube-apiserver binds to
//     127.0.0.1 and reaches etcd at 127.0.0.1:ports.EtcdClient.
//
// kube-apiserver's --advertise-address stays as written: it is only
// published in the kubernetes Service's endpoints, which reject loopback
// addresses, and nothing in a test connects to it.
func StaticPodCommand(root, manifest string, ports KubePorts) ([]string, error) {
	argv, mounts, err := readStaticPod(manifest)
	if err != nil {
		return nil, err
	}
	r := podRewriter{root: root, mounts: mounts, ports: ports, name: filepath.Base(argv[0]),
		member: flagValue(argv, "--name")}
	out := []string{argv[0]}
	for _, a := range argv[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(k, "--") {
			out = append(out, a)
			continue
		}
		v, err := r.flag(k, v)
		if err != nil {
			return nil, fmt.Errorf("static pod %s: %s: %w", manifest, k, err)
		}
		out = append(out, k+"="+v)
	}
	if r.name == "kube-apiserver" && flagValue(out, "--bind-address") == "" {
		out = append(out, "--bind-address=127.0.0.1")
	}
	return out, nil
}

// readStaticPod reads the command line of a static pod manifest's first
// container and its hostPath mounts: mount path in the container -> host
// path.
func readStaticPod(manifest string) (argv []string, mounts map[string]string, err error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return nil, nil, fmt.Errorf("static pod: %w", err)
	}
	var pod staticPod
	if err := yaml.Unmarshal(b, &pod); err != nil {
		return nil, nil, fmt.Errorf("static pod %s: %w", manifest, err)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, nil, fmt.Errorf("static pod %s has no containers", manifest)
	}
	c := pod.Spec.Containers[0]
	argv = append(slices.Clone(c.Command), c.Args...)
	if len(argv) == 0 {
		return nil, nil, fmt.Errorf("static pod %s: its container has no command", manifest)
	}
	volumes := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil {
			volumes[v.Name] = v.HostPath.Path
		}
	}
	mounts = map[string]string{}
	for _, m := range c.VolumeMounts {
		if hp, ok := volumes[m.Name]; ok {
			mounts[filepath.Clean(m.MountPath)] = hp
		}
	}
	return argv, mounts, nil
}

type podRewriter struct {
	root   string
	mounts map[string]string
	ports  KubePorts
	name   string // command name: etcd, kube-apiserver
	member string // etcd --name
}

func (r podRewriter) flag(k, v string) (string, error) {
	switch r.name + " " + k {
	case "etcd --listen-client-urls", "etcd --advertise-client-urls":
		return loopbackURLs(v, r.ports.EtcdClient)
	case "etcd --listen-peer-urls", "etcd --initial-advertise-peer-urls":
		return loopbackURLs(v, r.ports.EtcdPeer)
	case "etcd --listen-metrics-urls":
		return loopbackURLs(v, r.ports.EtcdMetrics)
	case "etcd --initial-cluster":
		// Only this member moves; the others (of a restored multi-member
		// cluster) are left as recorded.
		var parts []string
		for _, m := range strings.Split(v, ",") {
			name, u, _ := strings.Cut(m, "=")
			if name == r.member {
				lu, err := loopbackURLs(u, r.ports.EtcdPeer)
				if err != nil {
					return "", err
				}
				m = name + "=" + lu
			}
			parts = append(parts, m)
		}
		return strings.Join(parts, ","), nil
	case "kube-apiserver --secure-port":
		if r.ports.APIServer == 0 {
			return "", errors.New("no port given")
		}
		return strconv.Itoa(r.ports.APIServer), nil
	case "kube-apiserver --bind-address":
		return "127.0.0.1", nil
	case "kube-apiserver --etcd-servers":
		return loopbackURLs(v, r.ports.EtcdClient)
	}
	return r.path(v), nil
}

// path maps a path in the container to its host path under root when it
// lies under a hostPath mount; anything else is left alone (in a real pod
// it would come from the image, like --etcd-prefix=/registry is no path).
func (r podRewriter) path(v string) string {
	if !strings.HasPrefix(v, "/") {
		return v
	}
	best := ""
	for mp := range r.mounts {
		if (v == mp || strings.HasPrefix(v, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return v
	}
	return hostPath(r.root, r.mounts[best]+strings.TrimPrefix(v, best))
}

// loopbackURLs points every URL of a comma-separated list at
// 127.0.0.1:port, keeping its scheme; lists that then repeat a URL (a
// manifest listening on 127.0.0.1 and the node IP) keep one.
func loopbackURLs(v string, port int) (string, error) {
	if port == 0 {
		return "", errors.New("no port given")
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return "", fmt.Errorf("%q is not a URL", s)
		}
		u.Host = fmt.Sprintf("127.0.0.1:%d", port)
		if !slices.Contains(out, u.String()) {
			out = append(out, u.String())
		}
	}
	return strings.Join(out, ","), nil
}

// flagValue returns the value of a --flag=value argument, or "".
func flagValue(args []string, flag string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// hostPath joins an absolute host path to root.
func hostPath(root, p string) string {
	return filepath.Join(root, filepath.FromSlash(p))
}

// tlsClient is an HTTPS client with a client certificate from files.
func tlsClient(caFile, certFile, keyFile string) (*http.Client, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return pemClient(ca, cert, key)
}

func pemClient(caPEM, certPEM, keyPEM []byte) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate in PEM data")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{pair},
		MinVersion:   tls.VersionTLS12,
	}}}, nil
}

// kubeconfigClient is an HTTPS client with the CA and client certificate
// embedded in a kubeadm kubeconfig (its current context).
func kubeconfigClient(path string) (*http.Client, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var cfg struct {
		CurrentContext string `yaml:"current-context"`
		Clusters       []struct {
			Name    string `yaml:"name"`
			Cluster struct {
				CA string `yaml:"certificate-authority-data"`
			} `yaml:"cluster"`
		} `yaml:"clusters"`
		Contexts []struct {
			Name    string `yaml:"name"`
			Context struct {
				Cluster string `yaml:"cluster"`
				User    string `yaml:"user"`
			} `yaml:"context"`
		} `yaml:"contexts"`
		Users []struct {
			Name string `yaml:"name"`
			User struct {
				Cert string `yaml:"client-certificate-data"`
				Key  string `yaml:"client-key-data"`
			} `yaml:"user"`
		} `yaml:"users"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	var clusterName, userName string
	for _, c := range cfg.Contexts {
		if c.Name == cfg.CurrentContext {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	var ca, cert, key string
	for _, c := range cfg.Clusters {
		if c.Name == clusterName {
			ca = c.Cluster.CA
		}
	}
	for _, u := range cfg.Users {
		if u.Name == userName {
			cert, key = u.User.Cert, u.User.Key
		}
	}
	var pems [3][]byte
	for i, s := range []string{ca, cert, key} {
		if pems[i], err = base64.StdEncoding.DecodeString(s); err != nil || len(pems[i]) == 0 {
			return nil, fmt.Errorf("kubeconfig %s: context %q lacks embedded CA or client credentials", path, cfg.CurrentContext)
		}
	}
	client, err := pemClient(pems[0], pems[1], pems[2])
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return client, nil
}
