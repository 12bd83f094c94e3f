package restore

import (
	"context"
	"testing"
	"time"

	"github.com/kdr-io/kdr/manifest"
)

// TestFetchCheckNeedsTheManifest: fetch writes the manifest last, so a
// fetch killed before it must not count as done when it is resumed.
func TestFetchCheckNeedsTheManifest(t *testing.T) {
	f := newFixture(t, 1)
	plan := oneNodePlan(t, f)
	env := &Env{Plan: plan, Root: t.TempDir(), Target: f.usb, Identities: f.ids, WaitTimeout: time.Minute}
	if err := Apply(context.Background(), env, "m1", ApplyOptions{Until: StepFetch}); err != nil {
		t.Fatal(err)
	}
	e := journaled(t, env, "m1")
	for _, o := range fetchedObjects(f.m) {
		if got := e.journal.Fetched[o.Name]; got != o.SHA256 {
			t.Errorf("the journal records %s as fetched with sha256 %q, want %q", o.Name, got, o.SHA256)
		}
	}
	if err := checkFetched(context.Background(), e); err != nil {
		t.Fatalf("a whole fetch fails its check: %v", err)
	}
	local, err := e.stagingTarget()
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Delete(context.Background(), manifest.Key(plan.Cluster, plan.BackupID, manifest.ManifestObject)); err != nil {
		t.Fatal(err)
	}
	if err := checkFetched(context.Background(), e); err == nil {
		t.Fatal("a fetch without its manifest passes its check")
	}
}
