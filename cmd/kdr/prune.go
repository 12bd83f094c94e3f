package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

type pruneFlags struct {
	cluster string
	target  string
	apply   bool
}

func newPruneCommand(g *globals) *cobra.Command {
	f := &pruneFlags{}
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Show, or with --apply remove, backups the retention policy no longer keeps",
		Long: `Apply the retention policy of the config (keepLast, keepHourly, keepDaily,
keepWeekly, keepMonthly, keepYearly) to the complete backups of each cluster on
each target, and remove incomplete sets older than the grace period. A backup's
captured log goes with it; keepLog removes, whole, the log of a kept backup
whose last revision was seen longer ago (never the newest backup's log), and
that backup then restores at its own revision only. Without --apply nothing is
deleted: the plan is printed. Objects under S3 Object Lock retention are never
deleted; they are reported.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPrune(cmd, g, f)
		},
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "only this cluster")
	cmd.Flags().StringVar(&f.target, "target", "", "only this target")
	cmd.Flags().BoolVar(&f.apply, "apply", false, "delete what the policy does not keep (default: only show it)")
	cmd.Flags().Bool("dry-run", true, "only show what would be removed (the default; --apply deletes)")
	cmd.MarkFlagsMutuallyExclusive("apply", "dry-run")
	return cmd
}

func runPrune(cmd *cobra.Command, g *globals, f *pruneFlags) error {
	ctx := cmd.Context()
	clusters, env, err := g.clustersEnv(ctx, f.cluster, f.target, nil)
	if err != nil {
		return err
	}
	prunes, err := env.Prune(ctx, clusters, !f.apply)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	verb := "would remove"
	if f.apply {
		verb = "removed"
	}
	failed := 0
	for _, p := range prunes {
		c, t, rep := p.Cluster, p.Target, p.Report
		if p.Err != nil {
			// An unplugged USB disk must not stop pruning the others.
			failed++
			fmt.Fprintf(out, "FAILED        %s on %s: %s\n", c, t, oneLine(p.Err))
			continue
		}
		for _, k := range rep.Kept {
			fmt.Fprintf(out, "keep          %s %s on %s (%s)\n", c, k.ID, t, k.Reason)
		}
		for _, id := range rep.Removed {
			fmt.Fprintf(out, "%-13s %s %s on %s\n", verb, c, id, t)
		}
		for _, l := range rep.Logs {
			fmt.Fprintf(out, "%-13s %s %s log on %s (%s; %s)\n", verb, c, l.ID, t, l.Revisions(), l.Reason)
		}
		for _, id := range rep.IncompleteRemoved {
			fmt.Fprintf(out, "%-13s %s %s on %s (incomplete)\n", verb, c, id, t)
		}
		for _, id := range rep.IncompleteKept {
			fmt.Fprintf(out, "keep          %s %s on %s (incomplete, younger than the grace period: may be in progress)\n", c, id, t)
		}
		if rep.CleanedUp > 0 {
			fmt.Fprintf(out, "removed       %d leftover(s) of interrupted uploads on %s\n", rep.CleanedUp, t)
		}
		for _, id := range rep.Locked {
			fmt.Fprintf(out, "locked        %s %s on %s (Object Lock retention; kept)\n", c, id, t)
		}
		for _, l := range rep.LockedLogs {
			fmt.Fprintf(out, "locked        %s %s log on %s (%s; Object Lock retention; kept)\n", c, l.ID, t, l.Revisions())
		}
		for _, f := range rep.Foreign {
			fmt.Fprintf(out, "foreign       %s %s on %s (not counted, not removed: %s)\n", c, f.ID, t, oneLine(errors.New(f.Reason)))
		}
		for _, e := range rep.Errors {
			failed++
			fmt.Fprintf(out, "FAILED        %s on %s: %v\n", c, t, e)
		}
	}
	if failed > 0 {
		return exitError{code: 1, msg: fmt.Sprintf("prune failed for %d item(s)", failed)}
	}
	if !f.apply {
		fmt.Fprintln(out, "dry run: nothing was deleted; run with --apply to delete")
	}
	return nil
}
