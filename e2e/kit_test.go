package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/internal/kubedata"
	"github.com/kdr-io/kdr/internal/testenv"
)

// TestKitRestoresOffline is the restore after the worst outage: the
// cluster that held kdr's config and credentials is gone and so is the
// network. A copy of the USB disk alone (at another path, as it is
// mounted at 2 a.m.) and the operator's age identity must do: the kit's
// own kdr, with the kit's own config, restores etcd on an empty root in a
// network namespace with nothing but loopback, and an etcd started on the
// restored data dir serves every key written before the backup. The kit
// itself checks with OpenSSH and coreutils first, as its README says.
func TestKitRestoresOffline(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	ctx := t.Context()
	if _, err := kubedata.Fill(ctx, w.etcd.Client(), kubedata.Options{Bytes: 1 << 20, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.etcd.Client().Put(ctx, "/registry/configmaps/kube-system/written-before-backup", "kit"); err != nil {
		t.Fatal(err)
	}
	before := keyspace(t, w.etcd.Client())
	cfg := writeConfig(t, w.spec())

	// The host that backs up has the break-glass tools on its PATH; the
	// kit takes copies.
	var dirs []string
	for _, name := range []string{"age", "zstd", "etcdutl", "etcdctl"} {
		if d := filepath.Dir(testenv.Binary(t, name)); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	path := "PATH=" + strings.Join(append(dirs, "/usr/sbin", "/usr/bin", "/sbin", "/bin"), ":")
	r := runKdr(t, []string{path}, w.backupArgs(cfg)...)
	wantExit(t, r, 0)
	id := backupID(t, r)

	disk := filepath.Join(t.TempDir(), "media", "operator", "USB DISK")
	testenv.Mkdir(t, filepath.Dir(disk), 0o755)
	copyTree(t, w.usb, disk)
	identity := filepath.Join(t.TempDir(), "operator.key")
	testenv.WriteFile(t, identity, testenv.ReadFile(t, w.identity), 0o600)
	kitDir := filepath.Join(disk, "kit")
	for _, name := range []string{"kdr", "age", "zstd", "etcdutl", "etcdctl", "kdr.yaml", "README.txt", "allowed_signers", "runbook-" + cluster + ".md"} {
		if _, err := os.Stat(filepath.Join(kitDir, name)); err != nil {
			t.Errorf("the kit lacks %s: %v", name, err)
		}
	}
	if readme := string(testenv.ReadFile(t, filepath.Join(kitDir, "README.txt"))); strings.Contains(readme, "Not found") || !strings.Contains(readme, id) {
		t.Errorf("README.txt lists missing tools or not backup %s:\n%s", id, readme)
	}
	if rb, set := testenv.ReadFile(t, filepath.Join(kitDir, "runbook-"+cluster+".md")), testenv.ReadFile(t, w.usbPath(id, "runbook.md")); !bytes.Equal(rb, set) {
		t.Error("the kit's runbook is not the one stored beside the set")
	}
	kitCfg := string(testenv.ReadFile(t, filepath.Join(kitDir, "kdr.yaml")))
	for _, secret := range []string{"keyFile", w.signingKey, "s3:", "password"} {
		if strings.Contains(kitCfg, secret) {
			t.Errorf("the kit's kdr.yaml holds %q:\n%s", secret, kitCfg)
		}
	}

	// Check the kit before trusting its binary: its allowed_signers holds
	// the key the operator knows from elsewhere (a printed runbook), the
	// signature verifies with it, then every file's hash.
	pub := strings.Join(strings.Fields(w.signingPub)[:2], " ") // without its comment
	if signers := string(testenv.ReadFile(t, filepath.Join(kitDir, "allowed_signers"))); !strings.Contains(signers, pub) {
		t.Errorf("the kit's allowed_signers does not hold the trusted key %s:\n%s", pub, signers)
	}
	if err := sshVerifyFile(t, filepath.Join(kitDir, "allowed_signers"), "kdr-kit", filepath.Join(kitDir, "SHA256SUMS")); err != nil {
		t.Fatalf("ssh-keygen -Y verify of the kit's SHA256SUMS: %v", err)
	}
	check := exec.CommandContext(ctx, "sha256sum", "--strict", "-c", "SHA256SUMS")
	check.Dir = kitDir
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
	}

	// The restore: the kit's binary and config, relative paths from the
	// disk's root, an empty root, no route out, no environment but PATH.
	root := t.TempDir()
	ports := distinctPorts(t)
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports.EtcdPeer)
	client := fmt.Sprintf("http://127.0.0.1:%d", ports.EtcdClient)
	out, err := offline(ctx, disk, "./kit/kdr", "--config", "./kit/kdr.yaml", "restore", "apply",
		"--node", "cp1", "--node-ip", "cp1=127.0.0.1,"+peer+","+client,
		"--root", root, "--identity", identity, "--until", "restore-etcd", "--wait", "10s")
	if err != nil {
		t.Fatalf("the kit's restore, offline: %v\n%s", err, out)
	}
	t.Logf("the kit's restore, offline:\n%s", out)
	if !strings.Contains(out, "restore-etcd") {
		t.Errorf("the restore did not reach restore-etcd:\n%s", out)
	}

	cli := startRestoredEtcd(t, filepath.Join(root, "var/lib/etcd"), "cp1", peer, client)
	after := keyspace(t, cli)
	if len(after) != len(before) {
		t.Errorf("the restored etcd holds %d keys, the backed-up one %d", len(after), len(before))
	}
	missing := 0
	for k, v := range before {
		if after[k] != v {
			if missing++; missing <= 5 {
				t.Errorf("%s: restored %q, want %q", k, after[k], v)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d keys not restored as written", missing, len(before))
	}
}

// keyspace reads every key and value of an etcd.
func keyspace(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	kv := make(map[string]string, len(resp.Kvs))
	for _, k := range resp.Kvs {
		kv[string(k.Key)] = string(k.Value)
	}
	if len(kv) < 100 {
		t.Fatalf("%d keys: the comparison would prove little", len(kv))
	}
	return kv
}

// offline runs a command in dir in a new network namespace that has only
// loopback (brought up, since a restore binds etcd's ports to check them)
// and no route, with PATH alone in its environment.
func offline(ctx context.Context, dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, kdrTimeout)
	defer cancel()
	script := `ip link set lo up && if ip route show | grep -q .; then echo "a route out: $(ip route show)"; exit 99; fi; exec "$@"`
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--net", "sh", "-c", script, "sh", name}, args...)...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// sshVerifyFile checks a detached signature as an operator does, with
// ssh-keygen and an allowed_signers file.
func sshVerifyFile(t *testing.T, allowedSigners, namespace, file string) error {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(t.Context(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t, "ssh-keygen"), "-Y", "verify", "-f", allowedSigners, "-I", "kdr", "-n", namespace, "-s", file+".sig")
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}
