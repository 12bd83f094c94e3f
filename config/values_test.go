package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/config"
)

func mustParse(t *testing.T, data string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("kdr.yaml", []byte(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, minimal+`  - name: s3
    s3: {endpoint: s3.local, bucket: kdr, objectLock: {days: 3}}
`)
	c := cfg.Clusters[0]
	s3 := cfg.Targets[1].S3
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"etcd.prefer", c.Etcd.Prefer, "follower"},
		{"etcd.dialTimeout", c.Etcd.DialTimeout, 5 * time.Second},
		{"state", c.State, config.DefaultState()},
		{"s3.partSizeMiB", s3.PartSizeMiB, 8},
		{"s3.region", s3.Region, "us-east-1"},
		{"s3.objectLock.mode", s3.ObjectLock.Mode, "GOVERNANCE"},
		{"schedule.backup", cfg.Schedule.Backup, "*/30 * * * *"},
		{"schedule.prune", cfg.Schedule.Prune, "0 3 * * *"},
		{"schedule.drill", cfg.Schedule.Drill, "0 4 1 */3 *"},
		{"retention.incompleteGrace", cfg.Retention.IncompleteGrace, 24 * time.Hour},
		{"agent.listen", cfg.Agent.Listen, ":9090"},
		{"capture.packEvery", cfg.Agent.Capture.PackEvery, time.Hour},
		{"capture.rpo", cfg.Agent.Capture.RPO, time.Minute},
		{"capture.window", cfg.Agent.Capture.Window, time.Duration(0)},
		{"retention.keepLog", cfg.Retention.KeepLog, time.Duration(0)},
		{"leaderElection.namespace", cfg.Agent.LeaderElection.Namespace, "kdr-system"},
		{"leaderElection.name", cfg.Agent.LeaderElection.Name, "kdr"},
	} {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestStateOmittedEmptyOrNull(t *testing.T) {
	for _, tt := range []struct {
		name  string
		state string
		want  []config.FileSet
	}{
		{"omitted", "", config.DefaultState()},
		{"null", "    state:\n", config.DefaultState()},
		{"empty list", "    state: []\n", []config.FileSet{}},
		{"own", "    state: [{name: cni, paths: [/etc/cni/**]}]\n", []config.FileSet{{Name: "cni", Paths: []string{"/etc/cni/**"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := strings.Replace(minimal, "    etcd:\n", tt.state+"    etcd:\n", 1)
			got := mustParse(t, data).Clusters[0].State
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("state = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDefaultState(t *testing.T) {
	a := config.DefaultState()
	required := map[string]bool{}
	for _, fs := range a {
		required[fs.Name] = fs.Required
		for _, p := range fs.Paths {
			if !filepath.IsAbs(p) {
				t.Errorf("%s: path %q is not absolute", fs.Name, p)
			}
		}
	}
	want := map[string]bool{"pki": true, "kubeconfigs": false, "manifests": false, "loadbalancer": false, "dns": false}
	if !reflect.DeepEqual(required, want) {
		t.Errorf("sets and their required flags = %v, want %v", required, want)
	}
	a[0].Paths[0] = "/changed"
	if config.DefaultState()[0].Paths[0] == "/changed" {
		t.Error("DefaultState shares its slices between calls")
	}
}

func TestFullFixture(t *testing.T) {
	setFixtureEnv(t)
	cfg, err := config.Load("testdata/valid-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Clusters) != 2 || len(cfg.Targets) != 3 {
		t.Fatalf("got %d clusters and %d targets, want 2 and 3", len(cfg.Clusters), len(cfg.Targets))
	}
	prod, events := cfg.Clusters[0], cfg.Clusters[1]
	s3, offsite := cfg.Targets[0].S3, cfg.Targets[1].S3
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"prod password from env", prod.Etcd.Password, "etcd-from-env"},
		{"prod prefer", prod.Etcd.Prefer, "leader"},
		{"prod tls server name", prod.Etcd.TLS.ServerName, "etcd.local"},
		{"events endpoints merged from prod", events.Etcd.Endpoints, prod.Etcd.Endpoints},
		{"events password merged and expanded", events.Etcd.Password, "etcd-from-env"},
		{"events prefer overrides the merge", events.Etcd.Prefer, "any"},
		{"events state: []", events.State, []config.FileSet{}},
		{"prod subnets", prod.Inventory.Subnets, map[string]string{"pods": "10.244.0.0/16", "services": "10.96.0.0/12"}},
		{"prod contact phone", prod.Inventory.Contacts[0].Phone, "+1 555 0100"},
		{"recipients", len(cfg.Encryption.Recipients), 2},
		{"s3 access key from env", s3.AccessKey, "AKIAFROMENV"},
		{"s3 secret key from env", s3.SecretKey, "secret-from-env"},
		{"s3 prefix keeps $$ as $", s3.Prefix, "backups/${literal}"},
		{"s3 object lock", *s3.ObjectLock, config.ObjectLock{Mode: "COMPLIANCE", Days: 30}},
		{"s3 part size", s3.PartSizeMiB, 64},
		{"offsite region default", offsite.Region, "us-east-1"},
		{"offsite lock mode default", offsite.ObjectLock.Mode, "GOVERNANCE"},
		{"schedule descriptor", cfg.Schedule.Backup, "@hourly"},
		{"schedule every", cfg.Schedule.Prune, "@every 6h"},
		{"jitter", cfg.Schedule.Jitter, 5 * time.Minute},
		{"keepYearly", cfg.Retention.KeepYearly, 3},
		{"incompleteGrace", cfg.Retention.IncompleteGrace, 12 * time.Hour},
		{"lease", cfg.Agent.LeaderElection, config.LeaderElection{Enabled: true, Namespace: "backup", Name: "kdr-prod",
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}},
		{"check interval default", cfg.Agent.CheckInterval, time.Minute},
	} {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
}

func TestSecretsFromFilesFixture(t *testing.T) {
	cfg, err := config.Load("testdata/valid-insecure-and-files.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s3 := cfg.Targets[0].S3
	if s3.AccessKey != "AKIAEXAMPLE" {
		t.Errorf("access key = %q, want the file's content without its newline", s3.AccessKey)
	}
	if s3.SecretKey != "s3cr3t/with$dollar" {
		t.Errorf("secret key = %q, want the file's content, CRLF trimmed and $ kept", s3.SecretKey)
	}
	if p := cfg.Clusters[0].Etcd.Password; p != "etcd-pass" {
		t.Errorf("etcd password = %q", p)
	}
}

// withS3 builds a config whose one S3 target has the given extra lines.
func withS3(lines string) string {
	return minimal + "  - name: s3\n    s3:\n      endpoint: s3.local\n      bucket: kdr\n" + lines
}

func TestEnvironmentReferences(t *testing.T) {
	t.Setenv("KDR_A", "alpha")
	t.Setenv("KDR_B", "beta")
	t.Setenv("KDR_EMPTY", "")
	t.Setenv("KDR_YAML", "x\nclusters: []\n- [")
	t.Setenv("KDR_TRUE", "true")
	t.Setenv("KDR_NUM", "64")
	os.Unsetenv("KDR_UNSET")
	tests := []struct {
		name    string
		value   string // the prefix: value, as written in YAML
		want    string
		wantErr string
	}{
		{name: "whole", value: "${KDR_A}", want: "alpha"},
		{name: "quoted", value: `"${KDR_A}"`, want: "alpha"},
		{name: "several", value: "x-${KDR_A}-${KDR_B}-y", want: "x-alpha-beta-y"},
		{name: "dollar dollar", value: "cost$$5", want: "cost$5"},
		{name: "escaped reference", value: "$${KDR_A}", want: "${KDR_A}"},
		{name: "lone dollar kept", value: "pa$s", want: "pa$s"},
		{name: "dollar at end", value: "pas$", want: "pas$"},
		{name: "set but empty", value: "a${KDR_EMPTY}b", want: "ab"},
		{name: "whole value empty", value: "${KDR_EMPTY}", want: ""},
		{name: "YAML in a value stays text", value: "${KDR_YAML}", want: "x\nclusters: []\n- ["},
		{name: "true stays a string", value: "${KDR_TRUE}", want: "true"},
		{name: "unset", value: "${KDR_UNSET}", wantErr: "kdr.yaml:15: targets[1].s3.prefix: environment variable KDR_UNSET is not set"},
		{name: "unclosed", value: "${KDR_A", wantErr: `kdr.yaml:15: targets[1].s3.prefix: "${" without a closing "}"`},
		{name: "bad name", value: "${1A}", wantErr: `kdr.yaml:15: targets[1].s3.prefix: "1A" is not a variable name`},
		{name: "empty name", value: "${}", wantErr: `"" is not a variable name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse("kdr.yaml", []byte(withS3("      prefix: "+tt.value+"\n")))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Targets[1].S3.Prefix; got != tt.want {
				t.Fatalf("prefix = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("not in numbers", func(t *testing.T) {
		_, err := config.Parse("kdr.yaml", []byte(withS3("      partSizeMiB: ${KDR_NUM}\n")))
		if err == nil || !strings.Contains(err.Error(), "partSizeMiB: want a whole number") {
			t.Fatalf("err = %v, want a type error", err)
		}
	})
	t.Run("not in keys", func(t *testing.T) {
		_, err := config.Parse("kdr.yaml", []byte(withS3("      ${KDR_A}: x\n")))
		if err == nil || !strings.Contains(err.Error(), `unknown key "${KDR_A}"`) {
			t.Fatalf("err = %v, want the key refused as written", err)
		}
	})
	t.Run("in lists and maps", func(t *testing.T) {
		t.Setenv("KDR_NET", "10.244.0.0/16")
		// Inside [ ] and { } a "{" is YAML syntax, so such values are quoted.
		data := strings.Replace(minimal, "https://10.0.0.11:2379", `"https://${KDR_A}.example:2379"`, 1)
		data = strings.Replace(data, "    etcd:\n", "    inventory: {subnets: {pods: \"${KDR_NET}\"}}\n    etcd:\n", 1)
		cfg := mustParse(t, data)
		if got := cfg.Clusters[0].Etcd.Endpoints[0]; got != "https://alpha.example:2379" {
			t.Errorf("endpoint = %q", got)
		}
		if got := cfg.Clusters[0].Inventory.Subnets["pods"]; got != "10.244.0.0/16" {
			t.Errorf("subnet = %q", got)
		}
	})
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	access := write("access", "AKIA\n")
	tests := []struct {
		name    string
		secret  string // secret lines of the S3 target
		want    string
		wantErr string
	}{
		{name: "newline trimmed", secret: "secretKeyFile: " + write("a", "hunter2\n"), want: "hunter2"},
		{name: "only one newline trimmed", secret: "secretKeyFile: " + write("b", "hunter2\n\n"), want: "hunter2\n"},
		{name: "CRLF trimmed", secret: "secretKeyFile: " + write("c", "hunter2\r\n"), want: "hunter2"},
		{name: "no newline", secret: "secretKeyFile: " + write("d", "hunter2"), want: "hunter2"},
		{name: "spaces kept", secret: "secretKeyFile: " + write("e", " hunter2 \n"), want: " hunter2 "},
		{name: "dollar not expanded", secret: "secretKeyFile: " + write("f", "${HOME}\n"), want: "${HOME}"},
		{name: "file name from env", secret: "secretKeyFile: ${KDR_SECRET_FILE}", want: "from-env-file"},
		{name: "both", secret: "secretKey: hunter2-inline\n      secretKeyFile: " + write("g", "hunter2\n"), wantErr: "kdr.yaml:17: targets[1].s3.secretKeyFile: set either secretKey or secretKeyFile, not both"},
		{name: "missing", secret: "secretKeyFile: " + filepath.Join(dir, "nope"), wantErr: "kdr.yaml:16: targets[1].s3.secretKeyFile: " + filepath.Join(dir, "nope") + " does not exist"},
		{name: "empty", secret: "secretKeyFile: " + write("h", "\n"), wantErr: "is empty"},
		{name: "directory", secret: "secretKeyFile: " + dir, wantErr: "is not a regular file"},
		{name: "too large", secret: "secretKeyFile: " + write("i", strings.Repeat("x", 70<<10)), wantErr: "not a secret"},
	}
	t.Setenv("KDR_SECRET_FILE", write("env", "from-env-file\n"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse("kdr.yaml", []byte(withS3("      accessKeyFile: "+access+"\n      "+tt.secret+"\n")))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error shows a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Targets[1].S3.SecretKey; got != tt.want {
				t.Fatalf("secret = %q, want %q", got, tt.want)
			}
			if got := cfg.Targets[1].S3.AccessKey; got != "AKIA" {
				t.Fatalf("access key = %q", got)
			}
		})
	}
}

func TestEtcdPasswordFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte("etcd-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := strings.Replace(minimal, "      tls:", "      username: root\n      passwordFile: "+p+"\n      tls:", 1)
	if got := mustParse(t, data).Clusters[0].Etcd.Password; got != "etcd-secret" {
		t.Fatalf("password = %q", got)
	}
	data = strings.Replace(minimal, "      tls:", "      passwordFile: "+p+"\n      tls:", 1)
	if _, err := config.Parse("kdr.yaml", []byte(data)); err == nil || !strings.Contains(err.Error(), "a password is set but no username") {
		t.Fatalf("err = %v, want the username asked for", err)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	cfg := &config.Config{
		Clusters:   []config.Cluster{{Name: "lab", Etcd: config.Etcd{Endpoints: []string{"http://127.0.0.1:2379"}, Insecure: true}}},
		Encryption: config.Encryption{Recipients: []string{"age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh"}},
		Targets:    []config.Target{{Name: "dir", Local: &config.LocalTarget{Path: "/tmp/kdr"}}},
		Signing:    config.Signing{TrustedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDkgk7G8drVjg7ABJHxC/jw5i0O5/dYexhQP+MkHl32q"}},
	}
	if err := cfg.Validate(); err == nil {
		t.Fatal("validated without defaults (prefer is empty)")
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	cfg.Targets[0].Local.Path = "relative"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `config: targets[0].local.path: "relative" is not an absolute path`) {
		t.Fatalf("err = %v", err)
	}
}

func TestExampleIsValid(t *testing.T) {
	if len(config.Example) == 0 {
		t.Fatal("Example is empty")
	}
	t.Run("without its variables", func(t *testing.T) {
		os.Unsetenv("S3_ACCESS_KEY")
		os.Unsetenv("S3_SECRET_KEY")
		if _, err := config.Parse("kdr.yaml", config.Example); err == nil || !strings.Contains(err.Error(), "S3_ACCESS_KEY is not set") {
			t.Fatalf("err = %v, want the unset variable named", err)
		}
	})
	t.Setenv("S3_ACCESS_KEY", "AKIAEXAMPLE")
	t.Setenv("S3_SECRET_KEY", "example-secret")
	cfg, err := config.Parse("kdr.yaml", config.Example)
	if err != nil {
		t.Fatalf("the example does not load: %v", err)
	}
	if len(cfg.Clusters) != 1 || len(cfg.Targets) != 2 || cfg.Targets[0].S3.SecretKey != "example-secret" {
		t.Fatalf("unexpected example content: %+v", cfg)
	}
	if !strings.Contains(string(config.Example), "# ") {
		t.Error("the example has no comments")
	}
}
