package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"
)

// FuzzParse: whatever the input, Parse does not panic, every problem it
// reports names the file, and a config it accepts validates and already
// has its defaults.
func FuzzParse(f *testing.F) {
	f.Setenv("KDR_TEST_ETCD_PASSWORD", "etcd-from-env")
	f.Setenv("KDR_TEST_S3_ACCESS_KEY", "AKIAFROMENV")
	f.Setenv("KDR_TEST_S3_SECRET_KEY", "secret-from-env")
	f.Setenv("S3_ACCESS_KEY", "AKIAEXAMPLE")
	f.Setenv("S3_SECRET_KEY", "example-secret")
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) < 30 {
		f.Fatalf("testdata/*.yaml: %d files, %v", len(files), err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(config.Example)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse("fuzz.yaml", data)
		if err != nil {
			if cfg != nil {
				t.Fatal("a config came back with an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml") {
					t.Fatalf("problem does not name the file: %q", line)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
		again := *cfg
		again.ApplyDefaults()
		if !reflect.DeepEqual(&again, cfg) {
			t.Fatal("Parse returned a config without all its defaults")
		}
	})
}
