package snapshot

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
)

// ErrRequiredMissing means a required file set matched no file.
var ErrRequiredMissing = errors.New("required file set matched nothing")

// ErrSymlinkedDir means a directory a state set names is a symlink on
// this host. A restore never writes through a symlink, so such a backup
// could not be restored: it fails now, not at 2 a.m.
var ErrSymlinkedDir = errors.New("a directory the state sets name is a symlink")

// certScanLimit bounds how much of a file is kept in memory to look for
// certificates; PKI files and kubeconfigs are a few KiB.
const certScanLimit = 1 << 20

// statePlan is the resolved list of paths to capture, decided before any
// byte is uploaded so a missing required file fails the backup early.
type statePlan struct {
	root    string
	entries []plannedEntry
	sets    []manifest.FileSet
	// controlPlane is what the static pod manifests among the entries say.
	controlPlane *manifest.ControlPlane
	// warnings name optional patterns that matched nothing.
	warnings []string
}

type plannedEntry struct {
	rel string // path relative to root, slash-separated
	set string
}

// planState expands the file sets' globs under root ("/" on a real host).
// A path matched by several sets belongs to the first.
func planState(root string, sets []config.FileSet) (*statePlan, error) {
	p := &statePlan{root: root}
	fsys := os.DirFS(root)
	taken := map[string]bool{}
	for _, set := range sets {
		sum := manifest.FileSet{Name: set.Name, Required: set.Required, Paths: set.Paths}
		for _, pattern := range set.Paths {
			for _, dir := range manifest.NamedDirs(pattern) {
				if fi, err := os.Lstat(filepath.Join(root, dir)); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
					return nil, fmt.Errorf("%w: state set %s: /%s (for %s): name the directory it points to instead", ErrSymlinkedDir, set.Name, dir, pattern)
				}
			}
			rel := strings.TrimPrefix(path.Clean(pattern), "/")
			matches, err := doublestar.Glob(fsys, rel, doublestar.WithFailOnIOErrors(), doublestar.WithNoFollow())
			if err != nil {
				return nil, fmt.Errorf("state set %s: expand %s: %w", set.Name, pattern, err)
			}
			if len(matches) == 0 {
				// Every path of a required set must be there: a backup
				// without the etcd CA is no backup.
				if set.Required {
					return nil, fmt.Errorf("%w: state set %s: %s matched no file under %s", ErrRequiredMissing, set.Name, pattern, root)
				}
				sum.Missing = append(sum.Missing, pattern)
				continue
			}
			for _, m := range matches {
				if taken[m] {
					continue
				}
				taken[m] = true
				p.entries = append(p.entries, plannedEntry{rel: m, set: set.Name})
				sum.Files++
			}
		}
		for _, miss := range sum.Missing {
			p.warnings = append(p.warnings, fmt.Sprintf("state set %s: %s matched no file", set.Name, miss))
		}
		p.sets = append(p.sets, sum)
	}
	if err := p.addReferences(); err != nil {
		return nil, err
	}
	// Parents before children, so extracting the tar recreates directory
	// modes before files land in them.
	sort.SliceStable(p.entries, func(i, j int) bool { return p.entries[i].rel < p.entries[j].rel })
	return p, nil
}

// stateCapture is what writing the state tar learned.
type stateCapture struct {
	index        manifest.StateIndex
	certificates []manifest.Certificate
}

// writeState writes the planned entries as a tar to w, the index last.
func (p *statePlan) writeState(w io.Writer, node string) (*stateCapture, error) {
	tw := tar.NewWriter(w)
	c := &stateCapture{index: manifest.StateIndex{Node: node}}
	bytesBySet := map[string]int64{}
	for _, e := range p.entries {
		entry, err := p.writeEntry(tw, e, c)
		if err != nil {
			return nil, err
		}
		bytesBySet[e.set] += entry.Size
		c.index.Entries = append(c.index.Entries, entry)
	}
	for i := range p.sets {
		p.sets[i].Bytes = bytesBySet[p.sets[i].Name]
	}
	idx, err := json.MarshalIndent(c.index, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state index: %w", err)
	}
	hdr := &tar.Header{Name: manifest.StateIndexPath, Mode: 0o600, Size: int64(len(idx)), ModTime: time.Now(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("write state index: %w", err)
	}
	if _, err := tw.Write(idx); err != nil {
		return nil, fmt.Errorf("write state index: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("finish state tar: %w", err)
	}
	return c, nil
}

func (p *statePlan) writeEntry(tw *tar.Writer, e plannedEntry, c *stateCapture) (manifest.IndexEntry, error) {
	abs := filepath.Join(p.root, filepath.FromSlash(e.rel))
	fail := func(err error) (manifest.IndexEntry, error) {
		return manifest.IndexEntry{}, fmt.Errorf("state set %s: %w", e.set, err)
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return fail(err)
	}
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(abs); err != nil {
			return fail(err)
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", abs, err))
	}
	hdr.Name = e.rel
	hdr.Format = tar.FormatPAX
	// Names of owners are looked up on the restoring host from the IDs.
	hdr.Uname, hdr.Gname = "", ""
	entry := manifest.IndexEntry{
		Path:    e.rel,
		Set:     e.set,
		Mode:    uint32(fi.Mode().Perm() | fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)),
		UID:     hdr.Uid,
		GID:     hdr.Gid,
		ModTime: fi.ModTime().UTC(),
	}
	switch {
	case fi.IsDir():
		entry.Type = manifest.EntryDir
		hdr.Name += "/"
	case link != "":
		entry.Type = manifest.EntrySymlink
		entry.Target = link
	case fi.Mode().IsRegular():
		entry.Type = manifest.EntryFile
		entry.Size = fi.Size()
	default:
		return fail(fmt.Errorf("%s: not a regular file, directory or symlink", abs))
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fail(fmt.Errorf("%s: %w", abs, err))
	}
	if entry.Type != manifest.EntryFile {
		return entry, nil
	}
	f, err := os.Open(abs)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	h := sha256.New()
	var scan bytes.Buffer
	sinks := []io.Writer{tw, h}
	if fi.Size() <= certScanLimit {
		sinks = append(sinks, &scan)
	}
	n, err := io.CopyN(io.MultiWriter(sinks...), f, fi.Size())
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fail(fmt.Errorf("%s shrank while being read (%d of %d bytes); retry the backup", abs, n, fi.Size()))
		}
		return fail(fmt.Errorf("read %s: %w", abs, err))
	}
	entry.SHA256 = hex.EncodeToString(h.Sum(nil))
	c.certificates = append(c.certificates, findCertificates("/"+e.rel, scan.Bytes())...)
	return entry, nil
}

// kubeconfigCert finds certificates embedded in kubeconfigs, whose expiry
// matters as much as the PKI directory's.
var kubeconfigCert = regexp.MustCompile(`(?m)^\s*(?:client-certificate-data|certificate-authority-data):\s*([A-Za-z0-9+/=]+)\s*$`)

// findCertificates returns every X.509 certificate in a PEM file or
// embedded base64 in a kubeconfig. Anything else is ignored: this is a
// report, not a validation.
func findCertificates(name string, data []byte) []manifest.Certificate {
	var out []manifest.Certificate
	add := func(where string, der []byte) {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		out = append(out, describeCertificate(where, cert))
	}
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			add(name, block.Bytes)
		}
	}
	for _, m := range kubeconfigCert.FindAllSubmatch(data, -1) {
		decoded, err := base64.StdEncoding.DecodeString(string(m[1]))
		if err != nil {
			continue
		}
		for b, r := pem.Decode(decoded); b != nil; b, r = pem.Decode(r) {
			if b.Type == "CERTIFICATE" {
				add(name, b.Bytes)
			}
		}
	}
	return out
}

func describeCertificate(where string, c *x509.Certificate) manifest.Certificate {
	ips := make([]string, 0, len(c.IPAddresses))
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	return manifest.Certificate{
		Path:      where,
		Subject:   c.Subject.String(),
		Issuer:    c.Issuer.String(),
		DNSNames:  c.DNSNames,
		IPs:       ips,
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		IsCA:      c.IsCA,
	}
}
