package action

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/manifest"
)

// TestWindowsMatchResolve: the window the list shows is what a restore
// reaches. Its ends and the start of its newest stretch resolve; every
// gap's ends and the revision after the window are refused with ErrGap.
func TestWindowsMatchResolve(t *testing.T) {
	env, sets := revisionEnv(t)
	ctx := context.Background()
	ws, err := env.Windows(ctx, []string{"prod"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].Err != nil || ws[0].Target != "usb" {
		t.Fatalf("windows %+v, want one of prod on usb", ws)
	}
	w := ws[0].Window
	if w.From.Revision != 100 || w.To.Revision != 180 || w.Contiguous.Revision != 160 || len(w.Gaps) != 1 {
		t.Fatalf("window %d..%d, contiguous from %d, gaps %+v; want 100..180 from 160, one gap", w.From.Revision, w.To.Revision, w.Contiguous.Revision, w.Gaps)
	}
	g := w.Gaps[0]
	if g.First != 151 || g.Last != 159 || g.Expected || !errors.Is(g.Problem, manifest.ErrUntrusted) || !strings.Contains(g.Why, "stops at revision 150") {
		t.Errorf("gap %+v, want 151..159 where the untrusted segment stops the log of %s", g, sets[0].ID)
	}
	// The newest log stops at its missing segment.
	if w.Broken == nil || !strings.Contains(w.Broken.Error(), "revisions 181..190 are missing") {
		t.Errorf("broken %v, want the missing segment 181..190", w.Broken)
	}
	for _, rev := range []int64{w.From.Revision, g.First - 1, w.Contiguous.Revision, w.To.Revision} {
		if _, err := env.Resolve(ctx, Ref{Revision: rev}); err != nil {
			t.Errorf("revision %d, inside the window: %v", rev, err)
		}
	}
	for _, rev := range []int64{g.First, g.Last, w.To.Revision + 1} {
		if _, err := env.Resolve(ctx, Ref{Revision: rev}); !errors.Is(err, catalog.ErrGap) {
			t.Errorf("revision %d, outside the window: %v, want ErrGap", rev, err)
		}
	}
	// A cluster no target holds has no window, and no error.
	if ws, err := env.Windows(ctx, []string{"staging"}); err != nil || len(ws) != 0 {
		t.Errorf("a cluster without sets: %+v, %v; want none", ws, err)
	}
}
