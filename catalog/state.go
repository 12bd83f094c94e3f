package catalog

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/kdr-io/kdr/manifest"
)

const (
	// maxStateEntries bounds the entries of a state tar that are tracked
	// to compare with the index: a control-plane host has hundreds, so a
	// million is damage or an attack, not state.
	maxStateEntries = 1 << 20
	// maxStateProblems bounds the problems kept about one state tar; the
	// rest are counted.
	maxStateProblems = 50
)

// stateCheck is what reading a state tar against its index found.
type stateCheck struct {
	Index    *manifest.StateIndex
	Files    int
	Dirs     int
	Symlinks int
	// Problems describe, one line each, how the tar and its index disagree.
	Problems []string
	// More counts the problems beyond maxStateProblems.
	More int
}

func (s *stateCheck) problem(format string, args ...any) {
	if len(s.Problems) >= maxStateProblems {
		s.More++
		return
	}
	s.Problems = append(s.Problems, fmt.Sprintf(format, args...))
}

// tarEntry is what the tar says about one path.
type tarEntry struct {
	typ    string
	size   int64
	sha256 string
	perm   uint32
	target string
}

// recordingReader keeps the first error of the reader under a tar reader,
// so a failing stream (a wrong key, a cut download, a cancelled context)
// is not mistaken for a malformed tar.
type recordingReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if err := r.ctx.Err(); err != nil {
		r.err = err
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// checkStateTar reads a state tar to its end and compares every entry
// with the index, its last entry. Disagreements are problems in the
// result; the error is only for a failure of the stream under the tar.
func checkStateTar(ctx context.Context, r io.Reader) (*stateCheck, error) {
	src := &recordingReader{ctx: ctx, r: r}
	tr := tar.NewReader(src)
	res := &stateCheck{}
	seen := map[string]tarEntry{}
	var order []string
	indexSeen := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if src.err != nil {
				return nil, src.err
			}
			res.problem("tar: %v", err)
			return res, nil
		}
		if indexSeen {
			res.problem("%s: after the index, which must be the last entry", quoteName(hdr.Name))
		}
		if hdr.Name == manifest.StateIndexPath {
			if indexSeen {
				res.problem("%s: more than one index", manifest.StateIndexPath)
				continue
			}
			indexSeen = true
			if hdr.Typeflag != tar.TypeReg {
				res.problem("%s: not a regular file", manifest.StateIndexPath)
				continue
			}
			idx, err := manifest.ParseIndex(tr)
			if src.err != nil {
				return nil, src.err
			}
			if err != nil {
				res.problem("%s: %v", manifest.StateIndexPath, err)
				continue
			}
			res.Index = idx
			continue
		}
		if len(seen) >= maxStateEntries {
			res.problem("tar: more than %d entries", maxStateEntries)
			return res, nil
		}
		name := hdr.Name
		if hdr.Typeflag == tar.TypeDir {
			name = strings.TrimSuffix(name, "/")
		}
		if err := manifest.ValidEntryPath(name); err != nil {
			res.problem("tar entry: %v", err)
			continue
		}
		if _, dup := seen[name]; dup {
			res.problem("%s: in the tar more than once", quoteName(name))
			continue
		}
		e := tarEntry{perm: uint32(hdr.Mode) & 0o777}
		switch hdr.Typeflag {
		case tar.TypeReg:
			// archive/tar expands a sparse entry's holes itself: a few
			// header bytes could make it produce exabytes of zeros. kdr
			// never writes one.
			if isSparse(hdr) {
				res.problem("%s: sparse file entry, which kdr never writes", quoteName(name))
				continue
			}
			h := sha256.New()
			n, err := io.Copy(h, tr)
			if err != nil {
				if src.err != nil {
					return nil, src.err
				}
				res.problem("%s: %v", quoteName(name), err)
				return res, nil
			}
			e.typ, e.size, e.sha256 = manifest.EntryFile, n, hex.EncodeToString(h.Sum(nil))
			res.Files++
		case tar.TypeDir:
			e.typ = manifest.EntryDir
			res.Dirs++
		case tar.TypeSymlink:
			e.typ, e.target = manifest.EntrySymlink, hdr.Linkname
			res.Symlinks++
		default:
			res.problem("%s: tar entry of type %q, not a file, directory or symlink", quoteName(name), hdr.Typeflag)
			continue
		}
		seen[name] = e
		order = append(order, name)
	}
	// tar -x writes an entry below one of the tar's own symlinks through
	// it, wherever it points; a restore never does, so such a tar is not
	// one it can restore.
	for _, name := range order {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if seen[dir].typ == manifest.EntrySymlink {
				res.problem("%s: below the symlink %s, which a restore will not write through", quoteName(name), quoteName(dir))
				break
			}
		}
	}
	if res.Index == nil {
		if !indexSeen {
			res.problem("no index (%s) in the state tar", manifest.StateIndexPath)
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

func compareEntry(res *stateCheck, want manifest.IndexEntry, got tarEntry) {
	name := quoteName(want.Path)
	if got.typ != want.Type {
		res.problem("%s: a %s in the tar, a %s in the index", name, got.typ, want.Type)
		return
	}
	if perm := want.Mode & 0o777; got.perm != perm {
		res.problem("%s: mode %04o in the tar, %04o in the index", name, got.perm, perm)
	}
	switch want.Type {
	case manifest.EntryFile:
		if got.size != want.Size {
			res.problem("%s: %d bytes in the tar, %d in the index", name, got.size, want.Size)
		} else if got.sha256 != want.SHA256 {
			res.problem("%s: sha256 differs from the index (file changed or corrupt)", name)
		}
	case manifest.EntrySymlink:
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
