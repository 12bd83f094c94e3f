package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/action"
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
	// Window is set on the newest entry of each cluster alone: by target,
	// what a restore from it reaches of the cluster (catalog.Window).
	Window map[string]*catalog.Window `json:"window,omitempty"`
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
	// newest is the index of each cluster's newest trusted entry.
	newest := map[string]int{}
	var clusters []string
	for _, b := range backups {
		if b.Untrusted != "" && !f.all {
			passed = append(passed, b)
			continue
		}
		if _, ok := newest[b.Cluster]; !ok && b.Untrusted == "" {
			newest[b.Cluster] = len(entries)
			clusters = append(clusters, b.Cluster)
		}
		entries = append(entries, listEntry{
			ID: b.ID, Cluster: b.Cluster, Created: b.Created, Revision: b.Revision,
			DBSize: b.DBSize, Size: b.Size, Targets: b.Targets, Untrusted: b.Untrusted,
		})
	}
	sort.Strings(clusters)
	windows, err := env.Windows(ctx, clusters)
	if err != nil {
		return err
	}
	var msgs []string
	for _, w := range windows {
		if w.Err != nil {
			msgs = append(msgs, fmt.Sprintf("could not read the window of %s on target %s: %v", w.Cluster, w.Target, w.Err))
			continue
		}
		e := &entries[newest[w.Cluster]]
		if e.Window == nil {
			e.Window = map[string]*catalog.Window{}
		}
		e.Window[w.Target] = w.Window
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
		if err := writeWindows(out, windows); err != nil {
			return err
		}
	}
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
		msgs = append([]string{"could not list every target: " + strings.Join(errs, "; ")}, msgs...)
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

// writeWindows prints what a restore reaches of each cluster on each
// target: a line each, then a line per gap the log should not have. The
// gaps before the log starts (sets older than it, which restore at their
// own revision alone) are only counted.
func writeWindows(out io.Writer, windows []action.TargetWindow) error {
	if !slices.ContainsFunc(windows, func(w action.TargetWindow) bool { return w.Window != nil }) {
		return nil
	}
	at := func(p catalog.Point) string {
		return fmt.Sprintf("%d (%s)", p.Revision, p.Time.Local().Format(time.DateTime))
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tTARGET\tRESTORABLE FROM\tTO\tWITHOUT A GAP FROM\tGAPS")
	var notes []string
	for _, tgt := range windows {
		w := tgt.Window
		if w == nil {
			continue
		}
		where := fmt.Sprintf("%s on %s", w.Cluster, w.Target)
		lost := w.Lost()
		gaps := strconv.Itoa(lost)
		if n := len(w.Gaps) - lost; n > 0 {
			gaps += fmt.Sprintf(" (and %d before the log starts)", n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.Cluster, w.Target, at(w.From), at(w.To), at(w.Contiguous), gaps)
		for _, g := range w.Gaps {
			if !g.Expected {
				notes = append(notes, fmt.Sprintf("gap in %s: revisions %d..%d, seen between %s and %s: %s", where,
					g.First, g.Last, g.After.Local().Format(time.DateTime), g.Before.Local().Format(time.DateTime), g.Why))
			}
		}
		if w.Broken != nil {
			notes = append(notes, fmt.Sprintf("the log of %s stops at revision %d: %v", where, w.To.Revision, w.Broken))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	return nil
}
