package restore

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// StepCheckEtcd names the step that proves the restored etcd.
const StepCheckEtcd = "check-etcd"

var stepCheckEtcd = stepDef{
	id:    StepCheckEtcd,
	title: "Prove the restored etcd",
	why: "The restored cluster must have exactly the planned members, and a revision above every revision " +
		"the lost cluster handed out.",
	where: FirstNode,
	commands: []string{
		"etcdctl --endpoints {{.Endpoints}}{{.EtcdctlTLS}} member list -w table",
		"etcdctl --endpoints {{.Endpoints}}{{.EtcdctlTLS}} endpoint status -w table",
	},
	expect: "The members of the plan, one leader, and revisions of at least {{.MinRevision}}.",
	action: checkEtcd,
	check:  checkEtcd,
}

// checkEtcd proves the restored cluster: the planned members and no
// others, and a revision above everything the old cluster handed out.
func checkEtcd(ctx context.Context, e *Env) error {
	cli, err := e.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	return waitFor(ctx, "the restored etcd not proven", e.WaitTimeout, func() error {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ml, err := cli.MemberList(sctx)
		if err != nil {
			return fmt.Errorf("member list: %w", cli.explain(ctx, e.Node.ClientURL, err))
		}
		var got []string
		for _, m := range ml.Members {
			got = append(got, m.Name)
		}
		want := e.Plan.NodeNames()
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("members %v, the plan has %v", got, want)
		}
		floor := e.Plan.MinRevision()
		for _, n := range e.Plan.Options.Nodes {
			st, err := cli.Status(sctx, n.ClientURL)
			if err != nil {
				return fmt.Errorf("status of %s: %w", n.Name, cli.explain(ctx, n.ClientURL, err))
			}
			if st.Header.Revision < floor {
				return fmt.Errorf("%s is at revision %d, below the restored %d plus the bump (%d)", n.Name, st.Header.Revision, e.Plan.RestoredRevision(), floor)
			}
		}
		return nil
	})
}
