// Command testsum reads `go test -json` on stdin and prints what a plain
// `go test` prints, each package's ok or FAIL line and the whole output of
// every failed test, then the last lines each failed test printed from its
// test files (a long run's log is often read from its end only), then how
// many top-level tests of each package passed, failed and were skipped. CI
// pipes the whole run through it:
//
//	set -o pipefail; go test -count=1 -p 2 -json ./... | go run ./hack/testsum -require-all ./e2e
//
// The JSON stream is what lets CI check more than go test's exit status:
// -require-all PKG lists PKG's Test functions with `go test -list` after
// the run and fails unless each one passed, so a test that silently
// stopped running (a build tag, a rename, a t.Skip) fails CI too.
//
// It prints as the events come, since a run lasts many minutes, and keeps
// at most the last MiB of each running test's output.
//
// It exits 1 if a test or a package failed, a package did not build, a
// -require-all check failed, or stdin held no test events.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kdr-io/kdr/hack/internal/cli"
)

// maxOutput bounds the output kept for one test, or for one package's own
// lines, so that a test logging without end cannot exhaust memory.
const maxOutput = 1 << 20

func main() {
	// An interrupt reaches go test too: keep reading until it exits, so the
	// run's summary is still printed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, goCommand(""))
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(1)
	}
}

// run parses args, summarises the test2json stream read from stdin onto
// stdout and runs the -require-all checks with goCmd. Its error names
// every reason the run failed, on one line.
func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer, goCmd goRunner) error {
	var required []string
	fl := flag.NewFlagSet("testsum", flag.ContinueOnError)
	fl.Func("require-all", "package (import path or ./dir, as given to go test) whose every Test must pass (repeated)", func(s string) error {
		if s == "" {
			return errors.New("want a package")
		}
		required = append(required, s)
		return nil
	})
	if err := cli.Parse(fl, args, stdout); err != nil {
		return err
	}

	s := &summary{w: stdout, pkgs: map[string]*pkgResult{}}
	readErr := s.read(stdin)
	problems := s.finish()
	if readErr != nil {
		problems = append(problems, fmt.Sprintf("reading stdin: %v", readErr))
	}
	for _, pattern := range required {
		if err := s.requireAll(ctx, goCmd, pattern); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// event is one line of test2json (go doc cmd/test2json).
type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64 // seconds
	Output  string
	// ImportPath is set on build-output and build-fail events (Go 1.24+),
	// which carry no Package.
	ImportPath string
	// FailedBuild is set on a package's fail when the package, or one it
	// imports, did not build.
	FailedBuild string
}

// summary follows one go test run, event by event.
type summary struct {
	w     io.Writer
	pkgs  map[string]*pkgResult
	order []string // package names in the order they first appeared

	events int
	// textFails counts FAIL lines outside the JSON events: go test prints
	// its own build and setup failures that way in some versions.
	textFails   int
	first, last time.Time // earliest and latest event times
	// said holds, per failed top-level test, its last lines from a
	// _test.go file: printed again beside the table, since a long run's
	// log is often read from its end only.
	said []string
}

// pkgResult is what one package did.
type pkgResult struct {
	action      string // pass, fail or skip; "" until the package ends
	elapsed     time.Duration
	failedBuild bool
	noResult    bool // the input ended before the package did

	out     tailBuffer             // the package's own output, not a test's
	running map[string]*tailBuffer // output of tests that started and have not ended
	tests   map[string]string      // top-level test → pass, fail or skip
}

// read hands each line of r to s.line. A line longer than the buffer
// cannot be a test2json event, whose output is cut into chunks of a few
// KiB, so it is copied out as it is, piece by piece.
func (s *summary) read(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	long := false
	for {
		line, err := br.ReadSlice('\n')
		if long || errors.Is(err, bufio.ErrBufferFull) {
			s.w.Write(line)
			long = errors.Is(err, bufio.ErrBufferFull)
		} else if len(line) > 0 {
			s.line(line)
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil && !errors.Is(err, bufio.ErrBufferFull):
			return err
		}
	}
}

// line handles one line of input: a test2json event, or text that go test
// printed itself, which is copied out unchanged.
func (s *summary) line(b []byte) {
	b = bytes.TrimRight(b, "\r\n")
	var e event
	if err := json.Unmarshal(b, &e); err != nil || e.Action == "" {
		fmt.Fprintf(s.w, "%s\n", b)
		if string(b) == "FAIL" || bytes.HasPrefix(b, []byte("FAIL\t")) || bytes.HasPrefix(b, []byte("FAIL ")) {
			s.textFails++
		}
		return
	}
	s.events++
	if !e.Time.IsZero() {
		if s.first.IsZero() || e.Time.Before(s.first) {
			s.first = e.Time
		}
		if e.Time.After(s.last) {
			s.last = e.Time
		}
	}
	switch {
	case e.Action == "build-output":
		// The compiler's messages, printed as go test prints them.
		io.WriteString(s.w, e.Output)
	case e.Action == "build-fail":
		// The package's own fail event, with FailedBuild, follows.
	case e.Package == "":
		io.WriteString(s.w, e.Output)
	case e.Test == "":
		s.packageEvent(e)
	default:
		s.testEvent(s.pkg(e.Package), e)
	}
}

// pkg returns the result of package name, adding it if new.
func (s *summary) pkg(name string) *pkgResult {
	p := s.pkgs[name]
	if p == nil {
		p = &pkgResult{
			out:     tailBuffer{max: maxOutput},
			running: map[string]*tailBuffer{},
			tests:   map[string]string{},
		}
		s.pkgs[name] = p
		s.order = append(s.order, name)
	}
	return p
}

func (s *summary) packageEvent(e event) {
	p := s.pkg(e.Package)
	switch e.Action {
	case "output":
		p.out.WriteString(e.Output)
	case "pass", "fail", "skip":
		p.action = e.Action
		p.elapsed = time.Duration(e.Elapsed * float64(time.Second))
		p.failedBuild = e.FailedBuild != ""
		s.endPackage(e.Package, p)
	}
}

// testEvent buffers a test's output until the test ends, then prints it
// if the test failed, as go test does without -v.
func (s *summary) testEvent(p *pkgResult, e event) {
	topLevel := !strings.Contains(e.Test, "/")
	switch e.Action {
	case "run":
		p.running[e.Test] = &tailBuffer{max: maxOutput}
	case "output":
		if b := p.running[e.Test]; b != nil {
			b.WriteString(e.Output)
		} else {
			// Output of a test that has ended, such as "Log in goroutine
			// after TestX has completed": the package's, which then fails.
			p.out.WriteString(e.Output)
		}
	case "pass", "fail", "skip":
		b := p.running[e.Test]
		delete(p.running, e.Test)
		if topLevel {
			p.record(e.Test, e.Action)
		}
		if e.Action != "fail" || b == nil {
			return
		}
		// A failed subtest's output goes into its parent's, which prints
		// it in place when the parent fails in turn.
		if parent := p.parent(e.Test); !topLevel && parent != nil {
			parent.WriteString(b.String())
			return
		}
		out := b.String()
		io.WriteString(s.w, out)
		s.remember(e.Package, e.Test, out)
	}
}

// testLine matches a line a test printed through t.Log, t.Error or
// t.Fatal from a test file; helpers marked with t.Helper report their
// caller's line, and testing's own cleanup logs from helpers' files are
// left out.
var testLine = regexp.MustCompile(`^\s+[\w.-]+_test\.go:\d+: \S`)

// saidLines is how many of a failed test's last lines remember keeps, and
// saidWidth how much of each.
const (
	saidLines = 3
	saidWidth = 300
)

// remember keeps the last lines a failed test printed from its test files.
func (s *summary) remember(pkg, test, out string) {
	var lines []string
	for line := range strings.Lines(out) {
		if testLine.MatchString(line) {
			line = strings.TrimSpace(line)
			if len(line) > saidWidth {
				line = line[:saidWidth] + "…"
			}
			lines = append(lines, line)
		}
	}
	for _, line := range lines[max(0, len(lines)-saidLines):] {
		s.said = append(s.said, fmt.Sprintf("%s %s: %s", pkg, test, line))
	}
}

// record keeps a top-level test's result; with -count above 1 a test runs
// several times, and one failure is enough.
func (p *pkgResult) record(test, action string) {
	if p.tests[test] != "fail" {
		p.tests[test] = action
	}
}

// parent returns the output of the closest running ancestor of subtest
// name, or nil. A subtest's own name may hold a slash (t.Run("a/b")), so
// every shorter prefix is tried.
func (p *pkgResult) parent(name string) *tailBuffer {
	for i := strings.LastIndexByte(name, '/'); i > 0; i = strings.LastIndexByte(name[:i], '/') {
		if b := p.running[name[:i]]; b != nil {
			return b
		}
	}
	return nil
}

// endPackage prints what go test prints when a package ends: all of its
// output if it failed, else only its last line (ok or "?").
func (s *summary) endPackage(name string, p *pkgResult) {
	// Tests still running when their package ends were cut short by a
	// timeout's panic, a crash or os.Exit: test2json never ends them, and
	// their output is all that shows what happened. Sorted, a parent comes
	// before its subtests.
	if unfinished := slices.Sorted(maps.Keys(p.running)); len(unfinished) > 0 {
		for _, test := range unfinished {
			out := p.running[test].String()
			io.WriteString(s.w, out)
			// A running subtest's lines are in its own output, not yet
			// in its parent's: each is remembered under its own name.
			s.remember(name, test, out)
			if !strings.Contains(test, "/") {
				p.record(test, "fail")
			}
		}
		fmt.Fprintf(s.w, "testsum: %s: did not finish: %s\n", name, strings.Join(unfinished, ", "))
		clear(p.running)
	}
	out := p.out.String()
	if p.action != "fail" {
		out = lastLine(out)
	}
	io.WriteString(s.w, out)
	p.out = tailBuffer{max: maxOutput}
}

// lastLine returns the last line of s, with its newline.
func lastLine(s string) string {
	return s[strings.LastIndexByte(strings.TrimSuffix(s, "\n"), '\n')+1:]
}

// finish ends the packages the input left unfinished, prints the summary
// table and returns why the run failed, if it did.
func (s *summary) finish() []string {
	if s.events == 0 {
		return []string{"no test events on stdin"}
	}
	for _, name := range s.order {
		if p := s.pkgs[name]; p.action == "" {
			p.action, p.noResult = "fail", true
			fmt.Fprintf(s.w, "testsum: %s: the input ended before the package's result\n", name)
			s.endPackage(name, p)
		}
	}

	if len(s.said) > 0 {
		fmt.Fprintf(s.w, "\ntestsum: the failed tests' last lines from their test files\n")
		for _, line := range s.said {
			fmt.Fprintln(s.w, line)
		}
	}
	var passed, failed, skipped, failedPkgs, unbuilt int
	tw := tabwriter.NewWriter(s.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\ntestsum: top-level tests")
	for _, name := range s.order {
		p := s.pkgs[name]
		if p.action == "fail" {
			failedPkgs++
		}
		if p.action == "skip" && len(p.tests) == 0 {
			continue // no test files: go test's "?" line said so
		}
		status := "ok"
		if p.action == "fail" {
			status = "FAIL"
		}
		if p.failedBuild {
			unbuilt++
			fmt.Fprintf(tw, "%s\t%s\tbuild failed\n", status, name)
			continue
		}
		var n [3]int // passed, failed, skipped
		for _, action := range p.tests {
			switch action {
			case "pass":
				n[0]++
			case "fail":
				n[1]++
			case "skip":
				n[2]++
			}
		}
		passed, failed, skipped = passed+n[0], failed+n[1], skipped+n[2]
		took := duration(p.elapsed)
		if p.noResult {
			took = "no result"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d passed, %d failed, %d skipped\t%s\n", status, name, n[0], n[1], n[2], took)
	}
	fmt.Fprintf(tw, "\ttotal\t%d passed, %d failed, %d skipped\t%s wall time\n", passed, failed, skipped, duration(s.last.Sub(s.first)))
	tw.Flush()

	var problems []string
	if failed > 0 {
		problems = append(problems, plural(failed, "test")+" failed")
	}
	if failedPkgs > 0 {
		p := plural(failedPkgs, "package") + " failed"
		if unbuilt > 0 {
			p += fmt.Sprintf(" (%d did not build)", unbuilt)
		}
		problems = append(problems, p)
	}
	if s.textFails > 0 {
		problems = append(problems, fmt.Sprintf("go test printed %s outside its JSON events", plural(s.textFails, "FAIL line")))
	}
	return problems
}

// duration prints d as go test does below a minute, and rounded to the
// second above.
func duration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// goRunner runs the go command with args and returns its standard output;
// tests replace it so that they need no real package.
type goRunner func(ctx context.Context, args ...string) ([]byte, error)

// goCommand runs the real go command in dir ("" for the current one).
func goCommand(dir string) goRunner {
	return func(ctx context.Context, args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("go %s: %w%s", strings.Join(args, " "), err, firstMessage(stderr.String()))
		}
		return out, nil
	}
}

// firstMessage returns ": " and the first line of a go command's stderr
// that is not a "# package" heading, or "" if there is none.
func firstMessage(stderr string) string {
	for line := range strings.Lines(stderr) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return ": " + line
		}
	}
	return ""
}

// requireAll checks that every top-level Test function of the packages
// that pattern names passed in the input. The tests come from go test
// -list, not from the input, so that one that never ran is missed. It
// prints a line for each test that did not pass.
func (s *summary) requireAll(ctx context.Context, goCmd goRunner, pattern string) error {
	out, err := goCmd(ctx, "list", pattern)
	if err != nil {
		return fmt.Errorf("require-all %s: %w", pattern, err)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) == 0 {
		return fmt.Errorf("require-all %s: go list found no package", pattern)
	}
	var listed, bad int
	for _, pkg := range pkgs {
		// -vet=off: vet is not what is checked here, and it costs time.
		out, err := goCmd(ctx, "test", "-list", ".*", "-vet=off", pkg)
		if err != nil {
			return fmt.Errorf("require-all %s: %w", pattern, err)
		}
		tests := testNames(out)
		// A check that finds nothing to check proves nothing.
		if len(tests) == 0 {
			return fmt.Errorf("require-all %s: go test -list found no tests in %s", pattern, pkg)
		}
		listed += len(tests)
		var results map[string]string
		if p := s.pkgs[pkg]; p != nil {
			results = p.tests
		}
		for _, test := range tests {
			var why string
			switch results[test] {
			case "pass":
				continue
			case "skip":
				why = "was skipped"
			case "fail":
				why = "failed"
			default:
				why = "did not run"
			}
			bad++
			fmt.Fprintf(s.w, "testsum: require-all %s: %s %s %s\n", pattern, pkg, test, why)
		}
	}
	if bad > 0 {
		return fmt.Errorf("require-all %s: %d of %s did not pass", pattern, bad, plural(listed, "test"))
	}
	return nil
}

// testNames returns the Test functions in go test -list's output, which
// also lists Example and Fuzz functions and ends with an "ok" line.
func testNames(out []byte) []string {
	var names []string
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "Test") && !strings.ContainsAny(line, " \t") {
			names = append(names, line)
		}
	}
	return names
}

// tailBuffer keeps the last max bytes written to it and counts the bytes
// it dropped before them.
type tailBuffer struct {
	max int
	buf []byte
	cut int64
}

func (b *tailBuffer) WriteString(s string) {
	b.buf = append(b.buf, s...)
	// Trimming only at twice the limit moves each byte a bounded number of
	// times however much is written.
	if len(b.buf) > 2*b.max {
		b.trim()
	}
}

// trim drops all but the last max bytes, and the rest of the line they
// start in when a later line begins within them.
func (b *tailBuffer) trim() {
	over := len(b.buf) - b.max
	if over <= 0 {
		return
	}
	// From over-1, so that a tail already starting a line is kept whole.
	if i := bytes.IndexByte(b.buf[over-1:], '\n'); i >= 0 && over+i < len(b.buf) {
		over += i
	}
	b.cut += int64(over)
	b.buf = b.buf[:copy(b.buf, b.buf[over:])]
}

// String returns the kept output, after a line saying how much was cut.
func (b *tailBuffer) String() string {
	b.trim()
	if b.cut == 0 {
		return string(b.buf)
	}
	return fmt.Sprintf("[testsum: %d bytes of output cut, the last %d follow]\n%s", b.cut, len(b.buf), b.buf)
}
