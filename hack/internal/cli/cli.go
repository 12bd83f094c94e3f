// Package cli holds what the hack commands share of their command lines.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Parse parses args, which must all be flags. The flag package's own
// messages span lines; here an error is one line for the caller to print,
// and only -h prints the usage, to stdout (the error is then flag.ErrHelp).
func Parse(fl *flag.FlagSet, args []string, stdout io.Writer) error {
	fl.SetOutput(io.Discard)
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fl.SetOutput(stdout)
			fl.Usage()
		}
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	return nil
}
