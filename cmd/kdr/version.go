package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/internal/version"
	"github.com/kdr-io/kdr/manifest"
)

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kdr version and the backup format it writes",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "kdr %s (backup format %d, %s %s/%s)\n",
				version.Version, manifest.FormatVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
