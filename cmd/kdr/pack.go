package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

type packFlags struct {
	cluster string
	target  string
}

func newPackCommand(g *globals) *cobra.Command {
	f := &packFlags{}
	cmd := &cobra.Command{
		Use:   "pack",
		Short: "Pack the captured log's closed segments into one object per interval",
		Long: `Pack the closed segments of each cluster's captured log on each target: the
segments of one chain first seen in one interval of agent.capture.packEvery
(default 1h) go into one pack object with an index of their signed heads,
and the small objects they were are removed once the pack reads back whole.
The agent's leader does this every packEvery; this command does it now.
Every revision stays restorable while it runs: a reader that finds a
segment gone finds it in its pack. The newest interval of a chain that may
still grow is left alone. Loose objects under S3 Object Lock retention stay,
counted; readers ignore them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPack(cmd, g, f)
		},
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "only this cluster")
	cmd.Flags().StringVar(&f.target, "target", "", "only this target")
	return cmd
}

func runPack(cmd *cobra.Command, g *globals, f *packFlags) error {
	ctx := cmd.Context()
	clusters, env, err := g.clustersEnv(ctx, f.cluster, f.target, nil)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	failed := 0
	for _, p := range env.Pack(ctx, clusters, time.Now()) {
		if p.Err != nil {
			failed++
			fmt.Fprintf(out, "FAILED  %s on %s: %s\n", p.Cluster, p.Target, oneLine(p.Err))
			continue
		}
		rep := p.Report
		for _, m := range rep.Packs {
			fmt.Fprintf(out, "packed  %s %s on %s: revisions %d..%d, %d segments, %d bytes\n", p.Cluster, m.Set, p.Target, m.First, m.Last, m.Segments, m.Bytes)
		}
		fmt.Fprintf(out, "%s on %s: %d pack(s), %d loose object(s) removed", p.Cluster, p.Target, len(rep.Packs), rep.Removed)
		if rep.Locked > 0 {
			fmt.Fprintf(out, ", %d kept under retention (ignored by readers)", rep.Locked)
		}
		fmt.Fprintln(out)
		for _, err := range rep.Errors {
			failed++
			fmt.Fprintf(out, "FAILED  %s on %s: %s\n", p.Cluster, p.Target, oneLine(err))
		}
	}
	if failed > 0 {
		return errors.New("some packs failed (see above)")
	}
	return nil
}
