package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// StepPreflight names the step that checks the host before touching anything.
const StepPreflight = "preflight"

var stepPreflight = stepDef{
	id:    StepPreflight,
	title: "Check the host before touching anything",
	why: "A restore that fails halfway for want of disk space, or runs on the wrong machine, leaves a " +
		"control plane in a worse state than it found it. Nothing is changed by this step.",
	where: EveryNode,
	commands: []string{
		"hostname; ip -brief address | grep -F ' {{.Node.IP}}/'",
		// The tools a minimal host lacks, all named at once before
		// anything changes rather than one by one as steps fail.
		"missing=; for t in {{.Tools}}; do command -v $t >/dev/null || missing=\"$missing $t\"; done; " +
			"[ -z \"$missing\" ] || { echo \"install first:$missing ({{.ToolsHint}})\"; false; }",
		// Neither directory exists yet on a new machine: df is asked
		// about the nearest one that does, the disk they will be made on.
		"for d in {{.Staging}} {{.DataDir}}; do while [ ! -e \"$d\" ]; do d=$(dirname \"$d\"); done; df -h \"$d\"; done",
		"ss -ltn | grep -E ':({{.ClientPort}}|{{.PeerPort}})\\b' || echo 'etcd ports free'",
	},
	expect: "The host has the address {{.Node.IP}}; no tool is missing; free space of at least twice the backup's database; " +
		"nothing listening on etcd's ports.",
	action: preflight,
	check:  preflight,
}

// ErrNoSpace means the host lacks the disk space the restore needs.
var ErrNoSpace = errors.New("not enough disk space")

// preflight checks disk space, that this host is the node, and that
// nothing but a stoppable etcd holds etcd's ports. It changes nothing.
func preflight(_ context.Context, e *Env) error {
	m := e.Plan.Manifest
	var stored, plain int64
	for _, o := range m.Objects {
		stored += o.Size
		plain += o.PlainSize
	}
	// A replay writes its own copy of the database, from its segments.
	if r := e.Plan.Replay; e.Plan.ToRevision > 0 && r != nil {
		plain += m.Etcd.DBSize
		for _, s := range r.Segments {
			stored += s.Head.Body.Size
		}
	}
	if err := needSpace(e.staging(), stored+plain); err != nil {
		return err
	}
	if err := needSpace(e.path(e.Plan.Options.EtcdDataDir), m.Etcd.DBSize+m.Etcd.DBSize/10); err != nil {
		return err
	}
	for _, u := range []string{e.Node.PeerURL, e.Node.ClientURL} {
		if err := portFree(u); err != nil {
			if errors.Is(err, ErrWrongHost) || !e.hasStoppableEtcd() {
				return err
			}
			e.Log.Info("etcd holds its port now; stop-control-plane stops it", "url", u)
		}
	}
	return nil
}

// hasStoppableEtcd reports whether a step of this restore will stop what
// holds etcd's ports: a static pod manifest or a systemd unit.
func (e *Env) hasStoppableEtcd() bool {
	if e.Plan.Options.Topology == TopologySystemd {
		return true
	}
	_, err := os.Stat(e.path(hostPath(e.Plan.Options.KubernetesDir, "manifests", "etcd.yaml")))
	return err == nil
}

// needSpace checks the filesystem that holds p (or its nearest existing
// parent) has room for n more bytes.
func needSpace(p string, n int64) error {
	dir := p
	for {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("disk space of %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < n {
		return fmt.Errorf("%w under %s: need %s, %s free", ErrNoSpace, dir, human(n), human(free))
	}
	return nil
}

func human(n int64) string {
	const mib = 1 << 20
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/mib)
}
