package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
)

func newKeysCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the age keys backups are encrypted to and the keys that sign them",
	}
	var out string
	var protect, signing bool
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Create an age identity (or, with --signing, a signing key) and print its public key",
		Long: `Create an age X25519 identity. The identity file is written 0600 and must
be kept offline with the operators; put only the printed recipient (age1...)
in the config. Configure two or more recipients so a lost key is not a lost backup.

With --signing, create an Ed25519 signing key instead (OpenSSH format, as
ssh-keygen -t ed25519 writes it): the writer of backups (the agent's own
Secret, or an operator running kdr backup) holds it in signing.keyFile, and
the printed public key goes in signing.trustedKeys of every config that
reads the backups.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out FILE is required: the key is a secret and is not printed")
			}
			if signing {
				if protect {
					return errors.New("--protect is for age identities: a signing key signs unattended")
				}
				priv, pub, err := manifest.GenerateSigningKey("kdr-signing")
				if err != nil {
					return err
				}
				if err := writeSecretFile(out, priv); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), pub)
				return nil
			}
			identity, recipient, err := crypto.GenerateIdentity()
			if err != nil {
				return err
			}
			content := []byte(fmt.Sprintf("# public key: %s\n%s\n", recipient, identity))
			if protect {
				pass, err := newPassphrase()
				if err != nil {
					return err
				}
				if content, err = crypto.ProtectIdentity(content, pass); err != nil {
					return err
				}
			}
			if err := writeSecretFile(out, content); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), recipient)
			return nil
		},
	}
	gen.Flags().StringVarP(&out, "out", "o", "", "file to write the identity to (must not exist)")
	gen.Flags().BoolVar(&protect, "protect", false, "encrypt the identity file with a passphrase (from KDR_IDENTITY_PASSPHRASE or asked twice)")
	gen.Flags().BoolVar(&signing, "signing", false, "make an Ed25519 signing key instead of an age identity")
	cmd.AddCommand(gen, newCountersignCommand(g))
	return cmd
}

// writeSecretFile writes a new 0600 file; an existing one is never
// overwritten.
func writeSecretFile(name string, content []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	_, werr := f.Write(content)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("write key %s: %w", name, err)
	}
	return nil
}

func newCountersignCommand(g *globals) *cobra.Command {
	var cluster, target string
	cmd := &cobra.Command{
		Use:   "countersign ID@sha256:HASH",
		Short: "Vouch for a set with the current signing key, so it stays restorable after its signer's key is removed",
		Long: `Countersign stores a signature of the set's manifest by signing.keyFile beside
it, on every target (or the one named) whose copy of the manifest has exactly
the given sha256. Use it before removing a rotated-out key from
signing.trustedKeys, for each older set that must stay restorable: the hash
is the operator's word that these are the bytes to trust (kdr list -o json
on a config that still trusts the old key, or sha256sum manifest.json).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			id, sum, ok := strings.Cut(args[0], "@sha256:")
			if !ok || !manifest.ValidID(id) || len(sum) != 64 {
				return fmt.Errorf("%q: want ID@sha256:<64 hex digits of sha256 of manifest.json>", args[0])
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			env, err := g.env(ctx, target, log)
			if err != nil {
				return err
			}
			name, err := action.OnlyCluster(env.Config, cluster)
			if err != nil {
				return err
			}
			signer, err := env.Signer()
			if err != nil {
				return err
			}
			done := 0
			for _, t := range env.Targets {
				key := manifest.Key(name, id, manifest.ManifestObject)
				raw, err := manifest.ReadBounded(ctx, t, key, 16<<20)
				if err != nil {
					log.Warn("target skipped", "target", t.Name(), "err", oneLine(err))
					continue
				}
				if manifest.Sum(raw) != strings.ToLower(sum) {
					log.Warn("target skipped: its manifest has another sha256 than the one given", "target", t.Name(), "sha256", manifest.Sum(raw))
					continue
				}
				if err := manifest.Countersign(ctx, t, key, raw, manifest.NamespaceManifest, signer); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "countersigned %s %s on %s with %s\n", name, id, t.Name(), signer.Fingerprint())
				done++
			}
			if done == 0 {
				return fmt.Errorf("no target holds %s with that manifest hash", id)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "the set's cluster (needed when the config has several)")
	cmd.Flags().StringVar(&target, "target", "", "only this target")
	return cmd
}

// newPassphrase reads a new passphrase: from the environment for scripts,
// else twice from the terminal.
func newPassphrase() ([]byte, error) {
	if p, ok := os.LookupEnv("KDR_IDENTITY_PASSPHRASE"); ok {
		if p == "" {
			return nil, errors.New("KDR_IDENTITY_PASSPHRASE is empty")
		}
		return []byte(p), nil
	}
	first, err := passphrase()
	if err != nil {
		return nil, err
	}
	fmt.Fprint(os.Stderr, "again: ")
	second, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, err
	}
	if len(first) == 0 || string(first) != string(second) {
		return nil, errors.New("the passphrases are empty or differ")
	}
	return first, nil
}
