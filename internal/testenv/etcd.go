package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdOptions shape a test etcd cluster.
type EtcdOptions struct {
	// Members is the member count (default 1).
	Members int
	// TLS serves clients over TLS with client-certificate auth.
	TLS bool
	// QuotaBytes sets --quota-backend-bytes (default etcd's).
	QuotaBytes int64
}

// EtcdCluster is a cluster of real etcd processes on loopback ports.
type EtcdCluster struct {
	t       testing.TB
	Members []*EtcdMember
	// PKI is set when the cluster serves TLS.
	PKI   *PKI
	token string
}

// EtcdMember is one etcd process.
type EtcdMember struct {
	Name      string
	DataDir   string
	ClientURL string
	PeerURL   string
	args      []string
	logPath   string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// StartEtcd starts a cluster of real etcd processes and stops them when
// the test ends.
func StartEtcd(t testing.TB, o EtcdOptions) *EtcdCluster {
	t.Helper()
	if o.Members == 0 {
		o.Members = 1
	}
	bin := Binary(t, "etcd")
	dir := t.TempDir()
	c := &EtcdCluster{t: t, token: fmt.Sprintf("kdr-test-%d", time.Now().UnixNano())}
	scheme := "http"
	if o.TLS {
		c.PKI = NewPKI(t, filepath.Join(dir, "pki"))
		scheme = "https"
	}
	var initial []string
	for i := range o.Members {
		m := &EtcdMember{
			Name:      fmt.Sprintf("m%d", i+1),
			DataDir:   filepath.Join(dir, fmt.Sprintf("m%d.etcd", i+1)),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			logPath:   filepath.Join(dir, fmt.Sprintf("m%d.log", i+1)),
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.args = []string{
			bin,
			"--name", m.Name,
			"--data-dir", m.DataDir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", c.token,
			"--initial-cluster-state", "new",
			"--logger", "zap", "--log-level", "warn",
		}
		if o.TLS {
			m.args = append(m.args,
				"--cert-file", c.PKI.ServerCert, "--key-file", c.PKI.ServerKey,
				"--trusted-ca-file", c.PKI.CA, "--client-cert-auth")
		}
		if o.QuotaBytes > 0 {
			m.args = append(m.args, "--quota-backend-bytes", fmt.Sprint(o.QuotaBytes))
		}
	}
	for _, m := range c.Members {
		c.start(m)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.stop(syscall.SIGKILL)
		}
	})
	c.WaitHealthy()
	return c
}

func (c *EtcdCluster) start(m *EtcdMember) {
	c.t.Helper()
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatalf("etcd log: %v", err)
	}
	cmd := exec.Command(m.args[0], m.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start etcd %s: %v", m.Name, err)
	}
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(m.exited)
	}()
}

func (m *EtcdMember) stop(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
	m.cmd = nil
}

// Kill stops member i with SIGKILL, as a crash would.
func (c *EtcdCluster) Kill(i int) { c.Members[i].stop(syscall.SIGKILL) }

// Restart starts member i again on its data dir and ports.
func (c *EtcdCluster) Restart(i int) {
	c.t.Helper()
	c.start(c.Members[i])
}

// Endpoints lists the client URLs of all members.
func (c *EtcdCluster) Endpoints() []string {
	eps := make([]string, len(c.Members))
	for i, m := range c.Members {
		eps[i] = m.ClientURL
	}
	return eps
}

// ClientTLS is the client TLS config for a TLS cluster, nil otherwise.
func (c *EtcdCluster) ClientTLS() *tls.Config {
	if c.PKI == nil {
		return nil
	}
	return c.PKI.ClientTLS(c.t)
}

// Client connects to every running member; closed when the test ends.
func (c *EtcdCluster) Client() *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		TLS:         c.ClientTLS(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		c.t.Fatalf("etcd client: %v", err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// WaitHealthy waits until every running member answers with a leader.
func (c *EtcdCluster) WaitHealthy() {
	c.t.Helper()
	cli := c.Client()
	deadline := time.Now().Add(60 * time.Second)
	for _, m := range c.Members {
		if m.cmd == nil {
			continue
		}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := cli.Status(ctx, m.ClientURL)
			cancel()
			if err == nil && st.Leader != 0 {
				break
			}
			select {
			case <-m.exited:
				c.t.Fatalf("etcd %s exited: %s", m.Name, tail(m.logPath))
			default:
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("etcd %s not healthy after 60s: %v\n%s", m.Name, err, tail(m.logPath))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// tail returns the end of a log file for failure messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
