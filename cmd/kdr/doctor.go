package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/doctor"
)

type doctorFlags struct {
	cluster string
	output  string
	root    string
}

// doctorCannotRun is the exit code when the doctor could not grade at all
// (no config, an unknown cluster): 1 and 2 are grades, and a script that
// alerts on a warning must not take a typo in the config for one.
const doctorCannotRun = 3

func newDoctorCommand(g *globals) *cobra.Command {
	f := &doctorFlags{}
	var list strings.Builder
	for _, c := range doctor.Checks() {
		fmt.Fprintf(&list, "  %-24s %s\n", c.ID, c.About)
	}
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Grade the clusters, targets and backups against production-grade criteria",
		Long: `Check each configured cluster (or --cluster) and print one line per check: its
grade (pass, warn or fail), its name and the reason, with the numbers. etcd is
asked live; the targets are read for backups and drill reports. Exit 0 when
every check passes, 1 when the worst is a warning, 2 when something fails, 3
when the doctor cannot run (no config, an unknown cluster).

Checks:
` + list.String(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := runDoctor(cmd, g, f)
			if err != nil {
				return exitError{code: doctorCannotRun, msg: oneLine(err)}
			}
			return doctorExit(rep)
		},
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "only this cluster")
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	cmd.Flags().StringVar(&f.root, "root", "/", "read this host's files (static pod manifests) under this directory")
	cmd.Flags().MarkHidden("root")
	return cmd
}

// runDoctor grades the deployment and prints the report.
func runDoctor(cmd *cobra.Command, g *globals, f *doctorFlags) (*doctor.Report, error) {
	if f.output != "text" && f.output != "json" {
		return nil, fmt.Errorf("-o %q: want text or json", f.output)
	}
	cfg, err := loadConfig(g.configPath)
	if err != nil {
		return nil, err
	}
	rep, err := doctor.Run(cmd.Context(), cfg, doctor.Options{Cluster: f.cluster, Root: f.root})
	if err != nil {
		return nil, err
	}
	out := cmd.OutOrStdout()
	if f.output == "json" {
		return rep, writeJSON(out, rep)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, c := range rep.Clusters {
		for _, r := range c.Checks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Grade, c.Name, r.ID, r.Reason)
		}
	}
	return rep, tw.Flush()
}

// doctorExit turns the worst grade into the exit code.
func doctorExit(rep *doctor.Report) error {
	if rep.Worst == doctor.Pass {
		return nil
	}
	counts := map[doctor.Grade]int{}
	for _, c := range rep.Clusters {
		for _, r := range c.Checks {
			counts[r.Grade]++
		}
	}
	code := 1
	if rep.Worst == doctor.Fail {
		code = 2
	}
	return exitError{code: code, msg: fmt.Sprintf("doctor: %d check(s) fail, %d warn", counts[doctor.Fail], counts[doctor.Warn])}
}
