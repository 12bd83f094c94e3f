package restore

import (
	"archive/tar"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
)

// TestRestoreFilesManualCommands runs the restore-files commands the
// runbook prints, with GNU tar and find as an operator would, on a state
// that whoever can write to the backup target could have made, with the
// host side pointed at a temp root instead of /: no device, no setuid
// bit and no link leading out of the restored files reaches the root, and
// a file in the way is moved aside. (e2e/runbook_typed_test.go runs every
// step's commands as printed, against / in a mount namespace.)
func TestRestoreFilesManualCommands(t *testing.T) {
	for _, tool := range []string{"bash", "tar", "find"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the runbook's commands need %s (make debian-tools installs it): %v", tool, err)
		}
	}
	base := t.TempDir()
	root, canary := filepath.Join(base, "root"), filepath.Join(base, "canary")
	for _, d := range []string{root, canary} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "cp1",
		State:     manifest.State{Sets: testSets[:3]},
		Inventory: config.Inventory{Hosts: []config.Host{{Name: "cp1", IP: "10.0.0.11"}}}}
	plan, err := BuildPlan(m, Source{Kind: "local", Path: "/mnt/usb"}, Options{StagingDir: filepath.Join(base, "staging")})
	if err != nil {
		t.Fatal(err)
	}
	var commands []string
	for _, s := range plan.Steps {
		if s.ID == StepRestoreFiles {
			commands = s.Commands
		}
	}
	// The two commands that touch the host name it as "/" in one place
	// each: the file in the way, and where the copy lands.
	inWay, copyTo := `h="/${f#./}"`, " -C /"
	var replaced []string
	for i, c := range commands {
		if strings.Contains(c, inWay) {
			commands[i] = strings.Replace(c, inWay, `h="`+root+`/${f#./}"`, 1)
			replaced = append(replaced, inWay)
		}
		if strings.HasSuffix(c, copyTo) {
			commands[i] = strings.TrimSuffix(c, "/") + root
			replaced = append(replaced, copyTo)
		}
	}
	if !slices.Equal(replaced, []string{inWay, copyTo}) {
		t.Fatalf("restore-files commands %q: want one to end in %q after one holding %q", commands, copyTo, inWay)
	}
	inTheWay := filepath.Join(root, "etc/kubernetes/admin.conf")
	if err := os.MkdirAll(filepath.Dir(inTheWay), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inTheWay, []byte("the host's own"), 0o600); err != nil {
		t.Fatal(err)
	}

	entries := []handEntry{
		// kdr restores the directory a set names with its own mode.
		handDir("etc/kubernetes/pki", "pki", 0o700),
		handFile("etc/kubernetes/pki/ca.crt", "pki", "CA", 0o644),
		handFile("etc/kubernetes/pki/ca.key", "pki", "KEY", 0o600),
		handFile("etc/kubernetes/pki/tool", "pki", "#!/bin/sh\n", 0o4755),
		handLink("etc/kubernetes/pki/current.pem", "pki", "ca.crt"),
		handLink("etc/kubernetes/pki/away", "pki", canary),
		handLink("etc/kubernetes/pki/up", "pki", "../../../../canary"),
		handFile("etc/kubernetes/admin.conf", "kubeconfigs", "conf", 0o600),
		handFile("etc/kubernetes/manifests/etcd.yaml", "manifests", "pod", 0o600),
	}
	// Outside every set, or where the entry policy refuses it.
	entries = append(entries,
		handEntry{hdr: tar.Header{Name: "etc/cron.d/x", Typeflag: tar.TypeReg, Mode: 0o644}, data: "* * * * * root sh", set: "pki", unindexed: true},
		handEntry{hdr: tar.Header{Name: "etc/kubernetes/manifests", Typeflag: tar.TypeSymlink, Linkname: canary}, set: "manifests", unindexed: true},
	)
	if os.Geteuid() == 0 {
		// Only root makes device nodes; tar -x as root does.
		entries = append(entries, handEntry{hdr: tar.Header{Name: "etc/kubernetes/pki/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o666}, set: "pki", unindexed: true})
	}
	staging := filepath.Join(base, "staging", "prod", m.ID)
	if err := os.MkdirAll(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staging, stateFile), handTar(t, entries...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		if out, err := exec.Command("bash", "-euo", "pipefail", "-c", c).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
	}

	emptyDir(t, canary)
	for p, want := range map[string]os.FileMode{
		"etc/kubernetes/pki/ca.crt":      0o644,
		"etc/kubernetes/pki/ca.key":      0o600,
		"etc/kubernetes/pki/tool":        0o755, // setuid dropped
		"etc/kubernetes/admin.conf":      0o600,
		"etc/kubernetes/pki/current.pem": os.ModeSymlink | 0o777,
		"etc/kubernetes/pki":             os.ModeDir | 0o700,
	} {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	for _, p := range []string{"etc/kubernetes/pki/mem", "etc/kubernetes/pki/away", "etc/kubernetes/pki/up", "etc/kubernetes/manifests", "etc/cron.d"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s reached the root", p)
		}
	}
	if _, err := os.Stat(filepath.Join(staging, "manifests/etc/kubernetes/manifests/etcd.yaml")); err != nil {
		t.Errorf("the static pod manifest is not staged: %v", err)
	}
	if got, err := os.ReadFile(inTheWay); err != nil || string(got) != "conf" {
		t.Errorf("admin.conf holds %q (%v), want the backup's", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(staging, "aside/etc/kubernetes/admin.conf")); err != nil || string(got) != "the host's own" {
		t.Errorf("the host's admin.conf was not moved aside: %q (%v)", got, err)
	}

	// A link where a set names a directory stops the commands before
	// anything is extracted through it, as kdr refuses the backup.
	linked := filepath.Join(base, "linked")
	if err := os.MkdirAll(linked, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staging, stateFile), handTar(t,
		handEntry{hdr: tar.Header{Name: "etc/kubernetes/pki", Typeflag: tar.TypeSymlink, Linkname: linked}, set: "pki"},
		handFile("etc/kubernetes/pki/ca.key", "pki", "KEY", 0o600)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(staging, "files")); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "-euo", "pipefail", "-c", commands[0]).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "etc/kubernetes/pki: not a directory in the backup") {
		t.Errorf("%s: %v\n%s\nwant it to fail on the link at etc/kubernetes/pki", commands[0], err, out)
	}
	emptyDir(t, linked)
}

func TestStateMembers(t *testing.T) {
	cases := []struct {
		name     string
		sets     []manifest.FileSet
		want     string
		wantDirs string
	}{
		{"kubeadm sets", []manifest.FileSet{
			{Name: "pki", Paths: []string{"/etc/kubernetes/pki/**"}},
			{Name: "kubeconfigs", Paths: []string{"/etc/kubernetes/*.conf"}},
			{Name: "loadbalancer", Paths: []string{"/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf"}, Missing: []string{"/etc/haproxy/haproxy.cfg"}},
		}, `'etc/kubernetes/pki/**' 'etc/kubernetes/*.conf' 'etc/keepalived/keepalived.conf'`, `'etc/kubernetes/pki'`},
		{"kubespray sets", []manifest.FileSet{
			{Name: "etcd-pki", Paths: []string{"/etc/ssl/etcd/ssl/**", "/etc/ssl/*/extra/**", "/var/lib/gone/**"}, Missing: []string{"/var/lib/gone/**"}},
			{Name: "etcd-env", Paths: []string{"/etc/etcd.env"}},
		}, `'etc/ssl/etcd/ssl/**' 'etc/ssl/*/extra/**' 'etc/etcd.env'`, `'etc/ssl/etcd/ssl'`},
		{"a quote in a pattern", []manifest.FileSet{{Name: "odd", Paths: []string{"/etc/it's/*"}}}, `'etc/it'\''s/*'`, ""},
		{"a set without patterns", []manifest.FileSet{{Name: "pki", Paths: []string{"/etc/kubernetes/pki/**"}}, {Name: "old"}}, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &manifest.Manifest{State: manifest.State{Sets: tc.sets}}
			if got := stateMembers(m); got != tc.want {
				t.Errorf("stateMembers = %s, want %s", got, tc.want)
			}
			if got := setDirs(m); got != tc.wantDirs {
				t.Errorf("setDirs = %s, want %s", got, tc.wantDirs)
			}
		})
	}
}
