package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/restore"
	"github.com/kdr-io/kdr/storage"
)

// restoreFlags pick the backup and shape the plan; plan and apply share them.
type restoreFlags struct {
	cluster    string
	target     string
	backup     string
	before     string
	revision   int64
	at         string
	topology   string
	nodes      []string
	token      string
	apiURL     string
	bump       uint64
	dataDir    string
	kubeDir    string
	stagingDir string
	identity   string
	// ids are the identities loaded from identity, once: --at reads the
	// captured log with them before apply decrypts the backup.
	ids []age.Identity
}

func (f *restoreFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.cluster, "cluster", "", "cluster to restore (default: the only one in the config)")
	fl.StringVar(&f.target, "target", "", "target to fetch from (default: the first in the config)")
	fl.StringVar(&f.backup, "backup", "latest", "backup to restore: latest, an ID or a unique ID prefix")
	fl.StringVar(&f.before, "before", "", "restore the newest backup created before this time (RFC 3339)")
	fl.Int64Var(&f.revision, "revision", 0, "restore etcd to this revision: the newest backup at or before it, then its captured log replayed up to it (not with --backup or --before)")
	fl.StringVar(&f.at, "at", "", "restore etcd as it was at this time (RFC 3339): the last revision the captured log saw at or before it, read with --identity (not with --revision, --backup or --before)")
	fl.StringVar(&f.topology, "topology", restore.TopologyKubeadm, "kubeadm (stacked etcd, static pods) or systemd (external etcd)")
	fl.StringArrayVar(&f.nodes, "node-ip", nil, "a control-plane node as NAME=IP[,PEER_URL,CLIENT_URL]; repeat it, first member first (default: the backup's inventory)")
	fl.StringVar(&f.token, "token", "", "new etcd cluster token (default: kdr-<backup ID>)")
	fl.StringVar(&f.apiURL, "api-endpoint", "", "the restored cluster's API URL when it changes (kubeconfigs are pointed at it)")
	fl.Uint64Var(&f.bump, "bump-revision", restore.DefaultRevisionBump, "added to the restored etcd revision")
	fl.StringVar(&f.dataDir, "data-dir", "", "etcd data dir on every node (default: the one the backup's etcd manifest mounts or its etcd environment file sets, else /var/lib/etcd)")
	fl.StringVar(&f.kubeDir, "kubernetes-dir", "/etc/kubernetes", "Kubernetes config dir on every node")
	fl.StringVar(&f.stagingDir, "staging-dir", "/var/lib/kdr/restore", "where fetched objects and journals go")
	fl.StringVarP(&f.identity, "identity", "i", "", "age identity file that decrypts the backup (apply reads it; plan and runbook print its path; passphrase from KDR_IDENTITY_PASSPHRASE or the terminal)")
}

func newRestoreCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Rebuild a control plane from a backup",
		Long: `kdr restore plan prints the steps of a restore, node by node; kdr restore apply
--node NAME runs one node's steps with a journal, so an interrupted restore
resumes where it stopped. Run apply on every node of the plan.

--revision N restores etcd as it was at revision N: the newest backup at or
before N whose captured log reaches N, then that log replayed up to N (the
replay step). The restored etcd starts above the log's newest revision.

--at TIME restores etcd as it was at TIME: the last revision the agent saw at
or before TIME, read from the captured log with --identity, then restored as
--revision does. The plan prints that revision and the times the agent saw it
and the one after it, between which TIME lies.`,
	}
	cmd.AddCommand(newRestorePlanCommand(g), newRestoreApplyCommand(g))
	return cmd
}

func newRestorePlanCommand(g *globals) *cobra.Command {
	f := &restoreFlags{}
	var output string
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Print the restore plan: every step of every node, in order",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pr, err := buildRestorePlan(cmd, g, f)
			if err != nil {
				return err
			}
			return printPlan(cmd, pr, output)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newRestoreApplyCommand(g *globals) *cobra.Command {
	f := &restoreFlags{}
	var node, root, fromStep, until, apiServer string
	var reset, dryRun bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "apply --node NAME --identity FILE",
		Short: "Run one node's restore steps, resuming from its journal",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" {
				return fmt.Errorf("--node is required: the name of this node in the plan")
			}
			pr, err := buildRestorePlan(cmd, g, f)
			if err != nil {
				return err
			}
			env := &restore.Env{Plan: pr.plan, Root: root, Target: pr.target, WaitTimeout: wait, APIServer: apiServer}
			if env.Log, err = g.logger(cmd.ErrOrStderr()); err != nil {
				return err
			}
			if !dryRun {
				if env.Identities, err = f.identities("--identity is required: the age identity file that decrypts the backup"); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if pr.at != nil {
				fmt.Fprintf(out, "point in time: %s\n", pr.at)
			}
			return restore.Apply(cmd.Context(), env, node, restore.ApplyOptions{
				FromStep: fromStep, Until: until, Reset: reset, DryRun: dryRun,
				Progress: func(s restore.Step, state string, err error) {
					if err != nil {
						fmt.Fprintf(out, "%-13s %s: %s: %v\n", state, s.ID, s.Title, err)
						return
					}
					fmt.Fprintf(out, "%-13s %s: %s\n", state, s.ID, s.Title)
				},
			})
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&node, "node", "", "this node's name in the plan")
	fl.StringVar(&root, "root", "/", "treat this directory as the filesystem root (drills and tests)")
	fl.StringVar(&fromStep, "from-step", "", "start again at this step, forgetting the journal from it on")
	fl.StringVar(&until, "until", "", "stop after this step (do the rest by hand, or resume later)")
	fl.BoolVar(&reset, "reset", false, "forget the journal and start over (nothing already moved aside is lost)")
	fl.BoolVar(&dryRun, "dry-run", false, "print the steps that would run and change nothing")
	fl.DurationVar(&wait, "wait", 5*time.Minute, "how long a check waits for etcd or the API server")
	fl.StringVar(&apiServer, "api-server", "", "this node's API server URL for the readiness check (default https://<node IP>:6443)")
	return cmd
}

// identities loads the --identity file once; why says what needs it.
func (f *restoreFlags) identities(why string) ([]age.Identity, error) {
	if f.ids != nil {
		return f.ids, nil
	}
	if f.identity == "" {
		return nil, errors.New(why)
	}
	ids, err := crypto.LoadIdentities(f.identity, passphrase)
	if err != nil {
		return nil, err
	}
	f.ids = ids
	return ids, nil
}

// plannedRestore is a plan and what it was made from.
type plannedRestore struct {
	plan   *restore.Plan
	target storage.Target
	// at, with --at, is the revision the time resolved to and the seen
	// times that bound it.
	at *catalog.PointInTime
}

// buildRestorePlan resolves the backup on the target and builds the plan.
func buildRestorePlan(cmd *cobra.Command, g *globals, f *restoreFlags) (*plannedRestore, error) {
	b, err := resolveBackup(cmd, g, f)
	if err != nil {
		return nil, err
	}
	nodes, err := parseNodes(f.nodes)
	if err != nil {
		return nil, err
	}
	o := restore.Options{
		Target: b.TargetConfig.Name, Topology: f.topology, Nodes: nodes, Token: f.token, APIEndpoint: f.apiURL, RevisionBump: f.bump,
		EtcdDataDir: f.dataDir, KubernetesDir: f.kubeDir, StagingDir: f.stagingDir, ConfigFile: g.configPath,
		IdentityFile: f.identity, AllowedSigners: b.env.Trust.AllowedSigners(),
	}
	// An external etcd's client credentials are the ones kdr reaches it
	// with, restored from the state sets that hold them.
	if f.topology == restore.TopologySystemd {
		for _, c := range b.env.Config.Clusters {
			if c.Name == b.Manifest.Cluster && c.Etcd.TLS != nil {
				o.EtcdClientTLS = &restore.ClientTLS{CA: c.Etcd.TLS.CA, Cert: c.Etcd.TLS.Cert, Key: c.Etcd.TLS.Key}
			}
		}
	}
	pr := &plannedRestore{target: b.Target, at: b.at}
	if b.Chain != nil {
		pr.plan, err = restore.BuildPlanAt(b.Chain, b.Revision, fromconfig.Source(b.TargetConfig), o)
	} else {
		pr.plan, err = restore.BuildPlan(b.Manifest, fromconfig.Source(b.TargetConfig), o)
	}
	if err != nil {
		return nil, err
	}
	return pr, nil
}

// resolvedBackup is a backup found on a configured target.
type resolvedBackup struct {
	env *action.Env
	*action.Resolved
	at *catalog.PointInTime
}

// resolveBackup finds the backup a restore or runbook works on: an ID,
// latest, the newest taken before a time, among the trusted sets, or the
// one whose captured log reaches a revision, given or found by time.
func resolveBackup(cmd *cobra.Command, g *globals, f *restoreFlags) (*resolvedBackup, error) {
	ctx := cmd.Context()
	ref := action.Ref{Cluster: f.cluster, Target: f.target, Backup: f.backup, Revision: f.revision}
	if (f.revision != 0 || f.at != "") && !cmd.Flags().Changed("backup") {
		ref.Backup = "" // --revision and --at pick the backup
	}
	env, err := g.env(ctx, ref.Target, nil)
	if err != nil {
		return nil, err
	}
	if f.before != "" {
		if ref.Before, err = parseTime("--before", f.before); err != nil {
			return nil, err
		}
	}
	b := &resolvedBackup{env: env}
	if f.at != "" {
		at, err := parseTime("--at", f.at)
		if err != nil {
			return nil, err
		}
		ids, err := f.identities("--at needs --identity: the times revisions were seen are inside the encrypted log")
		if err != nil {
			return nil, err
		}
		if ref, b.at, err = env.RevisionAt(ctx, ref, at, ids); err != nil {
			return nil, err
		}
	}
	if b.Resolved, err = env.Resolve(ctx, ref); err != nil {
		return nil, err
	}
	return b, nil
}

// parseTime reads a time flag: RFC 3339, with a fraction of a second when
// it matters (a seen time that kdr history printed).
func parseTime(flag, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want a time like 2026-11-24T20:00:00Z", flag, s)
	}
	return t, nil
}

// parseNodes reads NAME=IP[,PEER_URL,CLIENT_URL].
func parseNodes(specs []string) ([]restore.Node, error) {
	var nodes []restore.Node
	for _, s := range specs {
		name, rest, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("--node-ip %q: want NAME=IP or NAME=IP,PEER_URL,CLIENT_URL", s)
		}
		parts := strings.Split(rest, ",")
		n := restore.Node{Name: name, IP: parts[0]}
		switch len(parts) {
		case 1:
		case 3:
			n.PeerURL, n.ClientURL = parts[1], parts[2]
		default:
			return nil, fmt.Errorf("--node-ip %q: want NAME=IP or NAME=IP,PEER_URL,CLIENT_URL", s)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// planJSON is `kdr restore plan -o json`: the plan, and with --at the
// revision the time resolved to.
type planJSON struct {
	*restore.Plan
	At *catalog.PointInTime `json:"at,omitempty"`
}

func printPlan(cmd *cobra.Command, pr *plannedRestore, output string) error {
	out := cmd.OutOrStdout()
	p := pr.plan
	switch output {
	case "json":
		return writeJSON(out, planJSON{Plan: p, At: pr.at})
	case "text":
	default:
		return fmt.Errorf("-o %q: want text or json", output)
	}
	if r := p.Replay; p.ToRevision > 0 && r != nil {
		segs := "no segment (the set is at that revision)"
		if n := len(r.Segments); n > 0 {
			segs = fmt.Sprintf("%d segments (%d..%d)", n, p.Revision+1, p.ToRevision)
		}
		fmt.Fprintf(out, "Restore of %s to revision %d: full set %s (%s, revision %d) + %s, onto %s\n",
			p.Cluster, p.ToRevision, p.BackupID, p.Created.Format(time.RFC3339), p.Revision, segs, strings.Join(p.NodeNames(), ", "))
		proof := "no HashKV recorded at or before it: the replay is checked revision by revision only"
		if r.Proof != nil {
			proof = fmt.Sprintf("proved against the HashKV recorded at revision %d", r.Proof.Revision)
		}
		fmt.Fprintf(out, "The log reaches revision %d; the restored etcd starts at %d or above; %s\n", p.LogEnd, p.MinRevision(), proof)
		if pr.at != nil {
			fmt.Fprintf(out, "Point in time: %s\n", pr.at)
		}
	} else {
		fmt.Fprintf(out, "Restore of %s from backup %s (%s), revision %d, onto %s\n",
			p.Cluster, p.BackupID, p.Created.Format(time.RFC3339), p.Revision, strings.Join(p.NodeNames(), ", "))
	}
	for i, s := range p.Steps {
		mark := ""
		if s.Destructive {
			mark = " [changes the host]"
		}
		fmt.Fprintf(out, "\n%2d. %s on %s: %s%s\n", i+1, s.ID, s.Node, s.Title, mark)
		for _, c := range s.Commands {
			fmt.Fprintf(out, "      $ %s\n", c)
		}
		fmt.Fprintf(out, "      expect: %s\n", s.Expect)
	}
	return nil
}
