package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The testdata/*.json streams were captured with go1.26 from
// `go test -count=1 -json` runs of a throwaway module example.com/fx:
//
//	pass.json     ./pass ./notests: TestA, TestB with two subtests, Example; a package without tests
//	fail.json     ./pass ./fail: in fail, TestOK passes, TestBad/bad fails, TestSkip skips
//	build.json    ./build ./pass: build does not compile
//	skip.json     ./e2e: TestBackup passes, TestRestore skips
//	timeout.json  -timeout 1s ./crash: TestSlow/inner sleeps past the timeout

// fixture returns the named testdata stream.
func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeGo answers go commands from outputs, keyed by their arguments joined
// with spaces, and fails any other the way the go command would.
func fakeGo(outputs map[string]string) goRunner {
	return func(_ context.Context, args ...string) ([]byte, error) {
		out, ok := outputs[strings.Join(args, " ")]
		if !ok {
			return nil, fmt.Errorf("go %s: exit status 1: no such package", strings.Join(args, " "))
		}
		return []byte(out), nil
	}
}

// e2eList is what go list and go test -list say of the e2e package of
// skip.json. -list also prints Example and Fuzz functions, not counted.
var e2eList = map[string]string{
	"list ./e2e": "example.com/fx/e2e\n",
	"test -list .* -vet=off example.com/fx/e2e": "TestBackup\nTestRestore\nExampleConfig\nFuzzParse\nok  \texample.com/fx/e2e\t0.004s\n",
}

func TestRun(t *testing.T) {
	t.Parallel()
	pass, fail, skip := fixture(t, "pass.json"), fixture(t, "fail.json"), fixture(t, "skip.json")
	for _, tc := range []struct {
		name    string
		args    []string
		input   string
		goOut   map[string]string // fake go command outputs
		err     string            // "" for success, else a part of the error
		want    []string          // parts of the output
		notWant []string
	}{
		{
			name:  "all pass",
			input: pass,
			want: []string{
				"?   \texample.com/fx/notests\t[no test files]\n",
				"ok  \texample.com/fx/pass\t0.015s\n",
				"ok  example.com/fx/pass  3 passed, 0 failed, 0 skipped  0.02s\n",
				"total                3 passed, 0 failed, 0 skipped  0.02s wall time\n",
			},
			// A passing test's output, and go test's -v framing, stay hidden.
			notWant: []string{"a-log-marker", "sub-log-marker", "=== RUN", "PASS\n", "notests  ", "last lines"},
		},
		{
			name:  "one test fails",
			input: fail,
			err:   "1 test failed; 1 package failed",
			want: []string{
				"=== RUN   TestBad\n    fail_test.go:8: before-subtests\n=== RUN   TestBad/bad\n    fail_test.go:10: bad-sub-marker\n--- FAIL: TestBad/bad (0.00s)\n--- FAIL: TestBad (0.00s)\n",
				"FAIL\nFAIL\texample.com/fx/fail\t0.022s\n",
				"ok    example.com/fx/pass  3 passed, 0 failed, 0 skipped",
				"FAIL  example.com/fx/fail  1 passed, 1 failed, 1 skipped  0.02s\n",
				// Said again beside the table, for a log read from its end.
				"testsum: the failed tests' last lines from their test files\n" +
					"example.com/fx/fail TestBad: fail_test.go:8: before-subtests\n" +
					"example.com/fx/fail TestBad: fail_test.go:10: bad-sub-marker\n\ntestsum: top-level tests",
			},
			notWant: []string{"ok-output-marker", "good-sub-marker", "skip-marker", "a-log-marker"},
		},
		{
			name:  "build failure",
			input: fixture(t, "build.json"),
			err:   "1 package failed (1 did not build)",
			want: []string{
				"# example.com/fx/build [example.com/fx/build.test]\nbuild/build.go:3:23: cannot use",
				"FAIL\texample.com/fx/build [build failed]\n",
				"FAIL  example.com/fx/build  build failed\n",
				"ok  \texample.com/fx/pass\t0.012s\n",
			},
		},
		{
			name:  "timeout leaves tests unfinished",
			input: fixture(t, "timeout.json"),
			err:   "1 test failed; 1 package failed",
			want: []string{
				"=== RUN   TestSlow\n    crash_test.go:11: waiting-marker\n=== RUN   TestSlow/inner\npanic: test timed out after 1s\n",
				"testsum: example.com/fx/crash: did not finish: TestSlow, TestSlow/inner\nFAIL\texample.com/fx/crash\t1.017s\n",
				"FAIL  example.com/fx/crash  1 passed, 1 failed, 0 skipped  1.02s\n",
				"example.com/fx/crash TestSlow: crash_test.go:11: waiting-marker\n",
			},
		},
		{
			name: "input ends before the package",
			// TestBackup has passed, TestRestore has just started.
			input: strings.Join(strings.SplitAfter(skip, "\n")[:8], ""),
			err:   "1 test failed; 1 package failed",
			want: []string{
				"testsum: example.com/fx/e2e: the input ended before the package's result\n=== RUN   TestRestore\ntestsum: example.com/fx/e2e: did not finish: TestRestore\n",
				"FAIL  example.com/fx/e2e  1 passed, 1 failed, 0 skipped  no result\n",
			},
			notWant: []string{"backup ran"},
		},
		{
			name:  "empty input",
			input: "",
			err:   "no test events on stdin",
		},
		{
			name:  "text only",
			input: "go: warning: \"./nothing/...\" matched no packages\n",
			err:   "no test events on stdin",
			want:  []string{"go: warning: \"./nothing/...\" matched no packages\n"},
		},
		{
			name:  "text lines pass through",
			input: "go: downloading example.com/dep v1.0.0\n" + pass + "not json {\n",
			want:  []string{"go: downloading example.com/dep v1.0.0\n?   \texample.com/fx/notests", "not json {\n"},
		},
		{
			name:  "FAIL line outside JSON",
			input: "FAIL\texample.com/fx/setup [setup failed]\n" + pass,
			err:   "go test printed 1 FAIL line outside its JSON events",
			want:  []string{"FAIL\texample.com/fx/setup [setup failed]\n"},
		},
		{
			name:  "require-all all pass",
			args:  []string{"-require-all", "./pass"},
			input: pass,
			goOut: map[string]string{
				"list ./pass": "example.com/fx/pass\n",
				"test -list .* -vet=off example.com/fx/pass": "TestA\nTestB\nExample\nok  \texample.com/fx/pass\t0.004s\n",
			},
			notWant: []string{"require-all"},
		},
		{
			name:  "require-all skipped",
			args:  []string{"-require-all", "./e2e"},
			input: skip,
			goOut: e2eList,
			err:   "require-all ./e2e: 1 of 2 tests did not pass",
			want:  []string{"testsum: require-all ./e2e: example.com/fx/e2e TestRestore was skipped\n"},
		},
		{
			name:  "require-all missing",
			args:  []string{"-require-all", "./e2e"},
			input: skip,
			goOut: map[string]string{
				"list ./e2e": "example.com/fx/e2e\n",
				"test -list .* -vet=off example.com/fx/e2e": "TestBackup\nTestPrune\nTestRestore\nok  \texample.com/fx/e2e\t0.004s\n",
			},
			err:  "require-all ./e2e: 2 of 3 tests did not pass",
			want: []string{"example.com/fx/e2e TestPrune did not run\n", "example.com/fx/e2e TestRestore was skipped\n"},
		},
		{
			name:  "require-all failed",
			args:  []string{"-require-all", "example.com/fx/fail"},
			input: fail,
			goOut: map[string]string{
				"list example.com/fx/fail":                   "example.com/fx/fail\n",
				"test -list .* -vet=off example.com/fx/fail": "TestOK\nTestBad\nTestSkip\nok  \texample.com/fx/fail\t0.004s\n",
			},
			err:  "1 test failed; 1 package failed; require-all example.com/fx/fail: 2 of 3 tests did not pass",
			want: []string{"example.com/fx/fail TestBad failed\n", "example.com/fx/fail TestSkip was skipped\n"},
		},
		{
			name:  "require-all package not in input",
			args:  []string{"-require-all", "./e2e"},
			input: pass,
			goOut: e2eList,
			err:   "require-all ./e2e: 2 of 2 tests did not pass",
			want:  []string{"e2e TestBackup did not run\n", "e2e TestRestore did not run\n"},
		},
		{
			name:  "require-all lists no tests",
			args:  []string{"-require-all", "./e2e"},
			input: skip,
			goOut: map[string]string{
				"list ./e2e": "example.com/fx/e2e\n",
				"test -list .* -vet=off example.com/fx/e2e": "ExampleConfig\nok  \texample.com/fx/e2e\t0.004s\n",
			},
			err: "require-all ./e2e: go test -list found no tests in example.com/fx/e2e",
		},
		{
			name:  "require-all unknown package",
			args:  []string{"-require-all", "./nosuch"},
			input: pass,
			err:   "require-all ./nosuch: go list ./nosuch: exit status 1: no such package",
		},
		{
			name:  "require-all repeated",
			args:  []string{"-require-all", "./e2e", "-require-all", "./nosuch"},
			input: skip,
			goOut: e2eList,
			err:   "require-all ./e2e: 1 of 2 tests did not pass; require-all ./nosuch: go list ./nosuch",
		},
		{
			name: "argument",
			args: []string{"./e2e"},
			err:  `unexpected argument "./e2e"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(context.Background(), tc.args, strings.NewReader(tc.input), &out, fakeGo(tc.goOut))
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("run: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("run: %v; want an error with %q", err, tc.err)
			}
			for _, s := range tc.want {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q", s)
				}
			}
			for _, s := range tc.notWant {
				if strings.Contains(out.String(), s) {
					t.Errorf("output has %q", s)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out.String())
			}
		})
	}
}

// TestOutputCap checks that a failed test's output is cut to its last
// maxOutput bytes, and that the cut is said.
func TestOutputCap(t *testing.T) {
	t.Parallel()
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	ev := func(action, test, output string) {
		if err := enc.Encode(event{Action: action, Package: "example.com/fx/big", Test: test, Output: output}); err != nil {
			t.Fatal(err)
		}
	}
	const lines, lineLen = 3000, 1000 // three times maxOutput
	ev("start", "", "")
	ev("run", "TestBig", "")
	for i := range lines {
		ev("output", "TestBig", fmt.Sprintf("line %05d %s\n", i, strings.Repeat("x", lineLen-12)))
	}
	ev("fail", "TestBig", "")
	ev("fail", "", "")

	var out bytes.Buffer
	if err := run(context.Background(), nil, &in, &out, fakeGo(nil)); err == nil {
		t.Error("run: no error for a failed test")
	}
	got := out.String()
	if !strings.Contains(got, "[testsum: ") || !strings.Contains(got, " bytes of output cut, the last ") {
		t.Error("output does not say it was cut")
	}
	if !strings.Contains(got, fmt.Sprintf("line %05d ", lines-1)) {
		t.Error("output lacks the last line")
	}
	if strings.Contains(got, "line 00000 ") {
		t.Error("output has the first line")
	}
	if len(got) > maxOutput+2*lineLen {
		t.Errorf("printed %d bytes; want about %d", len(got), maxOutput)
	}
}

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"under", 10, []string{"a\n", "b\n"}, "a\nb\n"},
		{"exactly", 4, []string{"a\n", "b\n"}, "a\nb\n"},
		// The tail starts on a whole line when one begins within it.
		{"line cut", 5, []string{"aaa\n", "bb\n", "c\n"}, "[testsum: 4 bytes of output cut, the last 5 follow]\nbb\nc\n"},
		{"no newline in tail", 3, []string{"abcdefgh"}, "[testsum: 5 bytes of output cut, the last 3 follow]\nfgh"},
		// Past twice the limit a write trims at once; the count carries on.
		{"many writes", 4, []string{"1\n", "2\n", "3\n", "4\n", "5\n", "6\n"}, "[testsum: 8 bytes of output cut, the last 4 follow]\n5\n6\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tailBuffer{max: tc.max}
			for _, w := range tc.writes {
				b.WriteString(w)
			}
			if got := b.String(); got != tc.want {
				t.Errorf("got %q; want %q", got, tc.want)
			}
		})
	}
}

// TestStreams checks that a package's result is printed when the package
// ends, not when the input does.
func TestStreams(t *testing.T) {
	t.Parallel()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), nil, inR, outW, fakeGo(nil))
		outW.Close()
	}()
	go io.WriteString(inW, fixture(t, "pass.json")) // the input stays open

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(10 * time.Second)
	for seen := false; !seen; {
		select {
		case l := <-lines:
			seen = strings.HasPrefix(l, "ok  \texample.com/fx/pass\t")
		case <-timeout:
			t.Fatal("no ok line while the input is open")
		}
	}
	inW.Close()
	for range lines {
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

// TestGoTestJSON pipes a real go test -json run of a generated module
// through run, and lists its tests with the real go command.
func TestGoTestJSON(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("no go command (it runs `go test -json` on a module of its own):", err)
	}
	// The generated module has no dependencies and no workspace: the
	// caller's settings for kdr's module must not apply to it.
	t.Setenv("GOFLAGS", "-mod=mod")
	t.Setenv("GOWORK", "off")
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/tiny\n\ngo 1.21\n",
		"a/a_test.go": `package a

import (
	"fmt"
	"testing"
)

func TestPass(t *testing.T) { t.Log("pass-marker") }

func TestFail(t *testing.T) { t.Error("fail-marker") }

func TestSkip(t *testing.T) { t.Skip("skip-marker") }

func Example() {
	fmt.Println("hi")
	// Output: hi
}
`,
	}
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	goTest := exec.CommandContext(ctx, "go", "test", "-count=1", "-json", "./...")
	goTest.Dir = dir
	stdout, err := goTest.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	goTest.Stderr = &stderr
	if err := goTest.Start(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	runErr := run(ctx, []string{"-require-all", "./a"}, stdout, &out, goCommand(dir))
	var exit *exec.ExitError
	if err := goTest.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("go test: %v, want exit status 1 for TestFail; stderr:\n%s", err, stderr.String())
	}
	t.Logf("output:\n%s", out.String())

	const wantErr = "1 test failed; 1 package failed; require-all ./a: 2 of 3 tests did not pass"
	if runErr == nil || runErr.Error() != wantErr {
		t.Errorf("run: %v; want %q", runErr, wantErr)
	}
	for _, s := range []string{
		"fail-marker",
		"--- FAIL: TestFail (",
		"FAIL\texample.com/tiny/a\t",
		"FAIL  example.com/tiny/a  2 passed, 1 failed, 1 skipped",
		"testsum: require-all ./a: example.com/tiny/a TestFail failed\n",
		"testsum: require-all ./a: example.com/tiny/a TestSkip was skipped\n",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q", s)
		}
	}
	for _, s := range []string{"pass-marker", "skip-marker", "TestPass did not"} {
		if strings.Contains(out.String(), s) {
			t.Errorf("output has %q", s)
		}
	}
}
