package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// globals are the flags every command shares.
type globals struct {
	configPath string
	logLevel   string
	logFormat  string
	// cpuProfile, when set, is where a CPU profile of the command goes:
	// how a slow backup or restore is looked into on the machine it is
	// slow on.
	cpuProfile string
	// accept names unsigned sets the operator vouches for:
	// ID@sha256:<manifest hash>.
	accept []string
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "kdr",
		Short: "Back up and restore a Kubernetes control plane: etcd, PKI, kubeconfigs, manifests, LB and DNS config",
		Long: `kdr takes encrypted backups of etcd and the files outside it that a control plane
needs, ships them to S3-compatible storage and offline media, and rebuilds the
control plane from them.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := root.PersistentFlags()
	f.StringVar(&g.configPath, "config", "", "config file (default ./kdr.yaml, then /etc/kdr/kdr.yaml)")
	f.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&g.logFormat, "log-format", "", "log format: text or json (default text on a terminal, json otherwise)")
	f.StringVar(&g.cpuProfile, "cpuprofile", "", "write a CPU profile of the command to this file")
	f.MarkHidden("cpuprofile")
	var profile *os.File
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.cpuProfile == "" {
			return nil
		}
		var err error
		if profile, err = os.Create(g.cpuProfile); err != nil {
			return err
		}
		return pprof.StartCPUProfile(profile)
	}
	root.PersistentPostRunE = func(*cobra.Command, []string) error {
		if profile == nil {
			return nil
		}
		pprof.StopCPUProfile()
		return profile.Close()
	}
	f.StringArrayVar(&g.accept, "accept-unauthenticated", nil, "use this one set without a trusted signature: ID@sha256:<sha256 of its manifest.json> (only when named by ID; never latest, prune or the agent)")
	root.AddCommand(
		newInitCommand(),
		newBackupCommand(g),
		newAgentCommand(g),
		newDrillCommand(g),
		newDoctorCommand(g),
		newListCommand(g),
		newVerifyCommand(g),
		newHistoryCommand(g),
		newPruneCommand(g),
		newPackCommand(g),
		newRestoreCommand(g),
		newRunbookCommand(g),
		newKeysCommand(g),
		newVersionCommand(),
	)
	return root
}

// accepts reports whether --accept-unauthenticated names the set id.
func (g *globals) accepts(id string) bool {
	for _, a := range g.accept {
		if named, _, ok := strings.Cut(a, "@sha256:"); ok && named == id {
			return true
		}
	}
	return false
}

// exitError carries an exit code other than 1 (or a quiet exit).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// logger builds the slog logger the flags ask for, writing to w.
func (g *globals) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	format := g.logFormat
	if format == "" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// oneLine folds a (possibly joined) error onto one line for the terminal.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
