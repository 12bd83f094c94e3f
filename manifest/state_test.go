package manifest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// stateFile is one entry of a test state tar.
type stateFile struct {
	path   string
	typ    string
	data   []byte
	mode   uint32
	target string
}

func defaultStateFiles() []stateFile {
	return []stateFile{
		{path: "etc/kubernetes", typ: EntryDir, mode: 0o755},
		{path: "etc/kubernetes/admin.conf", typ: EntryFile, mode: 0o600, data: []byte("apiVersion: v1\nkind: Config\n")},
		{path: "etc/kubernetes/pki", typ: EntryDir, mode: 0o755},
		{path: "etc/kubernetes/pki/ca.crt", typ: EntryFile, mode: 0o644, data: []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")},
		{path: "etc/kubernetes/pki/ca.key", typ: EntryFile, mode: 0o600, data: bytes.Repeat([]byte("k"), 3000)},
		{path: "etc/kubernetes/pki/current.pem", typ: EntrySymlink, mode: 0o777, target: "ca.crt"},
	}
}

// buildStateTar writes files as snapshot does: PAX headers, directories
// with a trailing slash, and the index last. editIndex, if set, changes
// the index before it is written.
func buildStateTar(t testing.TB, files []stateFile, editIndex func(*StateIndex)) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	idx := StateIndex{Node: "cp1"}
	mtime := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, f := range files {
		hdr := &tar.Header{Name: f.path, Mode: int64(f.mode), ModTime: mtime, Format: tar.FormatPAX}
		e := IndexEntry{Path: f.path, Set: "pki", Type: f.typ, Mode: f.mode, ModTime: mtime}
		switch f.typ {
		case EntryDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, f.path+"/"
		case EntrySymlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, f.target
			e.Target = f.target
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.data))
			e.Size = int64(len(f.data))
			s := sha256.Sum256(f.data)
			e.SHA256 = hex.EncodeToString(s[:])
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
		idx.Entries = append(idx.Entries, e)
	}
	if editIndex != nil {
		editIndex(&idx)
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	hdr := &tar.Header{Name: StateIndexPath, Mode: 0o600, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX, ModTime: mtime}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawTar writes entries as given, with no index unless one is among them.
type rawEntry struct {
	hdr  tar.Header
	data []byte
}

func rawTar(t testing.TB, entries []rawEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Format = tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// indexFor is the index of defaultStateFiles as buildStateTar writes it.
func indexFor(t testing.TB, files []stateFile) []byte {
	t.Helper()
	var idx []byte
	buildStateTar(t, files, func(i *StateIndex) {
		var err error
		if idx, err = json.MarshalIndent(*i, "", "  "); err != nil {
			t.Fatal(err)
		}
	})
	return idx
}

func TestCheckStateTar(t *testing.T) {
	files := defaultStateFiles()
	index := indexFor(t, files)
	indexEntry := rawEntry{hdr: tar.Header{Name: StateIndexPath, Typeflag: tar.TypeReg, Mode: 0o600}, data: index}
	// entriesOf turns files into raw entries, so cases can change them.
	entriesOf := func(fs []stateFile) []rawEntry {
		var out []rawEntry
		for _, f := range fs {
			h := tar.Header{Name: f.path, Mode: int64(f.mode), Typeflag: tar.TypeReg}
			switch f.typ {
			case EntryDir:
				h.Typeflag, h.Name = tar.TypeDir, f.path+"/"
			case EntrySymlink:
				h.Typeflag, h.Linkname = tar.TypeSymlink, f.target
			}
			out = append(out, rawEntry{hdr: h, data: f.data})
		}
		return out
	}
	whole := append(entriesOf(files), indexEntry)
	with := func(edit func([]rawEntry) []rawEntry) []byte {
		es := append([]rawEntry(nil), whole...)
		return rawTar(t, edit(es))
	}

	cases := []struct {
		name      string
		tar       []byte
		want      []string // substrings, one per problem, in order
		wantFiles int
	}{
		{name: "as snapshot writes it", tar: buildStateTar(t, files, nil), wantFiles: 3},
		{name: "raw equivalent", tar: rawTar(t, whole), wantFiles: 3},
		{
			name: "file content differs from the index",
			tar: with(func(es []rawEntry) []rawEntry {
				es[1].data = []byte("apiVersion: v2\nkind: Config\n")
				return es
			}),
			want:      []string{"etc/kubernetes/admin.conf: sha256 differs from the index"},
			wantFiles: 3,
		},
		{
			name: "file size differs from the index",
			tar: with(func(es []rawEntry) []rawEntry {
				es[1].data = []byte("short")
				return es
			}),
			want:      []string{"etc/kubernetes/admin.conf: 5 bytes in the tar, 28 in the index"},
			wantFiles: 3,
		},
		{
			name: "mode differs from the index",
			tar: with(func(es []rawEntry) []rawEntry {
				es[4].hdr.Mode = 0o644
				return es
			}),
			want:      []string{"etc/kubernetes/pki/ca.key: mode 0644 in the tar, 0600 in the index"},
			wantFiles: 3,
		},
		{
			name: "symlink target differs",
			tar: with(func(es []rawEntry) []rawEntry {
				es[5].hdr.Linkname = "../../../etc/shadow"
				return es
			}),
			want:      []string{`etc/kubernetes/pki/current.pem: symlink to "../../../etc/shadow" in the tar, to "ca.crt" in the index`},
			wantFiles: 3,
		},
		{
			name: "type differs",
			tar: with(func(es []rawEntry) []rawEntry {
				es[2] = rawEntry{hdr: tar.Header{Name: "etc/kubernetes/pki", Typeflag: tar.TypeReg, Mode: 0o755}}
				return es
			}),
			want:      []string{"etc/kubernetes/pki: a file in the tar, a dir in the index"},
			wantFiles: 4,
		},
		{
			name: "file in the tar not in the index",
			tar: with(func(es []rawEntry) []rawEntry {
				extra := rawEntry{hdr: tar.Header{Name: "etc/kubernetes/extra", Typeflag: tar.TypeReg, Mode: 0o600}, data: []byte("x")}
				return append(es[:len(es)-1:len(es)-1], extra, es[len(es)-1])
			}),
			want:      []string{"etc/kubernetes/extra: in the tar but not in the index"},
			wantFiles: 4,
		},
		{
			name: "file in the index not in the tar",
			tar: with(func(es []rawEntry) []rawEntry {
				return append(es[:4:4], es[5:]...)
			}),
			want:      []string{"etc/kubernetes/pki/ca.key: in the index but not in the tar"},
			wantFiles: 2,
		},
		{
			name: "unsafe paths in the tar",
			tar: with(func(es []rawEntry) []rawEntry {
				bad := []rawEntry{
					{hdr: tar.Header{Name: "../etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")},
					{hdr: tar.Header{Name: "/etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")},
					{hdr: tar.Header{Name: "etc/./x", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")},
				}
				return append(bad, es...)
			}),
			want:      []string{`unsafe path "../etc/passwd"`, `unsafe path "/etc/passwd"`, `unsafe path "etc/./x"`},
			wantFiles: 3,
		},
		{
			name: "unsafe path in the index",
			tar: with(func(es []rawEntry) []rawEntry {
				es[len(es)-1].data = bytes.Replace(index, []byte(`"etc/kubernetes/admin.conf"`), []byte(`"../admin.conf"`), 1)
				return es
			}),
			want:      []string{StateIndexPath + `: invalid manifest: state index: unsafe path "../admin.conf"`},
			wantFiles: 3,
		},
		{
			name: "entry after the index",
			tar: with(func(es []rawEntry) []rawEntry {
				return append(es, rawEntry{hdr: tar.Header{Name: "etc/late", Typeflag: tar.TypeReg, Mode: 0o600}, data: []byte("late")})
			}),
			want:      []string{"etc/late: after the index", "etc/late: in the tar but not in the index"},
			wantFiles: 4,
		},
		{
			name:      "no index",
			tar:       rawTar(t, entriesOf(files)),
			want:      []string{"no index (.kdr/index.json)"},
			wantFiles: 3,
		},
		{
			name:      "two indexes",
			tar:       rawTar(t, append(append(entriesOf(files), indexEntry), indexEntry)),
			want:      []string{".kdr/index.json: after the index", ".kdr/index.json: more than one index"},
			wantFiles: 3,
		},
		{
			name: "entry twice",
			tar: with(func(es []rawEntry) []rawEntry {
				return append([]rawEntry{es[1]}, es...)
			}),
			want:      []string{"etc/kubernetes/admin.conf: in the tar more than once"},
			wantFiles: 3,
		},
		{
			name: "hard link",
			tar: with(func(es []rawEntry) []rawEntry {
				hl := rawEntry{hdr: tar.Header{Name: "etc/kubernetes/hard", Typeflag: tar.TypeLink, Linkname: "etc/kubernetes/admin.conf"}}
				return append([]rawEntry{hl}, es...)
			}),
			want:      []string{`etc/kubernetes/hard: a hard link`},
			wantFiles: 3,
		},
		{
			name: "device and fifo",
			tar: with(func(es []rawEntry) []rawEntry {
				bad := []rawEntry{
					{hdr: tar.Header{Name: "etc/kubernetes/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}},
					{hdr: tar.Header{Name: "etc/kubernetes/sda", Typeflag: tar.TypeBlock, Devmajor: 8}},
					{hdr: tar.Header{Name: "etc/kubernetes/pipe", Typeflag: tar.TypeFifo}},
				}
				return append(bad, es...)
			}),
			want:      []string{`etc/kubernetes/mem: a character device`, `etc/kubernetes/sda: a block device`, `etc/kubernetes/pipe: a fifo`},
			wantFiles: 3,
		},
		{
			name: "file below a symlink of the tar",
			tar: with(func(es []rawEntry) []rawEntry {
				below := rawEntry{hdr: tar.Header{Name: "etc/kubernetes/pki/current.pem/x", Typeflag: tar.TypeReg, Mode: 0o600}, data: []byte("x")}
				return append(es[:len(es)-1:len(es)-1], below, es[len(es)-1])
			}),
			want: []string{
				"etc/kubernetes/pki/current.pem/x: below the symlink etc/kubernetes/pki/current.pem, which a restore will not write through",
				"etc/kubernetes/pki/current.pem/x: in the tar but not in the index",
			},
			wantFiles: 4,
		},
		{
			// The index agrees: only the symlink rule finds it.
			name: "symlink then files, in the index too",
			tar: func() []byte {
				fs := defaultStateFiles()
				fs[2] = stateFile{path: "etc/kubernetes/pki", typ: EntrySymlink, mode: 0o777, target: "../../var/lib/etcd"}
				return buildStateTar(t, fs, nil)
			}(),
			want: []string{
				"etc/kubernetes/pki/ca.crt: below the symlink etc/kubernetes/pki",
				"etc/kubernetes/pki/ca.key: below the symlink etc/kubernetes/pki",
				"etc/kubernetes/pki/current.pem: below the symlink etc/kubernetes/pki",
			},
			wantFiles: 3,
		},
		{
			name: "control characters in a name stay on one line",
			tar: with(func(es []rawEntry) []rawEntry {
				extra := rawEntry{hdr: tar.Header{Name: "etc/evil\nFAILED nothing", Typeflag: tar.TypeReg, Mode: 0o600}, data: []byte("x")}
				return append([]rawEntry{extra}, es...)
			}),
			want:      []string{`"etc/evil\nFAILED nothing": in the tar but not in the index`},
			wantFiles: 4,
		},
		{
			// archive/tar takes an end at a header boundary for the end
			// of the archive; the index, last, is then what is missing.
			name:      "tar cut between entries",
			tar:       rawTar(t, whole)[:1536],
			want:      []string{"no index"},
			wantFiles: 1,
		},
		{
			name:      "truncated tar",
			tar:       rawTar(t, whole)[:1600],
			want:      []string{"unexpected EOF"},
			wantFiles: 1,
		},
		{
			name:      "not a tar",
			tar:       bytes.Repeat([]byte("garbage!"), 128),
			want:      []string{"tar: archive/tar: invalid tar header"},
			wantFiles: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := CheckStateTar(bytes.NewReader(tc.tar))
			if err != nil {
				t.Fatalf("error %v; only stream failures are errors", err)
			}
			if len(res.Problems) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n  %s", len(res.Problems), len(tc.want), strings.Join(res.Problems, "\n  "))
			}
			for i, w := range tc.want {
				if !strings.Contains(res.Problems[i], w) {
					t.Errorf("problem %d: %q, want it to contain %q", i, res.Problems[i], w)
				}
				if strings.ContainsAny(res.Problems[i], "\n\r") {
					t.Errorf("problem %d is not one line: %q", i, res.Problems[i])
				}
			}
			if res.Files != tc.wantFiles {
				t.Errorf("Files = %d, want %d", res.Files, tc.wantFiles)
			}
		})
	}
}

// ustarBlock is one raw tar header block, for entries tar.Writer refuses
// to write.
func ustarBlock(name string, typ byte, size int) []byte {
	b := make([]byte, 512)
	copy(b[0:], name)
	copy(b[100:], "0000600\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	copy(b[148:], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func padBlock(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// sparseTar is a PAX sparse entry of a few blocks that archive/tar would
// expand into 1 TiB of zeros.
func sparseTar() []byte {
	record := func(k, v string) string {
		line := " " + k + "=" + v + "\n"
		size := len(line)
		for len(fmt.Sprint(size))+len(line) != size {
			size = len(fmt.Sprint(size)) + len(line)
		}
		return fmt.Sprint(size) + line
	}
	pax := record("GNU.sparse.major", "1") + record("GNU.sparse.minor", "0") +
		record("GNU.sparse.name", "etc/huge") + record("GNU.sparse.realsize", "1099511627776")
	sparseMap := padBlock([]byte("1\n1099511627775\n1\n"))
	var data []byte
	data = append(data, ustarBlock("PaxHeaders/huge", 'x', len(pax))...)
	data = append(data, padBlock([]byte(pax))...)
	data = append(data, ustarBlock("huge", '0', len(sparseMap)+512)...)
	data = append(data, sparseMap...)
	data = append(data, padBlock([]byte("x"))...)
	return append(data, make([]byte, 1024)...)
}

// TestCheckStateTarSparse: a sparse entry is refused, not read.
func TestCheckStateTarSparse(t *testing.T) {
	res, err := CheckStateTar(bytes.NewReader(sparseTar()))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) == 0 || !strings.Contains(res.Problems[0], "etc/huge: a sparse file") {
		t.Fatalf("problems %q, want the sparse entry refused", res.Problems)
	}
}

// TestCheckStateTarStreamError: a failing stream is an error, not a
// problem with the tar.
func TestCheckStateTarStreamError(t *testing.T) {
	data := buildStateTar(t, defaultStateFiles(), nil)
	boom := errors.New("connection reset")
	for _, n := range []int{100, 1000, len(data) - 600} {
		_, err := CheckStateTar(&failAfter{data: data, n: n, err: boom})
		if !errors.Is(err, boom) {
			t.Fatalf("cut after %d bytes: error %v, want %v", n, err, boom)
		}
	}
}

// failAfter returns data's first n bytes, then err (io.EOF when nil).
type failAfter struct {
	data []byte
	n    int
	off  int
	err  error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.off >= f.n {
		if f.err == nil {
			return 0, io.EOF
		}
		return 0, f.err
	}
	n := copy(p, f.data[f.off:f.n])
	f.off += n
	return n, nil
}

// TestCheckStateTarProblemCap: a tar with many bad entries gives a bounded
// list of problems and a count of the rest.
func TestCheckStateTarProblemCap(t *testing.T) {
	var es []rawEntry
	for i := range maxStateProblems + 10 {
		es = append(es, rawEntry{hdr: tar.Header{Name: "x/" + strings.Repeat("a", i+1), Typeflag: tar.TypeReg, Mode: 0o600}})
	}
	es = append(es, rawEntry{hdr: tar.Header{Name: StateIndexPath, Typeflag: tar.TypeReg, Mode: 0o600}, data: []byte(`{"node":"x","entries":[]}`)})
	res, err := CheckStateTar(bytes.NewReader(rawTar(t, es)))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) != maxStateProblems || res.More != 10 {
		t.Fatalf("%d problems and %d more, want %d and 10", len(res.Problems), res.More, maxStateProblems)
	}
}

func FuzzStateTar(f *testing.F) {
	files := defaultStateFiles()
	f.Add(buildStateTar(f, files, nil))
	f.Add(buildStateTar(f, files, func(idx *StateIndex) { idx.Entries = idx.Entries[:2] }))
	f.Add(buildStateTar(f, files[:1], nil))
	f.Add(sparseTar())
	f.Add(rawTar(f, []rawEntry{{hdr: tar.Header{Name: StateIndexPath, Typeflag: tar.TypeReg, Mode: 0o600}, data: []byte(`{"node":"x","entries":[]}`)}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := CheckStateTar(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("an in-memory stream cannot fail, got %v", err)
		}
		if len(res.Problems) > maxStateProblems {
			t.Fatalf("%d problems kept, the cap is %d", len(res.Problems), maxStateProblems)
		}
		if len(res.Problems) > 0 || res.More > 0 {
			return
		}
		// A clean result proves the index and the tar agree.
		if res.Index == nil {
			t.Fatal("no problem reported, yet no index")
		}
		var files, dirs, links int
		for _, e := range res.Index.Entries {
			switch e.Type {
			case EntryFile:
				files++
			case EntryDir:
				dirs++
			case EntrySymlink:
				links++
			}
		}
		if files != res.Files || dirs != res.Dirs || links != res.Symlinks {
			t.Fatalf("clean, but the tar holds %d/%d/%d files/dirs/symlinks and the index %d/%d/%d",
				res.Files, res.Dirs, res.Symlinks, files, dirs, links)
		}
	})
}

// TestReadStateIndex: restore reads the index by the same rules verify
// checks: the last entry, a regular file, exactly once.
func TestReadStateIndex(t *testing.T) {
	files := defaultStateFiles()
	index := indexFor(t, files)
	indexEntry := rawEntry{hdr: tar.Header{Name: StateIndexPath, Typeflag: tar.TypeReg, Mode: 0o600}, data: index}
	late := rawEntry{hdr: tar.Header{Name: "etc/late", Typeflag: tar.TypeReg, Mode: 0o600}, data: []byte("late")}
	cases := []struct {
		name   string
		tar    []byte
		reason string
	}{
		{"as snapshot writes it", buildStateTar(t, files, nil), ""},
		{"no index", rawTar(t, nil), "no index"},
		{"entry after the index", rawTar(t, []rawEntry{indexEntry, late}), "etc/late after the index"},
		{"two indexes", rawTar(t, []rawEntry{indexEntry, indexEntry}), ".kdr/index.json after the index"},
		{"index not a file", rawTar(t, []rawEntry{{hdr: tar.Header{Name: StateIndexPath, Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}}}), "not a regular file"},
		{"index not JSON", rawTar(t, []rawEntry{{hdr: indexEntry.hdr, data: []byte("{")}}), "state index"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			idx, err := ReadStateIndex(bytes.NewReader(tc.tar))
			if tc.reason == "" {
				if err != nil || len(idx.Entries) != len(files) {
					t.Fatalf("index %v, error %v", idx, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("error %v, want ErrInvalid saying %q", err, tc.reason)
			}
		})
	}
}
