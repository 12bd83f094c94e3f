package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestRestoreKilledAtEachStepResumes kills `kdr restore apply` with
// SIGKILL during each step of the node's plan in turn, runs it again with
// the same arguments, and requires the outcome of an uninterrupted
// restore: the same etcd keyspace, the same files, and the old data moved
// aside exactly once.
//
// The restore is in place, on a copy of the lost host's disk (its old
// manifests and etcd data still there), with a kubelet running whatever
// static pods the manifests directory holds: the old etcd and API server
// until the restore moves their manifests aside, the restored ones once
// it puts them back. One backup serves every case.
func TestRestoreKilledAtEachStepResumes(t *testing.T) {
	src := newKubeSource(t, false)
	src.host.Stop()
	image := filepath.Join(t.TempDir(), "image")
	copyTree(t, src.host.Root, image)

	// Every case runs on the same ports, one after another, so that the
	// restored manifests (which carry them) are the same bytes in each.
	ports := distinctPorts(t)
	flag, plan := src.plannedNodeIP(t, ports)
	var steps []string
	for _, s := range plan.Steps {
		if s.Node == kubeNode {
			steps = append(steps, s.ID)
		}
	}
	if len(steps) < 5 {
		t.Fatalf("the plan has %d steps for %s: %v", len(steps), kubeNode, steps)
	}
	t.Logf("steps of %s: %s", kubeNode, strings.Join(steps, ", "))

	c := killCase{src: src, image: image, ports: ports, nodeIPFlag: flag, steps: steps}
	var want *restoreOutcome
	if !t.Run("uninterrupted", func(t *testing.T) {
		want = c.run(t, nil)
		c.checkOutcome(t, want)
	}) {
		t.Fatal("the uninterrupted restore failed: the killed ones have nothing to be compared with")
	}
	for _, step := range steps {
		t.Run("kill during "+step, func(t *testing.T) {
			got := c.run(t, func(t *testing.T, args []string, _, journal string) []string {
				return c.killDuring(t, step, args, journal)
			})
			c.checkOutcome(t, got)
			want.compare(t, got)
		})
	}
	// A kill lands where it lands; this one is placed where restore-etcd
	// is most exposed, which no poll of the journal can hit on purpose.
	t.Run("killed as restore-etcd put the data dir in place", func(t *testing.T) {
		got := c.run(t, c.interruptAfterDataDir)
		c.checkOutcome(t, got)
		want.compare(t, got)
	})
}

// distinctPorts picks four free loopback ports, all different.
func distinctPorts(t *testing.T) testenv.KubePorts {
	t.Helper()
	seen := map[int]bool{}
	pick := func() int {
		for {
			if p := testenv.FreePort(t); !seen[p] {
				seen[p] = true
				return p
			}
		}
	}
	return testenv.KubePorts{EtcdClient: pick(), EtcdPeer: pick(), EtcdMetrics: pick(), APIServer: pick()}
}

// killCase is what every case of the test shares.
type killCase struct {
	src        *kubeSource
	image      string // the lost host's disk, copied for each case
	ports      testenv.KubePorts
	nodeIPFlag string
	steps      []string
}

// restoreOutcome is what a finished restore left on its host.
type restoreOutcome struct {
	root string
	// files describes every path under the root (type, mode, content
	// hash), except the contents of live etcd data dirs and the journal,
	// which hold times and raft state that differ between any two runs.
	files map[string]string
	// keyspace is etcd's keyspace at the revision the restore started it
	// at, before kube-apiserver wrote anything: key -> value and
	// revisions.
	keyspace map[string]string
	// aside lists what the restore moved out of its way, beside the etcd
	// data dir and the manifests directory.
	aside []string
	// journal is each step's final state.
	journal map[string]string
}

// interruption leaves a restore on root unfinished, as a kill would, and
// returns the steps its journal then records done.
type interruption func(t *testing.T, args []string, root, journal string) []string

// run restores onto a fresh copy of the lost host. With interrupt set, the
// restore is first interrupted by it, and then `kdr restore apply` with the
// same arguments must finish the restore.
func (c *killCase) run(t *testing.T, interrupt interruption) *restoreOutcome {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	copyTree(t, c.image, root)
	k := testenv.StartKubelet(t, root, c.ports)
	// The next case needs the ports: stop this host's pods when done.
	defer k.Stop()
	args := c.src.applyArgs(c.nodeIPFlag, root, c.ports)
	journal := filepath.Join(c.src.stagingDir(root), "journal-"+kubeNode+".json")

	var doneAtKill []string
	if interrupt != nil {
		doneAtKill = interrupt(t, args, root, journal)
	}
	start := time.Now()
	r := runKdr(t, c.src.w.env(), args...)
	t.Logf("restore apply ran %s:\n%s%s", time.Since(start).Round(time.Millisecond), r.stdout, stepTimes(journal))
	if r.code != 0 {
		t.Fatalf("restore apply failed\n%s\njournal:\n%s", r, readJournalText(journal))
	}
	// A step recorded done is never run again, destructive or not.
	for _, id := range doneAtKill {
		if regexp.MustCompile(`(?m)^running\s+` + regexp.QuoteMeta(id) + `:`).MatchString(r.stdout) {
			t.Errorf("step %s was done before the kill and ran again on resume:\n%s", id, r.stdout)
		}
		if !regexp.MustCompile(`(?m)^done already\s+` + regexp.QuoteMeta(id) + `:`).MatchString(r.stdout) {
			t.Errorf("step %s was done before the kill; the resumed run does not say it was skipped:\n%s", id, r.stdout)
		}
	}
	return c.outcome(t, root, k, journal)
}

// killDuring starts `kdr restore apply`, kills it with SIGKILL once its
// journal records step as started, and returns the steps the journal
// records done at that moment. A step over before the journal was seen
// with it started is killed right after it was recorded done instead,
// which the test's output says.
func (c *killCase) killDuring(t *testing.T, step string, args []string, journal string) []string {
	t.Helper()
	cmd := exec.Command(kdrBin, args...)
	cmd.Env = append(os.Environ(), c.src.w.env()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(kdrTimeout)
	// The journal is polled every millisecond, to catch even a short step
	// in its started state.
	for readJournal(journal)[step] == "" {
		select {
		case err := <-exited:
			t.Fatalf("kdr restore apply ended (%v) before step %s started\n%s\njournal:\n%s", err, step, out.String(), readJournalText(journal))
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("step %s did not start within %s\n%s", step, kdrTimeout, out.String())
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL kdr: %v", err)
	}
	if err := <-exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("kdr restore apply was not killed (it ended: %v) during %s\n%s", err, step, out.String())
	}
	states := readJournal(journal)
	var done []string
	for _, id := range c.steps {
		if states[id] == "done" {
			done = append(done, id)
		}
	}
	switch states[step] {
	case "started":
		t.Logf("killed while %s was started (done before: %s)", step, strings.Join(done, ", "))
	case "done":
		t.Logf("%s was over before it could be caught started: killed right after it was recorded done (done: %s)",
			step, strings.Join(done, ", "))
	default:
		t.Fatalf("after the kill the journal has %s %q\n%s", step, states[step], readJournalText(journal))
	}
	return done
}

// interruptAfterDataDir leaves the state of a kill between restore-etcd
// renaming the restored data dir into place and the step's end: the step
// is started in the journal, the data dir is whole, and the staged etcd
// manifest is still the backup's, not yet pointed at this node's name and
// URLs. It gets there by running the restore up to restore-etcd and
// putting back the two things the end of the step changed.
func (c *killCase) interruptAfterDataDir(t *testing.T, args []string, root, journal string) []string {
	t.Helper()
	r := runKdr(t, c.src.w.env(), append(slices.Clone(args), "--until", "restore-etcd")...)
	wantExit(t, r, 0)
	staged := filepath.Join(c.src.stagingDir(root), "manifests/etc/kubernetes/manifests/etcd.yaml")
	backup := testenv.ReadFile(t, filepath.Join(c.image, "etc/kubernetes/manifests/etcd.yaml"))
	if bytes.Equal(testenv.ReadFile(t, staged), backup) {
		t.Fatal("restore-etcd left the staged etcd manifest as the backup had it: undoing that would prove nothing")
	}
	fi, err := os.Stat(staged)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WriteFile(t, staged, backup, fi.Mode().Perm())

	var j map[string]any
	if err := json.Unmarshal(testenv.ReadFile(t, journal), &j); err != nil {
		t.Fatal(err)
	}
	steps, _ := j["steps"].(map[string]any)
	entry, _ := steps["restore-etcd"].(map[string]any)
	if entry == nil || entry["state"] != "done" {
		t.Fatalf("after --until restore-etcd the journal has restore-etcd %v", entry)
	}
	entry["state"] = "started"
	delete(entry, "finished")
	out, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WriteFile(t, journal, out, 0o600)

	var done []string
	for _, id := range c.steps {
		if id == "restore-etcd" {
			break
		}
		done = append(done, id)
	}
	t.Logf("interrupted as if killed right after restore-etcd put the data dir in place (done: %s)", strings.Join(done, ", "))
	return done
}

// readJournal returns each step's state, or nothing while the journal
// does not exist yet. It is written by rename, so it is whole or absent.
func readJournal(path string) map[string]string {
	var j struct {
		Steps map[string]struct {
			State string `json:"state"`
		} `json:"steps"`
	}
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &j) != nil {
		return nil
	}
	states := map[string]string{}
	for id, s := range j.Steps {
		states[id] = s.State
	}
	return states
}

// stepTimes says how long each step of the journal took, last run.
func stepTimes(path string) string {
	var j struct {
		Steps map[string]struct {
			Started  time.Time `json:"started"`
			Finished time.Time `json:"finished"`
		} `json:"steps"`
	}
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &j) != nil {
		return ""
	}
	var parts []string
	for _, id := range slices.SortedFunc(maps.Keys(j.Steps), func(a, b string) int {
		return j.Steps[a].Started.Compare(j.Steps[b].Started)
	}) {
		parts = append(parts, fmt.Sprintf("%s %s", id, j.Steps[id].Finished.Sub(j.Steps[id].Started).Round(time.Millisecond)))
	}
	return "step times: " + strings.Join(parts, ", ")
}

func readJournalText(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// outcome records what the restore left under root, while its pods run.
func (c *killCase) outcome(t *testing.T, root string, k *testenv.Kubelet, journal string) *restoreOutcome {
	t.Helper()
	o := &restoreOutcome{root: root, journal: readJournal(journal)}
	aside := ".kdr-aside-" + c.src.id
	skipContents := map[string]bool{
		"var/lib/etcd":         true, // the running restored member
		"var/lib/etcd" + aside: true, // the old member, which ran until the restore stopped it
	}
	journalRel, err := filepath.Rel(root, journal)
	if err != nil {
		t.Fatal(err)
	}
	o.files = map[string]string{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." || rel == journalRel {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v", info.Mode())
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + link
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + contentOf(b, strings.HasSuffix(p, ".crt"))
		}
		if strings.HasPrefix(d.Name(), ".kdr-tmp-") {
			// A temporary file kdr was writing when it was killed: hidden,
			// so a kubelet ignores it, and not part of what the restore
			// put in place. It is left behind, which is said, not compared.
			t.Logf("left behind by the killed run: %s", rel)
			return nil
		}
		if strings.Contains(d.Name(), ".kdr-aside-") {
			o.aside = append(o.aside, filepath.ToSlash(rel))
		}
		o.files[filepath.ToSlash(rel)] = desc
		if d.IsDir() && skipContents[filepath.ToSlash(rel)] {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(o.aside)

	if !k.Running("etcd") || !k.Running("kube-apiserver") {
		t.Errorf("after the restore the kubelet runs etcd: %v, kube-apiserver: %v", k.Running("etcd"), k.Running("kube-apiserver"))
	}
	cli := restoredEtcd(t, root, c.ports)
	rev := compactRevision(t, cli)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatalf("read the restored keyspace at revision %d: %v", rev, err)
	}
	o.keyspace = map[string]string{}
	for _, kv := range resp.Kvs {
		s := sha256.Sum256(kv.Value)
		o.keyspace[string(kv.Key)] = fmt.Sprintf("%x create %d mod %d version %d", s, kv.CreateRevision, kv.ModRevision, kv.Version)
	}

	// The API server serves the backup's objects with the restored admin
	// kubeconfig.
	admin := k.Kubeconfig(t, "admin.conf")
	for _, key := range slices.Sorted(maps.Keys(c.src.configmaps))[:1] {
		ns, name, _ := strings.Cut(key, "/")
		if got := k.Kubectl(t, admin, "-n", ns, "get", "configmap", name, "-o", "jsonpath={.data.v}"); got != c.src.configmaps[key] {
			t.Errorf("configmap %s: v = %q, want %q", key, got, c.src.configmaps[key])
		}
	}
	return o
}

// checkOutcome holds a restore to what it must have done, whatever came
// before: every step done, the backup's keys in etcd, the old data and
// manifests moved aside once, the restored member running.
func (c *killCase) checkOutcome(t *testing.T, o *restoreOutcome) {
	t.Helper()
	for _, id := range c.steps {
		if o.journal[id] != "done" {
			t.Errorf("journal: step %s is %q, want done", id, o.journal[id])
		}
	}
	for k, v := range c.src.rawKeys {
		if _, ok := o.keyspace[k]; !ok {
			t.Errorf("the restored keyspace lacks %s (= %s)", k, v)
		}
	}
	for key := range c.src.configmaps {
		if _, ok := o.keyspace["/registry/configmaps/"+key]; !ok {
			t.Errorf("the restored keyspace lacks configmap %s", key)
		}
	}
	aside := ".kdr-aside-" + c.src.id
	if want := []string{"etc/kubernetes/manifests" + aside, "var/lib/etcd" + aside}; !slices.Equal(o.aside, want) {
		t.Errorf("moved aside: %v, want exactly %v", o.aside, want)
	}
	// What was moved aside is the old host's: its manifests as they were,
	// its etcd member.
	for _, m := range []string{"etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"} {
		old := testenv.ReadFile(t, filepath.Join(c.image, "etc/kubernetes/manifests", m))
		if got, err := os.ReadFile(filepath.Join(o.root, "etc/kubernetes/manifests"+aside, m)); err != nil || !bytes.Equal(got, old) {
			t.Errorf("old manifest %s is not in the aside directory as it was (%v)", m, err)
		}
	}
	if _, err := os.Stat(filepath.Join(o.root, "var/lib/etcd"+aside, "member/wal")); err != nil {
		t.Errorf("the old etcd data is not aside: %v", err)
	}
}

// compare fails the test where got differs from the uninterrupted o.
func (o *restoreOutcome) compare(t *testing.T, got *restoreOutcome) {
	t.Helper()
	diff := func(what string, a, b map[string]string) {
		var lines []string
		for _, k := range slices.Sorted(maps.Keys(a)) {
			if b[k] != a[k] {
				lines = append(lines, fmt.Sprintf("  %s: %q, uninterrupted %q", k, b[k], a[k]))
			}
		}
		for _, k := range slices.Sorted(maps.Keys(b)) {
			if _, ok := a[k]; !ok {
				lines = append(lines, fmt.Sprintf("  %s: %q, not in the uninterrupted restore", k, b[k]))
			}
		}
		if len(lines) > 0 {
			if len(lines) > 40 {
				lines = append(lines[:40], fmt.Sprintf("  ... and %d more", len(lines)-40))
			}
			t.Errorf("%s differ from the uninterrupted restore's:\n%s", what, strings.Join(lines, "\n"))
		}
	}
	diff("files", o.files, got.files)
	diff("etcd keys", o.keyspace, got.keyspace)
}

// contentOf describes a file's content by its hash, or a certificate by
// what it says: a certificate issued again for the node has a new serial
// number, validity and signature on every run, and is the same when its
// names, key, issuer and usages are.
func contentOf(b []byte, cert bool) string {
	if cert {
		if block, _ := pem.Decode(b); block != nil && block.Type == "CERTIFICATE" {
			if c, err := x509.ParseCertificate(block.Bytes); err == nil {
				ips := make([]string, len(c.IPAddresses))
				for i, ip := range c.IPAddresses {
					ips[i] = ip.String()
				}
				slices.Sort(ips)
				dns := slices.Sorted(slices.Values(c.DNSNames))
				key := sha256.Sum256(c.RawSubjectPublicKeyInfo)
				return fmt.Sprintf("certificate subject %q issuer %q dns %v ip %v key %x usage %d ext %v ca %v",
					c.Subject, c.Issuer, dns, ips, key[:8], c.KeyUsage, c.ExtKeyUsage, c.IsCA)
			}
		}
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
