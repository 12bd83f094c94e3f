package manifest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func withTrailingHash(data []byte) []byte {
	sum := sha256.Sum256(data)
	return append(append([]byte(nil), data...), sum[:]...)
}

func TestSnapshotReader(t *testing.T) {
	data := bytes.Repeat([]byte("bbolt page "), 10000)
	good := withTrailingHash(data)
	flipped := append([]byte(nil), good...)
	flipped[500] ^= 1
	hashFlipped := append([]byte(nil), good...)
	hashFlipped[len(hashFlipped)-1] ^= 1
	tests := []struct {
		name    string
		in      []byte
		wantErr error
		dbSize  int64
	}{
		{"whole", good, nil, int64(len(data))},
		{"empty database", withTrailingHash(nil), nil, 0},
		{"flipped data byte", flipped, ErrTrailingHash, int64(len(data))},
		{"flipped hash byte", hashFlipped, ErrTrailingHash, int64(len(data))},
		{"truncated", good[:len(good)-100], ErrTrailingHash, int64(len(data) - 100)},
		{"raw db without hash", data, ErrTrailingHash, int64(len(data) - 32)},
		{"shorter than a hash", good[:10], ErrTrailingHash, 0},
		{"nothing", nil, ErrTrailingHash, 0},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			var src io.Reader = bytes.NewReader(tt.in)
			if oneByte {
				src = iotest.OneByteReader(src)
			}
			r := NewSnapshotReader(src)
			out, err := io.ReadAll(r)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s (one byte reads %v): err = %v, want %v", tt.name, oneByte, err, tt.wantErr)
			}
			if !bytes.Equal(out, tt.in) {
				t.Errorf("%s: output differs from input: the stored object must keep every byte", tt.name)
			}
			if tt.wantErr == nil && r.SHA256() != Sum(tt.in) {
				t.Errorf("%s: SHA256 = %q, want the hash of every byte read", tt.name, r.SHA256())
			}
			if tt.wantErr != nil && r.SHA256() != "" {
				t.Errorf("%s: SHA256 of a damaged stream = %q, want empty", tt.name, r.SHA256())
			}
			if r.DBSize() != tt.dbSize {
				t.Errorf("%s: DBSize = %d, want %d", tt.name, r.DBSize(), tt.dbSize)
			}
		}
	}
}
