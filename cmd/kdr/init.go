package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/config"
)

func newInitCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented example config to start from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("write example config: %w (it is never overwritten)", err)
			}
			if _, err := f.Write(config.Example); err != nil {
				f.Close()
				return fmt.Errorf("write %s: %w", out, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: edit it, then run kdr backup\n", out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "kdr.yaml", "where to write the config")
	return cmd
}
