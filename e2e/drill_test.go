package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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
