package ociimage

import (
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
)

var (
	// The reference grammar of the OCI distribution spec, with the optional
	// registry host (and port) in front of the repository path.
	hostPart  = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	host      = hostPart + `(?:\.` + hostPart + `)*(?::[0-9]+)?`
	component = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`
	repoRE    = regexp.MustCompile(`^(?:` + host + `/)?` + component + `(?:/` + component + `)*$`)
	tagRE     = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// validate checks img before anything is written, so that a bad input is
// one clear error rather than a half-built layer, and returns the tag.
func (img *Image) validate() (tag string, err error) {
	tag, err = splitTag(img.Name)
	if err != nil {
		return "", err
	}
	if img.Created.Before(time.Unix(0, 0)) && !img.Created.IsZero() {
		return "", fmt.Errorf("created %s is before the Unix epoch", img.Created.Format(time.RFC3339))
	}
	if len(img.Files) == 0 {
		return "", errors.New("image has no files")
	}
	paths := map[string]bool{}
	for _, f := range img.Files {
		if err := f.validate(); err != nil {
			return "", err
		}
		if paths[f.Path] {
			return "", fmt.Errorf("file %s: listed twice", f.Path)
		}
		paths[f.Path] = true
	}
	// A path cannot be a file and the directory of another file.
	for _, f := range img.Files {
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if paths[d] {
				return "", fmt.Errorf("file %s: its parent %s is a file", f.Path, d)
			}
		}
	}
	return tag, nil
}

func (f *File) validate() error {
	// Clean drops every ".." from an absolute path, so a clean one has
	// none and cannot leave the image's root.
	if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
		return fmt.Errorf("file %q: path must be absolute and clean (no . or .. elements), such as /usr/local/bin/kdr", f.Path)
	}
	if f.Mode == 0 || f.Mode != f.Mode.Perm() {
		return fmt.Errorf("file %s: mode %#o: want permission bits only, such as 0644 or 0755", f.Path, uint32(f.Mode))
	}
	if f.Source == "" {
		return fmt.Errorf("file %s: no source", f.Path)
	}
	info, err := os.Lstat(f.Source)
	if err != nil {
		return fmt.Errorf("file %s: source: %w", f.Path, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("file %s: source %s is a %s, not a regular file", f.Path, f.Source, kind(info.Mode()))
	}
	return nil
}

func kind(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	default:
		return "special file"
	}
}

// splitTag returns the tag of a name such as ghcr.io/kdr-io/kdr:v0.1.0.
func splitTag(name string) (string, error) {
	i := strings.LastIndex(name, ":")
	if i < 0 || strings.Contains(name[i:], "/") {
		return "", fmt.Errorf("image name %q has no tag, such as %s:v0.1.0", name, name)
	}
	repo, tag := name[:i], name[i+1:]
	if !repoRE.MatchString(repo) {
		return "", fmt.Errorf("image name %q: invalid repository %q (lower case, such as ghcr.io/kdr-io/kdr)", name, repo)
	}
	if !tagRE.MatchString(tag) {
		return "", fmt.Errorf("image name %q: invalid tag %q", name, tag)
	}
	return tag, nil
}
