package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/drill"
)

func newDrillCommand(g *globals) *cobra.Command {
	var cluster, target, backup, identity, sandbox, output string
	var noStore bool
	cmd := &cobra.Command{
		Use:   "drill [--backup ID|latest|random] --identity FILE",
		Short: "Restore a backup into a sandbox, prove it whole, measure RTO and RPO",
		Long: `kdr drill runs the restore plan of a backup (the steps kdr restore apply
runs) into a temporary sandbox: every etcd member the source cluster had,
started inside this process on free loopback ports. It checks quorum, the
revision, HashKV against the one recorded at backup time, the key count, a
sample of keys against the live cluster when it answers (drift is reported,
not failed), every certificate chain and key and every kubeconfig. It
measures RTO (start to healthy etcd) and RPO (age of the restored data),
stores the report (JSON, Markdown, PDF) beside the backups on the target,
and removes the sandbox, also when interrupted. Exit status 1 when a check
failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if identity == "" {
				return fmt.Errorf("--identity is required: the age identity file that decrypts the backup")
			}
			ids, err := crypto.LoadIdentities(identity, passphrase)
			if err != nil {
				return err
			}
			env, err := g.env(ctx, target, log)
			if err != nil {
				return err
			}
			rep, err := env.Drill(ctx, action.DrillOptions{
				Ref: action.Ref{Cluster: cluster, Target: target, Backup: backup}, Identities: ids, Sandbox: sandbox, NoStore: noStore,
			})
			if err != nil {
				return err
			}
			if err := printDrill(cmd.OutOrStdout(), rep, output); err != nil {
				return err
			}
			if rep.Result == drill.Fail {
				return exitError{code: 1, msg: "drill failed: " + strings.Join(rep.Failures(), "; ")}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cluster, "cluster", "", "the cluster to drill (needed when the config has several)")
	fl.StringVar(&target, "target", "", "the target to restore from (default the first)")
	fl.StringVar(&backup, "backup", "latest", "the backup: an ID, latest, or random")
	fl.StringVarP(&identity, "identity", "i", "", "age identity file that decrypts the backup")
	fl.StringVar(&sandbox, "sandbox", "", "directory the sandbox is made in (default the system's temp directory)")
	fl.StringVarP(&output, "output", "o", "text", "text, json or md")
	fl.BoolVar(&noStore, "no-store", false, "do not store the report on the target")
	return cmd
}

func printDrill(w io.Writer, rep *drill.Report, output string) error {
	switch output {
	case "json":
		return writeJSON(w, rep)
	case "md":
		return drill.Markdown(w, rep)
	case "text":
	default:
		return fmt.Errorf("-o %q: want text, json or md", output)
	}
	fmt.Fprintf(w, "drill %s of backup %s: %s\n", rep.ID, rep.Backup, strings.ToUpper(string(rep.Result)))
	fmt.Fprintf(w, "RTO %.1f s (start to healthy etcd), RPO %s (age of the restored data), %d member(s), %d keys\n",
		rep.RTOSeconds, (time.Duration(rep.RPOSeconds) * time.Second).Round(time.Second), rep.Members, rep.Keys)
	for _, c := range rep.Checks {
		fmt.Fprintf(w, "%-5s %-18s %s: %s\n", c.Grade, c.ID, c.Subject, c.Reason)
	}
	return nil
}
