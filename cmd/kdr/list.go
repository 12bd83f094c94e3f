package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/internal/fromconfig"
)

type listFlags struct {
	cluster string
	target  string
	output  string
	all     bool
}

// listEntry is one line of `kdr list -o json`; its fields are a contract.
type listEntry struct {
	ID       string    `json:"id"`
	Cluster  string    `json:"cluster"`
	Created  time.Time `json:"created"`
	Revision int64     `json:"revision"`
	DBSize   int64     `json:"dbSize"`
	Size     int64     `json:"size"`
	Targets  []string  `json:"targets"`
	// Untrusted, shown with --all, says why no trusted key signed the set.
	Untrusted string `json:"untrusted,omitempty"`
}

func newListCommand(g *globals) *cobra.Command {
	f := &listFlags{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List complete backups on the targets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runList(cmd, g, f)
		},
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "only this cluster")
	cmd.Flags().StringVar(&f.target, "target", "", "only this target")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&f.all, "all", false, "also show sets no trusted key signed, marked UNTRUSTED (never restored, counted or pruned)")
	return cmd
}

func runList(cmd *cobra.Command, g *globals, f *listFlags) error {
	if f.output != "table" && f.output != "json" {
		return fmt.Errorf("-o %q: want table or json", f.output)
	}
	ctx := cmd.Context()
	env, err := g.env(ctx, f.target, nil)
	if err != nil {
		return err
	}
	if f.cluster != "" {
		if _, err := fromconfig.Clusters(env.Config, f.cluster); err != nil {
			return err
		}
	}
	backups, targetErrs, err := catalog.List(ctx, env.Targets, env.Trust, f.cluster)
	if err != nil {
		return err
	}
	entries := make([]listEntry, 0, len(backups))
	var passed []catalog.Backup
	for _, b := range backups {
		if b.Untrusted != "" && !f.all {
			passed = append(passed, b)
			continue
		}
		entries = append(entries, listEntry{
			ID: b.ID, Cluster: b.Cluster, Created: b.Created, Revision: b.Revision,
			DBSize: b.DBSize, Size: b.Size, Targets: b.Targets, Untrusted: b.Untrusted,
		})
	}
	out := cmd.OutOrStdout()
	if f.output == "json" {
		if err := writeJSON(out, entries); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCLUSTER\tCREATED\tREVISION\tDB SIZE\tSTORED\tTARGETS")
		for _, e := range entries {
			id := e.ID
			if e.Untrusted != "" {
				id += " UNTRUSTED"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", id, e.Cluster, e.Created.Local().Format(time.DateTime),
				e.Revision, humanBytes(e.DBSize), humanBytes(e.Size), strings.Join(e.Targets, ","))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	var msgs []string
	if len(targetErrs) > 0 {
		names := make([]string, 0, len(targetErrs))
		for name := range targetErrs {
			names = append(names, name)
		}
		sort.Strings(names)
		var errs []string
		for _, n := range names {
			errs = append(errs, fmt.Sprintf("target %s: %v", n, targetErrs[n]))
		}
		msgs = append(msgs, "could not list every target: "+strings.Join(errs, "; "))
	}
	// Sets someone else put on a target are left out, and said to be
	// there; the listing itself is whole, so it still succeeds: a planted
	// object must not make every listing fail.
	if len(passed) > 0 {
		log, err := g.logger(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		log.Warn("sets that no trusted key signed left out; kdr list --all shows them",
			"count", len(passed), "newest", passed[0].ID, "reason", passed[0].Untrusted)
	}
	if len(msgs) > 0 {
		return errors.New(strings.Join(msgs, "; "))
	}
	return nil
}
