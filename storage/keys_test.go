package storage

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"manifest.json", true},
		{"prod/20240101T000000Z/etcd.db.zst.age", true},
		{".hidden/x", true},
		{"a..b/c", true},
		{"", false},
		{"/abs", false},
		{"a/", false},
		{"a//b", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"a/../b", false},
		{"a/./b", false},
		{"a/.kdr-tmp-x", false},
		{".kdr-tmp-", false},
		{"a\x00b", false},
		{"\xff", false},
		{strings.Repeat("k", 1025), false},
		{strings.Repeat("k", 1024), true},
	} {
		err := ValidateKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrPermanent) {
			t.Errorf("ValidateKey(%q) = %v, want it to wrap ErrPermanent", tc.key, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		ok     bool
		dir    string
	}{
		{"", true, ""},
		{"prod", true, ""},
		{"prod/", true, "prod/"},
		{"prod/2024", true, "prod/"},
		{"prod/..", true, "prod/"}, // a partial segment is only compared as text
		{"../", false, ""},
		{"a//", false, ""},
		{"/abs", false, ""},
		{"a/.kdr-tmp-x/", false, ""},
	} {
		err := validatePrefix(tc.prefix)
		if (err == nil) != tc.ok {
			t.Errorf("validatePrefix(%q) = %v, want ok=%v", tc.prefix, err, tc.ok)
		}
		if tc.ok && listDir(tc.prefix) != tc.dir {
			t.Errorf("listDir(%q) = %q, want %q", tc.prefix, listDir(tc.prefix), tc.dir)
		}
	}
}
