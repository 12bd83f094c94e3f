package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/internal/fromconfig"
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
each target, and remove incomplete sets older than the grace period. Without
--apply nothing is deleted: the plan is printed. Objects under S3 Object Lock
retention are never deleted; they are reported.`,
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
	cfg, err := loadConfig(g.configPath)
	if err != nil {
		return err
	}
	clusters, err := fromconfig.Clusters(cfg, f.cluster)
	if err != nil {
		return err
	}
	targets, err := fromconfig.Targets(ctx, cfg, f.target)
	if err != nil {
		return err
	}
	r := cfg.Retention
	policy := fromconfig.Policy(r)
	out := cmd.OutOrStdout()
	verb := "would remove"
	if f.apply {
		verb = "removed"
	}
	failed := 0
	for _, c := range clusters {
		for _, t := range targets {
			rep, err := catalog.Prune(ctx, t, c.Name, policy, catalog.PruneOptions{DryRun: !f.apply, IncompleteGrace: r.IncompleteGrace})
			if err != nil {
				// An unplugged USB disk must not stop pruning the others.
				failed++
				fmt.Fprintf(out, "FAILED        %s on %s: %s\n", c.Name, t.Name(), oneLine(err))
				continue
			}
			for _, k := range rep.Kept {
				fmt.Fprintf(out, "keep          %s %s on %s (%s)\n", c.Name, k.ID, t.Name(), k.Reason)
			}
			for _, id := range rep.Removed {
				fmt.Fprintf(out, "%-13s %s %s on %s\n", verb, c.Name, id, t.Name())
			}
			for _, id := range rep.IncompleteRemoved {
				fmt.Fprintf(out, "%-13s %s %s on %s (incomplete)\n", verb, c.Name, id, t.Name())
			}
			for _, id := range rep.IncompleteKept {
				fmt.Fprintf(out, "keep          %s %s on %s (incomplete, younger than the grace period: may be in progress)\n", c.Name, id, t.Name())
			}
			if rep.CleanedUp > 0 {
				fmt.Fprintf(out, "removed       %d leftover(s) of interrupted uploads on %s\n", rep.CleanedUp, t.Name())
			}
			for _, id := range rep.Locked {
				fmt.Fprintf(out, "locked        %s %s on %s (Object Lock retention; kept)\n", c.Name, id, t.Name())
			}
			for _, e := range rep.Errors {
				failed++
				fmt.Fprintf(out, "FAILED        %s on %s: %v\n", c.Name, t.Name(), e)
			}
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
