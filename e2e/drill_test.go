package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"encoding/json"
	"fmt"
	"github.com/kdr-io/kdr/internal/testenv"
)

// TestDrillInterrupted sends SIGINT to kdr drill once its etcd members
// run: it stops, and leaves no sandbox behind (the members ran inside
// it, so no process or port outlives it either).
func TestDrillInterrupted(t *testing.T) {
	w := newWorld(t, worldOptions{members: 3})
	cfg := writeConfig(t, w.spec())
	w.backup(t, cfg)
	sandbox := t.TempDir()
	cmd := exec.Command(kdrBin, "--config", cfg, "drill", "--target", "usb", "--identity", w.identity, "--sandbox", sandbox)
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	testenv.Eventually(t, time.Minute, "the drill's etcd members started", func() bool {
		wals, _ := filepath.Glob(filepath.Join(sandbox, "kdr-drill-*", "drill-*", "var/lib/etcd/member/wal"))
		return len(wals) > 0
	})
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err == nil {
			t.Fatalf("kdr drill exited 0 after SIGINT\n%s", log)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("kdr drill still runs 30s after SIGINT\n%s", log)
	}
	if left, _ := os.ReadDir(sandbox); len(left) > 0 {
		t.Fatalf("the interrupted drill left %s in its sandbox\n%s", left[0].Name(), log)
	}
}

// TestDrillStartsKubeAPIServer drills a kubeadm host's backup with a
// kube-apiserver configured: it starts on the restored members and PKI,
// and the restored admin kubeconfig lists the namespaces created through
// the API before the backup.
func TestDrillStartsKubeAPIServer(t *testing.T) {
	s := newKubeSource(t, false)
	cfg := testenv.ReadFile(t, s.cfg)
	cfg = append(cfg, fmt.Sprintf("drill: {kubeAPIServer: %q}\n", testenv.Binary(t, "kube-apiserver"))...)
	testenv.WriteFile(t, s.cfg, cfg, 0o600)
	r := s.w.kdr(t, s.cfg, "drill", "--target", "usb", "--identity", s.w.identity, "-o", "json")
	var rep struct {
		Result string `json:"result"`
		Checks []struct {
			ID, Grade, Reason string
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("drill output: %v\n%s", err, r)
	}
	found := false
	for _, c := range rep.Checks {
		if c.ID == "kube-apiserver" {
			found = true
			if c.Grade != "pass" {
				t.Fatalf("kube-apiserver check: %s %s", c.Grade, c.Reason)
			}
			mustContain(t, "the kube-apiserver check", c.Reason, "shop", "billing", "kube-system")
		}
	}
	if !found {
		t.Fatalf("no kube-apiserver check in the report\n%s", r)
	}
	if rep.Result == "fail" {
		t.Errorf("drill failed\n%s", r)
	}
}
