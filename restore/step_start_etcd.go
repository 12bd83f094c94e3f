package restore

import (
	"context"
	"fmt"
	"time"
)

// StepStartEtcd names the step that starts etcd.
const StepStartEtcd = "start-etcd"

var stepStartEtcd = stepDef{
	id:    StepStartEtcd,
	title: "Start etcd",
	why: "etcd is started on every node before anything that reads it; the cluster has quorum once a " +
		"majority of members run, so run this step on all nodes without waiting for one to finish.",
	where: EveryNode,
	commands: []string{
		// A new machine's manifests directory is made here, as kdr does.
		"{{if eq .Topology \"systemd\"}}systemctl start etcd{{else}}mkdir -p -m 700 {{.KubeDir}}/manifests && cp {{.StagedManifests}}/etcd.yaml {{.KubeDir}}/manifests/{{end}}",
		"etcdctl --endpoints {{.Endpoints}}{{.EtcdctlTLS}} endpoint health",
	},
	expect: "Every endpoint reports healthy.",
	action: startEtcd,
	check:  checkEtcdHealthy,
}

func startEtcd(ctx context.Context, e *Env) error { return e.Runner.StartEtcd(ctx, e) }

// StartEtcd puts the restored etcd manifest in place, or starts etcd's unit.
func (HostRunner) StartEtcd(ctx context.Context, e *Env) error {
	if e.Plan.Options.Topology == TopologySystemd {
		return systemctl(ctx, e, "start", "etcd")
	}
	return installManifests(e, func(name string) bool { return name == "etcd.yaml" })
}

// checkEtcdHealthy waits until this node's member answers with a leader:
// the cluster has quorum.
func checkEtcdHealthy(ctx context.Context, e *Env) error {
	cli, err := e.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	return waitFor(ctx, "etcd not healthy", e.WaitTimeout, func() error {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		st, err := cli.Status(sctx, e.Node.ClientURL)
		if err != nil {
			return fmt.Errorf("etcd at %s: %w", e.Node.ClientURL, cli.explain(ctx, e.Node.ClientURL, err))
		}
		if st.Leader == 0 {
			return fmt.Errorf("etcd at %s has no leader yet: start etcd on the other nodes", e.Node.ClientURL)
		}
		return nil
	})
}
