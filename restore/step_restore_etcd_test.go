package restore

import (
	"context"
	"maps"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestRestoreEtcdResumesItsScratch interrupts restore-etcd where a kill
// is most awkward for it: after it took the decrypted snapshot (the staging
// copy is gone) and after it also rewrote the database (the revision is
// bumped). The resumed restore finishes with the revision an uninterrupted
// one has, and every key.
func TestRestoreEtcdResumesItsScratch(t *testing.T) {
	f := newFixture(t, 1)
	plan := oneNodePlan(t, f)
	restored := func(t *testing.T, interrupt func(env *Env, scratch string)) int64 {
		root := t.TempDir()
		// Every case restores onto the same ports.
		runner := &processRunner{t: t, cmds: map[string]*exec.Cmd{}}
		defer runner.stopAll()
		env := &Env{Plan: plan, Root: root, Target: f.usb, Identities: f.ids, Runner: runner, WaitTimeout: time.Minute}
		if interrupt != nil {
			if err := Apply(context.Background(), env, "m1", ApplyOptions{Until: StepRestoreFiles}); err != nil {
				t.Fatal(err)
			}
			env.Node = plan.Options.Nodes[0]
			interrupt(env, filepath.Join(env.path(plan.Options.EtcdDataDir), scratchName))
		}
		if err := Apply(context.Background(), env, "m1", ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{plan.Options.Nodes[0].ClientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if got := allKeys(t, cli); !maps.Equal(got, f.before) {
			t.Errorf("restored %d keys, the source had %d, or values differ", len(got), len(f.before))
		}
		return mustRevision(t, cli)
	}
	want := restored(t, nil)
	take := func(env *Env, scratch string) {
		if err := takeSnapshot(context.Background(), filepath.Join(env.staging(), snapshotFile), scratch); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		interrupt func(env *Env, scratch string)
	}{
		{"after taking the snapshot", take},
		{"after rewriting the database", func(env *Env, scratch string) {
			take(env, scratch)
			err := writeMemberData(context.Background(), memberData{DataDir: scratch, Name: "m1", InitialCluster: plan.InitialCluster,
				Token: plan.Options.Token, RevisionBump: plan.Options.RevisionBump, MinRevision: plan.Revision})
			if err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := restored(t, tc.interrupt); got != want {
				t.Errorf("resumed restore serves revision %d, an uninterrupted one %d", got, want)
			}
		})
	}
}
