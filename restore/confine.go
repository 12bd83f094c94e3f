package restore

import (
	"archive/tar"
	"errors"
	"fmt"
	pathpkg "path"
	"strings"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/kdr-io/kdr/manifest"
)

// ErrRefused means the backup's state holds an entry a restore will not
// write: outside its sets' patterns, below one of its own symlinks, or of
// a kind kdr never captures. Whoever can write to the backup target can
// write such an entry, so it is refused before anything is written.
var ErrRefused = errors.New("refused state entry")

// scope says how much of an admitted entry a restore applies.
type scope int

const (
	// inSet: a pattern of the entry's set matches it; content, mode,
	// owner and times are restored.
	inSet scope = iota + 1
	// aboveSet: a directory on the way to a set's patterns (etc and
	// etc/kubernetes for /etc/kubernetes/pki/**). It is made when
	// missing, but the backup does not get to change the mode, owner or
	// times of a directory like /etc that no set captured.
	aboveSet
)

// entryPolicy decides which entries of a backup's state a restore may
// write. It is built from the manifest's sets and the state's index, and
// judges entries one at a time, so the same rules serve restore-files,
// its check, and every tar header read along the way.
type entryPolicy struct {
	// patterns are each set's configured patterns relative to the root,
	// as planState globs them.
	patterns map[string][]string
	entries  map[string]manifest.IndexEntry
	// links are the paths of the backup's own symlinks: nothing is
	// written below one, whether or not it exists yet on this host.
	links map[string]bool
	// named are the directories the sets name, each with a pattern that
	// names it: every ancestor-or-self of a pattern's fixed prefix
	// (etc/kubernetes/pki and etc/kubernetes for /etc/kubernetes/pki/**).
	// Later steps write into them (configure-node into pki, the control
	// plane's start into manifests), so the backup may not make one a
	// symlink.
	named map[string]string
}

func newEntryPolicy(sets []manifest.FileSet, idx *manifest.StateIndex) *entryPolicy {
	p := &entryPolicy{
		patterns: make(map[string][]string, len(sets)),
		entries:  make(map[string]manifest.IndexEntry, len(idx.Entries)),
		links:    map[string]bool{},
		named:    map[string]string{},
	}
	for _, s := range sets {
		pats := p.patterns[s.Name] // a set without patterns is still a set, refused with its own reason
		for _, pat := range s.Paths {
			rel := strings.TrimPrefix(pathpkg.Clean(pat), "/")
			pats = append(pats, rel)
			for _, dir := range manifest.NamedDirs(pat) {
				if _, ok := p.named[dir]; !ok {
					p.named[dir] = "/" + rel
				}
			}
		}
		p.patterns[s.Name] = pats
	}
	for _, e := range idx.Entries {
		p.entries[e.Path] = e
		if e.Type == manifest.EntrySymlink {
			p.links[e.Path] = true
		}
	}
	return p
}

func refuse(name, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrRefused, name, fmt.Sprintf(format, args...))
}

// admit decides one index entry: the scope it is restored in, or why it
// is refused, in one line.
func (p *entryPolicy) admit(ent manifest.IndexEntry) (scope, error) {
	if err := manifest.ValidEntryPath(ent.Path); err != nil {
		return 0, refuse(ent.Path, "unsafe path")
	}
	switch ent.Type {
	case manifest.EntryFile, manifest.EntryDir, manifest.EntrySymlink:
	default:
		return 0, refuse(ent.Path, "type %q in the index", ent.Type)
	}
	// The symlink may point anywhere: its target is data, never followed.
	// What would be written through it is not.
	if dir, ok := manifest.SymlinkAbove(ent.Path, func(d string) bool { return p.links[d] }); ok {
		return 0, refuse(ent.Path, "below the backup's symlink %s; kdr never writes through a symlink", dir)
	}
	// A link where the sets name a directory would take every later
	// write into that directory with it (configure-node's certificates,
	// the control plane's manifests), wherever the link points.
	if pat, ok := p.named[ent.Path]; ok && ent.Type == manifest.EntrySymlink {
		return 0, refuse(ent.Path, "a symlink where the sets name a directory (%s); kdr restores the directory itself, never a link in its place", pat)
	}
	patterns, ok := p.patterns[ent.Set]
	switch {
	case !ok:
		return 0, refuse(ent.Path, "its set %q is not in the manifest", ent.Set)
	case len(patterns) == 0:
		return 0, refuse(ent.Path, "the manifest records no patterns for set %q (a backup made before sets recorded them: restore it with an older kdr, or by hand from the runbook)", ent.Set)
	}
	for _, pat := range patterns {
		if ok, err := doublestar.Match(pat, ent.Path); err != nil {
			return 0, refuse(ent.Path, "set %q has a bad pattern %q: %v", ent.Set, pat, err)
		} else if ok {
			return inSet, nil
		}
	}
	if ent.Type == manifest.EntryDir {
		for _, pat := range patterns {
			if base, _ := doublestar.SplitPattern(pat); base == ent.Path || strings.HasPrefix(base, ent.Path+"/") {
				return aboveSet, nil
			}
		}
	}
	return 0, refuse(ent.Path, "no pattern of set %q matches it (%s)", ent.Set, strings.Join(patterns, ", "))
}

// admitHeader checks a tar header against the index: a kind kdr writes,
// a safe name listed in the index, and the same type, size and target as
// the index says. It returns the index entry, which is what is restored.
func (p *entryPolicy) admitHeader(hdr *tar.Header) (manifest.IndexEntry, error) {
	name, typ, err := manifest.HeaderEntry(hdr)
	if err != nil {
		return manifest.IndexEntry{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	ent, ok := p.entries[name]
	switch {
	case !ok:
		return ent, refuse(name, "in the tar but not in the index")
	case ent.Type != typ:
		return ent, refuse(name, "a %s in the tar, a %s in the index", typ, ent.Type)
	case typ == manifest.EntryFile && hdr.Size != ent.Size:
		return ent, refuse(name, "%d bytes in the tar, %d in the index", hdr.Size, ent.Size)
	case typ == manifest.EntrySymlink && hdr.Linkname != ent.Target:
		return ent, refuse(name, "symlink to %q in the tar, to %q in the index", hdr.Linkname, ent.Target)
	}
	return ent, nil
}

// safeMode is the permission bits of a recorded mode. Setuid, setgid and
// sticky bits are dropped: a backup must not be a way to plant a setuid
// binary, and no control-plane file needs one.
func safeMode(m uint32) uint32 { return m & 0o777 }
