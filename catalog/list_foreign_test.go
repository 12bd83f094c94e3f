package catalog

import (
	"context"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// TestListForeignSetIsNoTargetError: a set no copy of which is trusted is
// marked and passed over, not an error of the target holding it (anyone
// who can write to a target could otherwise make every listing fail); a
// copy of a trusted set that is not trusted, read before a trusted one
// on another target, is one.
func TestListForeignSetIsNoTargetError(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	usb, s3 := newLocal(t, "usb"), newLocal(t, "s3")
	ours := f.write(setSpec{}, usb, s3)
	planted := f.write(setSpec{}, usb)
	deleteObject(t, usb, manifest.SignatureKey(manifest.Key(testCluster, planted.id, manifest.ManifestObject)))
	swapped := f.write(setSpec{}, usb, s3)
	replaceObject(t, s3, manifest.Key(testCluster, swapped.id, manifest.ManifestObject), func(b []byte) []byte { return append(b, ' ') })

	all, targetErrs, err := List(ctx, []storage.Target{s3, usb}, testTrust, testCluster)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Backup{}
	for _, b := range all {
		got[b.ID] = b
	}
	if b := got[planted.id]; b.Manifest != nil || !strings.Contains(b.Untrusted, "not signed") {
		t.Errorf("planted set: %+v, want marked untrusted, not signed", b)
	}
	for _, id := range []string{ours.id, swapped.id} {
		if b := got[id]; b.Manifest == nil || b.Untrusted != "" {
			t.Errorf("set %s: %+v, want trusted", id, b)
		}
	}
	if err := targetErrs["usb"]; err != nil {
		t.Errorf("usb, holding a planted set: %v, want no error", err)
	}
	if err := targetErrs["s3"]; err == nil || !strings.Contains(err.Error(), swapped.id) {
		t.Errorf("s3, whose copy of %s was replaced: %v, want that named", swapped.id, err)
	}
	if len(Trusted(all)) != 2 {
		t.Errorf("Trusted: %+v, want two sets", Trusted(all))
	}

	// Nothing trusted at all: the reference says what was passed over.
	_, other := mustSigningKey()
	_, err = ResolveIn(ctx, []storage.Target{usb}, other, testCluster, LatestRef)
	if err == nil || !strings.Contains(err.Error(), "passed over") || strings.Contains(err.Error(), "%!") {
		t.Errorf("ResolveIn with no trusted set: %v", err)
	}
}
