package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/staticpod"
)

// etcdDisk is the data dir of an etcd with a disk of its own, outside
// /var/lib/etcd: kubeadm's etcd.local.dataDir, kubespray's etcd_data_dir.
const etcdDisk = "/srv/etcd-disk/data"

// TestRestoreOntoMountedDataDir restores a kubeadm host whose etcd keeps
// its data on its own disk: the data dir comes from the captured
// manifest, and on the new machine that data dir is a mount point (a bind
// mount, in a mount namespace of the restore's own). The member must land
// on the mounted disk, the old data kept aside on it, nothing written to
// the directory under the mount, and the restored manifest's flag, volume
// and mount must agree.
func TestRestoreOntoMountedDataDir(t *testing.T) {
	src := newKubeSourceWith(t, kubeSourceOptions{kube: testenv.KubeOptions{NodeName: kubeNode, EtcdDataDir: etcdDisk}})
	var m struct {
		State struct {
			ControlPlane struct {
				EtcdDataDir string `json:"etcdDataDir"`
			} `json:"controlPlane"`
		} `json:"state"`
	}
	if err := json.Unmarshal(testenv.ReadFile(t, src.w.usbPath(src.id, "manifest.json")), &m); err != nil {
		t.Fatal(err)
	}
	if m.State.ControlPlane.EtcdDataDir != etcdDisk {
		t.Fatalf("the manifest records etcd's data dir as %q, want %s", m.State.ControlPlane.EtcdDataDir, etcdDisk)
	}
	src.host.Stop()

	root := filepath.Join(t.TempDir(), "new-machine")
	mountPoint := filepath.Join(root, etcdDisk)
	testenv.Mkdir(t, mountPoint, 0o700)
	disk := filepath.Join(t.TempDir(), "disk")
	testenv.Mkdir(t, disk, 0o700)
	testenv.WriteFile(t, filepath.Join(disk, "old-member-file"), []byte("old"), 0o600)

	ports := distinctPorts(t)
	flag, plan := src.plannedNodeIP(t, ports)
	if plan.Options.EtcdDataDir != etcdDisk {
		t.Fatalf("the plan restores into %q, want the captured %s", plan.Options.EtcdDataDir, etcdDisk)
	}
	args := append(src.applyArgs(flag, root, ports), "--until", "restore-etcd")
	out := inMountNamespace(t, disk, mountPoint, src.w.env(), args)
	t.Logf("restore apply in its own mount namespace:\n%s", out)

	// Nothing under the mount point itself: the disk took it all.
	if entries, err := os.ReadDir(mountPoint); err != nil || len(entries) != 0 {
		t.Errorf("the directory under the mount holds %v (%v): the restore wrote beside the disk", names(entries), err)
	}
	for _, p := range []string{"member/snap/db", ".kdr-restored-" + src.id, ".kdr-aside-" + src.id + "/old-member-file"} {
		if _, err := os.Stat(filepath.Join(disk, p)); err != nil {
			t.Errorf("the mounted disk lacks %s: %v", p, err)
		}
	}

	staged := filepath.Join(src.stagingDir(root), "manifests/etc/kubernetes/manifests/etcd.yaml")
	pod, err := staticpod.Parse(testenv.ReadFile(t, staged))
	if err != nil {
		t.Fatal(err)
	}
	member, err := pod.EtcdMember()
	if err != nil {
		t.Fatal(err)
	}
	if member.DataDir != etcdDisk || member.HostDataDir != etcdDisk {
		t.Errorf("the restored etcd manifest runs --data-dir=%s mounted from %s, want %s for both", member.DataDir, member.HostDataDir, etcdDisk)
	}

	// The member on the disk serves every key of the backup.
	cli := startRestoredEtcd(t, disk, kubeNode,
		fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for k, want := range src.rawKeys {
		resp, err := cli.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
			t.Errorf("%s: restored %v, want %q", k, resp.Kvs, want)
		}
	}
}

// inMountNamespace runs kdr with args in a private mount namespace where
// disk is bind-mounted at mountPoint; the mount ends with the namespace.
func inMountNamespace(t *testing.T, disk, mountPoint string, env, args []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), kdrTimeout)
	defer cancel()
	script := `mount --bind "$1" "$2" && shift 2 && exec "$@"`
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", disk, mountPoint, kdrBin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kdr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func names(entries []os.DirEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
