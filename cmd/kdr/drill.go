package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/drill"
)

func newDrillCommand(g *globals) *cobra.Command {
	var cluster, target, backup, revision, at, identity, sandbox, output string
	var noStore bool
	cmd := &cobra.Command{
		Use:   "drill [--backup ID|latest|random | --revision N|random | --at TIME] --identity FILE",
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
failed.

--revision N drills a restore to etcd revision N: the newest backup at or
before N, then its captured log replayed up to N, as kdr restore apply
--revision does; the drill also checks that the restored database is at N
and that the replay matched the HashKV recorded with the log, and reports
the replay's time and the revisions it applied. --revision random picks a
revision inside the newest captured log, from its backup's revision + 1 to
its end, and says which. --at TIME drills the revision a restore --at TIME
picks: the last the captured log saw at or before TIME.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ref := action.Ref{Cluster: cluster, Target: target, Backup: backup}
			if revision != "" {
				if ref.Revision, err = parseRevision(revision); err != nil {
					return err
				}
			}
			var when time.Time
			if at != "" {
				if when, err = parseTime("--at", at); err != nil {
					return err
				}
			}
			if (revision != "" || at != "") && !cmd.Flags().Changed("backup") {
				ref.Backup = "" // --revision and --at pick the backup
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
			var point *catalog.PointInTime
			if at != "" {
				if ref, point, err = env.RevisionAt(ctx, ref, when, ids); err != nil {
					return err
				}
			}
			rep, err := env.Drill(ctx, action.DrillOptions{Ref: ref, Identities: ids, Sandbox: sandbox, NoStore: noStore})
			if err != nil {
				return err
			}
			if err := printDrill(cmd.OutOrStdout(), rep, point, output); err != nil {
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
	fl.StringVar(&revision, "revision", "", "drill a restore to this etcd revision through the captured log, or random: one inside the newest log (not with --backup)")
	fl.StringVar(&at, "at", "", "drill a restore to etcd as it was at this time (RFC 3339): the last revision the captured log saw at or before it (not with --revision or --backup)")
	fl.StringVarP(&identity, "identity", "i", "", "age identity file that decrypts the backup")
	fl.StringVar(&sandbox, "sandbox", "", "directory the sandbox is made in (default the system's temp directory)")
	fl.StringVarP(&output, "output", "o", "text", "text, json or md")
	fl.BoolVar(&noStore, "no-store", false, "do not store the report on the target")
	return cmd
}

// parseRevision reads --revision of a drill: a revision, or random.
func parseRevision(s string) (int64, error) {
	if s == "random" {
		return action.RandomRevision, nil
	}
	rev, err := strconv.ParseInt(s, 10, 64)
	if err != nil || rev <= 0 {
		return 0, fmt.Errorf("--revision %q: want an etcd revision or random", s)
	}
	return rev, nil
}

// drillJSON is `kdr drill -o json`: the report, and with --at the
// revision the time resolved to.
type drillJSON struct {
	*drill.Report
	At *catalog.PointInTime `json:"at,omitempty"`
}

func printDrill(w io.Writer, rep *drill.Report, point *catalog.PointInTime, output string) error {
	switch output {
	case "json":
		return writeJSON(w, drillJSON{Report: rep, At: point})
	case "md":
		return drill.Markdown(w, rep)
	case "text":
	default:
		return fmt.Errorf("-o %q: want text, json or md", output)
	}
	if rp := rep.Replay; rp != nil {
		fmt.Fprintf(w, "drill %s of backup %s to revision %d: %s\n", rep.ID, rep.Backup, rp.Revision, strings.ToUpper(string(rep.Result)))
		fmt.Fprintf(w, "replay %.1f s: %d revisions from %d segment(s) after the snapshot's %d\n", rp.Seconds, rp.Applied, rp.Segments, rp.Base)
	} else if rep.Revision > 0 {
		fmt.Fprintf(w, "drill %s of backup %s to revision %d: %s\n", rep.ID, rep.Backup, rep.Revision, strings.ToUpper(string(rep.Result)))
	} else {
		fmt.Fprintf(w, "drill %s of backup %s: %s\n", rep.ID, rep.Backup, strings.ToUpper(string(rep.Result)))
	}
	if point != nil {
		fmt.Fprintf(w, "point in time: %s\n", point)
	}
	fmt.Fprintf(w, "RTO %.1f s (start to healthy etcd), RPO %s (age of the restored data), %d member(s), %d keys\n",
		rep.RTOSeconds, (time.Duration(rep.RPOSeconds) * time.Second).Round(time.Second), rep.Members, rep.Keys)
	for _, c := range rep.Checks {
		fmt.Fprintf(w, "%-5s %-18s %s: %s\n", c.Grade, c.ID, c.Subject, c.Reason)
	}
	return nil
}
