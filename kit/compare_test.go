package kit

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSameContent(t *testing.T) {
	mib := bytes.Repeat([]byte{7}, 1<<20)
	for _, tc := range []struct {
		name       string
		file, read []byte
		want       bool
	}{
		{"empty", nil, nil, true},
		{"equal, short", []byte("kdr"), []byte("kdr"), true},
		{"equal, a whole buffer", mib, mib, true},
		{"equal, past a buffer", append(slices.Clone(mib), 1), append(slices.Clone(mib), 1), true},
		{"the source is longer", mib, append(slices.Clone(mib), 1), false},
		{"the copy is longer", append(slices.Clone(mib), 1), mib, false},
		{"one byte differs", append(slices.Clone(mib), 1), append(slices.Clone(mib), 2), false},
	} {
		p := filepath.Join(t.TempDir(), "copy")
		if err := os.WriteFile(p, tc.file, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := sameContent(p, bytes.NewReader(tc.read))
		if err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}
