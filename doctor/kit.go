package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/kit"
	"github.com/kdr-io/kdr/manifest"
)

// kitFacts is what one local target's offline recovery kit holds.
type kitFacts struct {
	name string
	// version is the version of the kit's kdr binary.
	version string
	files   int
	// err says why there is no verified kit.
	err error
}

// readKits checks the kit of every local target, once for all clusters:
// the kit belongs to the disk, not to a cluster.
func readKits(ctx context.Context, ts []config.Target, targets []opened, trust *manifest.Trust) []kitFacts {
	var out []kitFacts
	for i, ct := range ts {
		if ct.Local == nil {
			continue
		}
		k := kitFacts{name: ct.Name, err: targets[i].err}
		if k.err == nil {
			var st *kit.Status
			if st, k.err = kit.Check(ctx, targets[i].t, trust); k.err == nil {
				k.version, k.files = st.Version, len(st.Files)
			}
		}
		out = append(out, k)
	}
	return out
}

func gradeKit(f *facts) Result {
	perTarget := map[string]any{}
	ev := map[string]any{"running": f.version, "targets": perTarget}
	if len(f.kits) == 0 {
		return verdict(Pass, ev, "no local target, so no recovery kit to hold (targets-failure-domains grades that)")
	}
	worst := Pass
	var parts []string
	for _, k := range f.kits {
		te := map[string]any{}
		perTarget[k.name] = te
		g, part := Pass, ""
		switch {
		case errors.Is(k.err, kit.ErrNoKit):
			g, part = Warn, fmt.Sprintf("target %s holds no recovery kit: the next backup to it writes one", k.name)
		case errors.Is(k.err, kit.ErrDamaged), errors.Is(k.err, manifest.ErrUntrusted), errors.Is(k.err, manifest.ErrUnsigned):
			g, part = Fail, fmt.Sprintf("the recovery kit on %s does not verify, do not run its binary: %v", k.name, k.err)
		case k.err != nil:
			g, part = Warn, fmt.Sprintf("the recovery kit on %s cannot be checked: %v", k.name, k.err)
		case k.version != f.version:
			g, part = Warn, fmt.Sprintf("the recovery kit on %s verifies but holds kdr %s, not this %s: the next backup by this version refreshes it", k.name, k.version, f.version)
		default:
			part = fmt.Sprintf("the recovery kit on %s verifies: %s, kdr %s", k.name, plural(k.files, "file"), k.version)
		}
		if k.err != nil {
			te["error"] = k.err.Error()
		} else {
			te["version"], te["files"] = k.version, k.files
		}
		worst = max(worst, g)
		parts = append(parts, part)
	}
	return verdict(worst, ev, "%s", strings.Join(parts, "; "))
}
