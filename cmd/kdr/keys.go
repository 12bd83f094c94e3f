package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kdr-io/kdr/crypto"
)

func newKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the age keys backups are encrypted to",
	}
	var out string
	var protect bool
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
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("write identity: %w", err)
			}
			_, werr := f.Write(content)
			if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
				return fmt.Errorf("write identity %s: %w", out, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), recipient)
			return nil
		},
	}
	gen.Flags().StringVarP(&out, "out", "o", "", "file to write the identity to (must not exist)")
	gen.Flags().BoolVar(&protect, "protect", false, "encrypt the identity file with a passphrase (from KDR_IDENTITY_PASSPHRASE or asked twice)")
	cmd.AddCommand(gen)
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
