package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/internal/testenv"
)

// Host paths of an API server that encrypts Secrets at rest and audits.
// Neither config is under /etc/kubernetes/pki, and the audit policy is not
// even under /etc/kubernetes: no default state set names them, only the
// kube-apiserver manifest does.
const (
	encConfigPath = "/etc/kubernetes/enc/encryption.yaml"
	// The audit policy is kept in /srv/audit and mounted where the flag
	// names it, so the flag's path is not the host's.
	auditPolicyPath  = "/srv/audit/policy.yaml"
	auditPolicyMount = "/etc/kubernetes/audit/policy.yaml"
	auditLogPath     = "/var/log/kubernetes/audit.log"
	// encPrefix starts every value kube-apiserver's aescbc provider
	// writes to etcd.
	encPrefix = "k8s:enc:aescbc:v1:"
)

// encryptedKube is a kubeadm host whose kube-apiserver encrypts Secrets
// with aescbc and writes an audit log, as kubeadm writes it from
// apiServer.extraArgs and extraVolumes. files are the configs to put on
// the host, by host path.
func encryptedKube(files map[string][]byte) testenv.KubeOptions {
	return testenv.KubeOptions{
		APIServerArgs: []testenv.KubeArg{
			{Name: "encryption-provider-config", Value: encConfigPath},
			{Name: "audit-policy-file", Value: auditPolicyMount},
			{Name: "audit-log-path", Value: auditLogPath},
		},
		APIServerVolumes: []testenv.KubeVolume{
			{Name: "encryption", HostPath: filepath.Dir(encConfigPath), MountPath: filepath.Dir(encConfigPath), ReadOnly: true, PathType: "DirectoryOrCreate"},
			{Name: "audit-policy", HostPath: filepath.Dir(auditPolicyPath), MountPath: filepath.Dir(auditPolicyMount), ReadOnly: true, PathType: "DirectoryOrCreate"},
			// The log is an output: writable, and no backup's business.
			{Name: "audit-log", HostPath: filepath.Dir(auditLogPath), MountPath: filepath.Dir(auditLogPath), PathType: "DirectoryOrCreate"},
		},
		Files: files,
	}
}

// encryptionConfig is an EncryptionConfiguration with one fresh aescbc key
// for Secrets; identity last, so that data written before it was turned on
// still reads.
func encryptionConfig(t *testing.T) []byte {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return fmt.Appendf(nil, `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: %s
      - identity: {}
`, base64.StdEncoding.EncodeToString(key))
}

// auditPolicy records who touched Secrets, without their data.
var auditPolicy = []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: [secrets]
  - level: None
`)

// stateDoc is the part of a manifest's state record these tests read.
type stateDoc struct {
	State struct {
		Sets []struct {
			Name     string   `json:"name"`
			Required bool     `json:"required"`
			Paths    []string `json:"paths"`
		} `json:"sets"`
		ControlPlane *struct {
			References []struct {
				Component string `json:"component"`
				Flag      string `json:"flag"`
				Path      string `json:"path"`
			} `json:"references"`
		} `json:"controlPlane"`
	} `json:"state"`
}

// TestRestoreEncryptedSecretsOntoNewMachine is the acceptance: a
// kubeadm host whose kube-apiserver encrypts Secrets at rest (its
// EncryptionConfiguration outside /etc/kubernetes/pki) and follows an
// audit policy is backed up with the default state sets, lost, and
// restored onto an empty machine, where the real kube-apiserver must start
// from the restored manifests and serve the Secrets written before the
// backup, decrypted: the key came back with the backup, byte for byte.
func TestRestoreEncryptedSecretsOntoNewMachine(t *testing.T) {
	files := map[string][]byte{encConfigPath: encryptionConfig(t), auditPolicyPath: auditPolicy}
	secrets := map[string]string{} // namespace/name -> the value of key "v"
	src := newKubeSourceWith(t, kubeSourceOptions{
		kube: encryptedKube(files),
		populate: func(t *testing.T, h *testenv.KubeHost) {
			for _, ns := range []string{"shop", "billing"} {
				for i := range 2 {
					name, v := fmt.Sprintf("db-%d", i), fmt.Sprintf("%s-password-%d-%s", ns, i, randomHex(t))
					h.Kubectl(t, "-n", ns, "create", "secret", "generic", name, "--from-literal=v="+v)
					secrets[ns+"/"+name] = v
				}
			}
			// What etcd holds is ciphertext: the Secrets can only come back
			// with the key.
			cli := etcdClient(t, h.EtcdEndpoint, h.EtcdTLS.CA, h.EtcdTLS.Cert, h.EtcdTLS.Key)
			for key, v := range secrets {
				raw := etcdValue(t, cli, "/registry/secrets/"+key)
				if !bytes.HasPrefix(raw, []byte(encPrefix)) || bytes.Contains(raw, []byte(v)) {
					t.Fatalf("secret %s is stored in etcd as %.40q..., want %s and no plaintext", key, raw, encPrefix)
				}
			}
		},
	})

	// The backup captured both configs though no configured set names
	// them: a required set "referenced" lists them.
	var doc stateDoc
	if err := json.Unmarshal(testenv.ReadFile(t, src.w.usbPath(src.id, "manifest.json")), &doc); err != nil {
		t.Fatal(err)
	}
	var referenced []string
	for _, s := range doc.State.Sets {
		if s.Name != "referenced" {
			for _, p := range []string{encConfigPath, auditPolicyPath} {
				if slices.Contains(s.Paths, p) {
					t.Errorf("set %s names %s; the default sets should not, or this test proves nothing", s.Name, p)
				}
			}
			continue
		}
		referenced = s.Paths
		if !s.Required {
			t.Errorf("set referenced is not required")
		}
	}
	for _, p := range []string{encConfigPath, auditPolicyPath} {
		if !slices.Contains(referenced, p) {
			t.Errorf("state set referenced lists %q, want %s among them (sets: %+v)", referenced, p, doc.State.Sets)
		}
	}
	if slices.Contains(referenced, auditLogPath) {
		t.Errorf("state set referenced lists the audit log %s, an output", auditLogPath)
	}
	if doc.State.ControlPlane == nil {
		t.Fatal("the manifest records no control plane")
	}
	refs := map[string]string{}
	for _, r := range doc.State.ControlPlane.References {
		if r.Component == "kube-apiserver" {
			refs[r.Flag] = r.Path
		}
	}
	if refs["encryption-provider-config"] != encConfigPath || refs["audit-policy-file"] != auditPolicyPath {
		t.Errorf("kube-apiserver references %v, want --encryption-provider-config %s and --audit-policy-file %s (the host path, not the mount)",
			refs, encConfigPath, auditPolicyPath)
	}

	// The node is gone: its processes, etcd's data, /etc/kubernetes (and
	// the encryption key in it) and /srv.
	root, k := src.restoreOnNewMachine(t, []string{"/srv"})

	// The configs are back, byte for byte, keys' mode kept.
	for p, want := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if got := testenv.ReadFile(t, full); !bytes.Equal(got, want) {
			t.Errorf("restored %s differs from the original", p)
		}
		if fi, err := os.Lstat(full); err != nil {
			t.Error(err)
		} else if fi.Mode() != 0o600 {
			t.Errorf("restored %s has mode %v, want a regular file of mode 0600", p, fi.Mode())
		}
	}
	if !k.Running("kube-apiserver") {
		t.Fatalf("the kubelet does not run kube-apiserver after the restore:\n%s", k.Logs("kube-apiserver"))
	}
	if cmd := k.Logs("kube-apiserver"); !strings.Contains(cmd, "--encryption-provider-config="+filepath.Join(root, encConfigPath)) ||
		!strings.Contains(cmd, "--audit-policy-file="+filepath.Join(root, auditPolicyPath)) {
		t.Errorf("the restored kube-apiserver does not read the restored configs:\n%s", cmd)
	}

	// The Secrets, through the API, decrypted with the restored key; etcd
	// still holds them encrypted.
	admin := k.Kubeconfig(t, "admin.conf")
	cli := restoredEtcd(t, root, k.Ports)
	for key, want := range secrets {
		ns, name, _ := strings.Cut(key, "/")
		b64v := k.Kubectl(t, admin, "-n", ns, "get", "secret", name, "-o", "jsonpath={.data.v}")
		got, err := base64.StdEncoding.DecodeString(b64v)
		if err != nil || string(got) != want {
			t.Errorf("secret %s: v = %q (%v), want %q", key, got, err, want)
		}
		if raw := etcdValue(t, cli, "/registry/secrets/"+key); !bytes.HasPrefix(raw, []byte(encPrefix)) {
			t.Errorf("restored etcd holds secret %s as %.40q..., want %s", key, raw, encPrefix)
		}
	}
	for key, want := range src.configmaps {
		ns, name, _ := strings.Cut(key, "/")
		if got := k.Kubectl(t, admin, "-n", ns, "get", "configmap", name, "-o", "jsonpath={.data.v}"); got != want {
			t.Errorf("configmap %s: v = %q, want %q", key, got, want)
		}
	}

	// The restored policy is the one followed: reads of Secrets are in the
	// new machine's audit log, written where the manifest says.
	log, err := os.ReadFile(filepath.Join(root, auditLogPath))
	if err != nil {
		t.Fatalf("no audit log on the new machine: %v", err)
	}
	if !bytes.Contains(log, []byte(`"resource":"secrets"`)) {
		t.Errorf("the audit log on the new machine records no Secret access:\n%.2000s", log)
	}
}

// TestBackupRefusesMissingEncryptionConfig backs up a host whose
// kube-apiserver names an encryption config that is not there: a restore
// from that backup would bring back Secrets nobody can read, so the
// backup fails before it reads etcd, says which flag names which file,
// and stores nothing.
func TestBackupRefusesMissingEncryptionConfig(t *testing.T) {
	w := &world{dir: t.TempDir()}
	w.usb = filepath.Join(w.dir, "usb")
	testenv.Mkdir(t, w.usb, 0o755)
	w.identity, w.recipient = w.generateKey(t, "operator.key")
	w.signingKey, w.signingPub = generateSigningKey(t, w.dir)
	root := filepath.Join(t.TempDir(), "root")
	testenv.KubeadmInit(t, root, encryptedKube(map[string][]byte{auditPolicyPath: auditPolicy}))

	pki := filepath.Join(root, "etc/kubernetes/pki")
	cfg := filepath.Join(w.dir, "kdr.yaml")
	testenv.WriteFile(t, cfg, []byte(configSpec{
		// Nothing listens there: the backup must fail before it asks.
		endpoints:       []string{fmt.Sprintf("https://127.0.0.1:%d", testenv.FreePort(t))},
		ca:              filepath.Join(pki, "etcd/ca.crt"),
		cert:            filepath.Join(pki, "apiserver-etcd-client.crt"),
		key:             filepath.Join(pki, "apiserver-etcd-client.key"),
		recipients:      []string{w.recipient},
		signingKey:      w.signingKey,
		trustedKeys:     []string{w.signingPub},
		usb:             w.usb,
		incompleteGrace: "24h",
	}.render()), 0o600)

	r := runKdr(t, w.env(), "--config", cfg, "backup", "--root", root, "--node", kubeNode)
	if r.code == 0 {
		t.Fatalf("backup exited 0 though %s is missing\n%s", encConfigPath, r)
	}
	line := failureLine(t, r)
	t.Logf("backup refused: %s", line)
	mustContain(t, "the error", line, "--encryption-provider-config", encConfigPath)
	if strings.Contains(line, root) {
		t.Errorf("the error names the path under --root, not the host's: %s", line)
	}
	entries, err := os.ReadDir(w.usb)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the refused backup left %v on the USB target, want nothing", entries)
	}
}

// etcdValue reads one key's raw value, as kube-apiserver stored it; it
// fails the test when the key is not there.
func etcdValue(t *testing.T, cli *clientv3.Client, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("etcd has %d keys %s, want 1", len(resp.Kvs), key)
	}
	return resp.Kvs[0].Value
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
