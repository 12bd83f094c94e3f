package restore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestNeedSpace(t *testing.T) {
	if err := needSpace(t.TempDir(), 1<<62); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "need") {
		t.Fatalf("needSpace(4 EiB) = %v, want ErrNoSpace saying how much is needed", err)
	}
	if err := needSpace(filepath.Join(t.TempDir(), "not", "yet"), 1<<10); err != nil {
		t.Fatalf("needSpace under a missing dir: %v", err)
	}
}
