package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/restore"
	"github.com/kdr-io/kdr/runbooks"
)

func newRunbookCommand(g *globals) *cobra.Command {
	f := &restoreFlags{}
	var format, paper, out string
	var force bool
	cmd := &cobra.Command{
		Use:   "runbook --format md|pdf [--out FILE]",
		Short: "Print the restore runbook of a backup: inventory, every restore step with its commands, break glass",
		Long: `kdr runbook prints the restore plan of a backup (the same steps and commands
kdr restore apply runs) as a runbook to read or print: who to call, the hosts,
addresses, DNS records, subnets and certificate expiry dates recorded with the
backup, every step per node with a checkbox, and how to restore with only age,
zstd, tar and etcdutl. It takes the flags of kdr restore plan and reads only
the config and the target, so it works offline on the restore host with a
local or USB target. Print one after each change to the cluster and keep it
beside the machines.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			render, err := runbookRenderer(format)
			if err != nil {
				return err
			}
			if format == "pdf" && out == "" && isTerminal(cmd.OutOrStdout()) {
				return fmt.Errorf("--format pdf is binary: pass --out FILE or redirect standard output")
			}
			// Refuse before the plan is built: a refusal should not wait
			// on the target.
			if out != "" && !force {
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("--out %s exists: pass --force to replace it", out)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("--out: %w", err)
				}
			}
			pr, err := buildRestorePlan(cmd, g, f)
			if err != nil {
				return err
			}
			return runRunbook(cmd.OutOrStdout(), pr.plan, render, runbooks.Options{Paper: paper, Now: time.Now(), At: pr.at}, out, force)
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&format, "format", "md", "md (Markdown) or pdf")
	fl.StringVar(&paper, "paper", runbooks.PaperA4, "paper size of the PDF: A4 or Letter")
	fl.StringVar(&out, "out", "", "write to this file instead of standard output")
	fl.BoolVar(&force, "force", false, "replace the --out file if it exists")
	return cmd
}

type renderFunc func(io.Writer, *restore.Plan, runbooks.Options) error

func runbookRenderer(format string) (renderFunc, error) {
	switch format {
	case "md", "markdown":
		return runbooks.Markdown, nil
	case "pdf":
		return runbooks.PDF, nil
	}
	return nil, fmt.Errorf("--format %q: want md or pdf", format)
}

// runRunbook renders the whole runbook before writing any of it, so that a
// failed render leaves no half-written file behind.
func runRunbook(stdout io.Writer, plan *restore.Plan, render renderFunc, o runbooks.Options, out string, force bool) error {
	var buf bytes.Buffer
	if err := render(&buf, plan, o); err != nil {
		return err
	}
	if out == "" {
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("write runbook: %w", err)
		}
		return nil
	}
	if force {
		return replaceFile(out, buf.Bytes())
	}
	return createFile(out, buf.Bytes())
}

// createFile writes a new file; O_EXCL makes the refusal to overwrite
// hold even if the file appeared since it was checked.
func createFile(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("--out %s exists: pass --force to replace it", name)
	}
	if err != nil {
		return fmt.Errorf("write runbook: %w", err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(name)
		return fmt.Errorf("write runbook %s: %w", name, err)
	}
	return nil
}

// replaceFile writes a temporary file beside name and renames it over
// name, so the old runbook stays whole until the new one is.
func replaceFile(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write runbook: %w", err)
	}
	_, werr := tmp.Write(data)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write runbook %s: %w", name, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write runbook %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write runbook %s: %w", name, err)
	}
	return nil
}
