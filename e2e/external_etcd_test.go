package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/etcdenv"
	"github.com/kdr-io/kdr/internal/testenv"
)

// kubesprayEnv is /etc/etcd.env as kubespray writes it for node1: the
// systemd unit's flags, naming the member's files in /etc/ssl/etcd/ssl,
// and a data dir (kubespray's etcd_data_dir) on a disk of its own rather
// than the default /var/lib/etcd, which the restore must take from it.
const kubesprayEnv = `# Environment file for etcd
ETCD_DATA_DIR=` + etcdDisk + `
ETCD_ADVERTISE_CLIENT_URLS=https://10.0.0.11:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.0.0.11:2380
ETCD_INITIAL_CLUSTER_STATE=existing
ETCD_NAME=etcd1
ETCD_TRUSTED_CA_FILE=/etc/ssl/etcd/ssl/ca.pem
ETCD_CERT_FILE=/etc/ssl/etcd/ssl/member-node1.pem
ETCD_KEY_FILE=/etc/ssl/etcd/ssl/member-node1-key.pem
ETCD_CLIENT_CERT_AUTH=true
ETCD_PEER_TRUSTED_CA_FILE=/etc/ssl/etcd/ssl/ca.pem
ETCD_PEER_CERT_FILE=/etc/ssl/etcd/ssl/member-node1.pem
ETCD_PEER_KEY_FILE=/etc/ssl/etcd/ssl/member-node1-key.pem
ETCDCTL_CACERT=/etc/ssl/etcd/ssl/ca.pem
ETCDCTL_CERT=/etc/ssl/etcd/ssl/admin-node1.pem
ETCDCTL_KEY=/etc/ssl/etcd/ssl/admin-node1-key.pem
`

// kubesprayState are the state sets of an external etcd laid out as
// kubespray installs it, all required.
const kubesprayState = `    state:
      - {name: etcd-pki, paths: ["/etc/ssl/etcd/ssl/**"], required: true}
      - {name: etcd-env, paths: ["/etc/etcd.env"], required: true}
`

// TestExternalEtcd: an external etcd under systemd with kubespray's PKI
// layout and no static pods. kdr backs it up, drills it (the files the
// drill requires come from /etc/etcd.env and the required sets, not
// kubeadm's list), grades it with doctor, and restores it with
// --topology systemd into a new root, into the data dir /etc/etcd.env
// names (recorded by the backup), where etcd started on the restored data
// dir serves every key. A member key deleted from the host before a
// new backup (the glob still matches the rest) fails that backup's drill,
// naming the file.
func TestExternalEtcd(t *testing.T) {
	src := newExternalSource(t)
	w, cfg, root, ssl, id, want := src.w, src.cfg, src.root, src.ssl, src.id, src.want

	// The backup records the member from /etc/etcd.env: no static pod
	// runs etcd, and a restore takes its data dir from there.
	var m struct {
		State struct {
			ControlPlane *struct {
				EtcdManifest string `json:"etcdManifest"`
				EtcdName     string `json:"etcdName"`
				EtcdDataDir  string `json:"etcdDataDir"`
			} `json:"controlPlane"`
		} `json:"state"`
	}
	if err := json.Unmarshal(testenv.ReadFile(t, w.usbPath(id, "manifest.json")), &m); err != nil {
		t.Fatal(err)
	}
	if cp := m.State.ControlPlane; cp == nil || cp.EtcdManifest != "" || cp.EtcdName != "etcd1" || cp.EtcdDataDir != etcdDisk {
		t.Errorf("the manifest records the control plane as %+v, want etcd1 in %s and no etcd manifest", cp, etcdDisk)
	}

	rep := drillReport(t, w, cfg, 0)
	grades := map[string]string{}
	for _, c := range rep.Checks {
		if c.Grade == "fail" {
			t.Errorf("drill check %s %s failed: %s", c.ID, c.Subject, c.Reason)
		}
		if c.ID == "topology" && (c.Subject != "systemd" || !strings.Contains(c.Reason, "/etc/etcd.env")) {
			t.Errorf("topology check: %s: %s, want systemd and the files of /etc/etcd.env", c.Subject, c.Reason)
		}
		grades[c.ID+" "+c.Subject] = c.Grade
	}
	for _, k := range []string{
		"topology systemd", "cert-chain /etc/ssl/etcd/ssl/member-node1.pem", "key-match /etc/ssl/etcd/ssl/member-node1-key.pem",
		"key-match /etc/ssl/etcd/ssl/ca-key.pem", "etcd-keys " + cluster,
	} {
		if grades[k] != "pass" {
			t.Errorf("drill check %s: %q, want pass", k, grades[k])
		}
	}
	if grades["file /etc/kubernetes/pki/ca.crt"] != "" {
		t.Errorf("the drill asked for kubeadm's files of an external etcd")
	}

	r := w.kdr(t, cfg, "doctor", "-o", "json", "--root", root)
	var doc doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Clusters) != 1 {
		t.Fatalf("doctor -o json: %v\n%s", err, r)
	}
	for _, c := range doc.Clusters[0].Checks {
		switch c.ID {
		case "static-pods":
			if c.Grade != "pass" || !strings.Contains(c.Reason, "no static pods") {
				t.Errorf("doctor static-pods: %s: %s, want pass, no static pods", c.Grade, c.Reason)
			}
		case "backup-age", "etcd-members", "etcd-leader-changes", "recovery-kit":
			if c.Grade != "pass" {
				t.Errorf("doctor %s: %s: %s", c.ID, c.Grade, c.Reason)
			}
		case "drill":
			// The test PKI lives a day: the drill warns of its expiry.
			if c.Grade == "fail" {
				t.Errorf("doctor drill: %s: %s", c.Grade, c.Reason)
			}
		}
	}

	// Restore node1 alone into a new root, up to the restored data dir:
	// systemctl has no unit to start in a sandbox. No --data-dir: the
	// backup's is the default.
	newRoot := t.TempDir()
	peer, client := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	r = w.kdr(t, cfg, "restore", "apply", "--target", "usb", "--backup", id, "--identity", w.identity, "--topology", "systemd",
		"--root", newRoot, "--node", externalNode, "--node-ip", externalNode+"=127.0.0.1,"+peer+","+client, "--until", "restore-etcd")
	wantExit(t, r, 0)
	for _, f := range []string{"etc/ssl/etcd/ssl/ca-key.pem", "etc/ssl/etcd/ssl/member-node1-key.pem"} {
		if string(testenv.ReadFile(t, filepath.Join(newRoot, f))) != string(testenv.ReadFile(t, filepath.Join(root, f))) {
			t.Errorf("restored /%s differs from the host's", f)
		}
	}
	// The environment file names the member where the plan put it; the
	// backup's own is kept aside.
	env := etcdenv.Parse(testenv.ReadFile(t, filepath.Join(newRoot, "etc/etcd.env")))
	for name, want := range map[string]string{"ETCD_NAME": externalNode, "ETCD_ADVERTISE_CLIENT_URLS": client, "ETCD_INITIAL_ADVERTISE_PEER_URLS": peer, "ETCD_DATA_DIR": etcdDisk} {
		if got, _ := env.Get(name); got != want {
			t.Errorf("restored /etc/etcd.env: %s=%s, want %s", name, got, want)
		}
	}
	aside := filepath.Join(newRoot, "var/lib/kdr/restore", cluster, id, "aside/etc/etcd.env")
	if string(testenv.ReadFile(t, aside)) != string(testenv.ReadFile(t, filepath.Join(root, "etc/etcd.env"))) {
		t.Error("the backup's /etc/etcd.env is not kept aside")
	}
	if _, err := os.Stat(filepath.Join(newRoot, etcdDisk, "member/snap/db")); err != nil {
		t.Fatalf("no member restored into the source's data dir %s: %v", etcdDisk, err)
	}
	if _, err := os.Stat(filepath.Join(newRoot, "var/lib/etcd")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the restore made /var/lib/etcd (%v), not only the source's data dir %s", err, etcdDisk)
	}
	startEtcd(t, externalNode, filepath.Join(newRoot, etcdDisk), peer, client)
	rc, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var resp *clientv3.GetResponse
	for deadline := time.Now().Add(time.Minute); ; {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		resp, err = rc.Get(ctx, "", clientv3.WithPrefix())
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("restored etcd: %v", err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	if len(got) != len(want) {
		t.Errorf("restored etcd serves %d keys, the source had %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("restored %s = %.20q, want %.20q", k, got[k], v)
		}
	}

	// A member key gone from the host: /etc/ssl/etcd/ssl/** still matches,
	// so the backup is taken, and its drill fails naming the file.
	if err := os.Remove(filepath.Join(ssl, "member-node1-key.pem")); err != nil {
		t.Fatal(err)
	}
	r = w.kdr(t, cfg, "backup", "--root", root)
	wantExit(t, r, 0)
	rep = drillReport(t, w, cfg, 1)
	found := false
	for _, c := range rep.Checks {
		if c.Grade == "fail" && c.Subject == "/etc/ssl/etcd/ssl/member-node1-key.pem" && strings.Contains(c.Reason, "ETCD_KEY_FILE in /etc/etcd.env") {
			found = true
		}
	}
	if !found {
		t.Errorf("no failed check names /etc/ssl/etcd/ssl/member-node1-key.pem: %+v", rep.Checks)
	}
}

// externalSource is an external etcd laid out as kubespray installs it
// (/etc/etcd.env, member and admin certificates in /etc/ssl/etcd/ssl, no
// static pods), backed up once by kdr from root.
type externalSource struct {
	w   *world
	cfg string
	// root is the host's root; ssl its /etc/ssl/etcd/ssl.
	root, ssl string
	id        string
	// want are the keys written before the backup, with their values.
	want map[string]string
}

// externalNode is the kubespray host the backup's member ran on.
const externalNode = "node1"

func newExternalSource(t *testing.T) *externalSource {
	t.Helper()
	w := newWorld(t, worldOptions{members: 3})
	want := map[string]string{}
	cli := w.etcd.Client()
	for i := range 200 {
		k, v := fmt.Sprintf("/registry/configmaps/default/cm-%03d", i), strings.Repeat(fmt.Sprint(i), 50)
		if _, err := cli.Put(t.Context(), k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}

	root := t.TempDir()
	ssl := filepath.Join(root, "etc/ssl/etcd/ssl")
	testenv.Mkdir(t, ssl, 0o700)
	pki := w.etcd.PKI
	for _, f := range []struct{ src, dst string }{
		{pki.CA, "ca.pem"}, {pki.CAKey, "ca-key.pem"},
		{pki.ServerCert, "member-node1.pem"}, {pki.ServerKey, "member-node1-key.pem"},
		{pki.ClientCert, "admin-node1.pem"}, {pki.ClientKey, "admin-node1-key.pem"},
		{pki.ClientCert, "node-node1.pem"}, {pki.ClientKey, "node-node1-key.pem"},
	} {
		testenv.WriteFile(t, filepath.Join(ssl, f.dst), testenv.ReadFile(t, f.src), 0o600)
	}
	testenv.WriteFile(t, filepath.Join(root, "etc/etcd.env"), []byte(kubesprayEnv), 0o640)
	testenv.Mkdir(t, filepath.Join(root, etcdDisk), 0o700)

	spec := w.spec()
	spec.ca, spec.cert, spec.key = filepath.Join(ssl, "ca.pem"), filepath.Join(ssl, "admin-node1.pem"), filepath.Join(ssl, "admin-node1-key.pem")
	text := spec.render()
	kubeadmState := text[strings.Index(text, "    state:\n"):strings.Index(text, "    inventory:\n")]
	text = strings.Replace(text, kubeadmState, kubesprayState, 1)
	cfg := filepath.Join(t.TempDir(), "kdr.yaml")
	testenv.WriteFile(t, cfg, []byte(text), 0o600)

	r := w.kdr(t, cfg, "backup", "--root", root)
	wantExit(t, r, 0)
	return &externalSource{w: w, cfg: cfg, root: root, ssl: ssl, id: backupID(t, r), want: want}
}

// drillJSON is `kdr drill -o json`, by the names of its contract.
type drillJSON struct {
	Result string `json:"result"`
	Checks []struct {
		ID      string `json:"id"`
		Subject string `json:"subject"`
		Grade   string `json:"grade"`
		Reason  string `json:"reason"`
	} `json:"checks"`
}

func drillReport(t *testing.T, w *world, cfg string, exit int) drillJSON {
	t.Helper()
	r := w.kdr(t, cfg, "drill", "--target", "usb", "--identity", w.identity, "-o", "json")
	wantExit(t, r, exit)
	var rep drillJSON
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("drill -o json: %v\n%s", err, r)
	}
	return rep
}

// startEtcd runs the etcd binary on a restored data dir as the restored
// member, until the test ends.
func startEtcd(t *testing.T, name, dataDir, peer, client string) {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Binary(t, "etcd"), "--name", name, "--data-dir", dataDir,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--listen-client-urls", client, "--advertise-client-urls", client, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
}
