package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/staticpod"
)

// TestGradeStaticPods: kubeadm's manifests on a host root, every file they
// reference there. The newest backup holding each passes; one referenced
// since warns naming it; one the host lacks fails (the next backup would);
// a host without static pods passes.
func TestGradeStaticPods(t *testing.T) {
	root := t.TempDir()
	src, err := filepath.Glob("../staticpod/testdata/kubeadm/*.yaml")
	if err != nil || len(src) == 0 {
		t.Fatalf("no kubeadm manifests in testdata: %v", err)
	}
	dir := filepath.Join(root, "etc/kubernetes/manifests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var pods []*staticpod.Pod
	for _, p := range src {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		pod, err := staticpod.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, pod)
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Empty files name nothing further, so these are all the references.
	refs, err := staticpod.References(pods, func(string) ([]byte, error) { return nil, nil })
	if err != nil || len(refs) == 0 {
		t.Fatalf("references of kubeadm's manifests: %v, %v", refs, err)
	}
	for _, r := range refs {
		p := filepath.Join(root, r.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cp := &manifest.ControlPlane{}
	for _, r := range refs {
		cp.References = append(cp.References, manifest.Reference{Component: r.Component, Flag: r.Flag, Via: r.Via, Path: r.Path})
	}
	check := func(root string, cp *manifest.ControlPlane, g Grade, words ...string) {
		t.Helper()
		f := &facts{certs: certFacts{backup: "20260101T000000.000Z-010203", controlPlane: cp}}
		f.staticPods = readStaticPods(root, cp)
		r := gradeStaticPods(f)
		if r.Grade != g {
			t.Errorf("grade %s, want %s: %s", r.Grade, g, r.Reason)
		}
		for _, w := range words {
			if !strings.Contains(r.Reason, w) {
				t.Errorf("reason %q lacks %q", r.Reason, w)
			}
		}
	}
	check(root, cp, Pass, "holds all", "4 static pods")

	lacking := *cp
	lacking.References = cp.References[1:]
	check(root, &lacking, Warn, "lacks 1 of", refs[0].String(), "the next backup captures")

	if err := os.Remove(filepath.Join(root, refs[len(refs)-1].Path)); err != nil {
		t.Fatal(err)
	}
	check(root, cp, Fail, refs[len(refs)-1].Path, "the next backup fails")

	check(t.TempDir(), nil, Pass, "no static pods")
}
