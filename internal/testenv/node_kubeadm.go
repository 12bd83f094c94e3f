package testenv

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// nodeKubeadmConfig is where the node keeps its kubeadm configuration:
// outside /etc/kubernetes, like KubeadmInit's.
const nodeKubeadmConfig = "/etc/kubeadm/config.yaml"

// kubeadmNodeConfig configures `kubeadm init` for the node: kubeadm's
// defaults but for what this machine needs (the cgroupfs driver on cgroup
// v1, a cgroupRoot of the test's) and what an air-gapped node with one
// disk shared with other tests wants (no image pulls, no image garbage
// collection, eviction only when the disk is really full).
const kubeadmNodeConfig = `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: %[1]s
  bindPort: 6443
nodeRegistration:
  name: %[2]s
  criSocket: unix://%[3]s
  imagePullPolicy: Never
  # The node's address, as kubeadm's join sets it on a node with several
  # addresses, rather than whichever the kubelet finds on the default
  # route's interface.
  kubeletExtraArgs:
    - name: node-ip
      value: %[1]s
skipPhases:
  # The checks want a machine of the node's own (swap off, modules,
  # sysctls of the machine); coredns and kube-proxy are not run as pods
  # (kube-proxy runs as a node process, as on many distributions).
  - preflight
  - addon/coredns
  - addon/kube-proxy
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %[4]s
clusterName: kdr-node
networking:
  podSubnet: %[5]s
  serviceSubnet: %[6]s
apiServer:
  certSANs: [%[1]s]
etcd:
  local:
    dataDir: /var/lib/etcd
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /%[7]s
failCgroupV1: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
`

// kubeProxyConfig runs kube-proxy as a node process in iptables mode,
// leaving the machine-wide conntrack table size alone.
const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
mode: iptables
clusterCIDR: %s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`

// nodeImageBinaries maps the images kubeadm names to the ./bin binaries
// they are built from. kube-proxy and coredns have none: kube-proxy runs
// as a node process and nothing here needs cluster DNS.
var nodeImageBinaries = map[string]string{
	"kube-apiserver":          "kube-apiserver",
	"kube-controller-manager": "kube-controller-manager",
	"kube-scheduler":          "kube-scheduler",
	"etcd":                    "etcd",
	"pause":                   "pause",
}

// kubeadmConfigFor is the node's kubeadm configuration.
func (n *Node) kubeadmConfigFor(version string) []byte {
	return fmt.Appendf(nil, kubeadmNodeConfig, n.IP, n.Name, nodeCRISocket, version,
		nodePodSubnet, nodeServiceCIDR, n.CgroupRoot)
}

// controlPlaneImages builds (or finds in the cache) an image of each
// control-plane binary under the name kubeadm gives it, and returns the
// archives. The pause image's name is kept for containerd's config.
func (n *Node) controlPlaneImages(ctx context.Context, kubeadm string) ([]string, error) {
	version, err := kubeadmVersion(kubeadm)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(n.dir, "kubeadm.yaml")
	if err := os.WriteFile(cfg, n.kubeadmConfigFor(version), 0o644); err != nil {
		return nil, err
	}
	out, err := commandOutput(ctx, kubeadm, "config", "images", "list", "--config", cfg)
	if err != nil {
		return nil, err
	}
	var archives []string
	for _, ref := range strings.Fields(out) {
		repo, _, _ := strings.Cut(path.Base(ref), ":")
		bin, ok := nodeImageBinaries[repo]
		if !ok {
			continue
		}
		if repo == "pause" {
			n.pause = ref
		}
		src, ok := lookBinary(bin)
		if !ok {
			return nil, fmt.Errorf("%s not found: run `make tools`", bin)
		}
		archive, err := CachedImage(ctx, ref, "/usr/local/bin/"+bin, src)
		if err != nil {
			return nil, err
		}
		archives = append(archives, archive)
	}
	if n.pause == "" {
		return nil, fmt.Errorf("kubeadm config images list names no pause image:\n%s", out)
	}
	return archives, nil
}

// kubeadmInit runs `kubeadm init` on the node and, once kubeadm has
// written the kubelet's configuration, starts the kubelet as kubeadm's
// systemd drop-in would; kubeadm then waits for the static pods it wrote.
func (n *Node) kubeadmInit(ctx context.Context, kubeadm string) error {
	cfg, err := os.ReadFile(filepath.Join(n.dir, "kubeadm.yaml"))
	if err != nil {
		return err
	}
	if err := n.WriteFile(nodeKubeadmConfig, cfg, 0o600); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		out, err := n.run(ctx, nil, kubeadm, "init", "--config", nodeKubeadmConfig)
		os.WriteFile(filepath.Join(n.dir, "logs", "kubeadm-init.log"), []byte(out), 0o644)
		done <- err
	}()
	var flags []byte
	for flags == nil {
		select {
		case err := <-done:
			if err == nil {
				err = fmt.Errorf("kubeadm init ended before it wrote %s", nodeKubeletFlags)
			}
			return err
		case <-time.After(200 * time.Millisecond):
		}
		flags, _ = os.ReadFile(n.Path(nodeKubeletFlags))
	}
	kubelet, ok := lookBinary("kubelet")
	if !ok {
		return fmt.Errorf("kubelet not found: run `make tools`")
	}
	args := []string{kubelet,
		"--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
		"--kubeconfig=/etc/kubernetes/kubelet.conf",
		"--config=" + nodeKubeletConfig}
	args = append(args, kubeadmFlags(string(flags))...)
	if err := n.startProc("kubelet", args...); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	proxy := fmt.Sprintf(kubeProxyConfig, NodeAdminKubeconfig, n.Name, nodePodSubnet)
	return n.WriteFile("/etc/kubernetes/kube-proxy.yaml", []byte(proxy), 0o644)
}

// kubeadmFlags parses kubeadm-flags.env: KUBELET_KUBEADM_ARGS="--a=b --c=d".
func kubeadmFlags(env string) []string {
	for _, line := range strings.Split(env, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "KUBELET_KUBEADM_ARGS="); ok {
			return strings.Fields(strings.Trim(v, `"`))
		}
	}
	return nil
}
