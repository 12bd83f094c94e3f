package manifest

import (
	"github.com/bmatcuk/doublestar/v4"

	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strings"
)

// The state object's rules as a reader holds it to them (see "state.tar"
// in docs/format.md). Where a restore may write is its own policy, in
// package restore; what a well-formed state tar is, is here.

const (
	// maxStateEntries bounds the entries of a state tar that are tracked
	// to compare with the index: a control-plane host has hundreds, so a
	// million is damage or an attack, not state.
	maxStateEntries = 1 << 20
	// maxStateProblems bounds the problems kept about one state tar; the
	// rest are counted.
	maxStateProblems = 50
)

// StateCheck is what reading a state tar against its index found.
type StateCheck struct {
	Index    *StateIndex
	Files    int
	Dirs     int
	Symlinks int
	// Problems describe, one line each, how the tar and its index disagree.
	Problems []string
	// More counts the problems beyond the first 50.
	More int
}

func (s *StateCheck) problem(format string, args ...any) {
	if len(s.Problems) >= maxStateProblems {
		s.More++
		return
	}
	s.Problems = append(s.Problems, fmt.Sprintf(format, args...))
}

// HeaderEntry returns the index path and type of a tar entry of a kind
// kdr writes: a file, a directory or a symlink, under a safe path. Any
// other kind is refused, and so is a sparse file: archive/tar expands its
// holes itself, so a few header bytes could produce exabytes of zeros.
func HeaderEntry(hdr *tar.Header) (name, typ string, err error) {
	name = hdr.Name
	if hdr.Typeflag == tar.TypeDir {
		name = strings.TrimSuffix(name, "/")
	}
	if err := ValidEntryPath(name); err != nil {
		return "", "", fmt.Errorf("tar entry: %w", err)
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		if !isSparse(hdr) {
			return name, EntryFile, nil
		}
	case tar.TypeDir:
		return name, EntryDir, nil
	case tar.TypeSymlink:
		return name, EntrySymlink, nil
	}
	return name, "", fmt.Errorf("%s: %s; kdr writes only files, directories and symlinks", quoteName(name), tarKind(hdr))
}

// tarKind names a tar entry's kind for people.
func tarKind(hdr *tar.Header) string {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse:
		return "a sparse file"
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeChar:
		return "a character device"
	case tar.TypeBlock:
		return "a block device"
	case tar.TypeFifo:
		return "a fifo"
	case tar.TypeCont:
		return "a contiguous file"
	}
	return fmt.Sprintf("a tar entry of type %q", hdr.Typeflag)
}

// SymlinkAbove returns the nearest directory of p that isLink says is a
// symlink of the backup. tar -x writes an entry below one of the tar's
// own symlinks through it, wherever it points; a restore never does, so
// a state holding such an entry is not one it can restore.
func SymlinkAbove(p string, isLink func(dir string) bool) (string, bool) {
	for dir := path.Dir(p); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if isLink(dir) {
			return dir, true
		}
	}
	return "", false
}

// ReadStateIndex reads a state tar's headers up to its index, which must
// be its last entry and a regular file, and parses it. Entries' contents
// are skipped, not read.
func ReadStateIndex(r io.Reader) (*StateIndex, error) {
	tr := tar.NewReader(r)
	var idx *StateIndex
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if idx == nil {
				return nil, fmt.Errorf("%w: no index (%s) in the state tar", ErrInvalid, StateIndexPath)
			}
			return idx, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read state tar: %w", err)
		}
		switch {
		case idx != nil:
			return nil, fmt.Errorf("%w: state tar: %s after the index, which must be the last entry", ErrInvalid, quoteName(hdr.Name))
		case hdr.Name != StateIndexPath:
			continue
		case hdr.Typeflag != tar.TypeReg:
			return nil, fmt.Errorf("%w: state tar: %s is not a regular file", ErrInvalid, StateIndexPath)
		}
		if idx, err = ParseIndex(tr); err != nil {
			return nil, err
		}
	}
}

// tarEntry is what the tar says about one path.
type tarEntry struct {
	typ    string
	size   int64
	sha256 string
	perm   uint32
	target string
}

// CheckStateTar reads a state tar to its end and compares every entry
// with the index, its last entry: types kdr writes, safe and unique
// paths, nothing below the tar's own symlinks, and each file's size,
// mode and sha256 as indexed. Disagreements are problems in the result;
// the error is only for a failure of the stream under the tar (which,
// read from an ObjectReader, includes the damage it found).
func CheckStateTar(r io.Reader) (*StateCheck, error) {
	src := &firstErr{r: r}
	// A tar error caused by the stream is the stream's error, not a
	// malformed tar: a wrong key, a cut download, a cancelled context.
	streamErr := func() error { return src.err }
	tr := tar.NewReader(src)
	res := &StateCheck{}
	seen := map[string]tarEntry{}
	var order []string
	indexSeen := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if err := streamErr(); err != nil {
				return nil, err
			}
			res.problem("tar: %v", err)
			return res, nil
		}
		if indexSeen {
			res.problem("%s: after the index, which must be the last entry", quoteName(hdr.Name))
		}
		if hdr.Name == StateIndexPath {
			if indexSeen {
				res.problem("%s: more than one index", StateIndexPath)
				continue
			}
			indexSeen = true
			if hdr.Typeflag != tar.TypeReg {
				res.problem("%s: not a regular file", StateIndexPath)
				continue
			}
			idx, err := ParseIndex(tr)
			if err := streamErr(); err != nil {
				return nil, err
			}
			if err != nil {
				res.problem("%s: %v", StateIndexPath, err)
				continue
			}
			res.Index = idx
			continue
		}
		if len(seen) >= maxStateEntries {
			res.problem("tar: more than %d entries", maxStateEntries)
			return res, nil
		}
		name, typ, err := HeaderEntry(hdr)
		if err != nil {
			res.problem("%v", err)
			continue
		}
		if _, dup := seen[name]; dup {
			res.problem("%s: in the tar more than once", quoteName(name))
			continue
		}
		e := tarEntry{typ: typ, perm: uint32(hdr.Mode) & 0o777}
		switch typ {
		case EntryFile:
			h := sha256.New()
			n, err := io.Copy(h, tr)
			if err != nil {
				if err := streamErr(); err != nil {
					return nil, err
				}
				res.problem("%s: %v", quoteName(name), err)
				return res, nil
			}
			e.size, e.sha256 = n, hex.EncodeToString(h.Sum(nil))
			res.Files++
		case EntryDir:
			res.Dirs++
		case EntrySymlink:
			e.target = hdr.Linkname
			res.Symlinks++
		}
		seen[name] = e
		order = append(order, name)
	}
	isLink := func(dir string) bool { return seen[dir].typ == EntrySymlink }
	for _, name := range order {
		if dir, ok := SymlinkAbove(name, isLink); ok {
			res.problem("%s: below the symlink %s, which a restore will not write through", quoteName(name), quoteName(dir))
		}
	}
	if res.Index == nil {
		if !indexSeen {
			res.problem("no index (%s) in the state tar", StateIndexPath)
		}
		return res, nil
	}
	indexed := make(map[string]bool, len(res.Index.Entries))
	for _, want := range res.Index.Entries {
		indexed[want.Path] = true
		got, ok := seen[want.Path]
		if !ok {
			res.problem("%s: in the index but not in the tar", quoteName(want.Path))
			continue
		}
		compareEntry(res, want, got)
	}
	for _, name := range order {
		if !indexed[name] {
			res.problem("%s: in the tar but not in the index", quoteName(name))
		}
	}
	return res, nil
}

func isSparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func compareEntry(res *StateCheck, want IndexEntry, got tarEntry) {
	name := quoteName(want.Path)
	if got.typ != want.Type {
		res.problem("%s: a %s in the tar, a %s in the index", name, got.typ, want.Type)
		return
	}
	if perm := want.Mode & 0o777; got.perm != perm {
		res.problem("%s: mode %04o in the tar, %04o in the index", name, got.perm, perm)
	}
	switch want.Type {
	case EntryFile:
		if got.size != want.Size {
			res.problem("%s: %d bytes in the tar, %d in the index", name, got.size, want.Size)
		} else if got.sha256 != want.SHA256 {
			res.problem("%s: sha256 differs from the index (file changed or corrupt)", name)
		}
	case EntrySymlink:
		if got.target != want.Target {
			res.problem("%s: symlink to %q in the tar, to %q in the index", name, got.target, want.Target)
		}
	}
}

// quoteName quotes a tar name only when it holds characters that would
// garble a one-line message.
func quoteName(s string) string {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return fmt.Sprintf("%q", s)
		}
	}
	return s
}

// NamedDirs are the directories a state set's pattern names, relative to
// the root: its fixed prefix and every directory above it (etc,
// etc/kubernetes and etc/kubernetes/pki for /etc/kubernetes/pki/**). A
// restore writes into them after restore-files (configure-node into pki,
// the control plane's start into manifests), so none of them may be a
// symlink, in a backup or on the host it was taken from.
func NamedDirs(pattern string) []string {
	rel := strings.TrimPrefix(path.Clean(pattern), "/")
	base, _ := doublestar.SplitPattern(rel)
	var dirs []string
	for dir := base; dir != "." && dir != "/" && dir != ""; dir = path.Dir(dir) {
		dirs = append(dirs, dir)
	}
	return dirs
}
