package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kdr-io/kdr/manifest"
)

// testSets are the default state sets of a kubeadm host, as a manifest
// records them.
var testSets = []manifest.FileSet{
	{Name: "pki", Paths: []string{"/etc/kubernetes/pki/**"}},
	{Name: "kubeconfigs", Paths: []string{"/etc/kubernetes/*.conf"}},
	{Name: "manifests", Paths: []string{"/etc/kubernetes/manifests/*"}},
	{Name: "old"}, // recorded before sets had patterns
}

func TestEntryPolicy(t *testing.T) {
	idx := &manifest.StateIndex{Entries: []manifest.IndexEntry{
		{Path: "etc/kubernetes/pki/sub", Set: "pki", Type: manifest.EntrySymlink, Target: "/var/lib/etcd"},
	}}
	p := newEntryPolicy(testSets, idx)
	cases := []struct {
		path, set, typ string
		want           scope
		err            string // substring of the refusal; "" when admitted
	}{
		{"etc/kubernetes/pki/ca.key", "pki", manifest.EntryFile, inSet, ""},
		{"etc/kubernetes/pki/etcd/ca.crt", "pki", manifest.EntryFile, inSet, ""},
		{"etc/kubernetes/pki", "pki", manifest.EntryDir, inSet, ""},
		// A symlink is data where a pattern matches a file; below a
		// set's fixed prefix, later writes refuse to follow it.
		{"etc/kubernetes/admin.conf", "kubeconfigs", manifest.EntrySymlink, inSet, ""},
		{"etc/kubernetes/pki/etcd", "pki", manifest.EntrySymlink, inSet, ""},
		// Never where the sets name a directory: later steps write there.
		{"etc/kubernetes/pki", "pki", manifest.EntrySymlink, 0, "a symlink where the sets name a directory (/etc/kubernetes/pki/**)"},
		{"etc/kubernetes/manifests", "manifests", manifest.EntrySymlink, 0, "a symlink where the sets name a directory (/etc/kubernetes/manifests/*)"},
		{"etc/kubernetes", "kubeconfigs", manifest.EntrySymlink, 0, "a symlink where the sets name a directory"},
		{"etc", "pki", manifest.EntrySymlink, 0, "a symlink where the sets name a directory"},
		{"etc/kubernetes/manifests", "pki", manifest.EntrySymlink, 0, "a symlink where the sets name a directory"},
		{"etc/kubernetes", "pki", manifest.EntryDir, aboveSet, ""},
		{"etc", "pki", manifest.EntryDir, aboveSet, ""},
		{"etc/kubernetes", "kubeconfigs", manifest.EntryDir, aboveSet, ""},
		{"etc/kubernetes/admin.conf", "kubeconfigs", manifest.EntryFile, inSet, ""},
		{"etc/kubernetes/manifests/etcd.yaml", "manifests", manifest.EntryFile, inSet, ""},
		{"etc/kubernetes/pki/sub", "pki", manifest.EntrySymlink, inSet, ""},
		// Only directories may stand above a set's patterns.
		{"etc/kubernetes", "pki", manifest.EntryFile, 0, `no pattern of set "pki" matches it (etc/kubernetes/pki/**)`},
		{"etc/kubernetes/admin.conf", "pki", manifest.EntryFile, 0, "no pattern of set"},
		{"etc/kubernetes/sub/admin.conf", "kubeconfigs", manifest.EntryFile, 0, "no pattern of set"},
		{"etc/cron.d/x", "pki", manifest.EntryFile, 0, "no pattern of set"},
		{"etc/cron.d", "pki", manifest.EntryDir, 0, "no pattern of set"},
		{"etc/kubernetes/pkix", "pki", manifest.EntryDir, 0, "no pattern of set"},
		{"etc/kube", "pki", manifest.EntryDir, 0, "no pattern of set"},
		{"etc/kubernetes/pki/x", "cron", manifest.EntryFile, 0, `its set "cron" is not in the manifest`},
		{"etc/kubernetes/pki/x", "old", manifest.EntryFile, 0, `records no patterns for set "old"`},
		{"etc/kubernetes/pki/sub/x", "pki", manifest.EntryFile, 0, "below the backup's symlink etc/kubernetes/pki/sub"},
		{"etc/kubernetes/pki/sub/a/b", "pki", manifest.EntryDir, 0, "below the backup's symlink etc/kubernetes/pki/sub"},
		{"../etc/passwd", "pki", manifest.EntryFile, 0, "unsafe path"},
		{"/etc/kubernetes/pki/x", "pki", manifest.EntryFile, 0, "unsafe path"},
		{"etc/kubernetes/pki/../../cron.d/x", "pki", manifest.EntryFile, 0, "unsafe path"},
		{"etc/kubernetes/pki/fifo", "pki", "fifo", 0, `type "fifo"`},
	}
	for _, tc := range cases {
		t.Run(tc.path+"/"+tc.set+"/"+tc.typ, func(t *testing.T) {
			got, err := p.admit(manifest.IndexEntry{Path: tc.path, Set: tc.set, Type: tc.typ})
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("admit = %v, %v; want %v, nil", got, err, tc.want)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("admit = %v, %v; want a refusal containing %q", got, err, tc.err)
			}
		})
	}
}

func TestEntryPolicyHeaders(t *testing.T) {
	idx := &manifest.StateIndex{Entries: []manifest.IndexEntry{
		{Path: "etc/kubernetes/pki", Set: "pki", Type: manifest.EntryDir},
		{Path: "etc/kubernetes/pki/ca.crt", Set: "pki", Type: manifest.EntryFile, Size: 3},
		{Path: "etc/kubernetes/pki/current.pem", Set: "pki", Type: manifest.EntrySymlink, Target: "ca.crt"},
	}}
	p := newEntryPolicy(testSets, idx)
	cases := []struct {
		name string
		hdr  tar.Header
		err  string
	}{
		{"file", tar.Header{Name: "etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeReg, Size: 3}, ""},
		{"dir", tar.Header{Name: "etc/kubernetes/pki/", Typeflag: tar.TypeDir}, ""},
		{"symlink", tar.Header{Name: "etc/kubernetes/pki/current.pem", Typeflag: tar.TypeSymlink, Linkname: "ca.crt"}, ""},
		{"hard link", tar.Header{Name: "etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeLink, Linkname: "etc/shadow"}, "a hard link"},
		{"char device", tar.Header{Name: "etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, "a character device"},
		{"block device", tar.Header{Name: "etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeBlock}, "a block device"},
		{"fifo", tar.Header{Name: "etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeFifo}, "a fifo"},
		{"sparse", tar.Header{Name: "etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeReg, Size: 3,
			PAXRecords: map[string]string{"GNU.sparse.map": "0,3"}}, "a sparse file"},
		{"not in the index", tar.Header{Name: "etc/kubernetes/pki/extra", Typeflag: tar.TypeReg}, "in the tar but not in the index"},
		{"type differs", tar.Header{Name: "etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeDir}, "a dir in the tar, a file in the index"},
		{"size differs", tar.Header{Name: "etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeReg, Size: 1 << 40}, "1099511627776 bytes in the tar, 3 in the index"},
		{"target differs", tar.Header{Name: "etc/kubernetes/pki/current.pem", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}, `symlink to "/etc/shadow" in the tar`},
		{"dot-dot", tar.Header{Name: "etc/kubernetes/pki/../../../x", Typeflag: tar.TypeReg}, "unsafe path"},
		{"absolute", tar.Header{Name: "/etc/kubernetes/pki/ca.crt", Typeflag: tar.TypeReg, Size: 3}, "unsafe path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.admitHeader(&tc.hdr)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("admitHeader = %v; want a refusal containing %q", err, tc.err)
			}
		})
	}
}

func TestSafeMode(t *testing.T) {
	for in, want := range map[uint32]uint32{
		0o600:  0o600,
		0o4755: 0o755,
		0o7777: 0o777,
		uint32(os.ModeSetuid | os.ModeSetgid | 0o750): 0o750,
		uint32(os.ModeSticky | os.ModeDir | 0o1777):   0o777,
	} {
		if got := safeMode(in); got != want {
			t.Errorf("safeMode(%#o) = %#o, want %#o", in, got, want)
		}
	}
}

// handEntry is one entry of a state tar made by hand, the way whoever can
// write to the backup target would make one: with plain archive/tar.
type handEntry struct {
	hdr  tar.Header
	data string
	set  string
	// unindexed leaves the entry out of the index.
	unindexed bool
}

var handTime = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

func handFile(name, set, data string, mode int64) handEntry {
	return handEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, data: data, set: set}
}

func handDir(name, set string, mode int64) handEntry {
	return handEntry{hdr: tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: mode}, set: set}
}

func handLink(name, set, target string) handEntry {
	return handEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, set: set}
}

// handTar writes entries and an index that agrees with them, last.
func handTar(t *testing.T, entries ...handEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	idx := manifest.StateIndex{Node: "m1"}
	for _, e := range entries {
		h := e.hdr
		h.Format, h.ModTime = tar.FormatPAX, handTime
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
		if e.unindexed {
			continue
		}
		ie := manifest.IndexEntry{Path: strings.TrimSuffix(h.Name, "/"), Set: e.set, Mode: uint32(h.Mode),
			UID: os.Getuid(), GID: os.Getgid(), ModTime: handTime, Type: manifest.EntryFile}
		switch h.Typeflag {
		case tar.TypeDir:
			ie.Type = manifest.EntryDir
		case tar.TypeSymlink:
			ie.Type, ie.Target = manifest.EntrySymlink, h.Linkname
		default:
			sum := sha256.Sum256([]byte(e.data))
			ie.Size, ie.SHA256 = int64(len(e.data)), hex.EncodeToString(sum[:])
		}
		idx.Entries = append(idx.Entries, ie)
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: manifest.StateIndexPath, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(raw)), Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// stateEnvAt is an Env that restores sets from state under root, with the
// state tar where decrypt would have left it.
func stateEnvAt(t *testing.T, root string, sets []manifest.FileSet, state []byte) *Env {
	t.Helper()
	plan := &Plan{Cluster: "prod", BackupID: "b1",
		Options:  Options{KubernetesDir: "/etc/kubernetes", StagingDir: "/var/lib/kdr/restore"},
		Manifest: &manifest.Manifest{State: manifest.State{Sets: sets}}}
	e := &Env{Plan: plan, Root: root}
	if err := os.MkdirAll(e.staging(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.staging(), stateFile), state, 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// stateEnv is stateEnvAt under a fresh root, with a canary directory
// beside the root that no restore may write into.
func stateEnv(t *testing.T, state []byte) (e *Env, canary string) {
	t.Helper()
	base := t.TempDir()
	root, canary := filepath.Join(base, "root"), filepath.Join(base, "canary")
	for _, d := range []string{root, canary} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return stateEnvAt(t, root, testSets, state), canary
}

// emptyDir fails the test unless dir holds nothing.
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		t.Errorf("%s was written: %s", dir, n.Name())
	}
}

// oneLineRefusal fails the test unless err is a one-line error that
// contains want.
func oneLineRefusal(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("restored; want an error containing %q", want)
	}
	if !strings.Contains(err.Error(), want) || strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("error %q; want one line containing %q", err, want)
	}
}

// TestRestoreFilesRefuses: a state that would write anywhere but its sets'
// paths is refused before anything is written, with a one-line reason.
func TestRestoreFilesRefuses(t *testing.T) {
	ca := handFile("etc/kubernetes/pki/ca.crt", "pki", "CA", 0o644)
	cases := []struct {
		name    string
		entries func(canary string) []handEntry
		want    string
	}{
		{"symlink then file", func(canary string) []handEntry {
			return []handEntry{handLink("etc/kubernetes/pki/etcd", "pki", canary), handFile("etc/kubernetes/pki/etcd/x", "pki", "owned", 0o644)}
		}, "below the backup's symlink etc/kubernetes/pki/etcd"},
		{"relative symlink then file", func(string) []handEntry {
			// From root/etc/kubernetes/pki/etcd, ../../../../canary is the canary.
			return []handEntry{handLink("etc/kubernetes/pki/etcd", "pki", "../../../../canary"), handFile("etc/kubernetes/pki/etcd/x", "pki", "owned", 0o644)}
		}, "below the backup's symlink etc/kubernetes/pki/etcd"},
		// A link where the sets name a directory is refused on its own:
		// configure-node and the control plane's start write into it later.
		{"symlink at the pki directory", func(canary string) []handEntry {
			return []handEntry{handFile("etc/kubernetes/admin.conf", "kubeconfigs", "conf", 0o600), handLink("etc/kubernetes/pki", "pki", canary)}
		}, `refused state entry "etc/kubernetes/pki": a symlink where the sets name a directory (/etc/kubernetes/pki/**)`},
		{"relative symlink at the manifests directory", func(string) []handEntry {
			return []handEntry{ca, handLink("etc/kubernetes/manifests", "manifests", "../../../canary")}
		}, `refused state entry "etc/kubernetes/manifests": a symlink where the sets name a directory (/etc/kubernetes/manifests/*)`},
		{"symlink at the Kubernetes directory", func(canary string) []handEntry {
			return []handEntry{handLink("etc/kubernetes", "kubeconfigs", canary)}
		}, `refused state entry "etc/kubernetes": a symlink where the sets name a directory`},
		{"file then symlink", func(canary string) []handEntry {
			return []handEntry{ca, handFile("etc/kubernetes/pki/etcd/x", "pki", "owned", 0o644), handLink("etc/kubernetes/pki/etcd", "pki", canary)}
		}, "below the backup's symlink etc/kubernetes/pki/etcd"},
		{"dot-dot in a name", func(string) []handEntry {
			return []handEntry{ca, handFile("etc/kubernetes/pki/../../../../canary/x", "pki", "owned", 0o644)}
		}, `unsafe path "etc/kubernetes/pki/../../../../canary/x"`},
		{"dot-dot in a name left out of the index", func(string) []handEntry {
			e := handFile("etc/kubernetes/pki/../../../../canary/x", "pki", "owned", 0o644)
			e.unindexed = true
			return []handEntry{ca, e}
		}, "unsafe path"},
		{"absolute name", func(canary string) []handEntry {
			return []handEntry{ca, handFile(canary+"/x", "pki", "owned", 0o644)}
		}, "unsafe path"},
		{"absolute name left out of the index", func(canary string) []handEntry {
			e := handFile(canary+"/x", "pki", "owned", 0o644)
			e.unindexed = true
			return []handEntry{ca, e}
		}, "unsafe path"},
		{"outside every set", func(string) []handEntry {
			return []handEntry{ca, handFile("etc/cron.d/x", "pki", "* * * * * root sh", 0o644)}
		}, `refused state entry "etc/cron.d/x": no pattern of set "pki" matches it`},
		{"set not in the manifest", func(string) []handEntry {
			return []handEntry{ca, handFile("etc/cron.d/x", "cron", "* * * * * root sh", 0o644)}
		}, `its set "cron" is not in the manifest`},
		{"not in the index", func(string) []handEntry {
			e := handFile("etc/kubernetes/pki/extra", "pki", "x", 0o644)
			e.unindexed = true
			return []handEntry{ca, e}
		}, "in the tar but not in the index"},
		{"hard link", func(canary string) []handEntry {
			return []handEntry{ca, {hdr: tar.Header{Name: "etc/kubernetes/pki/hard", Typeflag: tar.TypeLink, Linkname: canary + "/x"}, set: "pki"}}
		}, `etc/kubernetes/pki/hard: a hard link`},
		{"character device", func(string) []handEntry {
			return []handEntry{ca, {hdr: tar.Header{Name: "etc/kubernetes/pki/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o666}, set: "pki"}}
		}, `etc/kubernetes/pki/mem: a character device`},
		{"fifo", func(string) []handEntry {
			return []handEntry{ca, {hdr: tar.Header{Name: "etc/kubernetes/pki/pipe", Typeflag: tar.TypeFifo, Mode: 0o666}, set: "pki"}}
		}, `etc/kubernetes/pki/pipe: a fifo`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			canary := filepath.Join(base, "canary")
			os.Mkdir(canary, 0o755)
			root := filepath.Join(base, "root")
			os.Mkdir(root, 0o755)
			e := stateEnvAt(t, root, testSets, handTar(t, tc.entries(canary)...))
			err := restoreFiles(context.Background(), e)
			emptyDir(t, canary)
			oneLineRefusal(t, err, tc.want)
			// Judged before the first write: not even the good entries.
			if _, err := os.Lstat(filepath.Join(root, "etc")); err == nil {
				t.Error("a refused state wrote into the root")
			}
			if err := checkFilesRestored(context.Background(), e); err == nil {
				t.Error("the check passes a refused state")
			}
		})
	}
}

// TestRestoreFilesHostSymlinks: a symlink already on the host is never
// written through; one at an entry's own path is moved aside like any
// file in the way.
func TestRestoreFilesHostSymlinks(t *testing.T) {
	key := handFile("etc/kubernetes/pki/ca.key", "pki", "KEY", 0o600)
	cases := []struct {
		name    string
		plant   map[string]string // root-relative path → symlink target, "@" the canary
		entries []handEntry
		want    string // "" when the restore succeeds
	}{
		{"parent of an entry", map[string]string{"etc/kubernetes/pki": "@"}, []handEntry{key},
			"etc/kubernetes/pki is a symlink on this host, which kdr does not follow"},
		{"grandparent of an entry", map[string]string{"etc/kubernetes": "@"}, []handEntry{key},
			"etc/kubernetes is a symlink on this host"},
		{"relative, parent of a kubeconfig", map[string]string{"etc/kubernetes": "../../canary"},
			[]handEntry{handFile("etc/kubernetes/admin.conf", "kubeconfigs", "conf", 0o600)}, "etc/kubernetes is a symlink on this host"},
		{"the entry itself", map[string]string{"etc/kubernetes/pki/ca.key": "@/ca.key"}, []handEntry{key}, ""},
		{"a directory entry itself", map[string]string{"etc/kubernetes/pki": "@"}, []handEntry{handDir("etc/kubernetes/pki", "pki", 0o755), key}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, canary := stateEnv(t, handTar(t, tc.entries...))
			for p, target := range tc.plant {
				dst := filepath.Join(e.Root, p)
				os.MkdirAll(filepath.Dir(dst), 0o755)
				if err := os.Symlink(strings.Replace(target, "@", canary, 1), dst); err != nil {
					t.Fatal(err)
				}
			}
			err := restoreFiles(context.Background(), e)
			emptyDir(t, canary)
			if tc.want != "" {
				oneLineRefusal(t, err, tc.want)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := checkFilesRestored(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			// The link itself went aside, not what it points to.
			for p := range tc.plant {
				fi, err := os.Lstat(filepath.Join(e.staging(), "aside", p))
				if err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("the host's symlink %s is not in the aside tree: %v", p, err)
				}
			}
		})
	}
}

// TestRestoreFilesWrites: a well-formed state is restored with its modes
// (less setuid), times and symlinks, whose targets are data; run again it
// changes nothing; its check reads without following symlinks.
func TestRestoreFilesWrites(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	state := handTar(t,
		handDir("etc", "pki", 0o777), // above the set: made, never changed
		handDir("etc/kubernetes/pki", "pki", 0o750),
		handFile("etc/kubernetes/admin.conf", "kubeconfigs", "conf", 0o600),
		handFile("etc/kubernetes/manifests/etcd.yaml", "manifests", "pod", 0o600),
		handLink("etc/kubernetes/pki/away", "pki", outside+"/nowhere"),
		handFile("etc/kubernetes/pki/ca.crt", "pki", "CA", 0o644),
		handFile("etc/kubernetes/pki/ca.key", "pki", "KEY", 0o600),
		handLink("etc/kubernetes/pki/current.pem", "pki", "ca.crt"),
		handFile("etc/kubernetes/pki/tool", "pki", "#!/bin/sh\n", 0o4755),
	)
	if err := os.MkdirAll(filepath.Join(root, "etc/kubernetes"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/kubernetes/admin.conf"), []byte("the host's"), 0o644)
	e := stateEnvAt(t, root, testSets, state)
	ctx := context.Background()
	for run := 1; run <= 2; run++ {
		if err := restoreFiles(ctx, e); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if err := checkFilesRestored(ctx, e); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	mode := func(p string) os.FileMode {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	for p, want := range map[string]os.FileMode{
		"etc":                       os.ModeDir | 0o755,
		"etc/kubernetes/pki":        os.ModeDir | 0o750,
		"etc/kubernetes/pki/ca.key": 0o600,
		"etc/kubernetes/pki/ca.crt": 0o644,
		"etc/kubernetes/pki/tool":   0o755,
		"etc/kubernetes/admin.conf": 0o600,
		"etc/kubernetes/pki/away":   os.ModeSymlink | 0o777,
		"var/lib/kdr/restore/prod/b1/manifests/etc/kubernetes/manifests/etcd.yaml": 0o600,
	} {
		if got := mode(filepath.Join(root, p)); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	if fi, _ := os.Lstat(filepath.Join(root, "etc/kubernetes/pki/ca.key")); !fi.ModTime().Equal(handTime) {
		t.Errorf("ca.key modified %v, want %v", fi.ModTime(), handTime)
	}
	if got, _ := os.Readlink(filepath.Join(root, "etc/kubernetes/pki/away")); got != outside+"/nowhere" {
		t.Errorf("symlink target %q", got)
	}
	if _, err := os.Lstat(outside); err == nil {
		t.Error("a symlink's target was created")
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/kubernetes/manifests")); err == nil {
		t.Error("a static pod manifest went to its place before its start step")
	}
	// The host's file went aside once; the second run found the backup's.
	aside, err := os.ReadDir(filepath.Join(e.staging(), "aside/etc/kubernetes"))
	if err != nil || len(aside) != 1 || aside[0].Name() != "admin.conf" {
		t.Errorf("aside holds %v (%v), want the host's admin.conf only", aside, err)
	}

	// The check reads through no symlink: the same files behind a
	// symlinked directory are not the restored ones.
	pki := filepath.Join(root, "etc/kubernetes/pki")
	if err := os.Rename(pki, filepath.Join(base, "pki")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "pki"), pki); err != nil {
		t.Fatal(err)
	}
	oneLineRefusal(t, checkFilesRestored(ctx, e), "etc/kubernetes/pki")
}

// mountNamespaceEnv marks the copy of the test binary that runs in a
// private mount namespace; its value is the parent's mount namespace.
const mountNamespaceEnv = "KDR_TEST_MOUNT_NAMESPACE"

// escapeDir is where the malicious states of TestRestoreFilesAtRootSlash
// point; it exists only on a tmpfs in the test's mount namespace.
const escapeDir = "/var/lib/kdr-test-escape"

// TestRestoreFilesAtRootSlash restores malicious states with the restore
// root /, as on a real host, in a private mount namespace whose /etc and
// /var/lib are fresh tmpfs mounts: nothing reaches the escape directory,
// and a good state still restores.
func TestRestoreFilesAtRootSlash(t *testing.T) {
	if parent := os.Getenv(mountNamespaceEnv); parent != "" {
		restoreAtRootSlash(t, parent)
		return
	}
	if os.Geteuid() != 0 {
		t.Fatalf("needs root, to mount tmpfs over /etc and /var/lib in a private mount namespace (uid %d)", os.Geteuid())
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("util-linux unshare makes the private mount namespace: %v", err)
	}
	ns, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	_, kubeBefore := os.Lstat("/etc/kubernetes")
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "--",
		os.Args[0], "-test.run=^TestRestoreFilesAtRootSlash$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), mountNamespaceEnv+"="+ns)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestRestoreFilesAtRootSlash")) {
		t.Fatalf("in the mount namespace: %v\n%s", err, out)
	}
	t.Logf("in the mount namespace:\n%s", out)
	// The namespace's mounts and everything in them went with it.
	if _, err := os.Lstat(escapeDir); err == nil {
		t.Errorf("%s exists outside the test's mount namespace", escapeDir)
	}
	if _, err := os.Lstat("/etc/kubernetes"); err == nil && kubeBefore != nil {
		t.Error("/etc/kubernetes appeared outside the test's mount namespace")
	}
}

func restoreAtRootSlash(t *testing.T, parentNS string) {
	// Mounting over /etc outside a namespace of its own would hide the
	// host's: make sure this is not the parent's namespace.
	if ns, err := os.Readlink("/proc/self/ns/mnt"); err != nil || ns == parentNS {
		t.Fatalf("not in a mount namespace of its own (%s, %v): refusing to mount over /etc", ns, err)
	}
	for _, d := range []string{"/etc", "/var/lib"} {
		if err := syscall.Mount("tmpfs", d, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755,size=64m"); err != nil {
			t.Fatalf("mount tmpfs on %s: %v", d, err)
		}
	}
	ctx := context.Background()
	cases := []struct {
		name    string
		plant   string // a host symlink /etc/kubernetes/pki → escapeDir
		entries []handEntry
		want    string
	}{
		{"symlink then file", "", []handEntry{
			handLink("etc/kubernetes/pki/etcd", "pki", escapeDir), handFile("etc/kubernetes/pki/etcd/x", "pki", "owned", 0o644),
		}, "below the backup's symlink etc/kubernetes/pki/etcd"},
		{"relative symlink then file", "", []handEntry{
			handLink("etc/kubernetes/pki/etcd", "pki", "../../../var/lib/kdr-test-escape"), handFile("etc/kubernetes/pki/etcd/x", "pki", "owned", 0o644),
		}, "below the backup's symlink etc/kubernetes/pki/etcd"},
		{"symlink at the pki directory", "", []handEntry{
			handLink("etc/kubernetes/pki", "pki", escapeDir),
		}, "a symlink where the sets name a directory (/etc/kubernetes/pki/**)"},
		{"dot-dot in a name", "", []handEntry{
			handFile("etc/kubernetes/pki/../../../var/lib/kdr-test-escape/x", "pki", "owned", 0o644),
		}, "unsafe path"},
		{"host symlink", "/etc/kubernetes/pki", []handEntry{
			handFile("etc/kubernetes/pki/ca.key", "pki", "KEY", 0o600),
		}, "/etc/kubernetes/pki is a symlink on this host"},
		{"good state", "", []handEntry{
			handDir("etc/kubernetes/pki", "pki", 0o755), handFile("etc/kubernetes/pki/ca.key", "pki", "KEY", 0o600),
			handLink("etc/kubernetes/pki/away", "pki", escapeDir+"/x"),
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range []string{"/etc/kubernetes", "/var/lib/kdr", escapeDir} {
				if err := os.RemoveAll(d); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll("/etc/kubernetes", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(escapeDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.plant != "" {
				if err := os.Symlink(escapeDir, tc.plant); err != nil {
					t.Fatal(err)
				}
			}
			e := stateEnvAt(t, "/", testSets, handTar(t, tc.entries...))
			err := restoreFiles(ctx, e)
			emptyDir(t, escapeDir)
			if tc.want != "" {
				oneLineRefusal(t, err, tc.want)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := checkFilesRestored(ctx, e); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile("/etc/kubernetes/pki/ca.key"); err != nil || string(got) != "KEY" {
				t.Errorf("/etc/kubernetes/pki/ca.key: %q, %v", got, err)
			}
		})
	}
}
