package testenv

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// kubeletEtcdPod is a plain-HTTP etcd static pod on a node address that is
// not this machine's, so that it runs only if the kubelet rewrites its
// URLs, and with a data dir that exists only under the kubelet's root.
const kubeletEtcdPod = `apiVersion: v1
kind: Pod
metadata:
  name: etcd
spec:
  containers:
  - command:
    - etcd
    - --name=k1
    - --data-dir=/var/lib/etcd
    - --listen-client-urls=http://192.0.2.10:2379
    - --advertise-client-urls=http://192.0.2.10:2379
    - --listen-peer-urls=http://192.0.2.10:2380
    - --initial-advertise-peer-urls=http://192.0.2.10:2380
    - --initial-cluster=k1=http://192.0.2.10:2380
    - --listen-metrics-urls=http://127.0.0.1:2381
%s    volumeMounts:
    - {mountPath: /var/lib/etcd, name: etcd-data}
  volumes:
  - {hostPath: {path: /var/lib/etcd, type: DirectoryOrCreate}, name: etcd-data}
`

// kubeletWait bounds every wait of these tests; etcd starts in about a
// second.
const kubeletWait = time.Minute

// TestKubeletStaticPods drives a Kubelet through a static pod's life:
// manifest written, process crashed, manifest changed, manifest removed.
func TestKubeletStaticPods(t *testing.T) {
	root := t.TempDir()
	k := StartKubelet(t, root, KubePorts{})
	manifests := filepath.Join(root, "etc/kubernetes/manifests")
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	// Written whole and renamed into place, as kubeadm writes manifests:
	// a kubelet that polls while a file is half-written would start the
	// half, then the whole.
	write := func(name, content string) {
		t.Helper()
		tmp := filepath.Join(manifests, ".writing-"+name)
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(manifests, name)); err != nil {
			t.Fatal(err)
		}
	}
	health := fmt.Sprintf("http://127.0.0.1:%d/health", k.Ports.EtcdClient)

	// A hidden file is a tool's half-written manifest: never run.
	write(".etcd.yaml.tmp", fmt.Sprintf(kubeletEtcdPod, ""))
	write("etcd.yaml", fmt.Sprintf(kubeletEtcdPod, ""))
	write("sidecar.yaml", "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command: [kdr-test-no-such-binary, --flag=1]\n")

	if err := k.WaitRunning("etcd", kubeletWait); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, health, true)
	// The data volume's host path is under the root, as mounted.
	if _, err := os.Stat(filepath.Join(root, "var/lib/etcd/member")); err != nil {
		t.Errorf("etcd data dir under the root: %v", err)
	}
	if k.Running("sidecar") {
		t.Error("sidecar runs, though its binary does not exist")
	}
	if got := k.Logs("sidecar"); !strings.Contains(got, "no kdr-test-no-such-binary binary") {
		t.Errorf("sidecar log does not say its binary is missing: %q", got)
	}
	if k.Logs(".etcd.yaml") != "" {
		t.Error("the hidden manifest was run")
	}
	if got := k.Starts("etcd"); got != 1 {
		t.Errorf("etcd started %d times, want 1", got)
	}

	// A crash: the kubelet starts it again after its backoff.
	first := k.Pid("etcd")
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	Eventually(t, kubeletWait, "etcd started again after a crash", func() bool { return k.Starts("etcd") == 2 && k.Running("etcd") })
	waitHTTP(t, health, true)
	if !strings.Contains(k.Logs("etcd"), "exited (signal: killed); starting again") {
		t.Errorf("etcd log does not record the crash:\n%s", tail(k.logPath("etcd")))
	}

	// A changed manifest: the old process stops, a new one runs the new
	// command line.
	crashed := k.Pid("etcd")
	write("etcd.yaml", fmt.Sprintf(kubeletEtcdPod, "    - --log-level=warn\n"))
	Eventually(t, kubeletWait, "etcd restarted on its changed manifest", func() bool { return k.Starts("etcd") == 3 && k.Running("etcd") })
	if pid := k.Pid("etcd"); pid == crashed || pid == first {
		t.Errorf("etcd pid %d after the change; it was %d (and %d before the crash)", pid, crashed, first)
	}
	waitHTTP(t, health, true)
	if !regexp.MustCompile(`(?m): start etcd .*--log-level=warn`).MatchString(k.Logs("etcd")) {
		t.Errorf("etcd log has no start with the changed command line:\n%s", tail(k.logPath("etcd")))
	}

	// A removed manifest: the process stops and nothing restarts it.
	if err := os.Remove(filepath.Join(manifests, "etcd.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := k.WaitStopped("etcd", kubeletWait); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, health, false)
	time.Sleep(3 * kubeletPollInterval)
	if k.Running("etcd") || k.Starts("etcd") != 3 {
		t.Errorf("etcd running=%v starts=%d after its manifest was removed", k.Running("etcd"), k.Starts("etcd"))
	}
	if !strings.Contains(k.Logs("etcd"), "stopped (") {
		t.Errorf("etcd log does not record the stop:\n%s", tail(k.logPath("etcd")))
	}

	// Written back, it runs again; Stop ends it.
	write("etcd.yaml", fmt.Sprintf(kubeletEtcdPod, ""))
	Eventually(t, kubeletWait, "etcd started on its manifest written back", func() bool { return k.Starts("etcd") == 4 && k.Running("etcd") })
	pid := k.Pid("etcd")
	k.Stop()
	if k.Running("etcd") || syscall.Kill(pid, 0) == nil {
		t.Errorf("etcd (pid %d) still runs after Stop", pid)
	}
}

// waitHTTP polls url until it answers 200 (up) or does not answer (down).
func waitHTTP(t *testing.T, url string, up bool) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	Eventually(t, kubeletWait, fmt.Sprintf("%s answering=%v", url, up), func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return !up
		}
		resp.Body.Close()
		return up && resp.StatusCode == http.StatusOK
	})
}
