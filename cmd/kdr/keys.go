package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/crypto"
)

func newKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the age keys backups are encrypted to",
	}
	var out string
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Create an age identity (private key) and print its recipient (public key)",
		Long: `Create an age X25519 identity. The identity file is written 0600 and must
be kept offline with the operators; put only the printed recipient (age1...)
in the config. Configure two or more recipients so a lost key is not a lost backup.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out FILE is required: the identity is a secret and is not printed")
			}
			identity, recipient, err := crypto.GenerateIdentity()
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("write identity: %w", err)
			}
			_, werr := fmt.Fprintf(f, "# public key: %s\n%s\n", recipient, identity)
			if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
				return fmt.Errorf("write identity %s: %w", out, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), recipient)
			return nil
		},
	}
	gen.Flags().StringVarP(&out, "out", "o", "", "file to write the identity to (must not exist)")
	cmd.AddCommand(gen)
	return cmd
}
