package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"
)

// setFixtureEnv sets the variables the testdata files reference.
func setFixtureEnv(t *testing.T) {
	t.Setenv("KDR_TEST_ETCD_PASSWORD", "etcd-from-env")
	t.Setenv("KDR_TEST_S3_ACCESS_KEY", "AKIAFROMENV")
	t.Setenv("KDR_TEST_S3_SECRET_KEY", "secret-from-env")
	os.Unsetenv("KDR_TEST_UNSET_VARIABLE")
}

func glob(t *testing.T, pattern string, atLeast int) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < atLeast {
		t.Fatalf("%s matched %d files, want at least %d: the fixtures are gone", pattern, len(files), atLeast)
	}
	return files
}

// wants returns the "# want: ..." lines at the top of a fixture.
func wants(t *testing.T, data []byte) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		w, ok := strings.CutPrefix(line, "# want: ")
		if !ok {
			break
		}
		out = append(out, w)
	}
	return out
}

func TestValidFixtures(t *testing.T) {
	setFixtureEnv(t)
	for _, file := range glob(t, "testdata/valid-*.yaml", 4) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			cfg, err := config.Load(file)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("a loaded config does not validate: %v", err)
			}
		})
	}
}

func TestInvalidFixtures(t *testing.T) {
	setFixtureEnv(t)
	for _, file := range glob(t, "testdata/invalid-*.yaml", 30) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want := wants(t, data)
			if len(want) == 0 {
				t.Fatal(`fixture has no leading "# want: ..." line`)
			}
			cfg, err := config.Load(file)
			if err == nil {
				t.Fatalf("loaded %+v, want an error", cfg)
			}
			if cfg != nil {
				t.Errorf("Load returned a config with its error")
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q; got:\n%v", w, err)
				}
			}
			// A key pasted in the wrong place must not be echoed back.
			if strings.Contains(err.Error(), "SECRET-KEY-1Q") {
				t.Errorf("error repeats secret key material: %v", err)
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.File != file {
				t.Errorf("error is not a *config.Error naming %s: %#v", file, err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, file+":") {
					t.Errorf("error line does not start with the file name: %q", line)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kdr.yaml")
	_, err := config.Load(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want not-exist naming the file", err)
	}
}

func TestParseEmpty(t *testing.T) {
	for name, data := range map[string]string{
		"empty":      "",
		"blank":      "\n  \n\t\n",
		"comments":   "# nothing\n",
		"null":       "~\n",
		"document":   "---\n",
		"scalar":     "clusters\n",
		"list":       "- a\n",
		"two docs":   "agent: {}\n---\nagent: {}\n",
		"empty doc2": "agent: {}\n---\n",
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := config.Parse("kdr.yaml", []byte(data))
			if err == nil || cfg != nil {
				t.Fatalf("Parse(%q) = %v, %v; want an error", data, cfg, err)
			}
			if !strings.HasPrefix(err.Error(), "kdr.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		err  config.Error
		want string
	}{
		{config.Error{File: "kdr.yaml", Line: 12, Msg: `unknown key "endpoint" in etcd`}, `kdr.yaml:12: unknown key "endpoint" in etcd`},
		{config.Error{File: "/etc/kdr/kdr.yaml", Msg: "targets: at least one target is required"}, "/etc/kdr/kdr.yaml: targets: at least one target is required"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// minimal is the smallest valid config; tests add to it.
const minimal = `clusters:
  - name: prod
    etcd:
      endpoints: [https://10.0.0.11:2379]
      tls: {ca: /pki/ca.crt, cert: /pki/client.crt, key: /pki/client.key}
encryption: {recipients: [age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh]}
signing: {trustedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDkgk7G8drVjg7ABJHxC/jw5i0O5/dYexhQP+MkHl32q"]}
targets:
  - name: usb
    local: {path: /mnt/usb/kdr}
`

func TestReportsEveryProblem(t *testing.T) {
	data := strings.NewReplacer(
		"name: prod", "name: PROD",
		"https://10.0.0.11:2379", "http://10.0.0.11:2379",
		"/mnt/usb/kdr", `""`,
	).Replace(minimal)
	_, err := config.Parse("kdr.yaml", []byte(data))
	if err == nil {
		t.Fatal("parsed, want errors")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d problems, want 3:\n%v", len(lines), err)
	}
	for _, want := range []string{"kdr.yaml:2: clusters[0].name", "kdr.yaml:4: clusters[0].etcd.endpoints[0]", "kdr.yaml:10: targets[0].local.path"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestTooManyProblemsAreCut(t *testing.T) {
	var b strings.Builder
	b.WriteString(minimal)
	for i := range 30 {
		b.WriteString("unknown" + strings.Repeat("x", i) + ": 1\n")
	}
	_, err := config.Parse("kdr.yaml", []byte(b.String()))
	if err == nil {
		t.Fatal("parsed, want errors")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 21 || !strings.Contains(lines[20], "and 10 more problems") {
		t.Fatalf("got %d lines, last %q; want 20 problems and a count of the rest", len(lines), lines[len(lines)-1])
	}
}

// TestAliasExpansionIsBounded: a few hundred aliases can stand for
// millions of values; the walk stops instead of visiting them all.
func TestAliasExpansionIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("clusters:\n  - name: a\n    state: &s\n      - {name: s, paths: &p [")
	b.WriteString(strings.TrimSuffix(strings.Repeat("/a, ", 100), ", "))
	b.WriteString("]}\n")
	for range 99 {
		b.WriteString("      - {name: s, paths: *p}\n")
	}
	b.WriteString("  - &c {name: b, state: *s}\n")
	for range 99 {
		b.WriteString("  - *c\n")
	}
	_, err := config.Parse("kdr.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "too many values once aliases are expanded") {
		t.Fatalf("err = %.300v, want the alias expansion refused", err)
	}
}

// Aliases inside their own anchor once sent the walk into endless
// recursion (found by FuzzParse).
func TestSelfReferencingAliases(t *testing.T) {
	for _, tt := range []struct{ doc, want string }{
		{"clusters:\n  - name: a\n    etcd: &e\n      <<: *e\n", "kdr.yaml:4: clusters[0].etcd: an alias inside the value it refers to"},
		{"clusters: &c\n  - *c\n", "kdr.yaml:2: clusters[0]: an alias inside the value it refers to"},
		{"agent: &a {leaderElection: *a}\n", "kdr.yaml:1: agent.leaderElection: an alias inside the value it refers to"},
	} {
		_, err := config.Parse("kdr.yaml", []byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want %q", tt.doc, err, tt.want)
		}
	}
}

// TestLocalPathRelativeToConfigFile loads a config whose local target
// says ".." from another working directory: the path is the config
// file's parent, as the recovery kit's kdr.yaml needs wherever its disk
// is mounted.
func TestLocalPathRelativeToConfigFile(t *testing.T) {
	disk := t.TempDir()
	file := filepath.Join(disk, "kit", "kdr.yaml")
	doc := `clusters:
  - name: prod
    etcd: {endpoints: ["http://127.0.0.1:2379"], insecure: true}
encryption: {recipients: [age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh]}
signing: {trustedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDkgk7G8drVjg7ABJHxC/jw5i0O5/dYexhQP+MkHl32q"]}
targets:
  - {name: disk, local: {path: ..}}
  - {name: below, local: {path: sets/usb}}
  - {name: absolute, local: {path: /mnt/usb/kdr}}
`
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	for _, path := range []string{file, mustRel(t, file)} {
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatalf("Load(%s): %v", path, err)
		}
		want := []string{disk, filepath.Join(disk, "kit", "sets", "usb"), "/mnt/usb/kdr"}
		for i, w := range want {
			if got := cfg.Targets[i].Local.Path; got != w {
				t.Errorf("Load(%s): targets[%d].local.path = %q, want %q", path, i, got, w)
			}
		}
	}
}

// mustRel is path relative to the working directory.
func mustRel(t *testing.T, path string) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}
