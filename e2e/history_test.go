package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
)

// historyChange is one object of `kdr history -o json`.
type historyChange struct {
	Revision int64     `json:"revision"`
	Seen     time.Time `json:"seen"`
	Key      string    `json:"key"`
	What     string    `json:"what"`
	Version  int64     `json:"version"`
}

// history runs `kdr history -o json` and returns its changes.
func (s *kubeSource) history(t *testing.T, args ...string) []historyChange {
	t.Helper()
	r := runKdr(t, s.w.env(), append([]string{"--config", s.cfg, "history", "--identity", s.w.identity, "-o", "json"}, args...)...)
	wantExit(t, r, 0)
	var out []historyChange
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("history -o json: %v\n%s", err, r)
	}
	return out
}

// TestHistoryUndoesANamespaceDelete is the acceptance of kdr history and
// --at. A namespace with a ConfigMap, a Secret and a ServiceAccount is
// created through a real kube-apiserver while the agent captures the log
// to MinIO and a local disk, then deleted as Kubernetes deletes one:
// kube-apiserver marks it for deletion, the namespace controller deletes
// its objects and finalizes it, which deletes its key (no controller runs
// here, so its two steps are done with kubectl, as an operator may). kdr
// history names the delete and the mark and says to restore to the
// revision before the mark; a restore to that revision on a new machine
// serves the namespace and its objects through kube-apiserver again; and
// --at a moment just before the mark was seen picks the same revision.
func TestHistoryUndoesANamespaceDelete(t *testing.T) {
	src := newKubeSource(t, true)
	h := src.host
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := append(testenv.ReadFile(t, src.cfg), captureConfig(addr, "  leaderElection: {enabled: false}\n")...)
	testenv.WriteFile(t, src.cfg, cfg, 0o600)
	agent := startAgent(t, src.w.env(), src.cfg, h.Root, kubeNode, addr)
	cli := etcdClient(t, h.EtcdEndpoint, h.EtcdTLS.CA, h.EtcdTLS.Cert, h.EtcdTLS.Key)
	// revision is etcd's revision now, and whether key exists.
	revision := func(key string) (int64, bool) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision, len(resp.Kvs) > 0
	}

	const ns = "mistake"
	nsKey := "/registry/namespaces/" + ns
	h.Kubectl(t, "create", "namespace", ns)
	h.Kubectl(t, "-n", ns, "create", "configmap", "settings", "--from-literal=color=blue")
	h.Kubectl(t, "-n", ns, "create", "secret", "generic", "token", "--from-literal=token=s3cr3t")
	h.Kubectl(t, "-n", ns, "create", "serviceaccount", "robot")
	populated, _ := revision(nsKey)
	testenv.Eventually(t, time.Minute, "the log holds the namespace", func() bool { return agent.logDurable(t) >= populated })
	// A segment closes between the last object and the mistake, so that
	// the moment before it lies between two seen times.
	time.Sleep(1500 * time.Millisecond)

	// The mistake: marked for deletion, emptied, finalized.
	h.Kubectl(t, "delete", "namespace", ns, "--wait=false")
	for _, obj := range []string{"configmap/settings", "secret/token", "serviceaccount/robot"} {
		h.Kubectl(t, "-n", ns, "delete", obj)
	}
	var nsObj map[string]any
	if err := json.Unmarshal([]byte(h.Kubectl(t, "get", "namespace", ns, "-o", "json")), &nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj["spec"] = map[string]any{"finalizers": []string{}}
	finalize := filepath.Join(t.TempDir(), "finalize.json")
	b, err := json.Marshal(nsObj)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WriteFile(t, finalize, b, 0o600)
	h.Kubectl(t, "replace", "--raw", "/api/v1/namespaces/"+ns+"/finalize", "-f", finalize)
	end, exists := revision(nsKey)
	if exists {
		t.Fatalf("%s is still in etcd after its finalizers were removed", nsKey)
	}
	testenv.Eventually(t, time.Minute, "the log holds the delete", func() bool { return agent.logDurable(t) >= end })

	// kdr history: the namespace's key was created, marked, deleted.
	changes := src.history(t, nsKey)
	var marked, deleted historyChange
	for _, c := range changes {
		switch {
		case c.What == "deleting" && marked.Revision == 0:
			marked = c
		case c.What == "deleted":
			deleted = c
		}
	}
	if len(changes) < 3 || changes[0].What != "created" || changes[0].Revision > populated || marked.Revision == 0 ||
		deleted.Revision <= marked.Revision || deleted.Revision > end {
		t.Fatalf("history of %s: %+v; want created, deleting, deleted by revision %d", nsKey, changes, end)
	}
	// Between the two, its objects went.
	emptied := map[string]bool{}
	for _, c := range src.history(t, "/registry/", "--from", fmt.Sprint(marked.Revision), "--to", fmt.Sprint(deleted.Revision)) {
		if c.What == "deleted" && strings.Contains(c.Key, "/"+ns+"/") {
			emptied[c.Key] = true
		}
	}
	for _, key := range []string{"/registry/configmaps/mistake/settings", "/registry/secrets/mistake/token", "/registry/serviceaccounts/mistake/robot"} {
		if !emptied[key] {
			t.Errorf("history of /registry/ from %d to %d does not show %s deleted (deletes: %v)", marked.Revision, deleted.Revision, key, emptied)
		}
	}
	r := runKdr(t, src.w.env(), "--config", src.cfg, "history", "--identity", src.w.identity, "--target", "usb", nsKey)
	wantExit(t, r, 0)
	t.Logf("kdr history %s:\n%s", nsKey, r.stdout)
	undo := marked.Revision - 1
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	mustContain(t, "kdr history", r.stdout, "deleting", fmt.Sprintf("%-11d %s", deleted.Revision, deleted.Seen.UTC().Format("2006-01-02T15:04:05.000000Z")))
	if want := fmt.Sprintf("to undo the delete of %s at revision %d (marked for deletion at revision %d: what it held may have gone since): kdr restore plan --target usb --revision %d",
		nsKey, deleted.Revision, marked.Revision, undo); lines[len(lines)-1] != want {
		t.Errorf("the last line of kdr history is\n%q, want\n%q\n%s", lines[len(lines)-1], want, r)
	}

	// --at a moment just before the mark was seen is the same revision.
	at := marked.Seen.Add(-time.Microsecond).Format(time.RFC3339Nano)
	r = runKdr(t, src.w.env(), "--config", src.cfg, "restore", "plan", "-o", "json", "--node-ip", "cp1=10.0.0.11", "--identity", src.w.identity, "--at", at)
	wantExit(t, r, 0)
	var plan struct {
		ToRevision int64 `json:"toRevision"`
		At         struct {
			Revision int64     `json:"revision"`
			Seen     time.Time `json:"seen"`
			NextSeen time.Time `json:"nextSeen"`
		} `json:"at"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
		t.Fatalf("restore plan -o json: %v\n%s", err, r)
	}
	if plan.ToRevision != undo || plan.At.Revision != undo || !plan.At.NextSeen.Equal(marked.Seen) || plan.At.Seen.After(marked.Seen) {
		t.Fatalf("restore plan --at %s: to revision %d, at %+v; want %d, the next seen %s\n%s", at, plan.ToRevision, plan.At, undo, marked.Seen, r)
	}

	// The cluster is lost; a new machine is restored to that revision.
	agent.cmd.Process.Kill() // its cleanup waits for it
	_, k := src.restoreOnNewMachine(t, nil, "--revision", fmt.Sprint(undo))
	admin := k.Kubeconfig(t, "admin.conf")
	if got := k.Kubectl(t, admin, "get", "namespace", ns, "-o", "jsonpath={.status.phase}"); got != "Active" {
		t.Errorf("namespace %s is %q after the restore, want Active", ns, got)
	}
	if got := k.Kubectl(t, admin, "-n", ns, "get", "configmap", "settings", "-o", "jsonpath={.data.color}"); got != "blue" {
		t.Errorf("configmap settings: color = %q, want blue", got)
	}
	if got := k.Kubectl(t, admin, "-n", ns, "get", "secret", "token", "-o", "jsonpath={.data.token}"); got != base64.StdEncoding.EncodeToString([]byte("s3cr3t")) {
		t.Errorf("secret token: token = %q, want s3cr3t in base64", got)
	}
	if got := k.Kubectl(t, admin, "-n", ns, "get", "serviceaccount", "robot", "-o", "jsonpath={.metadata.name}"); got != "robot" {
		t.Errorf("serviceaccount robot reads back as %q", got)
	}
}
