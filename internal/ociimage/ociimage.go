package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// File is one regular file in the image.
type File struct {
	// Path is where the file is in the image: absolute and clean, such as
	// /usr/local/bin/kdr. Its parent directories are created, mode 0755.
	Path string
	// Mode holds the permission bits only, such as 0o755; 0 is refused as
	// a forgotten field.
	Mode fs.FileMode
	// Source is the host file copied in; it must be a regular file, not a
	// symlink or a directory. It is streamed, never read whole into memory.
	Source string
}

// Image is what Write puts in the archive.
type Image struct {
	// Name is the full reference with a tag, such as
	// ghcr.io/kdr-io/kdr:v0.1.0. Importing the archive into containerd
	// gives an image of this name.
	Name string
	// Files are the image's only content, in any order.
	Files []File
	// Entrypoint and Cmd are the config's, as in a Dockerfile's exec form.
	Entrypoint []string
	Cmd        []string
	// Env defaults to PATH=/usr/local/bin:/usr/bin:/bin when empty.
	Env []string
	// Labels are the config's labels; those named org.opencontainers.image.*
	// are also the manifest's annotations, where registries show them.
	Labels map[string]string
	// Architecture is the platform's, in GOARCH terms; default
	// runtime.GOARCH. The OS is always linux.
	Architecture string
	// Created is the one timestamp in the image: the config's created and
	// history time and every tar entry's mtime. It is cut to whole seconds
	// (tar headers hold no more) and must not be before the Unix epoch; the
	// zero value means the epoch, as SOURCE_DATE_EPOCH=0 would.
	Created time.Time
}

const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	defaultPath = "PATH=/usr/local/bin:/usr/bin:/bin"

	// annotationRefName selects a manifest in an OCI layout; it holds the tag.
	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName is what containerd names an imported image after;
	// without it `ctr images import` would name the image by its tag alone.
	annotationImageName = "io.containerd.image.name"
	annotationPrefix    = "org.opencontainers.image."
)

// Write writes img to w as an OCI archive and returns the manifest digest,
// "sha256:<hex>". The layer goes through a temporary file in os.TempDir
// first. w is not closed. Cancelling ctx stops the work between two files.
func Write(ctx context.Context, w io.Writer, img Image) (string, error) {
	return write(ctx, w, img, "")
}

// WriteFile writes img as an OCI archive at path, atomically: a temporary
// file in the same directory, synced and renamed into place, so path holds
// either the previous archive or the whole new one. The layer's temporary
// file goes in that directory too, which has room for the archive, where
// os.TempDir may be a small tmpfs.
func WriteFile(ctx context.Context, path string, img Image) (digest string, err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("creating archive: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if digest, err = write(ctx, tmp, img, dir); err != nil {
		return "", err
	}
	// CreateTemp makes the file 0600; an archive is no secret, and an
	// importer running as another user must read it.
	if err := tmp.Chmod(0o644); err != nil {
		return "", fmt.Errorf("writing archive: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("writing archive: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("writing archive: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("writing archive: %w", err)
	}
	// The rename is durable only once the directory is synced.
	d, err := os.Open(dir)
	if err != nil {
		return "", fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return "", fmt.Errorf("syncing %s: %w", dir, err)
	}
	return digest, nil
}

// write is Write with the layer's temporary file in tmpDir ("" for
// os.TempDir).
func write(ctx context.Context, w io.Writer, img Image, tmpDir string) (string, error) {
	tag, err := img.validate()
	if err != nil {
		return "", err
	}
	created := img.created()
	arch := img.Architecture
	if arch == "" {
		arch = runtime.GOARCH
	}

	l, err := writeLayer(ctx, tmpDir, img.Files, created)
	if err != nil {
		return "", err
	}
	defer l.remove()

	env := img.Env
	if len(env) == 0 {
		env = []string{defaultPath}
	}
	configJSON, err := json.Marshal(imageConfig{
		Created:      created,
		Architecture: arch,
		OS:           "linux",
		Config: execConfig{
			Env:        env,
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
			Labels:     img.Labels,
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{l.diffID}},
		History: []history{{Created: created, CreatedBy: "kdr internal/ociimage"}},
	})
	if err != nil {
		return "", fmt.Errorf("encoding config: %w", err)
	}
	config := blobOf(mediaTypeConfig, configJSON)
	layer := descriptor{MediaType: mediaTypeLayer, Digest: l.digest, Size: l.size}

	annotations := map[string]string{}
	for k, v := range img.Labels {
		if strings.HasPrefix(k, annotationPrefix) {
			annotations[k] = v
		}
	}
	manifestJSON, err := json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        config.desc,
		Layers:        []descriptor{layer},
		Annotations:   annotations,
	})
	if err != nil {
		return "", fmt.Errorf("encoding manifest: %w", err)
	}
	man := blobOf(mediaTypeManifest, manifestJSON)

	indexDesc := man.desc
	indexDesc.Platform = &platform{Architecture: arch, OS: "linux"}
	indexDesc.Annotations = map[string]string{
		annotationRefName:   tag,
		annotationImageName: img.Name,
	}
	indexJSON, err := json.Marshal(index{SchemaVersion: 2, MediaType: mediaTypeIndex, Manifests: []descriptor{indexDesc}})
	if err != nil {
		return "", fmt.Errorf("encoding index: %w", err)
	}

	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("writing archive: %w", err)
	}
	blobs := []blob{config, man, {desc: layer, r: io.NewSectionReader(l.f, 0, l.size)}}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].desc.Digest < blobs[j].desc.Digest })
	if err := writeArchive(w, created, blobs, indexJSON); err != nil {
		return "", fmt.Errorf("writing archive: %w", err)
	}
	return man.desc.Digest, nil
}

// created is img.Created as it goes into the image: UTC, so the config does
// not carry the building host's time zone, and in whole seconds.
func (img *Image) created() time.Time {
	if img.Created.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return img.Created.Truncate(time.Second).UTC()
}

// writeArchive writes the OCI layout as a tar stream, entries in name order.
func writeArchive(w io.Writer, mtime time.Time, blobs []blob, indexJSON []byte) error {
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(dirHeader(dir, mtime)); err != nil {
			return err
		}
	}
	for _, b := range blobs {
		name := "blobs/sha256/" + strings.TrimPrefix(b.desc.Digest, "sha256:")
		if err := tw.WriteHeader(fileHeader(name, 0o644, b.desc.Size, mtime)); err != nil {
			return err
		}
		if _, err := io.Copy(tw, b.r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	for _, f := range []struct {
		name string
		data []byte
	}{{"index.json", indexJSON}, {"oci-layout", layout}} {
		if err := tw.WriteHeader(fileHeader(f.name, 0o644, int64(len(f.data)), mtime)); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// dirHeader and fileHeader give every tar entry, in the layer and in the
// archive, the same owner, time and format, so nothing of the building host
// gets in. USTAR is asked for explicitly: the writer then fails on a name
// it would otherwise put in a PAX record.
func dirHeader(name string, mtime time.Time) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR}
}

func fileHeader(name string, mode fs.FileMode, size int64, mtime time.Time) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: size, ModTime: mtime, Format: tar.FormatUSTAR}
}

// blob is one file under blobs/sha256, with its descriptor.
type blob struct {
	desc descriptor
	r    io.Reader
}

func blobOf(mediaType string, data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{
		desc: descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))},
		r:    bytes.NewReader(data),
	}
}
