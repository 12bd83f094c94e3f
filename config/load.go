package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a config file. Load and Parse return one Error,
// or several joined with errors.Join, one per line of the message.
type Error struct {
	File string
	// Line is 1-based; 0 when the problem has no single place (a missing
	// top-level key, an empty file).
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// maxErrors bounds how many problems one load reports: past a few dozen,
// the file is not a kdr config and more lines do not help.
const maxErrors = 20

// Load reads and parses the config file at path; see Parse. A missing file
// gives an error wrapping fs.ErrNotExist, so a caller can try the next
// default location.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data strictly, expands ${VAR} references, reads ...File
// secrets, applies defaults and validates the result. name is the file
// name used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	root, err := parseYAML(name, data)
	if err != nil {
		return nil, err
	}
	d := &decoder{
		file:     name,
		lines:    map[string]int{},
		expanded: map[*yaml.Node]bool{},
		active:   map[*yaml.Node]bool{},
		budget:   maxNodes,
		lookup:   os.LookupEnv,
	}
	d.walk(root, reflect.TypeFor[Config](), "")
	if err := d.result(); err != nil {
		return nil, err
	}
	var cfg Config
	if err := root.Decode(&cfg); err != nil {
		// The walk checked every value, so this is not expected; keep
		// yaml's words, in this package's form.
		return nil, rewriteYAMLError(name, err)
	}
	d.readSecrets(&cfg)
	if err := d.result(); err != nil {
		return nil, err
	}
	applyDefaults(&cfg)
	resolveLocalPaths(&cfg, name)
	d.validate(&cfg)
	if err := d.result(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// resolveLocalPaths makes a relative local.path relative to the config
// file's directory, not to the working directory: the offline recovery
// kit's kdr.yaml says "..", the disk it lies on, wherever that disk is
// mounted when it is needed.
func resolveLocalPaths(cfg *Config, name string) {
	dir, err := filepath.Abs(filepath.Dir(name))
	if err != nil {
		return // no working directory: validation refuses the relative path
	}
	for i := range cfg.Targets {
		if l := cfg.Targets[i].Local; l != nil && l.Path != "" && !filepath.IsAbs(l.Path) {
			l.Path = filepath.Join(dir, l.Path)
		}
	}
}

// parseYAML returns the root mapping of the file's single document.
func parseYAML(name string, data []byte) (*yaml.Node, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Error{File: name, Msg: "the file is empty (`kdr init` writes a commented example)"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, &Error{File: name, Msg: "the file has no content, only comments (`kdr init` writes a commented example)"}
		}
		return nil, syntaxError(name, data, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == io.EOF:
	case err != nil:
		return nil, syntaxError(name, data, err)
	default:
		line := next.Line
		if len(next.Content) > 0 {
			line = next.Content[0].Line
		}
		return nil, &Error{File: name, Line: line, Msg: `a second YAML document ("---"): kdr.yaml holds exactly one`}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &Error{File: name, Msg: "not a YAML document"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: name, Line: root.Line, Msg: "the top level must be a mapping (clusters:, encryption:, targets:, ...), got " + describe(root)}
	}
	return root, nil
}

// syntaxError reports a YAML syntax error at the line of the mistake.
// yaml.v3 gives the line where the enclosing block starts, which can be far
// above it ("line 2: did not find expected key" for a bad indent on line
// 40). Text cut before the mistake parses, or fails differently; text cut
// after it fails the same way: a binary search finds the first line that
// makes it fail the same way.
func syntaxError(name string, data []byte, err error) error {
	e := rewriteYAMLError(name, err)
	var ye *Error
	if !errors.As(e, &ye) {
		return e
	}
	var ends []int // ends[i] is the offset just past line i+1
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	failsSame := func(lines int) bool {
		perr := parseAll(data[:ends[lines-1]])
		return perr != nil && perr.Error() == err.Error()
	}
	lo, hi := max(ye.Line, 1), len(ends) // the mistake is not above yaml's line
	if lo > hi || !failsSame(hi) {
		return ye
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if failsSame(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	ye.Line = lo
	return ye
}

// parseAll parses every document of data and returns the first error.
func parseAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

var yamlLineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// rewriteYAMLError turns yaml.v3's "yaml: line N: msg" (and the lines of a
// TypeError) into "file:N: msg".
func rewriteYAMLError(name string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var errs []error
	for _, m := range msgs {
		e := &Error{File: name, Msg: m}
		if sm := yamlLineRE.FindStringSubmatch(m); sm != nil {
			e.Line, _ = strconv.Atoi(sm[1])
			e.Msg = sm[2]
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// result returns the problems found so far, joined, or nil.
func (d *decoder) result() error {
	if len(d.errs) == 0 {
		return nil
	}
	errs := d.errs
	if len(errs) > maxErrors {
		errs = append(errs[:maxErrors:maxErrors], &Error{File: d.file, Msg: fmt.Sprintf("... and %d more problems", len(d.errs)-maxErrors)})
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// errorf records a problem at the line of path (or of its nearest
// ancestor that appears in the file).
func (d *decoder) errorf(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: d.lineOf(path), Msg: msg})
}

// errorAt records a problem at a known line.
func (d *decoder) errorAt(line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) lineOf(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}
