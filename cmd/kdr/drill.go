package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/drill"
	"github.com/kdr-io/kdr/internal/fromconfig"
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
			b, err := resolveBackup(cmd, g, cluster, target, backup, "")
			if err != nil {
				return err
			}
			ids, err := crypto.LoadIdentities(identity, passphrase)
			if err != nil {
				return err
			}
			o := drill.Options{
				Manifest: b.manifest, Source: fromconfig.Source(b.targetConfig), Target: b.target, Identities: ids,
				Sandbox: cmp.Or(sandbox, b.config.Drill.Sandbox), KubeAPIServer: b.config.Drill.KubeAPIServer, Log: log,
			}
			if live := liveClient(ctx, b.config, b.manifest.Cluster); live != nil {
				defer live.Close()
				o.Live = live
			}
			rep, err := drill.Run(ctx, o)
			if err != nil {
				return fmt.Errorf("drill of %s: %w", b.manifest.ID, err)
			}
			if rep.History, err = drill.History(ctx, b.target, rep.Cluster); err != nil {
				log.Warn("earlier drills unreadable", "target", b.target.Name(), "err", err)
			}
			if !noStore {
				if err := drill.Store(ctx, b.target, rep); err != nil {
					return err
				}
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

// liveClient dials the cluster the backup came from, for the drift
// sample, or returns nil when it does not answer quickly.
func liveClient(ctx context.Context, cfg *config.Config, name string) *clientv3.Client {
	for _, c := range cfg.Clusters {
		if c.Name != name {
			continue
		}
		eo, err := fromconfig.Etcd(c)
		if err != nil {
			return nil
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: eo.Endpoints, TLS: eo.TLS, Username: eo.Username, Password: eo.Password,
			DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := cli.Status(sctx, eo.Endpoints[0]); err != nil {
			cli.Close()
			return nil
		}
		return cli
	}
	return nil
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
