package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/kdr-io/kdr/action"
	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/crypto"
)

type historyFlags struct {
	cluster  string
	target   string
	identity string
	from     string
	to       string
	output   string
}

func newHistoryCommand(g *globals) *cobra.Command {
	f := &historyFlags{}
	cmd := &cobra.Command{
		Use:   "history KEY|PREFIX/ --identity FILE",
		Short: "List every change of an etcd key, or of the keys under a prefix, in the captured log",
		Long: `kdr history reads the captured log on a target (every trusted chain, oldest
first, each revision once) and lists every revision that changed the key: its
revision, when the agent saw it, the key, what happened, the key's version and
the value's size. An argument ending in / is a prefix: every key under it.
Values are never printed.

What happened is created, updated, deleted, or deleting: an update of a
Kubernetes object marked for deletion (its deletionTimestamp set), whose
finalizers run, and a namespace's empties it, before its key is deleted.

--from and --to bound the scan, each an etcd revision or a time (RFC 3339).
The last line says how to undo the last delete listed: the revision to
restore to, before the delete or before the mark that led to it. --at TIME on
restore, runbook and drill picks a revision by time instead.`,
		Example: `  kdr history --identity operator.key /registry/namespaces/shop
  kdr history --identity operator.key /registry/configmaps/shop/ --from 2026-11-24T19:00:00Z`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runHistory(cmd, g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cluster, "cluster", "", "the cluster (needed when the config has several)")
	fl.StringVar(&f.target, "target", "", "the target to read the log from (default the first)")
	fl.StringVarP(&f.identity, "identity", "i", "", "age identity file that decrypts the captured log (passphrase from KDR_IDENTITY_PASSPHRASE or the terminal)")
	fl.StringVar(&f.from, "from", "", "start at this etcd revision or time (RFC 3339; default the log's start)")
	fl.StringVar(&f.to, "to", "", "stop at this etcd revision or time (RFC 3339; default the log's end)")
	fl.StringVarP(&f.output, "output", "o", "table", "table or json")
	return cmd
}

func runHistory(cmd *cobra.Command, g *globals, f *historyFlags, arg string) error {
	if f.output != "table" && f.output != "json" {
		return fmt.Errorf("-o %q: want table or json", f.output)
	}
	q := catalog.HistoryQuery{Key: arg, Prefix: strings.HasSuffix(arg, "/")}
	var err error
	if q.From, err = parseBound("--from", f.from); err != nil {
		return err
	}
	if q.To, err = parseBound("--to", f.to); err != nil {
		return err
	}
	if f.identity == "" {
		return errors.New("--identity is required: the age identity file that decrypts the captured log")
	}
	ids, err := crypto.LoadIdentities(f.identity, passphrase)
	if err != nil {
		return err
	}
	log, err := g.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	env, err := g.env(ctx, f.target, log)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	var p historyPrinter = &historyTable{w: out}
	if f.output == "json" {
		p = &historyJSON{w: out}
	}
	scan, err := env.History(ctx, action.HistoryOptions{Cluster: f.cluster, Target: f.target, Query: q, Identities: ids}, p.change)
	if err != nil {
		return err
	}
	if err := p.end(); err != nil {
		return err
	}
	if f.output == "json" {
		for _, gap := range scan.Gaps {
			log.Warn("revisions in no captured log on the target: their changes are not listed", "first", gap.First, "last", gap.Last)
		}
		return nil
	}
	for _, gap := range scan.Gaps {
		fmt.Fprintf(out, "revisions %d..%d are in no captured log on the target: their changes are not listed\n", gap.First, gap.Last)
	}
	if scan.Scanned.First == 0 {
		fmt.Fprintln(out, "the captured log holds no revision in that range")
		return nil
	}
	fmt.Fprintf(out, "%d change(s) in revisions %d..%d, seen %s to %s\n", scan.Changes, scan.Scanned.First, scan.Scanned.Last,
		seenStamp(scan.SeenFirst), seenStamp(scan.SeenLast))
	if u := scan.Undo; u != nil {
		marked := ""
		if u.Marked > 0 {
			marked = fmt.Sprintf(" (marked for deletion at revision %d: what it held may have gone since)", u.Marked)
		}
		fmt.Fprintf(out, "to undo the delete of %s at revision %d%s: kdr restore plan%s --revision %d\n",
			printableKey(u.Key), u.Deleted, marked, f.where(), u.Revision)
	}
	return nil
}

// where repeats the flags that chose the log, for a command to copy.
func (f *historyFlags) where() string {
	var s string
	if f.cluster != "" {
		s += " --cluster " + f.cluster
	}
	if f.target != "" {
		s += " --target " + f.target
	}
	return s
}

// parseBound reads --from or --to: an etcd revision, or a time.
func parseBound(flag, s string) (catalog.Bound, error) {
	if s == "" {
		return catalog.Bound{}, nil
	}
	if rev, err := strconv.ParseInt(s, 10, 64); err == nil && rev > 0 {
		return catalog.Bound{Revision: rev}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return catalog.Bound{Time: t}, nil
	}
	return catalog.Bound{}, fmt.Errorf("%s %q: want a positive etcd revision or a time like 2026-11-24T20:00:00Z", flag, s)
}

// historyPrinter writes changes as they are read: a history may be long,
// and is never held whole.
type historyPrinter interface {
	change(catalog.Change) error
	end() error
}

// historyTable prints fixed-width columns, the key last, so that rows
// align without being held back until the widest is known.
type historyTable struct {
	w    io.Writer
	rows int
}

const historyRow = "%-11v %-27s %-8s %7v %9v  %s\n"

func (p *historyTable) change(c catalog.Change) error {
	if p.rows == 0 {
		if _, err := fmt.Fprintf(p.w, historyRow, "REVISION", "SEEN", "WHAT", "VERSION", "SIZE", "KEY"); err != nil {
			return err
		}
	}
	p.rows++
	version, size := "-", "-"
	if c.What != catalog.ChangeDeleted {
		version, size = strconv.FormatInt(c.Version, 10), strconv.Itoa(c.ValueSize)
	}
	_, err := fmt.Fprintf(p.w, historyRow, c.Revision, seenStamp(c.Seen), c.What, version, size, printableKey(c.Key))
	return err
}

func (p *historyTable) end() error { return nil }

// historyJSON prints a JSON list, one object a change.
type historyJSON struct {
	w    io.Writer
	rows int
}

func (p *historyJSON) change(c catalog.Change) error {
	sep := ",\n  "
	if p.rows == 0 {
		sep = "[\n  "
	}
	p.rows++
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.w, "%s%s", sep, b)
	return err
}

func (p *historyJSON) end() error {
	end := "\n]\n"
	if p.rows == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(p.w, end)
	return err
}

func seenStamp(t time.Time) string { return t.UTC().Format(catalog.SeenLayout) }

// printableKey quotes a key that would not print as itself on a
// terminal: etcd keys are bytes, and anyone who can write one could
// otherwise send escape sequences to the operator's terminal.
func printableKey(k string) string {
	if !utf8.ValidString(k) || strings.IndexFunc(k, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(k)
	}
	return k
}
