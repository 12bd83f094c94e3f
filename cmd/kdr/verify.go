package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

type verifyFlags struct {
	cluster  string
	target   string
	identity string
}

func newVerifyCommand(g *globals) *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify [ID|latest]",
		Short: "Check that a backup is whole on every target",
		Long: `Check a backup set on every target (a USB copy can rot while the S3 copy is
fine). Without --identity: every object's stored size and sha256, the hash
chain of manifests, and the captured log after the set (each segment signed,
linked to the one before, without gap, its body's size and sha256). With --identity: also decrypt and check the plaintext
hashes, etcd's trailing hash, the state index and every revision of the log. Exits 1 when anything is
wrong, naming the target, the object and the reason.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := "latest"
			if len(args) == 1 {
				ref = args[0]
			}
			return runVerify(cmd, g, f, ref)
		},
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "only this cluster")
	cmd.Flags().StringVar(&f.target, "target", "", "only this target")
	cmd.Flags().StringVarP(&f.identity, "identity", "i", "", "age identity file to decrypt with (passphrase from KDR_IDENTITY_PASSPHRASE or the terminal)")
	return cmd
}

func runVerify(cmd *cobra.Command, g *globals, f *verifyFlags, ref string) error {
	ctx := cmd.Context()
	env, err := g.env(ctx, f.target, nil)
	if err != nil {
		return err
	}
	clusters, err := fromconfig.Clusters(env.Config, f.cluster)
	if err != nil {
		return err
	}
	var ids []age.Identity
	if f.identity != "" {
		if ids, err = crypto.LoadIdentities(f.identity, passphrase); err != nil {
			return err
		}
	}
	targets := env.Targets
	out := cmd.OutOrStdout()
	bad, matched := 0, 0
	fail := func(format string, args ...any) {
		bad++
		fmt.Fprintf(out, "FAILED  "+format+"\n", args...)
	}
	for _, c := range clusters {
		id, err := catalog.ResolveIn(ctx, targets, env.Trust, c.Name, ref)
		if err != nil {
			// A prefix of another cluster's backup is no problem of this one.
			if len(clusters) > 1 && errors.Is(err, catalog.ErrUnknownBackup) {
				continue
			}
			fail("%s: %v", c.Name, oneLine(err))
			continue
		}
		if manifest.ValidID(ref) && len(clusters) > 1 && !presentAnywhere(ctx, targets, c.Name, id) {
			continue
		}
		matched++
		for _, t := range targets {
			opts := catalog.VerifyOptions{Identities: ids, Trust: env.Trust}
			// A set the operator accepted by the hash of its manifest is
			// checked against that manifest, as a restore of it would be;
			// it has no place in the hash chain of the trusted sets.
			if g.accepts(id) {
				if m, _, err := catalog.LoadNamed(ctx, t, env.Trust, c.Name, id); err == nil {
					opts.Manifest = m
				}
			}
			rep := catalog.Verify(ctx, t, c.Name, id, opts)
			if rep.OK() {
				fmt.Fprintf(out, "ok      %s %s on %s (%d checks)\n", c.Name, id, t.Name(), len(rep.Checked))
			}
			for _, p := range rep.Problems {
				fail("%s %s: target %s: %s: %s", c.Name, id, t.Name(), p.Object, p.Reason)
			}
			lrep := catalog.VerifyLog(ctx, t, env.Trust, c.Name, id, ids)
			for _, line := range lrep.Checked {
				fmt.Fprintf(out, "ok      %s %s on %s: %s\n", c.Name, id, t.Name(), line)
			}
			for _, p := range lrep.Problems {
				fail("%s %s: target %s: %s: %s", c.Name, id, t.Name(), p.Object, p.Reason)
			}
			// The whole chain, so a deleted or swapped older backup is seen
			// too; the chosen set's own link was checked above.
			for _, p := range catalog.VerifyChain(ctx, t, env.Trust, c.Name) {
				switch {
				case p.ID == id:
				case errors.Is(p, catalog.ErrForeign):
					// Said, not failed: anyone who can write to the target
					// could otherwise keep every verification failing.
					fmt.Fprintf(out, "foreign %s %s: target %s: %s\n", c.Name, p.ID, t.Name(), p.Reason)
				default:
					fail("%s %s: target %s: hash chain: %s", c.Name, p.ID, t.Name(), p.Reason)
				}
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if matched == 0 && bad == 0 {
		return fmt.Errorf("no backup %q in any cluster (kdr list shows them)", ref)
	}
	if bad > 0 {
		return exitError{code: 1, msg: fmt.Sprintf("verify found %d problem(s)", bad)}
	}
	return nil
}

// presentAnywhere reports whether any target holds an object of the set.
func presentAnywhere(ctx context.Context, targets []storage.Target, cluster, id string) bool {
	errFound := errors.New("found")
	for _, t := range targets {
		err := t.List(ctx, manifest.SetPrefix(cluster, id), func(storage.ObjectInfo) error { return errFound })
		if errors.Is(err, errFound) {
			return true
		}
	}
	return false
}

// passphrase asks for an identity's passphrase: from the environment for
// scripts, else from the terminal without echo.
func passphrase() ([]byte, error) {
	if p, ok := os.LookupEnv("KDR_IDENTITY_PASSPHRASE"); ok {
		return []byte(p), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, errors.New("the identity is passphrase-protected: set KDR_IDENTITY_PASSPHRASE or run on a terminal")
	}
	fmt.Fprint(os.Stderr, "passphrase for the identity: ")
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	return p, err
}
