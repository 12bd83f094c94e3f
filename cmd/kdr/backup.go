package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/snapshot"
)

type backupFlags struct {
	cluster string
	target  string
	root    string
	node    string
}

func newBackupCommand(g *globals) *cobra.Command {
	f := &backupFlags{}
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Take a backup now and print its ID",
		Long: `Take a backup of each configured cluster (or the one named) to every target:
the etcd snapshot and the off-etcd state, compressed and encrypted. Prints the
new backup ID; exits 0 only when the set is complete on every target.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBackup(cmd, g, f)
		},
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "back up only this cluster")
	cmd.Flags().StringVar(&f.target, "target", "", "write only to this target")
	cmd.Flags().StringVar(&f.node, "node", os.Getenv("KDR_NODE_NAME"), "this node's name in the inventory, recorded as the source of the state files (default $KDR_NODE_NAME, else the hostname)")
	cmd.Flags().StringVar(&f.root, "root", "/", "resolve state file paths under this directory")
	cmd.Flags().MarkHidden("root")
	return cmd
}

func runBackup(cmd *cobra.Command, g *globals, f *backupFlags) error {
	ctx := cmd.Context()
	log, err := g.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	clusters, env, err := g.clustersEnv(ctx, f.cluster, f.target, log)
	if err != nil {
		return err
	}
	var bars []*progress
	results, err := env.Backup(ctx, clusters, action.BackupOptions{
		Root: f.root, Node: f.node,
		Progress: func(cluster string) func(int64) {
			p := newProgress(cmd.ErrOrStderr(), "etcd snapshot "+cluster)
			bars = append(bars, p)
			return p.update
		},
	})
	for _, p := range bars {
		p.done()
	}
	if err != nil {
		return err
	}
	var failures []error
	for _, r := range results {
		if r.Result != nil && len(r.Result.Complete) > 0 {
			fmt.Fprintln(cmd.OutOrStdout(), r.Result.Manifest.ID)
		}
		if r.Err != nil {
			if !errors.Is(r.Err, snapshot.ErrPartial) {
				r.Err = fmt.Errorf("backup of %s: %w", r.Cluster, r.Err)
			}
			failures = append(failures, r.Err)
		}
	}
	return errors.Join(failures...)
}

// progress draws a one-line byte counter on a terminal; elsewhere it is silent.
type progress struct {
	w     io.Writer
	label string
	on    bool
	last  int64
}

func newProgress(w io.Writer, label string) *progress {
	return &progress{w: w, label: label, on: isTerminal(w)}
}

func (p *progress) update(n int64) {
	if !p.on || n-p.last < 4<<20 {
		return
	}
	p.last = n
	fmt.Fprintf(p.w, "\r%s: %s   ", p.label, humanBytes(n))
}

func (p *progress) done() {
	if p.on && p.last > 0 {
		fmt.Fprintln(p.w)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
