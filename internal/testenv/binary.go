package testenv

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// modulePath is the module whose bin directory holds the tools.
const modulePath = "github.com/kdr-io/kdr"

// Binary returns the path of a tool built by `make tools`: from
// $KDR_BIN_DIR, else <module root>/bin, else PATH. A missing tool fails the
// test rather than skipping it, so a test never passes by testing nothing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if p, ok := lookBinary(name); ok {
		return p
	}
	t.Fatalf("%s not found: run `make tools` (looked in $KDR_BIN_DIR, the module's bin directory and PATH)", name)
	return ""
}

// lookBinary finds a tool where Binary does, without failing the test:
// a static pod whose binary is missing is the kubelet's to report.
func lookBinary(name string) (string, bool) {
	var dirs []string
	if d := os.Getenv("KDR_BIN_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	if root, ok := moduleRoot(); ok {
		dirs = append(dirs, filepath.Join(root, "bin"))
	}
	for _, d := range dirs {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p, true
		}
	}
	p, err := exec.LookPath(name)
	return p, err == nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// moduleRoot walks up from the working directory to the go.mod of this
// module. Tests run in their package's directory, so it is always found
// inside the repository.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if goModModule(filepath.Join(dir, "go.mod")) == modulePath {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// goModModule returns the module path declared in a go.mod file, or "".
func goModModule(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// never the same twice in one test process. It is picked below the
// kernel's ephemeral range (32768 and up by default): ports there are also
// handed out as the source ports of outgoing connections, so one found
// free could be taken by any client before the server binds it. Another
// test process can still pick the same port; among 12,000 that is rare.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 1000 {
		p := freePortLow + rand.IntN(freePortHigh-freePortLow)
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("free port: none found below the ephemeral range")
	return 0
}

// The range FreePort picks from, and what it handed out already.
const freePortLow, freePortHigh = 20000, 32000

var handedOut sync.Map
