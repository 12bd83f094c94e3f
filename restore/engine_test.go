package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
)

// oneNodePlan plans a restore of the fixture onto one loopback node.
func oneNodePlan(t *testing.T, f *fixture) *Plan {
	t.Helper()
	n := Node{Name: "m1", IP: "127.0.0.1",
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))}
	p, err := BuildPlan(f.m, Source{Kind: "local", Path: f.dir}, Options{Topology: TopologySystemd, Nodes: []Node{n}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// untouched says whether a root still holds only what the test put there.
func untouched(t *testing.T, root string, plan *Plan) {
	t.Helper()
	old := filepath.Join(root, filepath.FromSlash(plan.Options.EtcdDataDir), "member", "old")
	if _, err := os.Stat(old); err != nil {
		t.Errorf("the old etcd data was touched: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(plan.Options.EtcdDataDir)+plan.AsideSuffix())); err == nil {
		t.Error("the old etcd data was moved aside before the restore proved it could finish")
	}
}

// oldData puts an existing etcd data dir on the node, the thing a failed
// restore must never touch.
func oldData(t *testing.T, root string, plan *Plan) {
	t.Helper()
	d := filepath.Join(root, filepath.FromSlash(plan.Options.EtcdDataDir), "member")
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "old"), []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// journaled is env for node with the journal a run of Apply left, as a
// resumed Apply sees them: for calling a step's action or check directly.
func journaled(t *testing.T, env *Env, node string) *Env {
	t.Helper()
	e, err := env.forNode(node)
	if err != nil {
		t.Fatal(err)
	}
	if e.journal, err = openJournal(e.journalPath(), e.Plan.BackupID, e.Plan.ToRevision, node); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestApplyLeavesTheCallersEnv: Apply fills its defaults, node and
// journal into a copy, so an Env reused for another run starts as the
// caller made it.
func TestApplyLeavesTheCallersEnv(t *testing.T) {
	f := newFixture(t, 1)
	plan := oneNodePlan(t, f)
	env := &Env{Plan: plan, Root: t.TempDir(), Target: f.usb, Identities: f.ids}
	before := *env
	for range 2 {
		if err := Apply(context.Background(), env, "m1", ApplyOptions{Until: StepFetch}); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*env, before) {
			t.Fatalf("Apply changed the caller's Env:\n got %+v\nwant %+v", *env, before)
		}
	}
	if _, err := os.Stat(journaled(t, env, "m1").journalPath()); err != nil {
		t.Errorf("the run left no journal: %v", err)
	}
}

// TestJournalForget: forgetting a step forgets what it recorded, and
// nothing another step recorded.
func TestJournalForget(t *testing.T) {
	j := &Journal{Steps: map[string]*JournalEntry{StepFetch: {State: StateDone}, StepMoveAside: {State: StateDone}},
		Fetched: map[string]string{"state.tar.zst.age": "ab"}, DataDirAside: "/var/lib/etcd.kdr-aside-x", ManifestsAside: "/etc/kubernetes/manifests.kdr-aside-x"}
	j.forget(StepFetch)
	if j.Fetched != nil || j.Steps[StepFetch] != nil {
		t.Errorf("forget(fetch) kept %v, %v", j.Fetched, j.Steps[StepFetch])
	}
	if j.DataDirAside == "" || j.ManifestsAside == "" || j.Steps[StepMoveAside] == nil {
		t.Errorf("forget(fetch) dropped what other steps recorded: %+v", j)
	}
	j.forget(StepMoveAside)
	j.forget(StepStopControlPlane)
	if j.DataDirAside != "" || j.ManifestsAside != "" {
		t.Errorf("forget kept the asides: %+v", j)
	}
}

// TestApplyRefusesBeforeTouching: a wrong identity, a tampered backup and
// a node missing from the plan fail before anything on the host changes.
func TestApplyRefusesBeforeTouching(t *testing.T) {
	f := newFixture(t, 1)
	plan := oneNodePlan(t, f)
	_, wrong := testenv.AgeKeys(t)
	tamper := func(t *testing.T) {
		p := filepath.Join(f.dir, filepath.FromSlash(manifest.Key(f.m.Cluster, f.m.ID, manifest.EtcdObject)))
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x40
		os.Chmod(p, 0o644)
		if err := os.WriteFile(p, data, 0o444); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			data[len(data)/2] ^= 0x40
			os.Chmod(p, 0o644)
			os.WriteFile(p, data, 0o444)
		})
	}
	// A backup bigger than any disk: preflight must say so before anything.
	huge := *f.m
	huge.Objects = append([]manifest.Object(nil), f.m.Objects...)
	huge.Objects[0].PlainSize = 1 << 60
	hugePlan, err := BuildPlan(&huge, plan.Source, plan.Options)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ids     []age.Identity
		node    string
		plan    *Plan
		prepare func(t *testing.T)
		want    error
		msg     string
	}{
		{name: "too little disk", ids: f.ids, node: "m1", plan: hugePlan, want: ErrNoSpace, msg: "not enough disk space"},
		{name: "wrong identity", ids: wrong, node: "m1", want: crypto.ErrWrongIdentity, msg: "no identity matches"},
		{name: "tampered backup", ids: f.ids, node: "m1", prepare: tamper, want: crypto.ErrCorrupt, msg: "etcd.db.zst.age"},
		{name: "node not in the plan", ids: f.ids, node: "cp9", want: ErrNoNode, msg: "m1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.prepare != nil {
				tt.prepare(t)
			}
			root := t.TempDir()
			oldData(t, root, plan)
			p := plan
			if tt.plan != nil {
				p = tt.plan
			}
			env := &Env{Plan: p, Root: root, Target: f.usb, Identities: tt.ids, Runner: &processRunner{t: t}, WaitTimeout: 10 * time.Second}
			err := Apply(context.Background(), env, tt.node, ApplyOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.msg)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			untouched(t, root, plan)
		})
	}
}

// TestApplyResumes interrupts a restore after each step in turn (the
// context is cancelled as the step finishes) and resumes it: the restored
// cluster is whole every time and no destructive step ran twice.
func TestApplyResumes(t *testing.T) {
	f := newFixture(t, 1)
	plan := oneNodePlan(t, f)
	steps, err := plan.NodeSteps("m1")
	if err != nil {
		t.Fatal(err)
	}
	for _, stop := range steps {
		t.Run(stop.ID, func(t *testing.T) {
			root := t.TempDir()
			oldData(t, root, plan)
			runner := &processRunner{t: t, cmds: map[string]*exec.Cmd{}}
			t.Cleanup(runner.stopAll)
			env := &Env{Plan: plan, Root: root, Target: f.usb, Identities: f.ids, Runner: runner, WaitTimeout: time.Minute}
			ctx, cancel := context.WithCancel(context.Background())
			ran := map[string]int{}
			progress := func(s Step, state string, _ error) {
				if state == "running" {
					ran[s.ID]++
				}
				if s.ID == stop.ID && state == "done" {
					cancel()
				}
			}
			err := Apply(ctx, env, "m1", ApplyOptions{Progress: progress})
			if stop.ID != steps[len(steps)-1].ID && !errors.Is(err, context.Canceled) {
				t.Fatalf("first run: %v, want it cancelled after %s", err, stop.ID)
			}
			env2 := &Env{Plan: plan, Root: root, Target: f.usb, Identities: f.ids, Runner: runner, WaitTimeout: time.Minute}
			if err := Apply(context.Background(), env2, "m1", ApplyOptions{Progress: progress}); err != nil {
				t.Fatalf("resume: %v", err)
			}
			for _, s := range steps {
				if s.Destructive && ran[s.ID] != 1 {
					t.Errorf("destructive step %s ran %d times", s.ID, ran[s.ID])
				}
			}
			aside := filepath.Join(root, filepath.FromSlash(plan.Options.EtcdDataDir)+plan.AsideSuffix(), "member", "old")
			if data, err := os.ReadFile(aside); err != nil || string(data) != "precious" {
				t.Errorf("old data not kept aside: %v", err)
			}
		})
	}
}

// TestApplyOptions: a dry run changes nothing, and --until or --from-step
// naming a step the node does not have is refused before anything runs.
func TestApplyOptions(t *testing.T) {
	f := newFixture(t, 1)
	plan := oneNodePlan(t, f)
	tests := []struct {
		name string
		o    ApplyOptions
		msg  string
	}{
		{name: "dry run", o: ApplyOptions{DryRun: true}},
		{name: "unknown --until", o: ApplyOptions{Until: "make-coffee"}, msg: `--until "make-coffee"`},
		{name: "unknown --from-step", o: ApplyOptions{FromStep: "make-coffee"}, msg: `--from-step "make-coffee"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			oldData(t, root, plan)
			var ran []string
			tt.o.Progress = func(s Step, state string, _ error) {
				if state == "running" {
					ran = append(ran, s.ID)
				}
			}
			env := &Env{Plan: plan, Root: root, Target: f.usb, Identities: f.ids, Runner: &processRunner{t: t}, WaitTimeout: 10 * time.Second}
			err := Apply(context.Background(), env, "m1", tt.o)
			switch {
			case tt.msg == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.msg != "" && (err == nil || !strings.Contains(err.Error(), tt.msg)):
				t.Fatalf("err = %v, want it to mention %s", err, tt.msg)
			}
			if len(ran) > 0 {
				t.Errorf("steps ran: %v", ran)
			}
			untouched(t, root, plan)
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(plan.Staging()))); err == nil {
				t.Error("a staging directory was made")
			}
		})
	}
}
