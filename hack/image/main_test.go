package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/ociimage"
)

func TestParseFile(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want ociimage.File
		err  string
	}{
		{"/usr/local/bin/kdr=bin/kdr", ociimage.File{Path: "/usr/local/bin/kdr", Source: "bin/kdr", Mode: 0o755}, ""},
		{"/usr/sbin/x=x", ociimage.File{Path: "/usr/sbin/x", Source: "x", Mode: 0o755}, ""},
		{"/etc/ssl/certs/ca.crt=/etc/ssl/certs/ca.crt", ociimage.File{Path: "/etc/ssl/certs/ca.crt", Source: "/etc/ssl/certs/ca.crt", Mode: 0o644}, ""},
		// A directory merely containing "bin" is not a bin directory.
		{"/usr/bin/x/y=y", ociimage.File{Path: "/usr/bin/x/y", Source: "y", Mode: 0o644}, ""},
		{"/usr/local/bin/kdr=bin/kdr:0700", ociimage.File{Path: "/usr/local/bin/kdr", Source: "bin/kdr", Mode: 0o700}, ""},
		{"/etc/kdr.yaml=a:b.yaml:640", ociimage.File{Path: "/etc/kdr.yaml", Source: "a:b.yaml", Mode: 0o640}, ""},
		// Not a mode: too short, or not octal, so part of the host path.
		{"/etc/x=a:12", ociimage.File{Path: "/etc/x", Source: "a:12", Mode: 0o644}, ""},
		{"/etc/x=a:0789", ociimage.File{Path: "/etc/x", Source: "a:0789", Mode: 0o644}, ""},
		{"/etc/x", ociimage.File{}, "want IMAGEPATH=HOSTPATH[:MODE]"},
		{"=x", ociimage.File{}, "want IMAGEPATH=HOSTPATH[:MODE]"},
		{"/etc/x=", ociimage.File{}, "want IMAGEPATH=HOSTPATH[:MODE]"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := parseFile(tc.spec)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("parseFile: %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseFile: %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kdr")
	if err := os.WriteFile(bin, []byte("kdr"), 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	base := []string{"-name", "ghcr.io/kdr-io/kdr:v0.1.0", "-out", out, "-file", "/usr/local/bin/kdr=" + bin}
	args := func(more ...string) []string { return append(append([]string{}, base...), more...) }
	digest := func(t *testing.T, img ociimage.Image) string {
		t.Helper()
		img.Name = "ghcr.io/kdr-io/kdr:v0.1.0"
		img.Files = []ociimage.File{{Path: "/usr/local/bin/kdr", Mode: 0o755, Source: bin}}
		var buf bytes.Buffer
		d, err := ociimage.Write(context.Background(), &buf, img)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct {
		name  string
		args  []string
		epoch string // SOURCE_DATE_EPOCH
		want  ociimage.Image
		err   string
	}{
		{"defaults", args(), "", ociimage.Image{}, ""},
		{"entrypoint comma and repeated", args("-entrypoint", "kdr,agent", "-entrypoint", "--config=/etc/kdr.yaml"), "",
			ociimage.Image{Entrypoint: []string{"kdr", "agent", "--config=/etc/kdr.yaml"}}, ""},
		{"labels", args("-label", "org.opencontainers.image.title=kdr", "-label", "a=b=c"), "",
			ociimage.Image{Labels: map[string]string{"org.opencontainers.image.title": "kdr", "a": "b=c"}}, ""},
		{"created unix", args("-created", "1700000000"), "", ociimage.Image{Created: time.Unix(1700000000, 0)}, ""},
		{"created rfc3339", args("-created", "2023-11-14T22:13:20Z"), "", ociimage.Image{Created: time.Unix(1700000000, 0)}, ""},
		{"source date epoch", args(), "1700000000", ociimage.Image{Created: time.Unix(1700000000, 0)}, ""},
		{"flag over source date epoch", args("-created", "5"), "1700000000", ociimage.Image{Created: time.Unix(5, 0)}, ""},
		{"arch", args("-arch", "arm64"), "", ociimage.Image{Architecture: "arm64"}, ""},

		{"no name", []string{"-out", out, "-file", "/kdr=" + bin}, "", ociimage.Image{}, "-name and -out are required"},
		{"no out", []string{"-name", "kdr:v1", "-file", "/kdr=" + bin}, "", ociimage.Image{}, "-name and -out are required"},
		{"bad file", args("-file", "/kdr"), "", ociimage.Image{}, `invalid value "/kdr" for flag -file: want IMAGEPATH=HOSTPATH[:MODE]`},
		{"bad label", args("-label", "=x"), "", ociimage.Image{}, `invalid value "=x" for flag -label: want KEY=VALUE`},
		{"label twice", args("-label", "a=1", "-label", "a=2"), "", ociimage.Image{}, `invalid value "a=2" for flag -label: label a given twice`},
		{"bad created", args("-created", "yesterday"), "", ociimage.Image{}, `-created: "yesterday" is neither Unix seconds nor RFC 3339`},
		{"bad source date epoch", args(), "soon", ociimage.Image{}, `SOURCE_DATE_EPOCH: "soon" is neither Unix seconds nor RFC 3339`},
		{"unknown flag", args("-tag", "x"), "", ociimage.Image{}, "flag provided but not defined: -tag"},
		{"argument", args("extra"), "", ociimage.Image{}, `unexpected argument "extra"`},
		{"invalid image", args("-file", "/usr/local/bin/kdr="+bin), "", ociimage.Image{}, "file /usr/local/bin/kdr: listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := run(context.Background(), tc.args, tc.epoch, &stdout)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("run: %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if got, want := stdout.String(), digest(t, tc.want)+"\n"; got != want {
				t.Errorf("printed %q, want %q", got, want)
			}
			info, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm() != fs.FileMode(0o644) {
				t.Errorf("archive mode %v, want 0644", info.Mode())
			}
		})
	}
}
