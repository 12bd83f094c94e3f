package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/agent"
)

func newAgentCommand(g *globals) *cobra.Command {
	var node, root string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run scheduled backups and pruning, serve metrics and probes (in the cluster)",
		Long: `kdr agent runs the config's schedules (backup, prune) until SIGTERM, and
serves /metrics, /healthz, /readyz and /status on agent.listen. With leader
election on and a Kubernetes API server in reach (in a pod, or through
agent.leaderElection.kubeconfig), only the replica that holds the Lease runs
jobs; the others wait and take over within a lease duration.

SIGHUP reloads the config; a config that does not validate is refused with
its reason and the running one stays. SIGTERM lets a backup in flight finish
within agent.shutdownGrace, then cancels it: a cancelled backup leaves no
manifest, so no half set is ever listed or restored.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			path, err := findConfig(g.configPath)
			if err != nil {
				return err
			}
			a, err := agent.New(agent.Options{ConfigPath: path, Log: log, Node: node, Root: root})
			if err != nil {
				return err
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					a.Reload() // logs and exports its outcome
				}
			}()
			return a.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&node, "node", os.Getenv("KDR_NODE_NAME"), "this node's name in the inventory, recorded as the source of the state files (default $KDR_NODE_NAME, else the hostname)")
	cmd.Flags().StringVar(&root, "root", "/", "resolve state file paths under this directory")
	cmd.Flags().MarkHidden("root")
	return cmd
}
