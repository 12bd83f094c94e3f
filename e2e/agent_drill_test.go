package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/testenv"
)

// TestAgentDrills runs scheduled drills in the agent: the drill metrics
// fill in and the report lands beside the backups.
func TestAgentDrills(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1})
	root := filepath.Join(t.TempDir(), "host")
	testenv.KubeadmInit(t, root, testenv.KubeOptions{})
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	spec := w.spec()
	spec.extra = fmt.Sprintf(`schedule: {backup: "@every 2s", prune: "@every 1h", drill: "@every 3s"}
agent: {listen: %q, checkInterval: 1s}
drill: {identityFile: %q, target: usb}
`, addr, w.identity)
	a := startAgent(t, w.env(), writeConfig(t, spec), root, "cp1", addr)
	last := fmt.Sprintf(`kdr_drill_last_success_timestamp_seconds{cluster=%q}`, cluster)
	testenv.Eventually(t, 2*time.Minute, "a successful scheduled drill", func() bool { return a.metric(last) > 0 })
	if rto := a.metric(fmt.Sprintf(`kdr_drill_rto_seconds{cluster=%q}`, cluster)); rto <= 0 {
		t.Errorf("kdr_drill_rto_seconds %v", rto)
	}
	for _, ext := range []string{"json", "md", "pdf"} {
		if m, _ := filepath.Glob(filepath.Join(w.usb, cluster, "drills", "*."+ext)); len(m) == 0 {
			t.Errorf("no drill report .%s beside the backups", ext)
		}
	}
}
