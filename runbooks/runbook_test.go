package runbooks

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/restore"
)

var update = flag.Bool("update", false, "rewrite testdata/runbook*.golden.md from the current output")

// now is when the test runbooks are generated: some certificates of the
// test manifest expire within 30 days of it, one has expired.
var now = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

const (
	goldenPath         = "testdata/runbook.golden.md"
	revisionGoldenPath = "testdata/runbook-revision.golden.md"
)

// testAllowedSigners is a trusted key as the runbook prints it; its
// private half was thrown away.
const testAllowedSigners = `kdr namespaces="kdr-manifest,kdr-tombstone,kdr-drill-report,kdr-runbook" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDkgk7G8drVjg7ABJHxC/jw5i0O5/dYexhQP+MkHl32q
`

// testManifest is a backup of a 3-node kubeadm cluster as kdr records it.
func testManifest() *manifest.Manifest {
	sum := func(c string) string { return strings.Repeat(c, 64) }
	created := time.Date(2026, 11, 24, 20, 30, 0, 0, time.UTC)
	return &manifest.Manifest{
		FormatVersion: manifest.FormatVersion,
		KdrVersion:    "v0.3.0",
		ID:            "20261124T203000.000Z-3fa9c1",
		Cluster:       "prod",
		Created:       created,
		Completed:     created.Add(42 * time.Second),
		Node:          "cp1",
		Etcd: manifest.Etcd{
			ClusterID: "cdf818194e3a8c32",
			Members: []manifest.Member{
				{ID: "8e9e05c52164694d", Name: "cp1", PeerURLs: []string{"https://10.0.0.11:2380"}, ClientURLs: []string{"https://10.0.0.11:2379"}},
				{ID: "91bc3c398fb3c146", Name: "cp2", PeerURLs: []string{"https://10.0.0.12:2380"}, ClientURLs: []string{"https://10.0.0.12:2379"}},
				{ID: "fd422379fda50e48", Name: "cp3", PeerURLs: []string{"https://10.0.0.13:2380"}, ClientURLs: []string{"https://10.0.0.13:2379"}},
			},
			SnapshotMember: "cp2",
			Revision:       4821337,
			HashKV:         3567425121,
			DBSize:         52428800,
			ServerVersion:  "3.6.5",
		},
		Objects: []manifest.Object{
			{Name: manifest.EtcdObject, Kind: manifest.KindEtcdSnapshot, PlainSize: 52428832, PlainSHA256: sum("a"), Size: 9830400, SHA256: sum("b")},
			{Name: manifest.StateObject, Kind: manifest.KindState, PlainSize: 204800, PlainSHA256: sum("c"), Size: 40960, SHA256: sum("d")},
		},
		Recipients: []string{"age:3f1a2b4c5d6e7f80"},
		State: manifest.State{
			Sets: []manifest.FileSet{
				{Name: "pki", Required: true, Paths: []string{"/etc/kubernetes/pki/**"}, Files: 24, Bytes: 61440},
				{Name: "kubeconfigs", Paths: []string{"/etc/kubernetes/*.conf"}, Files: 5, Bytes: 28672},
				{Name: "manifests", Paths: []string{"/etc/kubernetes/manifests/*"}, Files: 4, Bytes: 16384},
				{Name: "loadbalancer", Paths: []string{"/etc/haproxy/haproxy.cfg"}, Missing: []string{"/etc/haproxy/haproxy.cfg"}},
			},
			Certificates: []manifest.Certificate{
				{Path: "/etc/kubernetes/pki/ca.crt", Subject: "CN=kubernetes", Issuer: "CN=kubernetes", NotAfter: time.Date(2035, 11, 20, 10, 0, 0, 0, time.UTC), IsCA: true},
				{Path: "/etc/kubernetes/pki/apiserver.crt", Subject: "CN=kube-apiserver", Issuer: "CN=kubernetes",
					DNSNames: []string{"api.prod.example", "kubernetes"}, IPs: []string{"10.96.0.1", "10.0.0.10"}, NotAfter: time.Date(2026, 12, 19, 10, 0, 0, 0, time.UTC)},
				{Path: "/etc/kubernetes/pki/etcd/server.crt", Subject: "CN=cp1", Issuer: "CN=etcd-ca", NotAfter: time.Date(2027, 11, 20, 10, 0, 0, 0, time.UTC)},
				{Path: "/etc/kubernetes/pki/front-proxy-client.crt", Subject: "CN=front-proxy-client", Issuer: "CN=front-proxy-ca", NotAfter: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)},
				{Path: "/etc/kubernetes/admin.conf", Subject: "O=kubeadm:cluster-admins, CN=kubernetes-admin", Issuer: "CN=kubernetes", NotAfter: time.Date(2027, 6, 1, 10, 0, 0, 0, time.UTC)},
			},
		},
		Inventory: config.Inventory{
			APIEndpoint: "https://api.prod.example:6443",
			VIP:         "10.0.0.10",
			Hosts: []config.Host{
				{Name: "cp1", IP: "10.0.0.11", Roles: []string{"control-plane", "etcd"}},
				{Name: "cp2", IP: "10.0.0.12", Roles: []string{"control-plane", "etcd"}},
				{Name: "cp3", IP: "10.0.0.13", Roles: []string{"control-plane", "etcd"}},
				{Name: "lb1", IP: "10.0.0.5", Roles: []string{"loadbalancer"}},
			},
			DNS: []config.DNSRecord{
				{Name: "api.prod.example", Type: "A", Value: "10.0.0.10"},
				{Name: "_etcd-server-ssl._tcp.prod.example", Type: "SRV", Value: "0 0 2380 cp1.prod.example"},
			},
			Subnets:  map[string]string{"services": "10.96.0.0/12", "pods": "10.244.0.0/16", "nodes": "10.0.0.0/24"},
			Contacts: []config.Contact{{Name: "On-call (PagerDuty)", Phone: "+1 555 0100"}, {Name: "Platform team", Email: "platform@prod.example"}},
		},
	}
}

var testSource = restore.Source{Kind: "s3", Endpoint: "minio.prod.example:9000", Bucket: "kdr", Prefix: "backups"}

func buildPlan(t *testing.T, m *manifest.Manifest, o restore.Options) *restore.Plan {
	t.Helper()
	if err := m.Validate(); err != nil {
		t.Fatalf("test manifest: %v", err)
	}
	p, err := restore.BuildPlan(m, testSource, o)
	if err != nil {
		t.Fatalf("BuildPlan: %v", err)
	}
	return p
}

func testPlan(t *testing.T) *restore.Plan {
	return buildPlan(t, testManifest(), restore.Options{Target: "s3", AllowedSigners: testAllowedSigners})
}

// testChain is the captured log after testManifest's set: three
// segments, a HashKV recorded at the end of the first and the last.
func testChain() *catalog.Chain {
	m := testManifest()
	c := &catalog.Chain{Target: "s3", Base: m, BaseSum: strings.Repeat("e", 64)}
	first := m.Etcd.Revision + 1
	seen := m.Created.Add(time.Minute)
	for i, last := range []int64{4821900, 4822750, 4823400} {
		h := &manifest.SegmentHead{FormatVersion: manifest.FormatVersion, KdrVersion: "v0.3.0", Cluster: m.Cluster,
			Base: manifest.Link{ID: m.ID, SHA256: c.BaseSum}, First: first, Last: last,
			SeenFirst: seen, SeenLast: seen.Add(5 * time.Minute),
			Body: manifest.Object{Name: manifest.SegmentBodyName(first, last), Kind: manifest.KindLog,
				PlainSize: 2 << 20, PlainSHA256: strings.Repeat("f", 64), Size: 400 << 10, SHA256: strings.Repeat(strconv.Itoa(i+1), 64)},
			Writer: "cp2", Recipients: m.Recipients}
		if i != 1 {
			h.HashKV = &manifest.LogHash{Revision: last, CompactRevision: m.Etcd.Revision - 1000, Hash: uint32(1000 + i)}
		}
		c.Segments = append(c.Segments, catalog.Segment{Key: manifest.SegmentHeadKey(m.Cluster, m.ID, first), Head: h, Sum: strings.Repeat(strconv.Itoa(i+4), 64)})
		first, seen = last+1, seen.Add(5*time.Minute)
	}
	return c
}

// revisionPlan restores testManifest's set to a revision inside the
// last segment of its captured log.
func revisionPlan(t *testing.T) *restore.Plan {
	t.Helper()
	p, err := restore.BuildPlanAt(testChain(), 4823000, testSource, restore.Options{Target: "s3", AllowedSigners: testAllowedSigners})
	if err != nil {
		t.Fatalf("BuildPlanAt: %v", err)
	}
	return p
}

func markdown(t *testing.T, p *restore.Plan) string {
	t.Helper()
	var b bytes.Buffer
	if err := Markdown(&b, p, Options{Now: now}); err != nil {
		t.Fatalf("Markdown: %v", err)
	}
	return b.String()
}

func TestMarkdownGolden(t *testing.T) {
	for _, tc := range []struct {
		path string
		plan func(*testing.T) *restore.Plan
	}{{goldenPath, testPlan}, {revisionGoldenPath, revisionPlan}} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			got := markdown(t, tc.plan(t))
			if *update {
				if err := os.WriteFile(tc.path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(tc.path)
			if err != nil {
				t.Fatalf("%v (run go test ./runbooks -update to write it)", err)
			}
			if got != string(want) {
				gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
				for i := 0; i < max(len(gl), len(wl)); i++ {
					var g, w string
					if i < len(gl) {
						g = gl[i]
					}
					if i < len(wl) {
						w = wl[i]
					}
					if g != w {
						t.Fatalf("runbook differs from %s at line %d:\n got: %q\nwant: %q\n(run go test ./runbooks -update if the change is intended)", tc.path, i+1, g, w)
					}
				}
			}
		})
	}
}

// TestRevisionRunbook: a runbook to a revision says what is replayed
// and how, restores the replayed database, and its break glass restores
// the set alone, saying what is lost.
func TestRevisionRunbook(t *testing.T) {
	p := revisionPlan(t)
	md := markdown(t, p)
	glass := md[strings.LastIndex(md, breakGlassText):]
	for _, want := range []string{
		"4823000: the full set at 4821337 + 3 segment(s) of the captured log (4821338..4823000)",
		"1000000400 (1000000000 past the captured log's end, revision 4823400)",
		"kdr --config /etc/kdr/kdr.yaml restore apply --cluster prod --target s3 --revision 4823000 --node cp1 --identity operator.key --until replay",
		"etcdutl snapshot restore /var/lib/kdr/restore/prod/20261124T203000.000Z-3fa9c1/revision-4823000.db --skip-hash-check",
		"HashKV etcd reported at revision 4821900",
	} {
		if !strings.Contains(squash(md), squash(want)) {
			t.Errorf("the runbook lacks %q", want)
		}
	}
	for _, want := range []string{
		"the cluster as it was at revision 4821337, when the set was taken (2026-11-24 20:30:00 UTC)",
		"every revision captured after revision 4821337 is lost: 4821338..4823000, which this plan replays, " +
			"seen from 2026-11-24 20:31:00 UTC to 2026-11-24 20:46:00 UTC at the latest, and 4823001..4823400 after them",
		"etcdutl snapshot restore /var/lib/kdr/restore/prod/20261124T203000.000Z-3fa9c1/snapshot.db --data-dir",
		"--bump-revision 1000002063 "} {
		if !strings.Contains(squash(glass), squash(want)) {
			t.Errorf("break glass lacks %q", want)
		}
	}
	if strings.Contains(glass, "revision-4823000.db") {
		t.Error("break glass restores the replayed database, which only kdr can make")
	}
	// The point-in-time steps come before the stages, in the order they
	// are done.
	start, end := strings.Index(md, "## Restoring to revision 4823000"), strings.Index(md, "## Stage 1 of 4")
	if start < 0 || end < start {
		t.Fatalf("no section on the revision before the stages (at %d, stages at %d)", start, end)
	}
	pit := md[start:end]
	last := -1
	for _, want := range []string{
		"revisions 4821338..4823000, seen from 2026-11-24 20:31:00 UTC to 2026-11-24 20:46:00 UTC at the latest",
		"kdr --config /etc/kdr/kdr.yaml history <key> --cluster prod --target s3 --identity operator.key",
		"kdr --config /etc/kdr/kdr.yaml restore plan --cluster prod --target s3 --at <RFC3339 time> --identity operator.key",
		"fetch (steps 2, 11, 20)", "decrypt (steps 3, 12, 21)",
		"replay (steps 4, 13, 22): kdr replays revisions 4821338..4823000 into revision-4823000.db",
		"the HashKV recorded at revision 4821900",
		"restore-etcd (steps 9, 18, 27) restores revision-4823000.db",
		"from the captured log's end, revision 4823400, so the restored etcd starts at or above 1004823400",
		"etcdutl snapshot restore of the decrypted snapshot brings the cluster back as it was at revision 4821337, when the set was taken (2026-11-24 20:30:00 UTC)",
		"every revision captured after revision 4821337 is lost",
	} {
		i := strings.Index(squash(pit), squash(want))
		if i < 0 {
			t.Errorf("the section on the revision lacks %q", want)
			continue
		}
		if i < last {
			t.Errorf("the section on the revision says %q out of order", want)
		}
		last = i
	}
	if strings.Contains(markdown(t, testPlan(t)), "Restoring to revision") {
		t.Error("the runbook of a set as it is has a section on a revision")
	}
	_, text := pdfText(t, p, PaperA4, 595.28, 841.89)
	for _, want := range []string{"Replay the captured log to revision 4823000", "Restoring to revision 4823000", "history <key>"} {
		if !strings.Contains(squash(text), squash(want)) {
			t.Errorf("the PDF lacks %q", want)
		}
	}
}

// TestRevisionLost: what break glass loses follows where the revision
// lies in the log: nothing at the set's own revision, the revisions up to
// it seen exactly at a segment's end, and the log after it unless it is
// the log's end.
func TestRevisionLost(t *testing.T) {
	for _, tc := range []struct {
		rev       int64
		want, not []string
	}{
		{4821337, []string{"which is the backup's own revision: nothing is replayed"}, []string{"is lost", "at the latest"}},
		{4822750, []string{"lost: 4821338..4822750, which this plan replays, seen from 2026-11-24 20:31:00 UTC to 2026-11-24 20:41:00 UTC, and 4822751..4823400 after them"},
			[]string{"at the latest"}},
		{4823400, []string{"lost: 4821338..4823400, which this plan replays, seen from 2026-11-24 20:31:00 UTC to 2026-11-24 20:46:00 UTC."},
			[]string{"after them", "at the latest"}},
	} {
		t.Run(strconv.FormatInt(tc.rev, 10), func(t *testing.T) {
			p, err := restore.BuildPlanAt(testChain(), tc.rev, testSource, restore.Options{Target: "s3"})
			if err != nil {
				t.Fatal(err)
			}
			md := markdown(t, p)
			// The replay step's own text is the restore package's.
			md = squash(md[:strings.Index(md, "## Stage 1")] + md[strings.LastIndex(md, breakGlassText):])
			for _, want := range tc.want {
				if !strings.Contains(md, squash(want)) {
					t.Errorf("the runbook lacks %q", want)
				}
			}
			for _, not := range tc.not {
				if strings.Contains(md, squash(not)) {
					t.Errorf("the runbook says %q", not)
				}
			}
		})
	}
}

// The plan under test must have the steps the runbook is meant to show,
// or the other tests would pass on too little.
func TestTestPlanHasEveryKindOfStep(t *testing.T) {
	p := testPlan(t)
	ids := map[string]int{}
	destructive := 0
	for _, s := range p.Steps {
		ids[s.ID]++
		if s.Destructive {
			destructive++
		}
	}
	if ids[restore.StepStartControlPlane] != 3 {
		t.Errorf("start-control-plane appears %d times, want once per node", ids[restore.StepStartControlPlane])
	}
	if ids[restore.StepCheckEtcd] != 1 {
		t.Errorf("check-etcd appears %d times, want once", ids[restore.StepCheckEtcd])
	}
	if destructive == 0 {
		t.Error("no destructive step")
	}
	if got := p.NodeNames(); strings.Join(got, ",") != "cp1,cp2,cp3" {
		t.Errorf("nodes %v, want the etcd hosts of the inventory", got)
	}
}

var (
	stepHeadingRE = regexp.MustCompile(`^#### \[ \] (\d+)\. (\S+) \(([^)]+)\): (.+)$`)
	mdEscapeRE    = regexp.MustCompile(`\\([\\` + "`" + `*_\[\]<>#|])`)
)

// mdStepSection is one step as a reader finds it in the Markdown.
type mdStepSection struct {
	number         int
	id, node       string
	title, expect  string
	commands       []string
	hasDestructive bool
}

// parseSteps reads the steps back from a Markdown runbook: every line with
// a checkbox must be a step heading, and each step's first code block is
// its commands.
func parseSteps(t *testing.T, md string) []mdStepSection {
	t.Helper()
	var out []mdStepSection
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if !strings.Contains(l, "[ ]") {
			continue
		}
		m := stepHeadingRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %d has a checkbox but is not a step heading: %q", i+1, l)
		}
		n, _ := strconv.Atoi(m[1])
		s := mdStepSection{number: n, id: m[2], node: m[3], title: mdEscapeRE.ReplaceAllString(m[4], "$1")}
		j := i + 1
		for ; j < len(lines) && !strings.HasPrefix(lines[j], "```"); j++ {
			if strings.HasPrefix(lines[j], "#") {
				t.Fatalf("step %d has no code block before line %d", n, j+1)
			}
			if strings.HasPrefix(lines[j], "**DESTRUCTIVE") {
				s.hasDestructive = true
			}
		}
		for j++; j < len(lines) && !strings.HasPrefix(lines[j], "```"); j++ {
			s.commands = append(s.commands, lines[j])
		}
		for ; j < len(lines) && !strings.HasPrefix(lines[j], "#"); j++ {
			if e, ok := strings.CutPrefix(lines[j], "**Expect:** "); ok {
				s.expect = mdEscapeRE.ReplaceAllString(e, "$1")
			}
		}
		out = append(out, s)
		i = j - 1
	}
	return out
}

// TestEveryEngineStepAndNothingElse reads the steps back from the Markdown
// of plans of several shapes and compares them with the plan's steps, in
// order: the same number, ID, node, title, commands, expectation and
// destructive mark, no step missing and no other step.
func TestEveryEngineStepAndNothingElse(t *testing.T) {
	noManifests := testManifest()
	noManifests.State.Sets = noManifests.State.Sets[:2]
	plans := map[string]*restore.Plan{
		"kubeadm three nodes": testPlan(t),
		"to a revision":       revisionPlan(t),
		"systemd":             buildPlan(t, testManifest(), restore.Options{Topology: restore.TopologySystemd}),
		"no manifests":        buildPlan(t, noManifests, restore.Options{}),
		"one node":            buildPlan(t, testManifest(), restore.Options{Nodes: []restore.Node{{Name: "solo", IP: "10.0.0.21"}}}),
		"replacement hardware": buildPlan(t, testManifest(), restore.Options{Nodes: []restore.Node{
			{Name: "cp1", IP: "10.0.0.11"}, {Name: "cp4", IP: "10.0.0.14"}, {Name: "cp3", IP: "10.0.0.13"},
			{Name: "cp5", IP: "fd00::15"}, {Name: "cp6", IP: "10.0.0.16", PeerURL: "https://10.0.0.16:12380", ClientURL: "https://10.0.0.16:12379"},
		}}),
	}
	for name, p := range plans {
		t.Run(name, func(t *testing.T) {
			got := parseSteps(t, markdown(t, p))
			if len(got) != len(p.Steps) {
				t.Errorf("runbook has %d steps, plan has %d", len(got), len(p.Steps))
			}
			for i := range min(len(got), len(p.Steps)) {
				g, w := got[i], p.Steps[i]
				if g.number != i+1 || g.id != w.ID || g.node != w.Node {
					t.Errorf("step %d: runbook has %d. %s (%s), plan has %s (%s)", i+1, g.number, g.id, g.node, w.ID, w.Node)
				}
				if g.title != w.Title {
					t.Errorf("step %d title %q, plan has %q", i+1, g.title, w.Title)
				}
				if strings.Join(g.commands, "\n") != strings.Join(w.Commands, "\n") {
					t.Errorf("step %d (%s on %s) commands:\n%q\nplan has\n%q", i+1, w.ID, w.Node, g.commands, w.Commands)
				}
				if g.expect != w.Expect {
					t.Errorf("step %d expect %q, plan has %q", i+1, g.expect, w.Expect)
				}
				if g.hasDestructive != w.Destructive {
					t.Errorf("step %d (%s) destructive mark %v, plan says %v", i+1, w.ID, g.hasDestructive, w.Destructive)
				}
			}
		})
	}
}

// A runbook prints the plan it is given and nothing of its own: a step
// added to or removed from the plan shows up (or disappears) as it is.
func TestRunbookFollowsThePlan(t *testing.T) {
	p := testPlan(t)
	extra := restore.Step{ID: "extra-step", Title: "An extra step", Why: "Because.", Where: restore.FirstNode,
		Node: "cp2", Commands: []string{"true"}, Expect: "Nothing."}
	p.Steps = append(p.Steps[1:], extra)
	got := parseSteps(t, markdown(t, p))
	if len(got) != len(p.Steps) || got[0].id != p.Steps[0].ID || got[len(got)-1].id != "extra-step" || got[len(got)-1].node != "cp2" {
		t.Fatalf("runbook steps do not follow the changed plan: %+v", got)
	}
}

func TestMarkdownContent(t *testing.T) {
	p := testPlan(t)
	md := markdown(t, p)
	for _, want := range []string{
		"# Restore runbook: prod",
		"- **Backup:** 20261124T203000.000Z-3fa9c1",
		"- **Backup taken:** 2026-11-24 20:30:00 UTC",
		"- **Runbook generated:** 2026-12-01 09:00:00 UTC",
		"| On-call (PagerDuty) | +1 555 0100 |  |",
		"| Kubernetes API | https://api.prod.example:6443 |",
		"| Virtual IP (VIP) | 10.0.0.10 |",
		"| \\_etcd-server-ssl.\\_tcp.prod.example | SRV | 0 0 2380 cp1.prod.example |",
		"| nodes | 10.0.0.0/24 |",
		"| 2026-11-28 | EXPIRED | /etc/kubernetes/pki/front-proxy-client.crt |",
		"| 2026-12-19 | 18 (!) | /etc/kubernetes/pki/apiserver.crt |",
		"| 2027-06-01 | 182 | /etc/kubernetes/admin.conf |",
		"age -d -i " + p.Options.IdentityFile + " etcd.db.zst.age | zstd -d -o snapshot.db",
		"--name cp3 --initial-cluster cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,cp3=https://10.0.0.13:2380",
		"--bump-revision 1000000000 --mark-compacted",
		strings.Repeat("b", 64) + "  etcd.db.zst.age",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	// Certificates are listed soonest to expire first.
	last := -1
	for _, c := range []string{"pki/front-proxy-client.crt", "pki/apiserver.crt", "admin.conf", "pki/etcd/server.crt", "pki/ca.crt"} {
		i := strings.Index(md, "| /etc/kubernetes/"+c+" |")
		if i <= last {
			t.Errorf("certificate %s is missing or out of order (at %d, previous at %d)", c, i, last)
		}
		last = i
	}
	// Stages follow the plan's phases: prepare everywhere, start etcd
	// everywhere, then prove it and start the control plane.
	for _, want := range []string{"## Stage 1 of 4: cp1, cp2, cp3", "## Stage 2 of 4: cp1, cp2, cp3", "## Stage 3 of 4: cp1", "## Stage 4 of 4: cp1, cp2, cp3"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

// pdfText renders the plan as a PDF, checks its page size, and returns
// the text pdftotext extracts from it.
func pdfText(t *testing.T, p *restore.Plan, paper string, wantW, wantH float64) (pdf []byte, text string) {
	t.Helper()
	var b bytes.Buffer
	if err := PDF(&b, p, Options{Paper: paper, Now: now}); err != nil {
		t.Fatalf("PDF: %v", err)
	}
	pdf = b.Bytes()
	boxes := regexp.MustCompile(`/MediaBox \[0 0 ([0-9.]+) ([0-9.]+)\]`).FindAllSubmatch(pdf, -1)
	if len(boxes) == 0 {
		t.Fatal("no MediaBox in the PDF")
	}
	for _, m := range boxes {
		w, _ := strconv.ParseFloat(string(m[1]), 64)
		h, _ := strconv.ParseFloat(string(m[2]), 64)
		if abs(w-wantW) > 0.5 || abs(h-wantH) > 0.5 {
			t.Errorf("MediaBox %.2f x %.2f, want %.2f x %.2f for %s", w, h, wantW, wantH, paper)
		}
	}
	tool, err := exec.LookPath("pdftotext")
	if err != nil {
		t.Fatalf("pdftotext (poppler-utils) is needed to check the PDF: %v", err)
	}
	file := filepath.Join(t.TempDir(), "runbook.pdf")
	if err := os.WriteFile(file, pdf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "-layout", "-enc", "UTF-8", file, "-").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("pdftotext: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("pdftotext: %v", err)
	}
	return pdf, string(out)
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

var (
	continuation = regexp.MustCompile(`\\[ \t]*\n`)
	// reopened is a break inside single quotes: closed before the
	// continuation and opened again after it.
	reopened = regexp.MustCompile(`'\\[ \t]*\n[ \t]*'`)
)

// squash undoes the wrapping of printed text: shell line continuations
// are joined and all whitespace removed, so a command wrapped over lines
// compares equal to itself.
func squash(s string) string {
	s = reopened.ReplaceAllString(s, "")
	return strings.Join(strings.Fields(continuation.ReplaceAllString(s, "")), "")
}

func TestPDFText(t *testing.T) {
	p := testPlan(t)
	for _, paper := range []struct {
		name string
		w, h float64
	}{{PaperA4, 595.28, 841.89}, {PaperLetter, 612, 792}} {
		t.Run(paper.name, func(t *testing.T) {
			_, text := pdfText(t, p, paper.name, paper.w, paper.h)
			flat := squash(text)
			for i, s := range p.Steps {
				for _, want := range append([]string{s.ID, s.Title, s.Expect}, s.Commands...) {
					if !strings.Contains(flat, squash(want)) {
						t.Errorf("step %d (%s on %s): PDF text lacks %q", i+1, s.ID, s.Node, want)
					}
				}
			}
			pages := strings.Split(strings.TrimSuffix(text, "\f"), "\f")
			total := len(pages)
			if total < 5 {
				t.Fatalf("PDF has %d pages", total)
			}
			for i, pg := range pages {
				want := "page " + strconv.Itoa(i+1) + " of " + strconv.Itoa(total)
				if !strings.Contains(pg, want) {
					t.Errorf("page %d lacks %q in its footer", i+1, want)
				}
			}
			// Every entry of the contents names the page its target is on.
			contents := pages[1]
			for _, heading := range []string{"Inventory", "Certificate expiry", "Stage 1 of 4: cp1, cp2, cp3",
				"Stage 4 of 4: cp1, cp2, cp3", "Break glass: restoring without kdr",
				"1. preflight (cp1): Check the host before touching anything"} {
				m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(heading) + `\s*\.{3,}\s*(\d+)\s*$`).FindStringSubmatch(contents)
				if m == nil {
					t.Errorf("contents have no line for %q:\n%s", heading, contents)
					continue
				}
				n, _ := strconv.Atoi(m[1])
				if n < 1 || n > total || !strings.Contains(pages[n-1], heading) {
					t.Errorf("contents say %q is on page %d, it is not there", heading, n)
				}
			}
			for _, want := range []string{"Who to call", "On-call (PagerDuty)", "+1 555 0100", "DESTRUCTIVE",
				"https://api.prod.example:6443", "Virtual IP (VIP)", "_etcd-server-ssl._tcp.prod.example", "10.244.0.0/16", "(!)", "EXPIRED"} {
				if !strings.Contains(text, want) {
					t.Errorf("PDF text lacks %q", want)
				}
			}
			if !strings.Contains(flat, squash("etcdutl snapshot restore /var/lib/kdr/restore/prod/20261124T203000.000Z-3fa9c1/snapshot.db --data-dir /var/lib/etcd/.kdr-restoring --name cp2")) {
				t.Error("the break-glass appendix lacks cp2's etcdutl restore")
			}
		})
	}
}

func TestPDFReproducible(t *testing.T) {
	p := testPlan(t)
	var a, b bytes.Buffer
	if err := PDF(&a, p, Options{Now: now}); err != nil {
		t.Fatal(err)
	}
	if err := PDF(&b, p, Options{Now: now}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two PDFs of the same plan and time differ")
	}
	if !bytes.Contains(a.Bytes(), []byte("/CreationDate (D:20261201090000")) {
		t.Error("the PDF's creation date is not Options.Now")
	}
}

// Names in any script render: the PDF's core fonts lack most of them, so
// they are transliterated or replaced, and nothing else suffers.
func TestPDFNonLatinNames(t *testing.T) {
	m := testManifest()
	m.Inventory.Contacts = []config.Contact{
		{Name: "Łukasz Żółć", Phone: "+48 22 555 01 00"},
		{Name: "Zoë Ångström", Email: "zoë@prod.example"},
		{Name: "山田太郎", Phone: "+81 3 5555 0100"},
		{Name: "Иван Петров → ≥ ﬁle\u200b\x07", Phone: "+7 495 555 0100"},
	}
	m.Inventory.DNS = append(m.Inventory.DNS, config.DNSRecord{Name: "bücher.prod.example", Type: "A", Value: "10.0.0.20"})
	p := buildPlan(t, m, restore.Options{})
	_, text := pdfText(t, p, PaperA4, 595.28, 841.89)
	for _, want := range []string{"Lukasz Zólc", "Zoë Ångström", "zoë@prod.example", "+81 3 5555 0100", "????", "-> >= file", "bücher.prod.example"} {
		if !strings.Contains(text, want) {
			t.Errorf("PDF text lacks %q", want)
		}
	}
	flat := squash(text)
	for _, s := range p.Steps {
		if !strings.Contains(flat, squash(s.ID)) {
			t.Errorf("PDF text lacks step %s", s.ID)
		}
	}
	// The Markdown keeps every name as it is.
	md := markdown(t, p)
	for _, want := range []string{"Łukasz Żółć", "山田太郎", "zoë@prod.example"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

func TestWinAnsi(t *testing.T) {
	for in, want := range map[string]string{
		"plain ASCII":    "plain ASCII",
		"Łódź":           "L\xf3dz",
		"naïve – “q”":    "na\xefve \x96 \x93q\x94",
		"日本":             "??",
		"tab\there":      "tab here",
		"ﬁ ≥ →":          "fi >= ->",
		"bell\x07":       "bell?",
		"line\nbreak":    "line\nbreak",
		"€5":             "\x805",
		"Ǆ (decomposes)": "DZ (decomposes)",
	} {
		if got := winAnsi(in); got != want {
			t.Errorf("winAnsi(%q) = %q, want %q", in, got, want)
		}
	}
}

// Wrapped commands stay the same commands: the shell reads the printed
// lines, continuations and all, as the original line.
func TestWrapShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	long := strings.Repeat("x", 70)
	// Commands with a single-quoted string longer than a line are printed
	// with the quotes closed and reopened around the break; they run the
	// same but do not read back character for character.
	reopens := map[int]bool{2: true}
	cmds := []string{
		"printf '[%s]\\n' short",
		"printf '[%s]\\n' --initial-cluster cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,cp3=https://10.0.0.13:2380 --name cp1",
		"printf '[%s]\\n' 'a quoted string with spaces that must not be broken' \"double  quoted  too\" " + long + " tail",
		"printf '[%s]\\n' " + long + long + long,
		"printf '[%s]\\n' escaped\\ space\\ words\\ here and\\\\backslash " + long + " " + long,
		"printf '[%s]\\n' \"" + long + long + "\" end",
	}
	for _, cols := range []int{30, 47, 80} {
		for i, c := range cmds {
			lines := wrapShell(c, cols)
			for _, l := range lines {
				if len(l) > cols {
					t.Errorf("cols %d: line %q is %d long", cols, l, len(l))
				}
			}
			if !strings.HasPrefix(lines[0], "$ ") {
				t.Errorf("first line %q has no prompt", lines[0])
			}
			script := strings.TrimPrefix(strings.Join(lines, "\n"), "$ ")
			want, err := exec.Command(sh, "-c", c).Output()
			if err != nil {
				t.Fatalf("sh -c %q: %v", c, err)
			}
			got, err := exec.Command(sh, "-c", script).Output()
			if err != nil {
				t.Fatalf("sh -c %q: %v", script, err)
			}
			if string(got) != string(want) {
				t.Errorf("cols %d: wrapped\n%s\nprints %q, the command prints %q", cols, script, got, want)
			}
			if !reopens[i] && squash(script) != squash(c) {
				t.Errorf("cols %d: wrapped %q does not squash to the command", cols, script)
			}
		}
	}
}

func TestRefusals(t *testing.T) {
	p := testPlan(t)
	var b bytes.Buffer
	if err := Markdown(&b, p, Options{Paper: "A3"}); err == nil || !strings.Contains(err.Error(), "A3") {
		t.Errorf("paper A3: %v", err)
	}
	if err := PDF(&b, p, Options{Paper: "legal"}); err == nil {
		t.Error("paper legal accepted")
	}
	if err := PDF(&b, p, Options{Paper: "letter", Now: now}); err != nil {
		t.Errorf("paper in lower case: %v", err)
	}
	if err := Markdown(&b, nil, Options{}); err == nil {
		t.Error("nil plan accepted")
	}
	empty := *p
	empty.Steps = nil
	if err := PDF(&b, &empty, Options{}); err == nil {
		t.Error("plan without steps accepted")
	}
	stray := *p
	stray.Steps = append([]restore.Step{{ID: "x", Node: "elsewhere"}}, p.Steps...)
	if err := Markdown(&b, &stray, Options{}); err == nil || !strings.Contains(err.Error(), "elsewhere") {
		t.Errorf("step for a node outside the plan: %v", err)
	}
	// A plan without its manifest (decoded from JSON) still prints its steps.
	bare := *p
	bare.Manifest = nil
	if err := PDF(&b, &bare, Options{Now: now}); err != nil {
		t.Errorf("plan without manifest: %v", err)
	}
	if err := Markdown(failWriter{}, p, Options{Now: now}); !errors.Is(err, errFull) {
		t.Errorf("failing writer: %v", err)
	}
}

var errFull = errors.New("disk full")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errFull }
