package ociimage_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/internal/ociimage"
)

// testImage is kdr's image in small: a "binary" under bin and a CA bundle,
// with the labels the Dockerfile sets.
func testImage(t *testing.T) ociimage.Image {
	t.Helper()
	dir := t.TempDir()
	// Enough data for several gzip blocks and tar records.
	bin := bytes.Repeat([]byte("\x7fELF kdr binary "), 40000)
	return ociimage.Image{
		Name: "ghcr.io/kdr-io/kdr:v0.1.0",
		Files: []ociimage.File{
			{Path: "/usr/local/bin/kdr", Mode: 0o755, Source: writeSource(t, dir, "kdr", bin)},
			{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Source: writeSource(t, dir, "ca.crt", []byte("-----BEGIN CERTIFICATE-----\n"))},
		},
		Entrypoint: []string{"kdr"},
		Labels: map[string]string{
			"org.opencontainers.image.version": "v0.1.0",
			"org.opencontainers.image.title":   "kdr",
			"org.opencontainers.image.source":  "https://github.com/kdr-io/kdr",
			"maintainer":                       "kdr",
		},
	}
}

func writeSource(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func write(t *testing.T, img ociimage.Image) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	digest, err := ociimage.Write(context.Background(), &buf, img)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes(), digest
}

func TestReproducible(t *testing.T) {
	for _, tc := range []struct {
		name    string
		created time.Time
	}{
		{"epoch", time.Time{}},
		// Sub-second and a time zone: neither may get into the bytes.
		{"set", time.Date(2025, 3, 1, 12, 0, 0, 500, time.FixedZone("X", 3600))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testImage(t)
			img.Created = tc.created
			a, da := write(t, img)
			// The same content from other host files, listed in another order.
			img2 := testImage(t)
			img2.Created = tc.created.UTC().Truncate(time.Second)
			img2.Files[0], img2.Files[1] = img2.Files[1], img2.Files[0]
			b, db := write(t, img2)
			if !bytes.Equal(a, b) || da != db {
				t.Fatalf("two writes differ: %s (%d bytes), %s (%d bytes)", da, len(a), db, len(b))
			}
			path := filepath.Join(t.TempDir(), "image.tar")
			dc, err := ociimage.WriteFile(context.Background(), path, img)
			if err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			c, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, c) || da != dc {
				t.Fatalf("WriteFile differs from Write: %s, %s", dc, da)
			}
		})
	}
}

// archive is a written archive read back.
type archive struct {
	names   []string // in archive order
	headers map[string]*tar.Header
	files   map[string][]byte
}

func readTar(t *testing.T, r io.Reader) archive {
	t.Helper()
	a := archive{headers: map[string]*tar.Header{}, files: map[string][]byte{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return a
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", hdr.Name, err)
		}
		if _, dup := a.headers[hdr.Name]; dup {
			t.Fatalf("%s twice in tar", hdr.Name)
		}
		a.names = append(a.names, hdr.Name)
		a.headers[hdr.Name] = hdr
		a.files[hdr.Name] = data
	}
}

// checkHeaders checks what makes a tar reproducible: sorted names, root
// owner without names, the one time, no PAX records.
func checkHeaders(t *testing.T, what string, a archive, mtime time.Time) {
	t.Helper()
	for i, name := range a.names {
		if i > 0 && a.names[i-1] >= name {
			t.Errorf("%s: %s after %s: names not sorted", what, name, a.names[i-1])
		}
		h := a.headers[name]
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: %s owned by %d:%d (%q:%q), want 0:0 without names", what, name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(mtime) {
			t.Errorf("%s: %s mtime %s, want %s", what, name, h.ModTime, mtime)
		}
		if h.Format != tar.FormatUSTAR || len(h.PAXRecords) > 0 {
			t.Errorf("%s: %s format %v, PAX %v; want USTAR without PAX records", what, name, h.Format, h.PAXRecords)
		}
	}
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    map[string]string `json:"platform"`
	Annotations map[string]string `json:"annotations"`
}

// blob returns the blob d points at, checking its size and digest.
func (a archive) blob(t *testing.T, d descriptor) []byte {
	t.Helper()
	data, ok := a.files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
	if !ok {
		t.Fatalf("no blob for %s", d.Digest)
	}
	if int64(len(data)) != d.Size {
		t.Errorf("blob %s is %d bytes, descriptor says %d", d.Digest, len(data), d.Size)
	}
	if got := sha256Digest(data); got != d.Digest {
		t.Errorf("blob %s hashes to %s", d.Digest, got)
	}
	return data
}

func sha256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func decode(t *testing.T, what string, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// readImage follows index -> manifest -> config and layer, checking each
// link, and returns the manifest descriptor, manifest, config and layer.
func readImage(t *testing.T, data []byte, mtime time.Time) (descriptor, map[string]any, map[string]any, archive) {
	t.Helper()
	a := readTar(t, bytes.NewReader(data))
	checkHeaders(t, "archive", a, mtime)
	if got := string(a.files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %q", got)
	}

	var idx struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}
	decode(t, "index.json", a.files["index.json"], &idx)
	if idx.SchemaVersion != 2 || idx.MediaType != "application/vnd.oci.image.index.v1+json" || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %s", a.files["index.json"])
	}
	md := idx.Manifests[0]
	if md.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest media type %q", md.MediaType)
	}

	var man struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Config        descriptor        `json:"config"`
		Layers        []descriptor      `json:"layers"`
		Annotations   map[string]string `json:"annotations"`
	}
	manJSON := a.blob(t, md)
	decode(t, "manifest", manJSON, &man)
	if man.SchemaVersion != 2 || man.MediaType != md.MediaType || len(man.Layers) != 1 {
		t.Fatalf("manifest: %s", manJSON)
	}
	if man.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("config media type %q", man.Config.MediaType)
	}
	if man.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("layer media type %q", man.Layers[0].MediaType)
	}
	var manAny, config map[string]any
	decode(t, "manifest", manJSON, &manAny)
	decode(t, "config", a.blob(t, man.Config), &config)

	gz := a.blob(t, man.Layers[0])
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("layer: %v", err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header name %q, time %s; want neither", zr.Name, zr.ModTime)
	}
	layerTar, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("layer: %v", err)
	}
	rootfs := config["rootfs"].(map[string]any)
	if want := []any{sha256Digest(layerTar)}; rootfs["type"] != "layers" || !reflect.DeepEqual(rootfs["diff_ids"], want) {
		t.Errorf("config rootfs %v, want diff_ids %v", rootfs, want)
	}
	// Only the three blobs, the two directories and the two documents.
	if len(a.names) != 7 {
		t.Errorf("archive holds %q, want 7 entries", a.names)
	}
	layer := readTar(t, bytes.NewReader(layerTar))
	checkHeaders(t, "layer", layer, mtime)
	return md, manAny, config, layer
}

func TestArchive(t *testing.T) {
	img := testImage(t)
	img.Created = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	data, digest := write(t, img)
	md, man, config, layer := readImage(t, data, img.Created)

	if md.Digest != digest {
		t.Errorf("index points at %s, Write returned %s", md.Digest, digest)
	}
	if want := map[string]string{"architecture": runtime.GOARCH, "os": "linux"}; !reflect.DeepEqual(md.Platform, want) {
		t.Errorf("index platform %v, want %v", md.Platform, want)
	}
	wantAnnotations := map[string]any{
		"org.opencontainers.image.version": "v0.1.0",
		"org.opencontainers.image.title":   "kdr",
		"org.opencontainers.image.source":  "https://github.com/kdr-io/kdr",
	}
	if !reflect.DeepEqual(man["annotations"], wantAnnotations) {
		t.Errorf("manifest annotations %v, want %v", man["annotations"], wantAnnotations)
	}

	for key, want := range map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      "2025-03-01T12:00:00Z",
		"config": map[string]any{
			"Entrypoint": []any{"kdr"},
			"Env":        []any{"PATH=/usr/local/bin:/usr/bin:/bin"},
			"Labels": map[string]any{
				"org.opencontainers.image.version": "v0.1.0",
				"org.opencontainers.image.title":   "kdr",
				"org.opencontainers.image.source":  "https://github.com/kdr-io/kdr",
				"maintainer":                       "kdr",
			},
		},
		"history": []any{map[string]any{"created": "2025-03-01T12:00:00Z", "created_by": "kdr internal/ociimage"}},
	} {
		if !reflect.DeepEqual(config[key], want) {
			t.Errorf("config %s = %v, want %v", key, config[key], want)
		}
	}

	type want struct {
		typ  byte
		mode int64
		src  string
	}
	wantLayer := map[string]want{
		"etc/":                              {tar.TypeDir, 0o755, ""},
		"etc/ssl/":                          {tar.TypeDir, 0o755, ""},
		"etc/ssl/certs/":                    {tar.TypeDir, 0o755, ""},
		"etc/ssl/certs/ca-certificates.crt": {tar.TypeReg, 0o644, img.Files[1].Source},
		"usr/":                              {tar.TypeDir, 0o755, ""},
		"usr/local/":                        {tar.TypeDir, 0o755, ""},
		"usr/local/bin/":                    {tar.TypeDir, 0o755, ""},
		"usr/local/bin/kdr":                 {tar.TypeReg, 0o755, img.Files[0].Source},
	}
	if len(layer.names) != len(wantLayer) {
		t.Errorf("layer holds %q, want %d entries", layer.names, len(wantLayer))
	}
	for name, w := range wantLayer {
		h, ok := layer.headers[name]
		if !ok {
			t.Errorf("layer has no %s", name)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode {
			t.Errorf("layer %s: type %c mode %#o, want %c %#o", name, h.Typeflag, h.Mode, w.typ, w.mode)
		}
		if w.src == "" {
			continue
		}
		src, err := os.ReadFile(w.src)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(layer.files[name], src) {
			t.Errorf("layer %s: %d bytes differ from %s's %d", name, len(layer.files[name]), w.src, len(src))
		}
	}
}

// TestNames: containerd names the imported image after io.containerd.image.name,
// an OCI layout reader selects it by its tag.
func TestNames(t *testing.T) {
	for _, tc := range []struct{ name, tag string }{
		{"ghcr.io/kdr-io/kdr:v0.1.0", "v0.1.0"},
		{"localhost:5000/kdr:dev", "dev"},
		{"kdr:latest", "latest"},
		{"registry.example.com:443/a/b_c/d-e:1.2.3-rc.1_x", "1.2.3-rc.1_x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testImage(t)
			img.Name = tc.name
			data, _ := write(t, img)
			md, _, _, _ := readImage(t, data, time.Unix(0, 0))
			want := map[string]string{
				"org.opencontainers.image.ref.name": tc.tag,
				"io.containerd.image.name":          tc.name,
			}
			if !reflect.DeepEqual(md.Annotations, want) {
				t.Errorf("index annotations %v, want %v", md.Annotations, want)
			}
		})
	}
}

func TestArchitecture(t *testing.T) {
	img := testImage(t)
	img.Architecture = "arm64"
	data, _ := write(t, img)
	md, _, config, _ := readImage(t, data, time.Unix(0, 0))
	if md.Platform["architecture"] != "arm64" || config["architecture"] != "arm64" {
		t.Errorf("index platform %v, config architecture %v; want arm64", md.Platform, config["architecture"])
	}
}

func TestInvalid(t *testing.T) {
	dir := t.TempDir()
	src := writeSource(t, dir, "kdr", []byte("kdr"))
	if err := os.Symlink(src, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	file := func(path string, mode fs.FileMode, source string) []ociimage.File {
		return []ociimage.File{{Path: path, Mode: mode, Source: source}}
	}
	for _, tc := range []struct {
		name string
		edit func(*ociimage.Image)
		want string
	}{
		{"no tag", func(img *ociimage.Image) { img.Name = "ghcr.io/kdr-io/kdr" },
			`image name "ghcr.io/kdr-io/kdr" has no tag, such as ghcr.io/kdr-io/kdr:v0.1.0`},
		{"port without tag", func(img *ociimage.Image) { img.Name = "localhost:5000/kdr" },
			`image name "localhost:5000/kdr" has no tag`},
		{"empty name", func(img *ociimage.Image) { img.Name = "" }, `image name "" has no tag`},
		{"empty tag", func(img *ociimage.Image) { img.Name = "kdr:" }, `image name "kdr:": invalid tag ""`},
		{"upper case", func(img *ociimage.Image) { img.Name = "ghcr.io/KDR:v1" }, `image name "ghcr.io/KDR:v1": invalid repository "ghcr.io/KDR"`},
		{"digest", func(img *ociimage.Image) { img.Name = "kdr@sha256:abc" }, `image name "kdr@sha256:abc": invalid repository`},
		{"no files", func(img *ociimage.Image) { img.Files = nil }, "image has no files"},
		{"relative path", func(img *ociimage.Image) { img.Files = file("usr/bin/kdr", 0o755, src) },
			`file "usr/bin/kdr": path must be absolute and clean`},
		{"dot dot", func(img *ociimage.Image) { img.Files = file("/usr/../etc/kdr", 0o755, src) },
			`file "/usr/../etc/kdr": path must be absolute and clean`},
		{"trailing slash", func(img *ociimage.Image) { img.Files = file("/usr/bin/", 0o755, src) },
			`file "/usr/bin/": path must be absolute and clean`},
		{"root", func(img *ociimage.Image) { img.Files = file("/", 0o755, src) }, `file "/": path must be absolute and clean`},
		{"zero mode", func(img *ociimage.Image) { img.Files = file("/kdr", 0, src) }, "file /kdr: mode 0: want permission bits only"},
		{"type in mode", func(img *ociimage.Image) { img.Files = file("/kdr", fs.ModeDir|0o755, src) },
			"file /kdr: mode 020000000755: want permission bits only"},
		{"no source", func(img *ociimage.Image) { img.Files = file("/kdr", 0o755, "") }, "file /kdr: no source"},
		{"missing source", func(img *ociimage.Image) { img.Files = file("/kdr", 0o755, filepath.Join(dir, "nope")) },
			"file /kdr: source: lstat " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"symlink source", func(img *ociimage.Image) { img.Files = file("/kdr", 0o755, filepath.Join(dir, "link")) },
			"file /kdr: source " + filepath.Join(dir, "link") + " is a symlink, not a regular file"},
		{"directory source", func(img *ociimage.Image) { img.Files = file("/kdr", 0o755, dir) },
			"file /kdr: source " + dir + " is a directory, not a regular file"},
		{"duplicate", func(img *ociimage.Image) { img.Files = append(img.Files, img.Files[0]) },
			"file /usr/local/bin/kdr: listed twice"},
		{"file as directory", func(img *ociimage.Image) { img.Files = append(img.Files, file("/usr/local/bin/kdr/x", 0o644, src)...) },
			"file /usr/local/bin/kdr/x: its parent /usr/local/bin/kdr is a file"},
		{"before epoch", func(img *ociimage.Image) { img.Created = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC) },
			"created 1969-12-31T00:00:00Z is before the Unix epoch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testImage(t)
			tc.edit(&img)
			var buf bytes.Buffer
			_, err := ociimage.Write(context.Background(), &buf, img)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Write: %v; want an error starting %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if buf.Len() > 0 {
				t.Errorf("wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

// TestDigestChanges: each part of the image is in what the digest covers.
func TestDigestChanges(t *testing.T) {
	_, base := write(t, testImage(t))
	for _, tc := range []struct {
		name string
		edit func(*testing.T, *ociimage.Image)
	}{
		{"file content", func(t *testing.T, img *ociimage.Image) {
			img.Files[1].Source = writeSource(t, t.TempDir(), "ca.crt", []byte("-----BEGIN CERTIFICATE-----\r\n"))
		}},
		{"file mode", func(_ *testing.T, img *ociimage.Image) { img.Files[1].Mode = 0o600 }},
		{"file path", func(_ *testing.T, img *ociimage.Image) { img.Files[0].Path = "/usr/bin/kdr" }},
		{"entrypoint", func(_ *testing.T, img *ociimage.Image) { img.Entrypoint = []string{"/usr/local/bin/kdr"} }},
		{"cmd", func(_ *testing.T, img *ociimage.Image) { img.Cmd = []string{"agent"} }},
		{"env", func(_ *testing.T, img *ociimage.Image) { img.Env = []string{"PATH=/usr/local/bin"} }},
		{"label", func(_ *testing.T, img *ociimage.Image) { img.Labels["org.opencontainers.image.version"] = "v0.1.1" }},
		{"created", func(_ *testing.T, img *ociimage.Image) { img.Created = time.Unix(1, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testImage(t)
			tc.edit(t, &img)
			if _, digest := write(t, img); digest == base {
				t.Errorf("digest %s unchanged", digest)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var buf bytes.Buffer
	if _, err := ociimage.Write(ctx, &buf, testImage(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write: %v, want %v", err, context.Canceled)
	}
	if buf.Len() > 0 {
		t.Errorf("wrote %d bytes after cancel", buf.Len())
	}
}

// lateCancel is a context cancelled from its nth Err call on, to fail a
// write at a chosen point.
type lateCancel struct {
	context.Context
	n int
}

func (c *lateCancel) Err() error {
	if c.n--; c.n <= 0 {
		return context.Canceled
	}
	return nil
}

// TestWriteFileLeavesNothing: a failed WriteFile keeps the previous archive
// and leaves no temporary file beside it.
func TestWriteFileLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  context.Context
		edit func(*ociimage.Image)
		want string
	}{
		{"invalid", context.Background(), func(img *ociimage.Image) { img.Files[0].Mode = 0 }, "file /usr/local/bin/kdr: mode 0"},
		{"cancelled between files", &lateCancel{context.Background(), 3}, func(*ociimage.Image) {}, "writing layer: context canceled"},
		// testImage's layer has 8 entries, one check each; the 9th check
		// comes once the layer is complete.
		{"cancelled after the layer", &lateCancel{context.Background(), 9}, func(*ociimage.Image) {}, "writing archive: context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "kdr-image.tar")
			if err := os.WriteFile(path, []byte("previous"), 0o644); err != nil {
				t.Fatal(err)
			}
			img := testImage(t)
			tc.edit(&img)
			if _, err := ociimage.WriteFile(tc.ctx, path, img); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("WriteFile: %v; want an error starting %q", err, tc.want)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if !reflect.DeepEqual(names, []string{"kdr-image.tar"}) {
				t.Errorf("directory holds %q, want only kdr-image.tar", names)
			}
			if got, _ := os.ReadFile(path); string(got) != "previous" {
				t.Errorf("archive now %q, want the previous one", got)
			}
		})
	}
}

func ExampleWriteFile() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "kdr")
	os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755)

	digest, err := ociimage.WriteFile(context.Background(), filepath.Join(dir, "kdr-image.tar"), ociimage.Image{
		Name:       "ghcr.io/kdr-io/kdr:v0.1.0",
		Files:      []ociimage.File{{Path: "/usr/local/bin/kdr", Mode: 0o755, Source: bin}},
		Entrypoint: []string{"kdr"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(strings.HasPrefix(digest, "sha256:"), len(digest))
	// Output: true 71
}
